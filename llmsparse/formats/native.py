"""Optional fused C loops for the packed format (one pass over the weight instead of ten torch ops).

The C source below is compiled once with the system C compiler (``cc``/``gcc``; OpenMP when it
builds) into ``~/.cache/llmsparse/`` and loaded with ctypes. It produces exactly the bytes of the
pure-torch codecs in :mod:`llmsparse.formats.codecs` (tests compare both). Without a compiler, or
with ``LLMSPARSE_NO_NATIVE=1``, the torch path is used.

All functions work on bit patterns (unsigned integers of the element size). ``exact=1``: only +0.0
is a zero (a -0.0 is kept bit for bit); ``exact=0``: +0.0 and -0.0 are both zeros.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = r"""
#include <stdint.h>
#include <string.h>
/* a value is "nonzero" unless it is +0.0 or -0.0: all bits but the sign bit clear */
#define NZ(T, x) ((T)((x) << 1) != (T)0)
/* exact != 0: every bit pattern but +0.0 is a value (keeps -0.0 bit for bit) */
#define ISNZ(T, x) (exact ? ((x) != (T)0) : NZ(T, x))


static const uint8_t P0_24[16] = {0,0,0,0,0,0,1,0,0,0,1,0,2,0,0,0};
static const uint8_t P1_24[16] = {1,1,1,1,2,2,2,0,3,3,3,0,3,0,0,0};
static const uint8_t NIB_24[16] = {4,4,4,4,8,8,9,0,12,12,13,0,14,0,0,0};
static const uint8_t OK_24[16] = {1,1,1,1,1,1,1,0,1,1,1,0,1,0,0,0};
static const uint8_t POP_24[16] = {0,1,1,2,1,2,2,3,1,2,2,3,2,3,3,4};

/* 2:4 fast path; cols % 8 == 0. Same bytes as the general pack_nm. */
#define DEF24(T, S)                                                                                \
int64_t pack24_##S(const T* w, int64_t rows, int64_t cols, T* values, uint8_t* meta, int64_t* counts, int exact) { \
  int64_t G = cols / 4; int64_t bad = -1;                                                          \
  _Pragma("omp parallel for schedule(static)")                                                     \
  for (int64_t r = 0; r < rows; r++) {                                                             \
    const T* wr = w + r * cols; T* vr = values + r * (cols / 2); uint8_t* mr = meta + r * (cols / 8); \
    int64_t rc = 0; int ok = 1;                                                                    \
    for (int64_t g = 0; g < G; g += 2) {                                                           \
      const T* x = wr + 4 * g;                                                                     \
      int c0 = ISNZ(T, x[0]) | (ISNZ(T, x[1]) << 1) | (ISNZ(T, x[2]) << 2) | (ISNZ(T, x[3]) << 3);        \
      int c1 = ISNZ(T, x[4]) | (ISNZ(T, x[5]) << 1) | (ISNZ(T, x[6]) << 2) | (ISNZ(T, x[7]) << 3);        \
      ok &= OK_24[c0] & OK_24[c1];                                                                 \
      vr[2 * g] = x[P0_24[c0]]; vr[2 * g + 1] = x[P1_24[c0]];                                      \
      vr[2 * g + 2] = x[4 + P0_24[c1]]; vr[2 * g + 3] = x[4 + P1_24[c1]];                          \
      mr[g >> 1] = (uint8_t)(NIB_24[c0] | (NIB_24[c1] << 4));                                      \
      rc += POP_24[c0] + POP_24[c1];                                                               \
    }                                                                                              \
    counts[r] = rc;                                                                                \
    if (!ok) {                                                                                     \
      _Pragma("omp atomic write")                                                                  \
      bad = r;                                                                                     \
    }                                                                                              \
  }                                                                                                \
  return bad;                                                                                      \
}                                                                                                  \
/* 2:4 decode; cols % 8 == 0. -1, or 2*row for a group whose positions are not increasing */  \
int64_t unpack24_##S(const T* values, const uint8_t* meta, int64_t rows, int64_t cols, T* out) {   \
  int64_t bad = -1;                                                                                \
  _Pragma("omp parallel for schedule(static)")                                                     \
  for (int64_t r = 0; r < rows; r++) {                                                             \
    const T* vr = values + r * (cols / 2); const uint8_t* mr = meta + r * (cols / 8);              \
    T* o = out + r * cols; int ok = 1;                                                             \
    for (int64_t q = 0; q < cols / 8; q++) {                                                       \
      uint8_t byte = mr[q];                                                                        \
      for (int h = 0; h < 2; h++) {                                                                \
        int nib = (byte >> (4 * h)) & 15; int p0 = nib & 3, p1 = nib >> 2;                         \
        ok &= p0 < p1;                                                                             \
        T v0 = vr[4 * q + 2 * h], v1 = vr[4 * q + 2 * h + 1];                                      \
        T* g = o + 8 * q + 4 * h;                                                                  \
        g[0] = 0; g[1] = 0; g[2] = 0; g[3] = 0; g[p0] = v0; g[p1] = v1;                          \
      }                                                                                            \
    }                                                                                              \
    if (!ok) {                                                                                     \
      _Pragma("omp atomic write")                                                                  \
      bad = 2 * r;                                                                                 \
    }                                                                                              \
  }                                                                                                \
  return bad;                                                                                      \
}
DEF24(uint16_t, 2)
DEF24(uint32_t, 4)

