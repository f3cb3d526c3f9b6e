"""The packed N:M layout (llmsparse.formats.nm): exact round trips and the documented bytes."""
from __future__ import annotations

import pytest
import torch

from llmsparse.formats.nm import meta_shape, pack_nm, unpack_nm
from llmsparse.masks import nm_mask


def _sparse(rows, cols, n, m, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    w = torch.where(nm_mask(w.abs(), n, m), w, torch.zeros(()))  # +0.0 where pruned (not -0.0)
    # some groups with fewer than n nonzeros (padding rule), and some exact zeros kept
    w[0, :m] = 0
    if n >= 2:
        w[1, :m] = torch.tensor([0.0] * (m - 1) + [3.0])
    return w.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("nm", [(2, 4), (1, 4), (4, 8), (2, 8)])
def test_roundtrip_bitwise(dtype, nm):
    n, m = nm
    w = _sparse(16, 64, n, m, dtype)
    v, meta = pack_nm(w, n, m)
    assert v.dtype == dtype and meta.dtype == torch.uint8
    assert tuple(v.shape) == (16, 64 * n // m)
    assert tuple(meta.shape) == meta_shape(16, 64, n, m)
    back = unpack_nm(v, meta, n, m, 64)
    assert back.dtype == dtype
    assert torch.equal(back.view(torch.int16 if dtype != torch.float32 else torch.int32),
                       w.view(torch.int16 if dtype != torch.float32 else torch.int32))


def test_negative_zero_and_specials_survive():
    w = torch.tensor([[-0.0, 1.5, 0.0, float("inf")] * 2], dtype=torch.float16)
    v, meta = pack_nm(w, 2, 4)
    assert torch.equal(unpack_nm(v, meta, 2, 4, 8).view(torch.int16)[w != 0], w.view(torch.int16)[w != 0])


def test_24_bytes_by_hand():
    # row: [0, a, 0, b | c, 0, 0, d]: group 0 keeps columns (1, 3), group 1 keeps (0, 3)
    w = torch.tensor([[0.0, 1.0, 0.0, 2.0, 3.0, 0.0, 0.0, 4.0]], dtype=torch.float16)
    v, meta = pack_nm(w, 2, 4)
    assert v.tolist() == [[1.0, 2.0, 3.0, 4.0]]
    low = 1 | (3 << 2)  # group 0: first index in bits 0-1, second in bits 2-3
    high = 0 | (3 << 2)  # group 1 in the high nibble
    assert meta.tolist() == [[low | (high << 4)]]


def test_24_padding_rule():
    # a group with one nonzero at column 2 is padded with an explicit zero at the lowest unused position (0)
    w = torch.tensor([[0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    v, meta = pack_nm(w, 2, 4)
    assert v.tolist() == [[0.0, 5.0, 0.0, 0.0]]
    assert meta.tolist() == [[(0 | (2 << 2)) | ((0 | (1 << 2)) << 4)]]


def test_rejects_bad_pattern_and_width():
    with pytest.raises(ValueError):
        pack_nm(torch.ones(2, 8), 2, 4)
    with pytest.raises(ValueError):
        pack_nm(torch.zeros(2, 6), 2, 4)


def test_bytes_fraction_24():
    v, meta = pack_nm(_sparse(128, 256, 2, 4, torch.float16), 2, 4)
    dense = 128 * 256 * 2
    assert (v.numel() * 2 + meta.numel()) / dense == pytest.approx(0.5625)
