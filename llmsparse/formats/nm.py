"""The packed N:M layout: defined once, read by the checkpoint format and by the GPU kernels.

For a weight ``W[out, in]`` in which every group of ``m`` consecutive input columns has at most
``n`` nonzeros (N:M, NVIDIA's convention; 2:4 keeps 2 of 4):

* ``values[out, in*n/m]``  the kept entries, in the weight's dtype, group by group, in increasing
  column order inside each group. A group with fewer than ``n`` nonzeros is padded with explicit
  zeros at the lowest unused positions, so every group stores exactly ``n`` values.
* ``meta[out, ceil(in*n/m * b / 8)]`` (uint8) the position of every kept value inside its group,
  ``b = ceil(log2(m))`` bits each, packed little-endian: value ``k`` of a row occupies bits
  ``k*b .. k*b+b-1`` of the row's bit string, bit ``i`` of the string being bit ``i % 8`` of byte
  ``i // 8``.

For 2:4 this is 2 bits per kept value, 4 bits per group, 2 groups per byte: the byte ``j`` of a row
describes columns ``8j .. 8j+7``; its low nibble holds group ``2j`` (first kept index in bits 0-1,
second in bits 2-3) and its high nibble group ``2j+1``. Bytes: ``values`` 0.5x the dense weight,
``meta`` 1/16 of dense fp16, 0.5625x in all.
"""
from __future__ import annotations

import math

import torch


def index_bits(m: int) -> int:
    return max(1, math.ceil(math.log2(m)))


def _pack_bits(codes: torch.Tensor, b: int) -> torch.Tensor:
    """codes: [rows, k] ints < 2**b  ->  uint8 [rows, ceil(k*b/8)], little-endian bit string."""
    rows, k = codes.shape
    shifts = torch.arange(b, device=codes.device)
    bits = ((codes.to(torch.int64).unsqueeze(-1) >> shifts) & 1).reshape(rows, k * b)
    nbytes = (k * b + 7) // 8
    pad = nbytes * 8 - k * b
    if pad:
        bits = torch.nn.functional.pad(bits, (0, pad))
    weights = (1 << torch.arange(8, device=codes.device)).to(torch.int64)
    return (bits.reshape(rows, nbytes, 8) * weights).sum(-1).to(torch.uint8)


def _unpack_bits(packed: torch.Tensor, k: int, b: int) -> torch.Tensor:
    rows, nbytes = packed.shape
    shifts = torch.arange(8, device=packed.device)
    bits = ((packed.to(torch.int64).unsqueeze(-1) >> shifts) & 1).reshape(rows, nbytes * 8)[:, : k * b]
    weights = (1 << torch.arange(b, device=packed.device)).to(torch.int64)
    return (bits.reshape(rows, k, b) * weights).sum(-1)


def pack_nm(weight: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack an N:M-sparse ``weight[out, in]`` into ``(values, meta)``. Raises if the pattern fails."""
    rows, cols = weight.shape
    if cols % m:
        raise ValueError(f"width {cols} is not divisible by M={m}")
    g = weight.reshape(rows, cols // m, m)
    nz = g != 0
    if int(nz.sum(-1).max()) > n if nz.numel() else False:
        raise ValueError(f"weight is not {n}:{m} sparse")
    # rank positions: nonzeros first (in column order), then zeros (in column order)
    pos = torch.arange(m, device=weight.device)
    key = (~nz).to(torch.int64) * m + pos  # smaller key = chosen earlier
    chosen = torch.sort(key, dim=-1)[1][..., :n]
    chosen = torch.sort(chosen, dim=-1)[0]  # increasing column order inside the group
    values = torch.gather(g, 2, chosen).reshape(rows, cols // m * n)
    meta = _pack_bits(chosen.reshape(rows, -1), index_bits(m))
    return values.contiguous(), meta


def unpack_nm(values: torch.Tensor, meta: torch.Tensor, n: int, m: int, in_features: int) -> torch.Tensor:
    """Inverse of :func:`pack_nm`: the dense weight with zeros in place (bitwise exact)."""
    rows = values.shape[0]
    groups = in_features // m
    idx = _unpack_bits(meta, groups * n, index_bits(m)).reshape(rows, groups, n)
    out = torch.zeros(rows, groups, m, dtype=values.dtype, device=values.device)
    out.scatter_(2, idx, values.reshape(rows, groups, n))
    return out.reshape(rows, in_features)


def meta_shape(out_features: int, in_features: int, n: int, m: int) -> tuple[int, int]:
    k = in_features // m * n
    return out_features, (k * index_bits(m) + 7) // 8