/* 2:4 fp16/bf16, word at a time: a group of 4 halves is one uint64 (SWAR zero tests). Same bytes. */
int64_t pack24w_2(const uint16_t* w, int64_t rows, int64_t cols, uint16_t* values, uint8_t* meta,
                  int64_t* counts, int exact) {
  int64_t G = cols / 4; int64_t bad = -1;
  const uint64_t LO = 0x7FFF7FFF7FFF7FFFull, HI = 0x8000800080008000ull;
  const uint64_t K = 1ull | (1ull << 15) | (1ull << 30) | (1ull << 45);
  #pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const uint16_t* wr = w + r * cols; uint32_t* vr = (uint32_t*)(values + r * (cols / 2));
    uint8_t* mr = meta + r * (cols / 8); int64_t rc = 0; int ok = 1;
    for (int64_t g = 0; g < G; g += 2) {
      uint64_t x0, x1; memcpy(&x0, wr + 4 * g, 8); memcpy(&x1, wr + 4 * g + 4, 8);
      uint64_t f0 = ((x0 & LO) + LO) | (exact ? x0 : 0), f1 = ((x1 & LO) + LO) | (exact ? x1 : 0);
      f0 &= HI; f1 &= HI;
      int c0 = (int)((((f0 >> 15) * K) >> 45) & 15), c1 = (int)((((f1 >> 15) * K) >> 45) & 15);
      ok &= OK_24[c0] & OK_24[c1];
      uint32_t a0 = (uint32_t)((x0 >> (16 * P0_24[c0])) & 0xFFFF) | ((uint32_t)((x0 >> (16 * P1_24[c0])) & 0xFFFF) << 16);
      uint32_t a1 = (uint32_t)((x1 >> (16 * P0_24[c1])) & 0xFFFF) | ((uint32_t)((x1 >> (16 * P1_24[c1])) & 0xFFFF) << 16);
      memcpy(vr + g, &a0, 4); memcpy(vr + g + 1, &a1, 4);
      mr[g >> 1] = (uint8_t)(NIB_24[c0] | (NIB_24[c1] << 4));
      rc += POP_24[c0] + POP_24[c1];
    }
    counts[r] = rc;
    if (!ok) {
      #pragma omp atomic write
      bad = r;
    }
  }
  return bad;
}

/* 2:4 fp16/bf16 decode, a uint64 per group. -1, or 2*row for a group whose positions are not increasing */
int64_t unpack24w_2(const uint16_t* values, const uint8_t* meta, int64_t rows, int64_t cols, uint16_t* out) {
  int64_t bad = -1;
  #pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const uint16_t* vr = values + r * (cols / 2); const uint8_t* mr = meta + r * (cols / 8);
    uint16_t* o = out + r * cols; int ok = 1;
    for (int64_t q = 0; q < cols / 8; q++) {
      uint8_t byte = mr[q];
      for (int h = 0; h < 2; h++) {
        int nib = (byte >> (4 * h)) & 15; int p0 = nib & 3, p1 = nib >> 2;
        ok &= p0 < p1;
        uint64_t x = ((uint64_t)vr[4 * q + 2 * h] << (16 * p0)) | ((uint64_t)vr[4 * q + 2 * h + 1] << (16 * p1));
        memcpy(o + 8 * q + 4 * h, &x, 8);
      }
    }
    if (!ok) {
      #pragma omp atomic write
      bad = 2 * r;
    }
  }
  return bad;
}

