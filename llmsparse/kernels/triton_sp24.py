"""Triton kernels for 2:4 linear layers that read the packed layout of :mod:`llmsparse.formats.nm`.

"Load as sparse, compute as dense": each program streams ``values[out, in/2]`` and the 2-bit
indices ``meta[out, in/8]`` of a block of output rows, rebuilds the dense weights (or selects the
matching inputs) in registers, and multiplies with dense math. Only 0.5625x of the dense weight
bytes cross the memory bus, which is what decode (small M, memory-bound) needs.

Two kernels:

* ``_sp24_gemv``: one token row per program column (grid ``[cdiv(N, BLOCK_N), M]``), the kept
  values are multiplied with the selected inputs on the FMA units (no zero multiplications). Best at
  M = 1..4.
* ``_sp24_mm``: the dense tile ``W[BLOCK_N, BLOCK_K]`` is rebuilt in registers and fed to
  ``tl.dot`` (tensor cores) against ``x^T[BLOCK_K, BLOCK_M]``; ``y^T = W x^T``. For M = 1..256.
  With ``X_A`` the other way round: ``y = x W^T``, x as the A operand.

Both accumulate in fp32 and write ``y[M, N]`` in the input dtype (fp16 or bf16). Requirements:
``in_features % 8 == 0``, ``x`` contiguous in its last dimension.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _sp24_gemv(
    x_ptr, v_ptr, meta_ptr, y_ptr, b_ptr,
    N, K, stride_xm, stride_ym,
    HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    G: tl.constexpr = BLOCK_K // 4
    KV = K // 2  # values per row
    KB = K // 8  # meta bytes per row
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < N
    rv = tl.arange(0, BLOCK_K // 2)
    rb = tl.arange(0, BLOCK_K // 8)
    rk = tl.arange(0, BLOCK_K)
    v_ptrs = v_ptr + rn[:, None].to(tl.int64) * KV + rv[None, :]
    b_ptrs = meta_ptr + rn[:, None].to(tl.int64) * KB + rb[None, :]
    x_ptrs = x_ptr + m.to(tl.int64) * stride_xm + rk
    acc = tl.zeros((BLOCK_N, G), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:
            v = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
            mb = tl.load(b_ptrs, mask=n_ok[:, None], other=0)
            xv = tl.load(x_ptrs)
        else:
            v = tl.load(v_ptrs, mask=n_ok[:, None] & (rv[None, :] < KV - k0 // 2), other=0.0)
            mb = tl.load(b_ptrs, mask=n_ok[:, None] & (rb[None, :] < KB - k0 // 8), other=0)
            xv = tl.load(x_ptrs, mask=rk < K - k0, other=0.0)
        mb = mb.to(tl.int32)
        # nibble g of the row tile: low nibble of byte g//2 for even g, high nibble for odd g
        nib = tl.reshape(tl.join(mb & 15, mb >> 4), (BLOCK_N, G))
        i0 = nib & 3
        i1 = nib >> 2
        v0, v1 = tl.split(tl.reshape(v, (BLOCK_N, G, 2)))
        xf = xv.to(tl.float32)
        xe, xo = tl.split(tl.reshape(xf, (G, 2, 2)))  # xe[g, a] = x[4g+2a], xo[g, a] = x[4g+2a+1]
        x0, x2 = tl.split(xe)
        x1, x3 = tl.split(xo)
        x0 = x0[None, :]
        x1 = x1[None, :]
        x2 = x2[None, :]
        x3 = x3[None, :]
        hi0 = (i0 & 2) != 0
        lo0 = (i0 & 1) != 0
        hi1 = (i1 & 2) != 0
        lo1 = (i1 & 1) != 0
        s0 = tl.where(hi0, tl.where(lo0, x3, x2), tl.where(lo0, x1, x0))
        s1 = tl.where(hi1, tl.where(lo1, x3, x2), tl.where(lo1, x1, x0))
        acc += v0.to(tl.float32) * s0 + v1.to(tl.float32) * s1
        v_ptrs += BLOCK_K // 2
        b_ptrs += BLOCK_K // 8
        x_ptrs += BLOCK_K
    out = tl.sum(acc, axis=1)
    if HAS_BIAS:
        out += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + m.to(tl.int64) * stride_ym + rn, out.to(y_ptr.dtype.element_ty), mask=n_ok)


@triton.jit
def _dense_tile(v, mb, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """values [BLOCK_N, BLOCK_K/2] + meta bytes [BLOCK_N, BLOCK_K/8] -> dense tile [BLOCK_N, BLOCK_K]."""
    G: tl.constexpr = BLOCK_K // 4
    mb = mb.to(tl.int32)
    nib = tl.reshape(tl.join(mb & 15, mb >> 4), (BLOCK_N, G))
    i0 = nib & 3
    i1 = nib >> 2
    v0, v1 = tl.split(tl.reshape(v, (BLOCK_N, G, 2)))
    zero = tl.zeros_like(v0)
    # indices are sorted and distinct (i0 < i1): column 0 can only be i0, column 3 only i1
    w0 = tl.where(i0 == 0, v0, zero)
    w1 = tl.where(i0 == 1, v0, tl.where(i1 == 1, v1, zero))
    w2 = tl.where(i0 == 2, v0, tl.where(i1 == 2, v1, zero))
    w3 = tl.where(i1 == 3, v1, zero)
    # [n, g, q, p] -> column 4g + 2q + p
    return tl.reshape(tl.join(tl.join(w0, w2), tl.join(w1, w3)), (BLOCK_N, BLOCK_K))


@triton.jit
def _sp24_mm(
    x_ptr, v_ptr, meta_ptr, y_ptr, b_ptr,
    M, N, K, stride_xm, stride_ym,
    HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, X_A: tl.constexpr = False,
):
    """``y^T = W x^T`` with the rebuilt W tile as the A operand of ``tl.dot`` ("mm"), or with ``X_A``
    ``y = x W^T``, x as A and the rebuilt W^T as B ("mmb")."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    KV = K // 2
    KB = K // 8
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n_ok = rn < N
    m_ok = rm < M
    rv = tl.arange(0, BLOCK_K // 2)
    rb = tl.arange(0, BLOCK_K // 8)
    rk = tl.arange(0, BLOCK_K)
    v_ptrs = v_ptr + rn[:, None].to(tl.int64) * KV + rv[None, :]
    b_ptrs = meta_ptr + rn[:, None].to(tl.int64) * KB + rb[None, :]
    if X_A:
        x_ptrs = x_ptr + rm[:, None].to(tl.int64) * stride_xm + rk[None, :]  # x tile [BLOCK_M, BLOCK_K]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    else:
        x_ptrs = x_ptr + rm[None, :].to(tl.int64) * stride_xm + rk[:, None]  # x^T tile [BLOCK_K, BLOCK_M]
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:
            v = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
            mb = tl.load(b_ptrs, mask=n_ok[:, None], other=0)
            if X_A:
                xt = tl.load(x_ptrs, mask=m_ok[:, None], other=0.0)
            else:
                xt = tl.load(x_ptrs, mask=m_ok[None, :], other=0.0)
        else:
            v = tl.load(v_ptrs, mask=n_ok[:, None] & (rv[None, :] < KV - k0 // 2), other=0.0)
            mb = tl.load(b_ptrs, mask=n_ok[:, None] & (rb[None, :] < KB - k0 // 8), other=0)
            if X_A:
                xt = tl.load(x_ptrs, mask=m_ok[:, None] & (rk[None, :] < K - k0), other=0.0)
            else:
                xt = tl.load(x_ptrs, mask=m_ok[None, :] & (rk[:, None] < K - k0), other=0.0)
        w = _dense_tile(v, mb, BLOCK_N, BLOCK_K)
        if X_A:
            acc = tl.dot(xt, tl.trans(w), acc)
        else:
            acc = tl.dot(w, xt, acc)
        v_ptrs += BLOCK_K // 2
        b_ptrs += BLOCK_K // 8
        x_ptrs += BLOCK_K
    if X_A:
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        y_ptrs = y_ptr + rm[:, None].to(tl.int64) * stride_ym + rn[None, :]
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
    else:
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[:, None]
        y_ptrs = y_ptr + rm[None, :].to(tl.int64) * stride_ym + rn[:, None]
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=n_ok[:, None] & m_ok[None, :])


# Configurations the dispatcher measures: (BLOCK_N, BLOCK_K, num_warps, num_stages).
GEMV_CONFIGS = [
    (4, 1024, 4, 2),
    (8, 1024, 4, 2),
    (4, 2048, 4, 1),
    (8, 512, 4, 2),
    (16, 1024, 8, 2),
    (2, 2048, 4, 2),
    (16, 2048, 8, 1),
    (32, 1024, 8, 2),
    (8, 2048, 8, 1),
    (8, 1024, 8, 2),
]
# BLOCK_M -> configs; "mm": W rebuilt as the A operand (y^T = W x^T)
MM_CONFIGS = {
    16: [(16, 256, 4, 4), (32, 256, 4, 3), (64, 128, 4, 3), (32, 128, 4, 4), (128, 128, 8, 3)],
    32: [(32, 256, 4, 3), (64, 128, 4, 3), (128, 128, 8, 3)],
    64: [(64, 128, 4, 3), (128, 128, 8, 3), (128, 64, 4, 4)],
    128: [(128, 64, 8, 3), (128, 128, 8, 3)],
}
# "mmb": x as the A operand, rebuilt W^T as B (y = x W^T)
MMB_CONFIGS = {
    16: [(64, 128, 4, 3), (128, 128, 4, 3), (32, 256, 4, 3)],
    32: [(64, 128, 4, 3), (128, 128, 4, 3)],
    64: [(128, 128, 4, 3), (64, 128, 4, 3)],
    128: [(128, 128, 8, 3), (128, 64, 4, 4)],
}

# Configurations to leave out, e.g. ones found to fault on some GPU/driver/Triton:
# LLMSPARSE_KERNEL_EXCLUDE="gemv:8,512,4,2 mm:16:32,256,4,3 bfloat16/mmb:64:128,128,4,3"
# Always left out: cuSPARSELt's own algorithm search in fp16, which raised "illegal instruction" (a
# poisoned CUDA context) on an H100 with torch 2.11 / cuSPARSELt 0.8 (bf16 is fine). fp16 still gets
# cuSPARSELt through the fixed algorithm ids the dispatcher measures.
DEFAULT_EXCLUDE = {"float16/cslt_search"}
EXCLUDE = DEFAULT_EXCLUDE | set(os.environ.get("LLMSPARSE_KERNEL_EXCLUDE", "").split())


def excluded(name: str, dtype=None) -> bool:
    d = str(dtype).replace("torch.", "") if dtype is not None else None
    return name in EXCLUDE or (d is not None and f"{d}/{name}" in EXCLUDE)


GEMV_MAX_M = 8


def sp24_gemv(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None,
              out_features: int, cfg=GEMV_CONFIGS[0], out: torch.Tensor | None = None) -> torch.Tensor:
    """``x[M, K] @ W^T`` with ``W`` given as packed 2:4 ``(values, meta)``; one program column per row of x."""
    M, K = x.shape
    N = out_features
    bn, bk, warps, stages = cfg
    y = torch.empty((M, N), device=x.device, dtype=x.dtype) if out is None else out
    grid = (triton.cdiv(N, bn), M)
    _sp24_gemv[grid](
        x, values, meta, y, bias if bias is not None else y,
        N, K, x.stride(0), y.stride(0),
        HAS_BIAS=bias is not None, EVEN_K=(K % bk == 0),
        BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages,
    )
    return y


def sp24_mm(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None,
            out_features: int, block_m: int = 16, cfg=MM_CONFIGS[16][0],
            out: torch.Tensor | None = None, x_a: bool = False) -> torch.Tensor:
    """``x[M, K] @ W^T`` on the tensor cores after rebuilding dense tiles of ``W`` in registers (``x_a``: x as
    the A operand of ``tl.dot``, see :func:`sp24_mm_wb`)."""
    M, K = x.shape
    N = out_features
    bn, bk, warps, stages = cfg
    y = torch.empty((M, N), device=x.device, dtype=x.dtype) if out is None else out
    grid = (triton.cdiv(N, bn), triton.cdiv(M, block_m))
    _sp24_mm[grid](
        x, values, meta, y, bias if bias is not None else y,
        M, N, K, x.stride(0), y.stride(0),
        HAS_BIAS=bias is not None, EVEN_K=(K % bk == 0),
        BLOCK_M=block_m, BLOCK_N=bn, BLOCK_K=bk, X_A=x_a, num_warps=warps, num_stages=stages,
    )
    return y


def sp24_mm_wb(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None,
               out_features: int, block_m: int = 16, cfg=MMB_CONFIGS[16][0],
               out: torch.Tensor | None = None) -> torch.Tensor:
    """Like :func:`sp24_mm`, with x as the A operand of ``tl.dot``."""
    return sp24_mm(x, values, meta, bias, out_features, block_m, cfg, out, x_a=True)
