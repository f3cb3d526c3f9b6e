"""Per-tensor encodings of the packed checkpoint format (see ``docs/format.md``).

Pure tensor code: no files, no modules. Every encoder has an exact inverse (bitwise, for every
floating dtype) and every decoder validates what it reads.

* ``nm``      N:M-sparse weights in the layout of :mod:`llmsparse.formats.nm` (values + bit-packed
              in-group positions). The encoder here is a table-driven equivalent of
              :func:`llmsparse.formats.nm.pack_nm` (same bytes; tested against it) that is fast
              enough for 7B-sized checkpoints on a CPU.
* ``bitmask`` unstructured sparsity: ``bitmask[rows, ceil(cols/8)]`` (uint8, bit ``j`` of a row is
              bit ``j % 8`` of byte ``j // 8``), the nonzero values in row-major order, and
              ``row_offsets[rows+1]`` (prefix sum of per-row counts; int32 when it fits, else int64).
* ``dense``   the tensor unchanged.

Exact by default: only +0.0 is a zero, a -0.0 is a kept value, so a round trip is bitwise exact.
When a weight satisfies a pattern only if -0.0 counts as zero (a pruning mask applied by
multiplication leaves -0.0 behind), or when a bitmask would be noticeably smaller that way, the
weight is encoded in "value" mode (``exact=False``): -0.0 at pruned positions read back as +0.0,
an equal value. Tensors with more than two dimensions (fused MoE experts ``[E, out, in]``) are encoded as
``[prod(leading), last]``; the pattern runs along the last (input) dimension.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from . import native
from . import nm as _nm

_INT_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class FormatError(ValueError):
    """A packed tensor that does not decode (bad shape, bad metadata, broken pattern)."""


def nonzero_mask(w: torch.Tensor, exact: bool = True) -> torch.Tensor:
    """True where a value is kept: any bit pattern but +0.0 (``exact``), or any nonzero value."""
    if w.is_floating_point() and not exact:
        return w != 0
    return w.contiguous().view(_INT_VIEW[w.element_size()]) != 0


def as_rows(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(-1, w.shape[-1]) if w.dim() != 2 else w


# ---------------------------------------------------------------- N:M ---------------------------------

@lru_cache(maxsize=None)
def _nm_encode_tables(n: int, m: int):
    """For each occupancy code (bit j set = position j holds a kept value): whether at most n are
    set, the n stored positions (nonzeros, then the lowest free positions; increasing) and the
    group's packed index bits."""
    b = _nm.index_bits(m)
    size = 1 << m
    valid = torch.zeros(size, dtype=torch.bool)
    pos = torch.zeros(size, n, dtype=torch.int64)
    gbits = torch.zeros(size, dtype=torch.int64)
    for c in range(size):
        nzp = [j for j in range(m) if (c >> j) & 1]
        if len(nzp) > n:
            continue
        valid[c] = True
        free = [j for j in range(m) if not (c >> j) & 1][: n - len(nzp)]
        p = sorted(nzp + free)
        pos[c] = torch.tensor(p)
        gbits[c] = sum(pj << (j * b) for j, pj in enumerate(p))
    return valid, pos, gbits


@lru_cache(maxsize=None)
def _nm_decode_tables(n: int, m: int):
    """For each group's packed index bits: the n positions and whether they are a valid group
    (strictly increasing, each < m)."""
    b = _nm.index_bits(m)
    nb = n * b
    codes = torch.arange(1 << nb, dtype=torch.int64)
    idx = torch.stack([(codes >> (j * b)) & ((1 << b) - 1) for j in range(n)], -1)
    ok = (idx < m).all(-1)
    if n > 1:
        ok &= (idx[:, 1:] > idx[:, :-1]).all(-1)
    return idx, ok


def _chunking(nb: int):
    """Groups of ``nb`` bits are combined into chunks of whole bytes: (groups per chunk, bytes per chunk)."""
    L = nb * 8 // math.gcd(nb, 8)
    return L // nb, L // 8