#define DEF(T, S)                                                                                  \
int64_t pack_nm_##S(const T* w, int64_t rows, int64_t cols, int n, int m, int b, T* values,        \
                    uint8_t* meta, int64_t mstride, int64_t* counts, int exact) {                             \
  int64_t G = cols / m; int64_t bad = -1;                                                          \
  _Pragma("omp parallel for schedule(static)")                                                     \
  for (int64_t r = 0; r < rows; r++) {                                                             \
    const T* wr = w + r * cols; T* vr = values + r * G * n; uint8_t* mr = meta + r * mstride;      \
    uint64_t acc = 0; int nacc = 0; int64_t mb = 0; int ok = 1; int64_t rc = 0;                   \
    for (int64_t g = 0; g < G; g++) {                                                              \
      const T* x = wr + g * m; int cnt = 0;                                                        \
      for (int j = 0; j < m; j++) cnt += ISNZ(T, x[j]);                                              \
      if (cnt > n) { ok = 0; break; }                                                              \
      rc += cnt;                                                                                   \
      int fill = n - cnt;                                                                          \
      for (int j = 0; j < m; j++) {                                                                \
        int take = ISNZ(T, x[j]);                                                                      \
        if (!take && fill > 0) { take = 1; fill--; }                                               \
        if (take) {                                                                                \
          *vr++ = x[j]; acc |= (uint64_t)j << nacc; nacc += b;                                     \
          while (nacc >= 8) { mr[mb++] = (uint8_t)(acc & 255); acc >>= 8; nacc -= 8; }            \
        }                                                                                          \
      }                                                                                            \
    }                                                                                              \
    if (!ok) {                                                                                     \
      _Pragma("omp atomic write")                                                                  \
      bad = r;                                                                                     \
      continue;                                                                                    \
    }                                                                                              \
    if (nacc > 0) mr[mb++] = (uint8_t)(acc & 255);                                                 \
    counts[r] = rc;                                                                                \
  }                                                                                                \
  return bad;                                                                                      \
}                                                                                                  \
/* out[0] = nonzeros, out[1] = max per group of 4, out[2] = max per group of 8 (-1: width not divisible) */ \
void group_stats_##S(const T* w, int64_t rows, int64_t cols, int64_t* out, int exact) {                       \
  int64_t nnz = 0, mx4 = 0, mx8 = 0; int d4 = cols % 4 == 0, d8 = cols % 8 == 0;                   \
  _Pragma("omp parallel for schedule(static) reduction(+:nnz) reduction(max:mx4,mx8)")             \
  for (int64_t r = 0; r < rows; r++) {                                                             \
    const T* wr = w + r * cols; int64_t c = 0;                                                     \
    if (d8) {                                                                                      \
      for (int64_t j = 0; j < cols; j += 8) {                                                      \
        int a = ISNZ(T, wr[j]) + ISNZ(T, wr[j + 1]) + ISNZ(T, wr[j + 2]) + ISNZ(T, wr[j + 3]);             \
        int e = ISNZ(T, wr[j + 4]) + ISNZ(T, wr[j + 5]) + ISNZ(T, wr[j + 6]) + ISNZ(T, wr[j + 7]);         \
        if (a > mx4) mx4 = a; if (e > mx4) mx4 = e; if (a + e > mx8) mx8 = a + e; c += a + e;     \
      }                                                                                            \
    } else if (d4) {                                                                               \
      for (int64_t j = 0; j < cols; j += 4) {                                                      \
        int a = ISNZ(T, wr[j]) + ISNZ(T, wr[j + 1]) + ISNZ(T, wr[j + 2]) + ISNZ(T, wr[j + 3]);             \
        if (a > mx4) mx4 = a; c += a;                                                              \
      }                                                                                            \
    } else {                                                                                       \
      for (int64_t j = 0; j < cols; j++) c += ISNZ(T, wr[j]);                                        \
    }                                                                                              \
    nnz += c;                                                                                      \
  }                                                                                                \
  out[0] = nnz; out[1] = d4 ? mx4 : -1; out[2] = d8 ? mx8 : -1;                                    \
}                                                                                                  \
/* returns -1, or the row of the first problem found: 2*row (bad positions) / 2*row+1 (padding) */ \
int64_t unpack_nm_##S(const T* values, const uint8_t* meta, int64_t rows, int64_t cols, int n,    \
                      int m, int b, int64_t mstride, T* out) {                                     \
  int64_t G = cols / m; int64_t bad = -1; uint64_t mask = ((uint64_t)1 << b) - 1;                  \
  _Pragma("omp parallel for schedule(static)")                                                     \
  for (int64_t r = 0; r < rows; r++) {                                                             \
    const T* vr = values + r * G * n; const uint8_t* mr = meta + r * mstride; T* orow = out + r * cols; \
    uint64_t acc = 0; int nacc = 0; int64_t mb = 0; int64_t err = -1;                              \
    memset(orow, 0, sizeof(T) * cols);                                                             \
    for (int64_t g = 0; g < G && err < 0; g++) {                                                   \
      int prev = -1;                                                                               \
      for (int k = 0; k < n; k++) {                                                                \
        while (nacc < b) { acc |= (uint64_t)mr[mb++] << nacc; nacc += 8; }                         \
        int j = (int)(acc & mask); acc >>= b; nacc -= b;                                           \
        if (j >= m || j <= prev) { err = 2 * r; break; }                                           \
        prev = j; orow[g * m + j] = *vr++;                                                         \
      }                                                                                            \
    }                                                                                              \
    if (err < 0 && (acc != 0 || mb < mstride)) {                                                   \
      for (int64_t q = mb; q < mstride; q++) if (mr[q]) acc = 1;                                   \
      if (acc != 0) err = 2 * r + 1;                                                               \
    }                                                                                              \
    if (err >= 0) {                                                                                \
      _Pragma("omp atomic write")                                                                  \
      bad = err;                                                                                   \
    }                                                                                              \
  }                                                                                                \
  return bad;                                                                                      \
}                                                                                                  \
void bm_mask_##S(const T* w, int64_t rows, int64_t cols, uint8_t* bm, int64_t bstride, int64_t* counts, int exact) { \
  _Pragma("omp parallel for schedule(static)")                                                     \
  for (int64_t r = 0; r < rows; r++) {                                                             \
    const T* wr = w + r * cols; uint8_t* br = bm + r * bstride; int64_t c = 0;                     \
    for (int64_t q = 0; q < bstride; q++) {                                                        \
      uint8_t byte = 0; int64_t j0 = q * 8;                                                        \
      if (j0 + 8 <= cols) {                                                                        \
        for (int k = 0; k < 8; k++) byte |= (uint8_t)(ISNZ(T, wr[j0 + k]) << k);                     \
      } else {                                                                                     \
        for (int k = 0; j0 + k < cols; k++) byte |= (uint8_t)(ISNZ(T, wr[j0 + k]) << k);             \
      }                                                                                            \
      c += __builtin_popcount(byte);                                                               \
      br[q] = byte;                                                                                \
    }                                                                                              \
    counts[r] = c;                                                                                 \
  }                                                                                                \
}                                                                                                  \
void bm_values_##S(const T* w, int64_t rows, int64_t cols, const int64_t* offsets, T* values, int exact) {    \
  _Pragma("omp parallel for schedule(static)")                                                     \
  for (int64_t r = 0; r < rows; r++) {                                                             \
    const T* wr = w + r * cols; T* vr = values + offsets[r]; int64_t cnt = offsets[r + 1] - offsets[r]; \
    int64_t k = 0, j = 0;                                                                          \
    for (; j < cols && k < cnt - 1; j++) { vr[k] = wr[j]; k += ISNZ(T, wr[j]); }                     \
    for (; j < cols; j++) if (ISNZ(T, wr[j])) vr[k++] = wr[j];                                         \
  }                                                                                                \
}                                                                                                  \
/* offsets already checked: offsets[0]==0, last==nnz, non-decreasing. -1 or the bad row */        \
int64_t bm_unpack_##S(const uint8_t* bm, int64_t bstride, const T* values, const int64_t* offsets, \
                      int64_t rows, int64_t cols, T* out) {                                        \
  int64_t bad = -1;                                                                                \
  _Pragma("omp parallel for schedule(static)")                                                     \
  for (int64_t r = 0; r < rows; r++) {                                                             \
    const uint8_t* br = bm + r * bstride; T* orow = out + r * cols;                                \
    int64_t cnt = 0;                                                                               \
    for (int64_t q = 0; q < bstride; q++) cnt += __builtin_popcount(br[q]);                        \
    int pad = (int)(bstride * 8 - cols);                                                           \
    int padbad = pad > 0 && (br[bstride - 1] >> (8 - pad)) != 0;                                   \
    if (cnt != offsets[r + 1] - offsets[r] || padbad) {                                            \
      _Pragma("omp atomic write")                                                                  \
      bad = r;                                                                                     \
      continue;                                                                                    \
    }                                                                                              \
    const T* vr = values + offsets[r];                                                             \
    for (int64_t j = 0; j < cols; j++) orow[j] = ((br[j >> 3] >> (j & 7)) & 1) ? *vr++ : (T)0;   \
  }                                                                                                \
  return bad;                                                                                      \
}

