"""The register assignment of the experimental ``mma.sp`` kernel (``llmsparse/kernels/gluon_mmsp.py``),
checked on the CPU against a model of the instruction (PTX ISA, ``mma.sp`` m16n8k32 with 16-bit
inputs, sparsity selector 0). The addresses below restate the kernel's formulas; the model restates
the PTX fragment layouts. If both are right the product equals x @ W^T; the GPU test
(``tests/gpu``) is what checks the hardware agrees."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from llmsparse.formats.nm import pack_nm
from llmsparse.kernels.dispatch import random_24


def _mma_sp_model(a_regs, b_regs, c_regs, e_regs):
    """D = A B + C for one warp: a/b/c regs [32 lanes, 4]; A/B as (lo, hi) float pairs, e: uint32 [32]."""
    A = np.zeros((16, 32))
    for i in range(16):
        for gi in range(8):
            lane_e = 4 * (i % 8) + gi // 4  # selector 0: lanes 4g (inputs 0-15) and 4g+1 (16-31)
            word = int(e_regs[lane_e])
            nib = (word >> (16 * (i // 8) + 4 * (gi % 4))) & 0xF
            i0, i1 = nib & 3, nib >> 2
            for which, idx in ((0, i0), (1, i1)):
                c = 2 * gi + which
                lane, reg, half = 4 * (i % 8) + (c % 8) // 2, (i // 8) + 2 * (c // 8), c % 2
                A[i, 4 * gi + idx] += a_regs[lane][reg][half]
    B = np.zeros((32, 8))
    for k in range(32):
        for n in range(8):
            B[k, n] = b_regs[4 * n + (k % 8) // 2][k // 8][k % 2]
    D = A @ B
    out = np.array(c_regs, dtype=np.float64)
    for i in range(16):
        for n in range(8):
            out[4 * (i % 8) + n // 2][2 * (i // 8) + n % 2] += D[i, n]
    return out


def _nib4(w: int, s: int) -> int:
    """The kernel's ``_nib4`` in Python integers (w: the 64-bit word of 16 nibbles)."""
    wa, wb = w & 0xFFFFFFFF, (w >> 32) & 0xFFFFFFFF
    u = (wa >> (4 * s)) & 0x000F000F
    v = (wb >> (4 * s)) & 0x000F000F
    c = u | (v << 8)
    return (c | (c >> 12)) & 0xFFFF