def nm_fast_ok(n: int, m: int) -> bool:
    nb = n * _nm.index_bits(m)
    return m <= 8 and _chunking(nb)[1] <= 7 and nb <= 16


def nm_bytes(rows: int, cols: int, n: int, m: int, elem: int) -> int:
    return rows * (cols // m * n) * elem + rows * _nm.meta_shape(rows, cols, n, m)[1]


def nm_max_count(nz: torch.Tensor, m: int) -> int:
    rows, cols = nz.shape
    if cols % m or nz.numel() == 0:
        return m + 1
    return int(nz.view(rows, cols // m, m).sum(-1, dtype=torch.int32).max())


def pack_nm(w: torch.Tensor, n: int, m: int, nz: torch.Tensor | None = None,
            exact: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``w[rows, cols]`` N:M-sparse (bit-pattern zeros) -> ``(values[rows, cols*n/m], meta uint8)``,
    byte for byte the layout of :func:`llmsparse.formats.nm.pack_nm`. Raises FormatError if the
    pattern does not hold."""
    rows, cols = w.shape
    if cols % m:
        raise FormatError(f"width {cols} is not divisible by M={m}")
    if nz is None and native.lib() is not None and w.is_contiguous():
        r = native.pack_nm(w, n, m, _nm.index_bits(m), _nm.meta_shape(rows, cols, n, m)[1], exact)
        if r is None:
            raise FormatError(f"weight is not {n}:{m} sparse")
        return r[0], r[1]
    if not nm_fast_ok(n, m):  # wide groups: the reference packer (value mode)
        try:
            return _nm.pack_nm(w, n, m)
        except ValueError as e:
            raise FormatError(str(e)) from None
    G = cols // m
    if nz is None:
        nz = nonzero_mask(w, exact)
    nzg = nz.view(rows, G, m)
    code = nzg[..., 0].to(torch.uint8)
    for j in range(1, m):
        code |= nzg[..., j].to(torch.uint8) << j
    code = code.to(torch.int64)
    valid, pos, gbits = _nm_encode_tables(n, m)
    if not bool(valid[code].all()):
        raise FormatError(f"weight is not {n}:{m} sparse")
    values = torch.gather(w.view(rows, G, m), 2, pos[code]).reshape(rows, G * n)
    gb = gbits[code]  # [rows, G] int64, n*b bits each
    del code
    meta = _pack_groups(gb, n * _nm.index_bits(m), _nm.meta_shape(rows, cols, n, m)[1])
    return values.contiguous(), meta


def _pack_groups(gb: torch.Tensor, nb: int, nbytes: int) -> torch.Tensor:
    rows, G = gb.shape
    per, cbytes = _chunking(nb)
    pad = (-G) % per
    if pad:
        gb = torch.nn.functional.pad(gb, (0, pad))
    gb = gb.view(rows, -1, per)
    chunk = gb[..., 0].clone()
    for i in range(1, per):
        chunk |= gb[..., i] << (i * nb)
    if cbytes == 1:
        out = chunk.to(torch.uint8)
    else:
        out = torch.stack([((chunk >> (8 * k)) & 255).to(torch.uint8) for k in range(cbytes)], -1).view(rows, -1)
    return out[:, :nbytes].contiguous()


def _unpack_groups(meta: torch.Tensor, G: int, nb: int) -> torch.Tensor:
    rows, nbytes = meta.shape
    per, cbytes = _chunking(nb)
    nchunks = -(-G // per)
    pad = nchunks * cbytes - nbytes
    m8 = meta
    if pad > 0:
        m8 = torch.nn.functional.pad(meta, (0, pad))
    m8 = m8[:, : nchunks * cbytes].view(rows, nchunks, cbytes).to(torch.int64)
    chunk = m8[..., 0].clone()
    for k in range(1, cbytes):
        chunk |= m8[..., k] << (8 * k)
    mask = (1 << nb) - 1
    if per == 1:
        gb = chunk & mask
    else:
        gb = torch.stack([(chunk >> (i * nb)) & mask for i in range(per)], -1).view(rows, nchunks * per)
    return gb[:, :G]


def _nm_group_indices(meta: torch.Tensor, n: int, m: int, cols: int) -> torch.Tensor:
    """The ``[rows, cols/m, n]`` positions held in N:M index metadata, validated (strictly increasing
    inside each group, each < M; padding bits zero); on the metadata's device. Raises FormatError."""
    rows = meta.shape[0]
    G = cols // m
    b = _nm.index_bits(m)
    nb = n * b
    if nb <= 16 and _chunking(nb)[1] <= 7:
        gb = _unpack_groups(meta, G, nb)
        idx_t, ok_t = (t.to(meta.device) for t in _nm_decode_tables(n, m))
        if not bool(ok_t[gb].all()):
            raise FormatError(f"index metadata does not describe a {n}:{m} pattern")
        idx = idx_t[gb]
    else:
        idx = _nm._unpack_bits(meta, G * n, b).reshape(rows, G, n)
        if bool((idx >= m).any()) or (n > 1 and not bool((idx[..., 1:] > idx[..., :-1]).all())):
            raise FormatError(f"index metadata does not describe a {n}:{m} pattern")
    total_bits = G * nb
    if total_bits % 8 and meta.shape[1]:
        if bool((meta[:, -1].to(torch.int32) >> (total_bits % 8)).any()):
            raise FormatError("padding bits of the index metadata are not zero")
    return idx


def check_nm_meta(meta: torch.Tensor, n: int, m: int, cols: int) -> None:
    """The validation :func:`unpack_nm` makes, without building the dense weight. Raises FormatError."""
    _nm_group_indices(meta, n, m, cols)


def unpack_nm(values: torch.Tensor, meta: torch.Tensor, n: int, m: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`pack_nm`, validating the metadata (positions strictly increasing inside
    each group, each < M; padding bits zero). Raises FormatError."""
    rows = values.shape[0]
    G = cols // m
    b = _nm.index_bits(m)
    if native.lib() is not None:
        out, bad = native.unpack_nm(values, meta, n, m, b, cols)
        if out is None:
            what = "index metadata does not describe a" if bad % 2 == 0 else "padding bits set in the index metadata of a"
            raise FormatError(f"{what} {n}:{m} pattern (row {bad // 2})")
        return out
    idx = _nm_group_indices(meta, n, m, cols)
    out = torch.zeros(rows, G, m, dtype=values.dtype)
    out.scatter_(2, idx, values.view(rows, G, n))
    return out.view(rows, cols)


# ---------------------------------------------------------------- bitmask -----------------------------

def bitmask_bytes(rows: int, cols: int, nnz: int, elem: int) -> int:
    off = 4 if nnz < 2**31 else 8
    return rows * ((cols + 7) // 8) + nnz * elem + (rows + 1) * off


def pack_bitmask(w: torch.Tensor, nz: torch.Tensor | None = None, exact: bool = True):
    """``w[rows, cols]`` -> ``(bitmask uint8 [rows, ceil(cols/8)], values [nnz], row_offsets [rows+1])``."""
    rows, cols = w.shape
    if nz is None and native.lib() is not None and w.is_contiguous():
        bm, values, offsets = native.pack_bitmask(w, exact)
        if int(offsets[-1]) < 2**31:
            offsets = offsets.to(torch.int32)
        return bm, values, offsets
    if nz is None:
        nz = nonzero_mask(w, exact)
    pad = (-cols) % 8
    nzp = torch.nn.functional.pad(nz, (0, pad)) if pad else nz
    nzp = nzp.view(rows, -1, 8)
    bm = nzp[..., 0].to(torch.uint8)
    for k in range(1, 8):
        bm |= nzp[..., k].to(torch.uint8) << k
    counts = nz.sum(1)
    offsets = torch.zeros(rows + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=offsets[1:])
    if int(offsets[-1]) < 2**31:
        offsets = offsets.to(torch.int32)
    values = w[nz]
    return bm.contiguous(), values.contiguous(), offsets


def unpack_bitmask(bitmask: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor, cols: int) -> torch.Tensor:
    rows = bitmask.shape[0]
    off = offsets.to(torch.int64)
    if int(off[0]) != 0 or int(off[-1]) != values.numel() or bool((off[1:] < off[:-1]).any()):
        raise FormatError(f"row_offsets must rise from 0 to {values.numel()} (the number of stored values); "
                          f"they run from {int(off[0])} to {int(off[-1])}")
    if native.lib() is not None:
        out, bad = native.unpack_bitmask(bitmask, values, off, cols)
        if out is None:
            raise FormatError(f"row {bad}: the bitmask disagrees with row_offsets or has bits set past the last column")
        return out
    shifts = torch.arange(8, dtype=torch.uint8)
    bits = ((bitmask.unsqueeze(-1) >> shifts) & 1).view(rows, -1).bool()
    if bits.shape[1] > cols and bool(bits[:, cols:].any()):
        raise FormatError("bitmask has bits set past the last column")
    mask = bits[:, :cols]
    counts = mask.sum(1)
    if not torch.equal(off[1:] - off[:-1], counts):
        bad = int(((off[1:] - off[:-1]) != counts).nonzero()[0, 0])
        raise FormatError(f"row {bad}: the bitmask marks {int(counts[bad])} values but row_offsets give "
                          f"{int(off[bad + 1] - off[bad])}")
    out = torch.zeros(rows, cols, dtype=values.dtype)
    out[mask] = values
    return out


# ---------------------------------------------------------------- choice ------------------------------

@dataclass
class Choice:
    encoding: str  # 'nm' | 'bitmask' | 'dense'
    pattern: str  # '2:4' | 'unstructured' | 'dense'
    n: int = 0
    m: int = 0
    nnz: int = 0
    nbytes: int = 0
    exact: bool = True  # False: -0.0 counted as zero (read back as +0.0)


AUTO_M = (4, 8)


def _stats(w2: torch.Tensor, exact: bool = True) -> tuple[int, int, int]:
    if native.lib() is not None:
        return native.group_stats(w2, exact)
    nz = nonzero_mask(w2, exact)
    return int(nz.sum()), (nm_max_count(nz, 4) if w2.shape[1] % 4 == 0 else -1), \
        (nm_max_count(nz, 8) if w2.shape[1] % 8 == 0 else -1)


def _nm_holds(w2, stats, n, m, exact) -> bool:
    cols = w2.shape[1]
    if cols % m:
        return False
    if m == 4:
        return stats[1] <= n
    if m == 8:
        return stats[2] <= n
    return nm_max_count(nonzero_mask(w2, exact), m) <= n


def _best_auto(stats, rows, cols, elem, exact) -> Choice | None:
    nnz, mx4, mx8 = stats
    best = None
    if nnz > 0:
        for m, mx in ((4, mx4), (8, mx8)):
            if mx < 0:
                continue
            n = max(1, mx)
            if n <= m // 2:
                c = Choice("nm", f"{n}:{m}", n, m, nnz, nm_bytes(rows, cols, n, m, elem), exact)
                if best is None or c.nbytes < best.nbytes:
                    best = c
    return best


def choose(w: torch.Tensor, prefer: tuple[int, int] | None = None) -> Choice:
    """Pick the encoding for a weight: ``prefer`` (an N:M pattern) when it holds, else the smallest
    of n:4 / n:8 with n <= m/2 that holds, else a bitmask when that is smaller than dense, else dense.
    Exact mode (-0.0 kept) unless the pattern needs -0.0 read as zero, or the bitmask is >1% smaller so."""
    w2 = as_rows(w.contiguous())
    rows, cols = w2.shape
    elem = w.element_size()
    dense_b = w.numel() * elem
    if w.numel() == 0:
        return Choice("dense", "dense", nbytes=0)
    se = _stats(w2, True)
    sv = _stats(w2, False) if w.is_floating_point() else se
    if sv[0] == w.numel():  # not a single zero
        return Choice("dense", "dense", nnz=sv[0], nbytes=dense_b)
    modes = [(se, True)] + ([(sv, False)] if sv != se else [])
    if prefer is not None:
        n, m = prefer
        for st, ex in modes:
            if _nm_holds(w2, st, n, m, ex):
                return Choice("nm", f"{n}:{m}", n, m, st[0], nm_bytes(rows, cols, n, m, elem), ex)
    for st, ex in modes:
        best = _best_auto(st, rows, cols, elem, ex)
        if best is not None:
            return best
    be, bv = bitmask_bytes(rows, cols, se[0], elem), bitmask_bytes(rows, cols, sv[0], elem)
    if be < dense_b and be <= bv * 1.01:
        return Choice("bitmask", "unstructured", nnz=se[0], nbytes=be)
    if bv < dense_b:
        return Choice("bitmask", "unstructured", nnz=sv[0], nbytes=bv, exact=False)
    return Choice("dense", "dense", nnz=se[0], nbytes=dense_b)


def encode_auto(w: torch.Tensor, prefer: tuple[int, int] | None = None) -> tuple[Choice, dict[str, torch.Tensor]]:
    """:func:`choose` + :func:`encode`; with ``prefer`` and the native helpers, one pass when it holds."""
    if prefer is not None and native.lib() is not None and w.dtype.is_floating_point:
        n, m = prefer
        w2 = as_rows(w.contiguous())
        rows, cols = w2.shape
        if cols % m == 0 and w.numel():
            r = native.pack_nm(w2, n, m, _nm.index_bits(m), _nm.meta_shape(rows, cols, n, m)[1], True)
            if r is not None and r[2] < w.numel():
                ch = Choice("nm", f"{n}:{m}", n, m, r[2], nm_bytes(rows, cols, n, m, w.element_size()))
                return ch, {".values": r[0], ".meta": r[1]}
    ch = choose(w, prefer)
    return ch, encode(w, ch)


def encode(w: torch.Tensor, choice: Choice) -> dict[str, torch.Tensor]:
    """Stored components (name suffix -> tensor) of ``w`` under ``choice``."""
    if choice.encoding == "dense":
        return {"": w.contiguous()}
    w2 = as_rows(w.contiguous())
    if choice.encoding == "nm":
        v, meta = pack_nm(w2, choice.n, choice.m, exact=choice.exact)
        return {".values": v, ".meta": meta}
    bm, v, off = pack_bitmask(w2, exact=choice.exact)
    return {".bitmask": bm, ".values": v, ".row_offsets": off}


def component_shapes(entry: dict) -> dict[str, tuple[tuple[int, ...], str | None]]:
    """Expected (shape, dtype) of each stored component of a layer entry (dtype None: the layer dtype)."""
    shape = [int(s) for s in entry["shape"]]
    rows, cols = math.prod(shape[:-1]), shape[-1]
    enc = entry["encoding"]
    if enc == "nm":
        n, m = entry["n"], entry["m"]
        return {".values": ((rows, cols // m * n), None), ".meta": (_nm.meta_shape(rows, cols, n, m), "uint8")}
    if enc == "bitmask":
        return {".bitmask": ((rows, (cols + 7) // 8), "uint8"), ".values": ((int(entry["nnz"]),), None),
                ".row_offsets": ((rows + 1,), "int32|int64")}
    raise FormatError(f"unknown encoding '{enc}'")


def decode(entry: dict, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    shape = [int(s) for s in entry["shape"]]
    cols = shape[-1]
    if entry["encoding"] == "nm":
        out = unpack_nm(parts[".values"], parts[".meta"], entry["n"], entry["m"], cols)
    elif entry["encoding"] == "bitmask":
        out = unpack_bitmask(parts[".bitmask"], parts[".values"], parts[".row_offsets"], cols)
    else:
        raise FormatError(f"unknown encoding '{entry['encoding']}'")
    return out.view(shape)
