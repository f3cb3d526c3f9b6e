"""Packed-format encodings: exact inverses, the nm.py byte layout, sizes, validation of bad metadata."""
import pytest
import torch

from llmsparse.formats import codecs, native, nm

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def nm_weight(rows, cols, n, m, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g).to(dtype)
    idx = w.view(rows, cols // m, m).float().abs().topk(m - n, -1, largest=False)[1]
    w.view(rows, cols // m, m).scatter_(2, idx, 0)
    return w


def bits(t):
    return t.contiguous().view(torch.uint8)


@pytest.fixture(params=["native", "torch"])
def impl(request, monkeypatch):
    if request.param == "native":
        if native.lib() is None:
            pytest.skip("no C compiler: the native helpers are not built")
    else:
        monkeypatch.setattr(native, "lib", lambda: None)
    return request.param


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (2, 8), (3, 8), (8, 16)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nm_matches_reference_layout_and_inverts(impl, n, m, dtype):
    w = nm_weight(12, 96, n, m, dtype)
    w[0, :m] = 0  # an empty group: padded at the lowest positions
    w[1, : m - 1] = 0
    v, meta = codecs.pack_nm(w, n, m)
    rv, rmeta = nm.pack_nm(w, n, m)
    assert torch.equal(bits(v), bits(rv)) and torch.equal(meta, rmeta)
    assert torch.equal(bits(codecs.unpack_nm(v, meta, n, m, 96)), bits(w))
    assert torch.equal(bits(nm.unpack_nm(v, meta, n, m, 96)), bits(w))  # the kernels' reader agrees


def test_nm_odd_group_count(impl):
    w = nm_weight(5, 12, 2, 4, torch.float16)  # 3 groups: last meta byte half used
    v, meta = codecs.pack_nm(w, 2, 4)
    assert meta.shape == (5, 2)
    assert torch.equal(bits(codecs.unpack_nm(v, meta, 2, 4, 12)), bits(w))


def test_bitmask_round_trip_and_negative_zero(impl):
    w = torch.randn(6, 37)
    w[torch.rand_like(w) < 0.5] = 0
    bm, v, off = codecs.pack_bitmask(w)
    assert off.dtype == torch.int32 and off[0] == 0 and int(off[-1]) == v.numel() == int((w != 0).sum())
    assert torch.equal(bits(codecs.unpack_bitmask(bm, v, off, 37)), bits(w))
    # one -0.0 among the kept values: exact mode keeps it bit for bit
    w1 = w.clone()
    w1[0, 3] = -0.0
    ch, parts = codecs.encode_auto(w1)
    assert ch.encoding == "bitmask" and ch.exact
    back = codecs.decode({"encoding": "bitmask", "shape": [6, 37], "nnz": ch.nnz}, parts)
    assert torch.equal(bits(back), bits(w1))
    # every pruned zero -0.0 (a mask applied by multiplication): value mode, same bytes as +0.0 zeros
    w2 = w.clone()
    w2[w2 == 0] = -0.0
    ch2, parts2 = codecs.encode_auto(w2)
    assert ch2.encoding == "bitmask" and not ch2.exact
    assert torch.equal(parts2[".bitmask"], bm) and torch.equal(parts2[".values"], v)
    back2 = codecs.decode({"encoding": "bitmask", "shape": [6, 37], "nnz": ch2.nnz}, parts2)
    assert torch.equal(bits(back2), bits(w))


def test_negative_zeros_do_not_break_nm(impl):
    dense = torch.randn(8, 32).half()
    keep = nm_weight(8, 32, 2, 4, torch.float16) != 0
    w2 = dense * keep  # multiplying by a mask leaves -0.0 where pruned weights were negative
    assert bool((torch.signbit(w2) & (w2 == 0)).any())
    ch, parts = codecs.encode_auto(w2, (2, 4))
    assert ch.pattern == "2:4" and not ch.exact
    back = codecs.decode({"encoding": "nm", "n": 2, "m": 4, "shape": [8, 32]}, parts)
    assert torch.equal(back, w2)  # equal values (the sign of pruned zeros is not kept)
    # a -0.0 kept inside the pattern (fp16 underflow of a small weight): exact, bit for bit
    w3 = nm_weight(8, 32, 2, 4, torch.float16)
    w3[w3 != 0] = torch.where(torch.arange(int((w3 != 0).sum())) % 7 == 0, -0.0, w3[w3 != 0].float()).half()
    ch3, parts3 = codecs.encode_auto(w3, (2, 4))
    assert ch3.exact
    back3 = codecs.decode({"encoding": "nm", "n": 2, "m": 4, "shape": [8, 32]}, parts3)
    assert torch.equal(bits(back3), bits(w3))


def test_nm_rejects_weights_outside_the_pattern(impl):
    w = nm_weight(4, 16, 3, 4, torch.float32)
    with pytest.raises(codecs.FormatError):
        codecs.pack_nm(w, 2, 4)


def test_bad_nm_metadata_is_caught(impl):
    w = nm_weight(4, 16, 2, 4, torch.float16)
    v, meta = codecs.pack_nm(w, 2, 4)
    bad = meta.clone()
    bad[1, 0] = 0b0000_0000  # both kept positions of group 0 are 0: not strictly increasing
    with pytest.raises(codecs.FormatError, match="2:4"):
        codecs.unpack_nm(v, bad, 2, 4, 16)
    w3 = nm_weight(4, 12, 2, 4, torch.float16)
    v3, m3 = codecs.pack_nm(w3, 2, 4)
    m3 = m3.clone()
    m3[2, -1] |= 0xF0  # padding nibble of the last byte
    with pytest.raises(codecs.FormatError):
        codecs.unpack_nm(v3, m3, 2, 4, 12)


def test_bad_bitmask_metadata_is_caught(impl):
    w = torch.randn(4, 20)
    w[torch.rand_like(w) < 0.5] = 0
    bm, v, off = codecs.pack_bitmask(w)
    off2 = off.clone()
    off2[2] += 1
    with pytest.raises(codecs.FormatError):
        codecs.unpack_bitmask(bm, v, off2, 20)
    bm2 = bm.clone()
    bm2[0, -1] |= 0x80  # bit past the last column
    with pytest.raises(codecs.FormatError):
        codecs.unpack_bitmask(bm2, v, off, 20)


def test_choice_and_sizes_at_real_widths():
    # 2:4 fp16: 0.5 values + 1/16 metadata = 0.5625 of the dense bytes exactly
    w = nm_weight(64, 2048, 2, 4, torch.float16)
    ch, parts = codecs.encode_auto(w, (2, 4))
    assert ch.pattern == "2:4" and ch.encoding == "nm"
    stored = sum(t.numel() * t.element_size() for t in parts.values())
    assert stored == ch.nbytes and stored / (w.numel() * 2) <= 0.5625
    # auto picks 2:4 for a 2:4 weight too (smaller than 4:8)
    assert codecs.choose(w).pattern == "2:4"
    # 50% unstructured fp16 with a bitmask: at most 0.57x
    u = torch.randn(64, 2048).half()
    u[torch.rand(u.shape) < 0.5] = 0
    ch, parts = codecs.encode_auto(u)
    assert ch.encoding == "bitmask"
    stored = sum(t.numel() * t.element_size() for t in parts.values())
    assert stored == ch.nbytes and stored / (u.numel() * 2) <= 0.57
    # a dense weight stays dense; 4:8 is found on its own
    assert codecs.choose(torch.randn(8, 64)).encoding == "dense"
    assert codecs.choose(nm_weight(8, 64, 4, 8, torch.float32, seed=3)).pattern == "4:8"
    # a 3-D (fused experts) tensor: the pattern runs along the last dimension
    e = nm_weight(3 * 8, 32, 2, 4, torch.bfloat16).view(3, 8, 32)
    ch, parts = codecs.encode_auto(e, (2, 4))
    back = codecs.decode({"encoding": "nm", "n": 2, "m": 4, "shape": [3, 8, 32]}, parts)
    assert ch.pattern == "2:4" and torch.equal(bits(back), bits(e))