def _model_product(xpair, tiles, supersteps, a_of, e_of, order=1):
    """x @ W^T through the mma.sp model, as the kernel issues it: per 16-row tile r, super-step ss and MMA s,
    lane 4g + t gets A registers ``a_of(r, ss, s, lane, j)``, metadata ``e_of(r, ss, s, lane)`` and the B
    fragment words of x (``xpair[token, word]``: word 16 j + 8 (t // 2) + 2 s + t % 2 of the super-step; with
    ``order`` 2, MMA s covering inputs 32 s .. 32 s + 31 in order: word 16 s + 4 j + t);
    one accumulator per MMA s, summed at the end. Returns y [8 tokens, 16 tiles]."""
    y = np.zeros((8, 16 * tiles))
    for r in range(tiles):
        acc = [np.zeros((32, 4)) for _ in range(4)]
        for ss in range(supersteps):
            for s in range(4):
                a = [[a_of(r, ss, s, lane, j) for j in range(4)] for lane in range(32)]
                b = [[xpair[lane // 4, ss * 64 + (16 * j + 8 * (lane % 4 // 2) + 2 * s + lane % 2 if order == 1
                                                  else 16 * s + 4 * j + lane % 4)] for j in range(4)]
                     for lane in range(32)]
                e = np.array([e_of(r, ss, s, lane) for lane in range(32)], dtype=np.uint32)
                acc[s] = _mma_sp_model(a, b, acc[s], e)
        total = sum(acc)
        for lane in range(32):
            for j in range(4):
                y[2 * (lane % 4) + (j & 1), 16 * r + lane // 4 + 8 * (j >> 1)] = total[lane][j]
    return y


def test_nib4_picks_every_fourth_nibble():
    rng = np.random.default_rng(0)
    for _ in range(200):
        nibs = rng.integers(0, 16, size=16)
        w = sum(int(v) << (4 * p) for p, v in enumerate(nibs))
        for s in range(4):
            assert _nib4(w, s) == sum(int(nibs[s + 4 * c]) << (4 * c) for c in range(4))


@pytest.mark.parametrize("K", [128, 256])
def test_mmsp_register_assignment_computes_x_wt(K):
    """Super-steps of 128 inputs; MMA s of a super-step takes physical group 4 q + s as its group q."""
    N, M = 16, 8
    w = random_24(N, K, torch.float32, "cpu", generator=torch.Generator().manual_seed(0))
    vals, meta = pack_nm(w, 2, 4)  # values [N, K/2], meta [N, K/8] uint8
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(1))
    vpair = vals.view(N, K // 4, 2).numpy()  # int32 word (row, group) = the group's kept pair
    m64 = meta.numpy().view(np.uint64)  # int64 word (row, h) = nibbles of groups 16h..16h+15 (little endian)
    xpair = x.view(M, K // 2, 2).numpy()
    # the kernel's formulas, WK = RT = NT = 1, pid 0
    y = _model_product(
        xpair, 1, K // 128,
        lambda r, ss, s, lane, j: vpair[lane // 4 + 8 * (j & 1), ss * 32 + 16 * (j >> 1) + 4 * (lane % 4) + s],
        lambda r, ss, s, lane: (_nib4(int(m64[lane // 4, ss * 2 + lane % 2]), s)
                                | (_nib4(int(m64[lane // 4 + 8, ss * 2 + lane % 2]), s) << 16)))
    np.testing.assert_allclose(y, (x.double() @ w.double().t()).numpy(), rtol=1e-6, atol=1e-6)


def test_mma4_asm_names_each_mma_its_own_registers():
    """The 16-register pack: element s + 4 j is register j of MMA s, for D, A, B and C; E is element s."""
    from llmsparse.kernels.gluon_mmsp import _mma4_asm

    text = _mma4_asm("f16")
    parts = [p.strip() for p in text.split(";") if p.strip()]
    assert len(parts) == 4
    for s, p in enumerate(parts):
        groups = re.findall(r"\{([^}]*)\}", p)
        assert len(groups) == 4, p
        for base, grp in zip((0, 16, 32, 48), groups):
            assert [int(v.strip(" $")) for v in grp.split(",")] == [base + s + 4 * j for j in range(4)], p
        assert p.endswith(f"${64 + s}, 0x0"), p


@pytest.mark.parametrize("mo", [0, 1, 5])
def test_x_shuffle_permutation_gives_the_fragment_words(mo):
    """``_x_fragments``: x loaded as X'(lane 4g + t', register s', register j) = word 16 j + 4 t' + s',
    reshaped to bits [g, t'1, t'0, s'1, s'0, j], permuted by [g, t'1, s'0, t'0, s'1, j] and reshaped back, is
    the fragment word 16 j + 8 (t // 2) + 2 s + t % 2 of lane 4g + t, registers (s, j); with MO (registers
    (a, b): a = the MMA's register, b = the MMA) permuted by [g, t'1, s'0, j, t'0, s'1] it is word
    16 a + 8 (t // 2) + 2 b + t % 2; with MO = 5 (mma_order's copy of order 2: MMA b takes inputs 32 b .. 32 b + 31 in
    order) permuted by [g, s'1, s'0, t'1, t'0, j] it is word 16 b + 4 a + t (numpy's reshape/transpose have the
    same row-major semantics as Gluon's)."""
    xp = np.zeros((32, 4, 4), dtype=np.int64)
    for lane in range(32):
        for s in range(4):
            for j in range(4):
                xp[lane, s, j] = 1000 * (lane // 4) + 16 * j + 4 * (lane % 4) + s
    perm = {0: (0, 1, 4, 2, 3, 5), 1: (0, 1, 4, 5, 2, 3), 5: (0, 3, 4, 1, 2, 5)}[mo]
    b = xp.reshape(8, 2, 2, 2, 2, 4).transpose(*perm).reshape(32, 4, 4)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for r4 in range(4):
            for r5 in range(4):
                if mo == 5:
                    assert b[lane, r4, r5] == 1000 * g + 16 * r5 + 4 * r4 + t
                    continue
                hi, lo = (r4, r5) if mo else (r5, r4)
                assert b[lane, r4, r5] == 1000 * g + 16 * hi + 8 * (t // 2) + 2 * lo + t % 2


def test_chained_mma4_asm_accumulates_in_place_without_aliasing_inputs():
    """CH: MMA 0 reads C from the s = 0 accumulator inputs, MMAs 1-3 read and all write the s = 0 output
    registers; those outputs are early-clobber (written before the later MMAs read their A/B/E)."""
    from llmsparse.kernels.gluon_mmsp import _CONSTRAINTS_CHAIN_STR, _mma4_asm

    parts = [p.strip() for p in _mma4_asm("bf16", chain=True).split(";") if p.strip()]
    assert len(parts) == 4
    for s, p in enumerate(parts):
        d, a, b, c = ([int(v.strip(" $")) for v in g.split(",")] for g in re.findall(r"\{([^}]*)\}", p))
        assert d == [0, 4, 8, 12] and a == [16 + s + 4 * j for j in range(4)] and b == [32 + s + 4 * j for j in range(4)]
        assert c == ([48, 52, 56, 60] if s == 0 else [0, 4, 8, 12])
        assert p.endswith(f"${64 + s}, 0x0") and ".bf16.bf16." in p
    cons = _CONSTRAINTS_CHAIN_STR.split(",")
    assert len(cons) == 80 and [i for i, v in enumerate(cons) if v == "=&f"] == [0, 4, 8, 12]


@pytest.mark.parametrize("ss", [1, 3, 5, 8, 32, 64, 86, 224])
@pytest.mark.parametrize("wk", [2, 4, 8])
@pytest.mark.parametrize("sk", [1, 2, 3, 4, 16])
def test_mmsp_split_plan_covers_every_super_step_once(ss, wk, sk):
    """Split-K (the SK element): programs k = 0..splits-1 take super-steps k*I*wk + it*wk + warp, masked at
    ss; together they cover 0..ss-1 exactly once, none is empty, and 'even' means no masking at all."""
    from llmsparse.kernels.gluon_mmsp import split_plan

    splits, iters, even = split_plan(ss, wk, sk)
    assert 1 <= splits <= max(1, sk)
    seen = []
    for k in range(splits):
        mine = [k * iters * wk + it * wk + w for it in range(iters) for w in range(wk)]
        assert any(s < ss for s in mine), (k, splits, iters)
        seen += [s for s in mine if s < ss]
    assert sorted(seen) == list(range(ss))
    assert even == (splits * iters * wk == ss)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("N,K", [(16, 128), (37, 256), (32, 384)])
def test_mma_order_copy_hands_each_lane_its_mma_operands(N, K, order):
    """gluon_mmsp.mma_order: the MO kernel reads, for row tile r, super-step ss, MMA s and lane 4g + t, the
    four words ``values_mo[r, ss * 512 + s * 128 + 4 lane + j]`` (A registers j) and the metadata word
    ``meta_mo[r, ss * 64 + 8 g + 4 (t % 2) + s]``. Fed to the model of mma.sp with x's fragment words, they
    must give x @ W^T (rows past N: zero weights, valid indices). Order 2 (MO >= 2, x by ldmatrix): the same
    reads, with MMA s taking inputs 32 s .. 32 s + 31 of the super-step in order."""
    from llmsparse.kernels.gluon_mmsp import mma_order

    M = 8
    w = random_24(N, K, torch.float32, "cpu", generator=torch.Generator().manual_seed(2))
    vals, meta = pack_nm(w.half(), 2, 4)
    v_mo, m_mo = mma_order(vals, meta, order)
    tiles = -(-N // 16)
    assert v_mo.shape == (tiles, K // 128 * 512) and m_mo.shape == (tiles, K // 128 * 64)
    vw = v_mo.numpy().view(np.uint32)
    mw = m_mo.numpy().view(np.uint32)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(3)).half()
    xpair = x.float().view(M, K // 2, 2).numpy()
    y = _model_product(
        xpair, tiles, K // 128,
        lambda r, ss, s, lane, j: np.frombuffer(np.uint32(vw[r, ss * 512 + s * 128 + 4 * lane + j]).tobytes(),
                                                dtype=np.float16).astype(np.float64),
        lambda r, ss, s, lane: mw[r, ss * 64 + 8 * (lane // 4) + 4 * (lane % 4 % 2) + s], order)
    ref = (x.double() @ w.half().double().t()).numpy()
    np.testing.assert_allclose(y[:, :N], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y[:, N:], 0, atol=0)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("N,K,dtype", [(16, 128, torch.float16), (37, 384, torch.bfloat16), (80, 256, torch.float16)])
def test_row_major_order_undoes_mma_order_bit_for_bit(N, K, dtype, order):
    """gluon_mmsp.row_major_order (what a layer holding only an MMA-order copy gives back for its state and
    the other paths): the packed values and every metadata bit as pack_nm wrote them, padding rows dropped;
    a copy of the wrong shape is refused."""
    from llmsparse.kernels.gluon_mmsp import mma_order, row_major_order

    w = random_24(N, K, torch.float32, "cpu", generator=torch.Generator().manual_seed(N + order)).to(dtype)
    vals, meta = pack_nm(w, 2, 4)
    v_mo, m_mo = mma_order(vals, meta, order)
    v2, m2 = row_major_order(v_mo, m_mo, order, N, K, dtype)
    assert v2.dtype == dtype and m2.dtype == torch.uint8
    assert torch.equal(v2.view(torch.int16), vals.view(torch.int16)) and torch.equal(m2, meta)
    other = row_major_order(v_mo, m_mo, 3 - order, N, K, dtype)  # the other order reads other bits
    assert not (torch.equal(other[0].view(torch.int16), vals.view(torch.int16)) and torch.equal(other[1], meta))
    with pytest.raises(ValueError, match="MMA-order copy"):
        row_major_order(v_mo[:, :-1], m_mo, order, N, K, dtype)