DEF(uint8_t, 1)
DEF(uint16_t, 2)
DEF(uint32_t, 4)
DEF(uint64_t, 8)
"""

_LIB = None
_TRIED = False


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llmsparse"


def _build() -> ctypes.CDLL | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None
    tag = hashlib.sha256((SOURCE + cc + os.uname().machine).encode()).hexdigest()[:16]
    d = _cache_dir()
    so = d / f"fastpack-{tag}.so"
    if not so.is_file():
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=d) as td:
            src = Path(td) / "fastpack.c"
            src.write_text(SOURCE)
            out = Path(td) / "fastpack.so"
            for flags in (["-fopenmp"], []):
                r = subprocess.run([cc, "-O3", "-shared", "-fPIC", *flags, str(src), "-o", str(out)],
                                   capture_output=True, text=True)
                if r.returncode == 0:
                    break
            else:
                return None
            os.replace(out, so)
    lib = ctypes.CDLL(str(so))
    i64, p, ci = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    for s in (1, 2, 4, 8):
        f = getattr(lib, f"pack_nm_{s}")
        f.restype, f.argtypes = i64, [p, i64, i64, ci, ci, ci, p, p, i64, p, ci]
        if s in (2, 4):
            f = getattr(lib, f"pack24_{s}")
            f.restype, f.argtypes = i64, [p, i64, i64, p, p, p, ci]
            if s == 2:
                f = lib.pack24w_2
                f.restype, f.argtypes = i64, [p, i64, i64, p, p, p, ci]
                f = lib.unpack24w_2
                f.restype, f.argtypes = i64, [p, p, i64, i64, p]
            f = getattr(lib, f"unpack24_{s}")
            f.restype, f.argtypes = i64, [p, p, i64, i64, p]
        f = getattr(lib, f"group_stats_{s}")
        f.restype, f.argtypes = None, [p, i64, i64, p, ci]
        f = getattr(lib, f"unpack_nm_{s}")
        f.restype, f.argtypes = i64, [p, p, i64, i64, ci, ci, ci, i64, p]
        f = getattr(lib, f"bm_mask_{s}")
        f.restype, f.argtypes = None, [p, i64, i64, p, i64, p, ci]
        f = getattr(lib, f"bm_values_{s}")
        f.restype, f.argtypes = None, [p, i64, i64, p, p, ci]
        f = getattr(lib, f"bm_unpack_{s}")
        f.restype, f.argtypes = i64, [p, i64, p, p, i64, i64, p]
    return lib


def lib() -> ctypes.CDLL | None:
    """The compiled helpers, or None (no compiler, build failed, or LLMSPARSE_NO_NATIVE=1)."""
    global _LIB, _TRIED
    if os.environ.get("LLMSPARSE_NO_NATIVE") == "1":
        return None
    if not _TRIED:
        _TRIED = True
        try:
            _LIB = _build()
        except Exception:  # any build/load problem: fall back to torch
            _LIB = None
    return _LIB


def _ptr(t: torch.Tensor) -> int:
    assert t.is_contiguous() and t.device.type == "cpu"
    return t.data_ptr()


def group_stats(w: torch.Tensor, exact: bool = True) -> tuple[int, int, int]:
    """(nonzeros, max nonzeros per group of 4 or -1, per group of 8 or -1) of a contiguous 2-D CPU tensor."""
    out = torch.zeros(3, dtype=torch.int64)
    rows, cols = w.shape
    getattr(lib(), f"group_stats_{w.element_size()}")(_ptr(w), rows, cols, _ptr(out), int(exact))
    return int(out[0]), int(out[1]), int(out[2])


def pack_nm(w: torch.Tensor, n: int, m: int, b: int, meta_bytes: int, exact: bool = True):
    """-> (values, meta, nnz) or None when the pattern fails. ``w`` contiguous 2-D CPU."""
    L = lib()
    rows, cols = w.shape
    es = w.element_size()
    values = torch.empty(rows, cols // m * n, dtype=w.dtype)
    meta = torch.empty(rows, meta_bytes, dtype=torch.uint8)
    counts = torch.empty(rows, dtype=torch.int64)
    if (n, m) == (2, 4) and cols % 8 == 0 and es in (2, 4):
        fn = L.pack24w_2 if es == 2 and os.environ.get("LLMSPARSE_PACK24W", "1") == "1" else getattr(L, f"pack24_{es}")
        bad = fn(_ptr(w), rows, cols, _ptr(values), _ptr(meta), _ptr(counts), int(exact))
    else:
        bad = getattr(L, f"pack_nm_{es}")(_ptr(w), rows, cols, n, m, b, _ptr(values), _ptr(meta), meta_bytes,
                                          _ptr(counts), int(exact))
    if bad >= 0:
        return None
    return values, meta, int(counts.sum())


def unpack_nm(values: torch.Tensor, meta: torch.Tensor, n: int, m: int, b: int, cols: int):
    """-> (dense, -1) or (None, code): code 2*row = bad positions, 2*row+1 = padding bits set."""
    L = lib()
    rows = values.shape[0]
    out = torch.empty(rows, cols, dtype=values.dtype)
    values, meta = values.contiguous(), meta.contiguous()
    es = values.element_size()
    if (n, m) == (2, 4) and cols % 8 == 0 and es in (2, 4):
        fn = L.unpack24w_2 if es == 2 and os.environ.get("LLMSPARSE_PACK24W", "1") == "1" else getattr(L, f"unpack24_{es}")
        bad = fn(_ptr(values), _ptr(meta), rows, cols, _ptr(out))
        return (None, bad) if bad >= 0 else (out, -1)
    bad = getattr(L, f"unpack_nm_{values.element_size()}")(_ptr(values), _ptr(meta), rows, cols, n, m, b,
                                                           meta.shape[1], _ptr(out))
    return (None, bad) if bad >= 0 else (out, -1)


def pack_bitmask(w: torch.Tensor, exact: bool = True):
    L = lib()
    rows, cols = w.shape
    es = w.element_size()
    bstride = (cols + 7) // 8
    bm = torch.empty(rows, bstride, dtype=torch.uint8)
    counts = torch.empty(rows, dtype=torch.int64)
    getattr(L, f"bm_mask_{es}")(_ptr(w), rows, cols, _ptr(bm), bstride, _ptr(counts), int(exact))
    offsets = torch.zeros(rows + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=offsets[1:])
    values = torch.empty(int(offsets[-1]), dtype=w.dtype)
    getattr(L, f"bm_values_{es}")(_ptr(w), rows, cols, _ptr(offsets), _ptr(values), int(exact))
    return bm, values, offsets


def unpack_bitmask(bm: torch.Tensor, values: torch.Tensor, offsets64: torch.Tensor, cols: int):
    """-> (dense, -1) or (None, bad_row)."""
    L = lib()
    rows = bm.shape[0]
    out = torch.empty(rows, cols, dtype=values.dtype)
    bm, values, offsets64 = bm.contiguous(), values.contiguous(), offsets64.contiguous()
    bad = getattr(L, f"bm_unpack_{values.element_size()}")(_ptr(bm), bm.shape[1], _ptr(values), _ptr(offsets64),
                                                           rows, cols, _ptr(out))
    return (None, bad) if bad >= 0 else (out, -1)
