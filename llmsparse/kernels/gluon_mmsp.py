"""``mmsp``: a 2:4 kernel on the *sparse* tensor cores (``mma.sp`` m16n8k32), for decode sizes.

A dispatcher candidate for M <= 16 (``dispatch.DEFAULT_PATHS``). The first version (one 32-bit load per
operand register) was correct on an H200 but 0.2-1.07x of dense cuBLAS; this wide-load version is
1.2-1.7x at M = 2-8 and 1.0-1.43x at M = 16 there, and 1.33-1.68x at M = 2-8 and 1.07-1.56x at M = 16 on
an H100 (docs/kernels-log.md).

Why: the decode kernels ``gemvg``/``mmg`` spend 6-8 instructions per kept weight selecting inputs or
rebuilding dense MMA fragments. ``mma.sp`` takes the compressed 2:4 operand and its 2-bit indices.

Fragments (PTX ISA, m16n8k32, 16-bit inputs, sparsity selector 0), per warp and MMA:

* A (16 rows x 32 inputs = 8 groups of 4, compressed to 16 x 16): lane ``4g + t`` holds in register j
  the kept pair (one int32 of ``values``) of row ``g + 8 (j & 1)`` and group ``t + 4 (j >> 1)``;
* metadata: lanes ``4g`` / ``4g + 1`` hold a 32-bit word, low half the 4 nibbles of row ``g`` for groups
  0-3 / 4-7, high half those of row ``g + 8``; one nibble is ``i0 | i1 << 2``;
* B (32 inputs x 8 tokens): lane ``4n + t`` holds in register j the inputs ``2t + 8j``, ``+1`` of token n;
* D (fp32): register j of lane ``4g + t`` is row ``g + 8 (j >> 1)``, token ``2t + (j & 1)``.

The reduction index of an MMA may be any permutation of K, applied to A and B alike. Here one
*super-step* of 4 MMAs covers 128 inputs (32 groups), and MMA ``s`` (0-3) of a super-step takes as its
group q (0-7) the physical group ``4q + s``. Then the 4 A registers a lane needs for the 4 MMAs of one
(row, q) are 4 consecutive int32 of ``values``: one 16-byte load per (row, group half), 8 rows x 64
contiguous bytes per warp instruction (the first version: 8 rows x 16 bytes). The metadata of the 4 MMAs
is rebuilt from one 8-byte load per row (16 nibbles; MMA s takes nibbles s, s+4, s+8, s+12): a 4 x 4 nibble
transpose by byte permutes (:func:`_meta4`; :data:`META` = 0: shifts and masks per MMA). B is read either
with one 32-bit load per register (inputs ``8q + 2s + ...``) or, with ``XS``, with 16-byte loads whose index
bits are then permuted into the fragments by warp shuffles (:func:`_x_fragments`). ``CH`` chains the 4 MMAs
of a super-step into one accumulator to free registers for more row tiles; measured on an H100 it won only
where the grid stays full (two configurations below). ``SK`` splits K over programs (fp32 partial sums, then
``gluon_sp24._splitk_reduce``), for shapes whose grid leaves SMs idle (4096 rows: one 4-warp program per
SM). ``RW`` makes the warps of a program split its rows instead of its super-steps:
they then read the same x (L1 hits after the first warp: at M = 16 the x re-reads were as many L2 bytes as
the weights) and need no reduction across warps. ``PD`` (measured: it does not pay, see MMSP_CONFIGS) prefetches each warp's packed weights ``PD`` iterations ahead into L2
(``prefetch.global.L2``, one line of values and one of metadata per row): on an H100 at M = 16 the kernel
waits on its global loads with 8 warps per SM and reaches 75% of DRAM bandwidth (Nsight Compute,
docs/kernels-log.md); loads that hit L2 have a shorter latency for the same registers in flight. ``AS`` stages
every operand through an ``AS``-deep shared-memory ring filled by ``cp.async`` instead of prefetching
into registers, so the bytes in flight hold no registers (what cuBLAS does with its shared-memory
pipeline); each thread reads back only the pieces it copied itself. Measured on an H100 (ninth session):
correct, but within 1% of the register-prefetch configurations at M = 16 and slower at M = 1 (see
MMSP_CONFIGS), so it is an option, not a default.

All operands live in one register layout ``[WK, RT, NT, 32 lanes, 4 (s), 4 (j)]`` (warps split the
super-steps; RT 16-row tiles; NT 8-token tiles) whose first four register bits are s and j, so the
16 registers of one (row tile, token tile) are one ``inline_asm_elementwise`` pack of 4 MMAs, and the
loads along s are contiguous registers (vectorized). Needs ``in_features % 128 == 0``.
"""
from __future__ import annotations

import torch

from . import gluon_sp24 as _gsp
from .envknob import env_choice
from .gluon_sp24 import AVAILABLE, _log2, _splitk_reduce, supported

try:
    import triton
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.ampere import async_copy

    try:  # Hopper's bulk tensor copies (TMA) for the TM configurations
        from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
        TMA_AVAILABLE = hasattr(gl, "SharedLinearLayout")
    except Exception:  # pragma: no cover - depends on the installed Triton
        TMA_AVAILABLE = False

    MMSP_AVAILABLE = AVAILABLE and hasattr(gl, "DistributedLinearLayout") and hasattr(gl, "inline_asm_elementwise")
    if MMSP_AVAILABLE:
        from .gluon_sp24 import gdc_enter, gdc_launch_dependents
except Exception:  # pragma: no cover - depends on the installed Triton
    MMSP_AVAILABLE = TMA_AVAILABLE = False


_LAYOUTS: dict = {}


def mmsp_layout(wk: int, rt: int, nt: int):
    """The register layout ``[WK, RT, NT, 32, 4 (s), 4 (j)]`` of :func:`_sp24_mmsp_gl`."""
    key = (wk, rt, nt)
    if key not in _LAYOUTS:
        def e(dim, v):
            b = [0] * 6
            b[dim] = v
            return b

        _LAYOUTS[key] = gl.DistributedLinearLayout(
            reg_bases=[e(4, 1), e(4, 2), e(5, 1), e(5, 2)] + [e(1, 1 << i) for i in range(_log2(rt))]
            + [e(2, 1 << i) for i in range(_log2(nt))],
            lane_bases=[e(3, 1 << i) for i in range(5)],
            warp_bases=[e(0, 1 << i) for i in range(_log2(wk))],
            block_bases=[], shape=[wk, rt, nt, 32, 4, 4])
    return _LAYOUTS[key]


_XL_LAYOUTS: dict = {}


def xl_layouts(wk: int, nt: int, rw: bool) -> dict:
    """The register layouts of x's shared-memory ring stage ``[KX, NT, 8 tokens, 64 words]`` (KX = 1 with RW,
    else WK) for MO >= 2: ``XLC``, the copy's (4 consecutive words per thread: 16-byte cp.async; warps over the
    tiles, or with RW over the tokens), and ``XLR``, the fragments' (lane 4g + t, register (b, a) = word
    16 a + 4 b + t of token g: ldmatrix; with RW every warp reads the same words)."""
    key = (wk, nt, bool(rw))
    if key not in _XL_LAYOUTS:
        kx = 1 if rw else wk
        warps = [1, 1, wk, 1] if rw else [wk, 1, 1, 1]
        xlc = gl.BlockedLayout([1, 1, 1, 4], [1, 1, 2, 16], warps, [3, 2, 1, 0])
        xlr = gl.DistributedLinearLayout(
            reg_bases=[[0, 0, 0, 4], [0, 0, 0, 8], [0, 0, 0, 16], [0, 0, 0, 32]] + [[0, 1 << i, 0, 0] for i in range(_log2(nt))],
            lane_bases=[[0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 1, 0], [0, 0, 2, 0], [0, 0, 4, 0]],
            warp_bases=[[0, 0, 0, 0] if rw else [1 << i, 0, 0, 0] for i in range(_log2(wk))],
            block_bases=[], shape=[kx, nt, 8, 64])
        _XL_LAYOUTS[key] = {"XLC": xlc, "XLR": xlr}
    return _XL_LAYOUTS[key]


_TMA_LAYOUTS: dict = {}


def tma_layouts(wk: int, rt: int) -> dict:
    """The shared-memory layouts of a TM configuration: ``VS`` / ``MS``, the unswizzled row-major tiles the
    bulk tensor copies write (``values`` [16 RT rows, 32 WK int32] and ``meta`` [16 RT rows, 2 WK int64]: WK
    super-steps of 16 RT rows), and ``VL`` / ``ML``, the same bytes seen as the register layout's shapes
    ``[WK, RT, 1, 32, 4, 4]`` / ``[WK, RT, 1, 32, 1, 1]`` (bases: element offset bit -> logical index), so
    that one ``load`` puts every operand where :func:`_sp24_mmsp_gl` puts it from global memory. Metadata:
    lane ``4g + t`` takes the int64 ``t % 2`` of row ``g + 8 (t >> 1)`` (lanes t = 2, 3 are not read by
    the MMA, which takes metadata from lanes 0 and 1 of each quad); the tile copied from row 8 onward gives
    rows g + 8 to lanes t = 0, 1."""
    key = (wk, rt)
    if key not in _TMA_LAYOUTS:
        def e(dim, v):
            b = [0] * 6
            b[dim] = v
            return b

        kw = [e(0, 1 << i) for i in range(_log2(wk))]
        rts = [e(1, 1 << i) for i in range(_log2(rt))]
        vl = gl.SharedLinearLayout([e(4, 1), e(4, 2), e(3, 1), e(3, 2), e(5, 2)] + kw          # columns
                                   + [e(3, 4), e(3, 8), e(3, 16), e(5, 1)] + rts)             # rows
        ml = gl.SharedLinearLayout([e(3, 1)] + kw + [e(3, 4), e(3, 8), e(3, 16), e(3, 2)] + rts)
        _TMA_LAYOUTS[key] = {
            "VS": gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=2),
            "MS": gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=64, rank=2),
            "VL": vl, "ML": ml}
    return _TMA_LAYOUTS[key]


def _mma4_asm(ab: str, chain: bool = False, mo: bool = False) -> str:
    """Four m16n8k32 sparse MMAs over one 16-register pack (element ``s + 4 j``: MMA s, register j; with
    ``mo``, the MMA-order configurations, element ``j + 4 s``: the registers of one MMA are consecutive).
    ``chain``: the four accumulate into one accumulator, the elements of s = 0 (C of MMA 0 in, D of MMA
    3 out); the other 12 outputs are left unwritten. The metadata of MMA s is the pack's element (s, j = 0)."""
    def el(s, j):
        return 4 * s + j if mo else s + 4 * j

    def regs(base, s):
        return "{" + ",".join(f"${base + el(s, j)}" for j in range(4)) + "}"

    if chain:
        return " ".join(f"mma.sp.sync.aligned.m16n8k32.row.col.f32.{ab}.{ab}.f32 {regs(0, 0)}, {regs(16, s)}, "
                        f"{regs(32, s)}, {regs(48 if s == 0 else 0, 0)}, ${64 + el(s, 0)}, 0x0;" for s in range(4))
    return " ".join(f"mma.sp.sync.aligned.m16n8k32.row.col.f32.{ab}.{ab}.f32 {regs(0, s)}, {regs(16, s)}, "
                    f"{regs(32, s)}, {regs(48, s)}, ${64 + el(s, 0)}, 0x0;" for s in range(4))


_CONSTRAINTS_STR = ",".join(["=f"] * 16 + ["r"] * 32 + ["f"] * 16 + ["r"] * 16)
# chained: the accumulator outputs are written before the last inputs are read, so they must not share
# a register with any input (early clobber)
_CONSTRAINTS_CHAIN_STR = ",".join(["=&f" if e % 4 == 0 else "=f" for e in range(16)] + ["r"] * 32 + ["f"] * 16
                                  + ["r"] * 16)



def kernel_consts(cfg: tuple, is_bf16: bool) -> dict:
    """The compile-time arguments of :func:`_sp24_mmsp_gl` for a configuration ``(WK, RT, NT, PF[, XS[,
    CH[, PD[, SK[, RW[, AS[, FX]]]]]]]])`` (the launcher and the offline compiler both use it; SK, the number of K
    splits, is the launcher's: it sets the grid and ``SPLIT``, see :func:`config_splits`). ``KSTEP`` (super-
    steps per iteration of a program) and ``ROWS`` (rows per program) follow from WK, RT and RW."""
    wk, rt, nt, pf = cfg[:4]
    xs = bool(cfg[4]) if len(cfg) > 4 else False
    ch = bool(cfg[5]) if len(cfg) > 5 else False
    pd = int(cfg[6]) if len(cfg) > 6 else 0
    rw = bool(cfg[8]) if len(cfg) > 8 else False
    stages = int(cfg[9]) if len(cfg) > 9 else 0
    fx = int(cfg[10]) if len(cfg) > 10 else 0
    tm = int(cfg[11]) if len(cfg) > 11 else 0
    mo = int(cfg[12]) if len(cfg) > 12 else 0
    kernel_options(cfg)  # validates RG (14th element)
    if mo not in (0, 1, 2, 3, 4, 5) or (mo and (ch or pd or stages or tm)):
        raise ValueError(f"mmsp MMA-order weights (13th element) must be 0-5, without CH, PD, AS or TM: {cfg}")
    if 2 <= mo <= 4 and (pf == 0 or xs or (rw and wk > 4)):
        raise ValueError(f"mmsp MO = 2-4 (x through shared memory, MO stages) needs PF = 1-3, no XS, and WK <= 4 "
                         f"with RW: {cfg}")
    if tm < 0 or tm == 1 or (tm and (rw or stages or pd)):
        raise ValueError(f"mmsp TMA stages (12th element) must be 0 or >= 2, without RW, AS or PD: {cfg}")
    if fx not in (0, 1):
        raise ValueError(f"mmsp split-K fixup (11th element) must be 0 or 1: {cfg}")
    if pd < 0:
        raise ValueError(f"mmsp prefetch distance must be >= 0, got {pd}")
    if pf not in (0, 1, 2, 3) or (pf == 3 and pd):
        raise ValueError(f"mmsp register prefetch (4th element) must be 0-3 (3: one ahead, unrolled by two; "
                         f"no PD): {cfg}")
    if stages < 0 or stages == 1 or (stages and (pf or pd)):
        raise ValueError(f"mmsp shared-memory stages must be 0 or >= 2, without register or L2 prefetch: {cfg}")
    return {"L": mmsp_layout(wk, rt, nt), "WK": wk, "RT": rt, "NT": nt, "PF": pf, "XS": xs, "CH": ch, "PD": pd,
            "RW": rw, "AS": stages, "FX": fx, "TM": tm, "MO": mo, "KSTEP": 1 if rw else wk,
            "XD": mo if 2 <= mo <= 4 else 0, **(xl_layouts(wk, nt, rw) if 2 <= mo <= 4 else {}),
            "ROWS": 16 * rt * (wk if rw else 1),
            "PL": gl.BlockedLayout([1, max(1, 16 * rt // 32)], [1, 32], [wk, 1], [1, 0]),
            "IS_BF16": is_bf16, "ASM": _mma4_asm("bf16" if is_bf16 else "f16", chain=ch, mo=bool(mo)),
            "CONSTRAINTS": _CONSTRAINTS_CHAIN_STR if ch else _CONSTRAINTS_STR}


def _meta4_asm() -> str:
    """PTX of :func:`_meta4` (pack 4: outputs $0-$3 = MMA s = 0..3; $4 = row g's 16 nibbles, $8 = row g + 8's):
    per 32-bit half a delta swap of the nibbles 12 bits apart (mask 0xF0F0), per row two byte permutes across
    the halves (the transpose), then per MMA one byte permute joining row g's halfword with row g + 8's."""
    swap = " ".join(f"shr.b32 t, {r}, 12; xor.b32 t, t, {r}; and.b32 t, t, 0xF0F0; shl.b32 u, t, 12; "
                    f"xor.b32 t, t, u; xor.b32 {r}, {r}, t;" for r in ("l0", "l1", "h0", "h1"))
    return ("{ .reg .b32 l<2>, h<2>, a<2>, b<2>, t, u; mov.b64 {l0, l1}, $4; mov.b64 {h0, h1}, $8; " + swap
            + " prmt.b32 a0, l0, l1, 0x6240; prmt.b32 a1, l0, l1, 0x7351; prmt.b32 b0, h0, h1, 0x6240;"
            " prmt.b32 b1, h0, h1, 0x7351; prmt.b32 $0, a0, b0, 0x5410; prmt.b32 $1, a0, b0, 0x7632;"
            " prmt.b32 $2, a1, b1, 0x5410; prmt.b32 $3, a1, b1, 0x7632; }")


if MMSP_AVAILABLE:
    _META4_ASM = gl.constexpr(_meta4_asm())

    @gluon.jit
    def _ar(n: gl.constexpr, dim: gl.constexpr, L: gl.constexpr):
        """arange(n) along ``dim`` of the 6-D layout L, expanded to rank 6 (size 1 elsewhere)."""
        if dim == 0:
            lay: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, gl.SliceLayout(4, gl.SliceLayout(5, L)))))
            r = gl.arange(0, n, layout=lay)
            return r[:, None, None, None, None, None]
        elif dim == 1:
            lay: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(2, gl.SliceLayout(3, gl.SliceLayout(4, gl.SliceLayout(5, L)))))
            r = gl.arange(0, n, layout=lay)
            return r[None, :, None, None, None, None]
        elif dim == 2:
            lay: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(3, gl.SliceLayout(4, gl.SliceLayout(5, L)))))
            r = gl.arange(0, n, layout=lay)
            return r[None, None, :, None, None, None]
        elif dim == 3:
            lay: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(4, gl.SliceLayout(5, L)))))
            r = gl.arange(0, n, layout=lay)
            return r[None, None, None, :, None, None]
        elif dim == 4:
            lay: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, gl.SliceLayout(5, L)))))
            r = gl.arange(0, n, layout=lay)
            return r[None, None, None, None, :, None]
        else:
            lay: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, gl.SliceLayout(4, L)))))
            r = gl.arange(0, n, layout=lay)
            return r[None, None, None, None, None, :]

    @gluon.jit
    def _mmsp_ids(WK: gl.constexpr, RT: gl.constexpr, NT: gl.constexpr, L: gl.constexpr):
        """The index tensors of the register layout L, each expanded to rank 6: warp kw, row tile rt, token
        tile nt, lane (g = lane // 4, t = lane % 4), s and j."""
        lane = _ar(32, 3, L)
        return (_ar(WK, 0, L), _ar(RT, 1, L), _ar(NT, 2, L), lane, _ar(4, 4, L), _ar(4, 5, L), lane // 4,
                lane % 4)

    @gluon.jit
    def _mmsp_load_w(v_ptr, m_ptr, a_off, m_lo, m_hi, kw, ss0, SS, EVEN_K: gl.constexpr, MO: gl.constexpr = 0,
                     EV: gl.constexpr = 0):
        """The packed weights of one super-step (``ss0 + kw``) of every warp; past the end (uneven K): zero
        weights, valid indices (0, 1) in the metadata. MO: the MMA-order copy (:func:`mma_order`; 512 words
        of values and 64 metadata words per 16-row tile and super-step; the metadata words are the MMAs',
        returned twice)."""
        if MO:
            if EVEN_K:
                va = _ldv(v_ptr + (a_off + ss0 * 512), None, EV)
                wl = _ldw(m_ptr + (m_lo + ss0 * 64), None, None, EV)
            else:
                ok = (ss0 + kw) < SS
                va = _ldv(v_ptr + (a_off + ss0 * 512), ok, EV)
                wl = _ldw(m_ptr + (m_lo + ss0 * 64), ok, 0x44444444, EV)
            wh = wl
        elif EVEN_K:
            va = _ldv(v_ptr + (a_off + ss0 * 32), None, EV)
            wl = _ldw(m_ptr + (m_lo + ss0 * 2), None, None, EV)
            wh = _ldw(m_ptr + (m_hi + ss0 * 2), None, None, EV)
        else:
            ok = (ss0 + kw) < SS
            va = _ldv(v_ptr + (a_off + ss0 * 32), ok, EV)
            wl = _ldw(m_ptr + (m_lo + ss0 * 2), ok, 0x4444444444444444, EV)
            wh = _ldw(m_ptr + (m_hi + ss0 * 2), ok, 0x4444444444444444, EV)
        return va, wl, wh

    @gluon.jit
    def _ldw(ptr, mask, other, EV: gl.constexpr):
        """A load of packed weights (``mask``/``other`` as ``gl.load``'s, both None for none) with the cache policy
        EV (:data:`EVICT`): 0 plain, 1 (the default) ``evict_first`` (``ld.global.L1::evict_first``; SASS ``LDG.E.EF``),
        2 ``.cg`` (cached in L2, not L1; ``LDG.E.STRONG.GPU``); 3 as 1 here (:func:`_ldv` takes the values). Each
        weight is read once per call, so no policy should cost a hit."""
        if EV == 1 or EV == 3:
            v = gl.load(ptr, mask=mask, other=other, eviction_policy="evict_first")
        elif EV == 2:
            v = gl.load(ptr, mask=mask, other=other, cache_modifier=".cg")
        else:
            v = gl.load(ptr, mask=mask, other=other)
        return v

    @gluon.jit
    def _ldv(ptr, mask, EV: gl.constexpr):
        """The packed values' load (int32; ``mask`` None for none, zeros where it is false) with the cache policy EV:
        as :func:`_ldw`, or with EV = 3 ``ld.global.L1::no_allocate`` (not allocated in L1 at all), which Triton's
        loads do not offer: inline PTX, one 16-byte load per 4 consecutive registers of a thread (the layouts'
        lowest register bits are 4 consecutive words of ``values``, as the plain loads' vectorization relies on too;
        the offline test checks the 16-byte count)."""
        if EV == 3:
            a = ptr.to(gl.int64, bitcast=True)
            if mask is None:
                v = gl.inline_asm_elementwise(
                    "ld.global.L1::no_allocate.v4.b32 {$0, $1, $2, $3}, [$4];",
                    "=r,=r,=r,=r,l,l,l,l", [a], dtype=gl.int32, is_pure=True, pack=4)
            else:
                v = gl.inline_asm_elementwise(
                    "{ .reg .pred p; setp.ne.b32 p, $8, 0; mov.b32 $0, 0; mov.b32 $1, 0; mov.b32 $2, 0; "
                    "mov.b32 $3, 0; @p ld.global.L1::no_allocate.v4.b32 {$0, $1, $2, $3}, [$4]; }",
                    "=r,=r,=r,=r,l,l,l,l,r,r,r,r", [a, mask.to(gl.int32)], dtype=gl.int32, is_pure=True, pack=4)
        else:
            if mask is None:
                v = _ldw(ptr, None, None, EV)
            else:
                v = _ldw(ptr, mask, 0, EV)
        return v

    @gluon.jit
    def _mmsp_load_x(x_ptr, b_off, kw, ss0, SS, EVEN_K: gl.constexpr):
        """The inputs of one super-step (``ss0 + kw``) of every warp; zeros past the end (uneven K)."""
        if EVEN_K:
            xb = gl.load(x_ptr + (b_off + ss0 * 64))
        else:
            xb = gl.load(x_ptr + (b_off + ss0 * 64), mask=(ss0 + kw) < SS, other=0)
        return xb

    @gluon.jit
    def _mmsp_load(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, kw, ss0, SS, EVEN_K: gl.constexpr,
                   MO: gl.constexpr = 0, EV: gl.constexpr = 0):
        """The operands of one super-step (``ss0 + kw``) of every warp (:func:`_mmsp_load_w`,
        :func:`_mmsp_load_x`)."""
        va, wl, wh = _mmsp_load_w(v_ptr, m_ptr, a_off, m_lo, m_hi, kw, ss0, SS, EVEN_K, MO, EV)
        xb = _mmsp_load_x(x_ptr, b_off, kw, ss0, SS, EVEN_K)
        return va, wl, wh, xb

    @gluon.jit
    def _mmsp_first(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, kw, ss0, SS, EVEN_K: gl.constexpr,
                    EWA: gl.constexpr, GDC: gl.constexpr, MO: gl.constexpr = 0, EV: gl.constexpr = 0):
        """The operands of the first super-step a program reads. With ``EWA`` (early weights under PDL) its
        packed weights are requested *before* ``griddepcontrol.wait`` -- no kernel before this one writes
        them (:data:`EARLY`) -- and x, the previous kernel's output, after it."""
        if EWA:
            va, wl, wh = _mmsp_load_w(v_ptr, m_ptr, a_off, m_lo, m_hi, kw, ss0, SS, EVEN_K, MO, EV)
            gdc_enter(GDC)
            xb = _mmsp_load_x(x_ptr, b_off, kw, ss0, SS, EVEN_K)
        else:
            va, wl, wh, xb = _mmsp_load(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, kw, ss0, SS, EVEN_K, MO, EV)
        return va, wl, wh, xb

    @gluon.jit
    def _mmsp_issue(va_d, wl_d, wh_d, xb_d, x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, kw, ss0, LIM):
        """cp.async of the operands of super-step ``ss0 + kw`` of every warp into one stage of the shared
        ring (as :func:`_mmsp_load` reads them), skipped (zero-filled) where ``ss0 + kw >= LIM``; one
        commit group."""
        ok = (ss0 + kw) < LIM
        async_copy.async_copy_global_to_shared(va_d, v_ptr + (a_off + ss0 * 32), mask=ok)
        async_copy.async_copy_global_to_shared(wl_d, m_ptr + (m_lo + ss0 * 2), mask=ok)
        async_copy.async_copy_global_to_shared(wh_d, m_ptr + (m_hi + ss0 * 2), mask=ok)
        async_copy.async_copy_global_to_shared(xb_d, x_ptr + (b_off + ss0 * 64), mask=ok)
        async_copy.commit_group()

    @gluon.jit
    def _l2_prefetch(v_ptr, m_ptr, pv, pm, p_kw, ss, SS):
        """Prefetch into L2 the packed weights of super-step ``ss + p_kw`` (clamped to the last: no address
        past the tensors) of the rows whose ``values`` / ``meta`` row starts are ``pv`` / ``pm`` (one row per
        element): the 128-byte line of values (a row's super-step is one aligned line) and the line holding
        its 16 bytes of metadata, no registers held while they travel. ``PD`` > 0 issues these ``PD`` iterations ahead of the loads,
        so the loads find the weights in L2. (Per-lane ``prefetch.global.L2``: the bulk prefetch takes a
        warp-uniform address, which ptxas serializes over the lanes.)"""
        sk = gl.minimum(ss + p_kw, SS - 1)
        av = (v_ptr + (pv + sk * 32)).to(gl.int64, bitcast=True)
        am = (m_ptr + (pm + sk * 2)).to(gl.int64, bitcast=True)
        gl.inline_asm_elementwise("prefetch.global.L2 [$1]; prefetch.global.L2 [$2]; mov.b32 $0, 0;",
                                  "=r,l,l", [av, am], dtype=gl.int32, is_pure=False, pack=1)

    @gluon.jit
    def _nib4(w, s4):
        """From 16 nibbles (int64 w: groups p = 0..15 of a row, nibble p at bit 4p) the 16-bit field
        ``n[s] | n[s+4] << 4 | n[s+8] << 8 | n[s+12] << 12`` (s4 = 4 s), in the low half of an int32."""
        u = ((w.to(gl.int32)) >> s4) & 0x000F000F  # n[s] at bit 0, n[s+4] at bit 16
        v = ((w >> 32).to(gl.int32) >> s4) & 0x000F000F  # n[s+8] at bit 0, n[s+12] at bit 16
        c = u | (v << 8)  # n[s] | n[s+8] << 8 | n[s+4] << 16 | n[s+12] << 24
        return c | (c >> 12)

    @gluon.jit
    def _meta4(wl, wh, s4):
        """The metadata words of the 4 MMAs of a super-step (the elements s = 0..3, as ``(_nib4(wl, 4 s) &
        0xFFFF) | _nib4(wh, 4 s) << 16``) with byte permutes: each row's 16 nibbles are a 4 x 4 nibble matrix
        (row r = the nibbles 4r..4r+3) whose transpose holds MMA s's 4 nibbles in halfword s. Transposed in
        two swaps: nibbles 12 bits apart inside each 32-bit half (a delta swap), then bytes across the
        halves (``prmt``); a last ``prmt`` per MMA joins row g's halfword (low) with row g + 8's (high).
        About 24 instructions per row tile and super-step instead of about 45 (sm_90, offline); on an H100
        (eleventh session) bit-identical outputs and 0.98-1.00x the time of the old build per row at M = 16."""
        return gl.inline_asm_elementwise(_META4_ASM, "=r,=r,=r,=r,l,l,l,l,l,l,l,l,r,r,r,r", [wl, wh, s4],
                                         dtype=gl.int32, is_pure=True, pack=4)

    @gluon.jit
    def _x_fragments(xb, L: gl.constexpr, WK: gl.constexpr, NT: gl.constexpr, MO: gl.constexpr = 0):
        """From x loaded 16 bytes per lane (lane 4g + t', register s' holds word 16 j + 4 t' + s') to the B
        fragments (lane 4g + t, register s holds word 16 j + 8 (t // 2) + 2 s + t % 2): bits t'0 = s1,
        s'0 = t0, s'1 = s0 -- a permutation of index bits, one lane bit exchanged with a register bit,
        which the compiler does with warp shuffles. MO (dimension 4 = the register ``a`` of an MMA, 5 = the
        MMA ``b``; the same 16-byte loads): the fragments are words 16 a + 8 (t // 2) + 2 b + t % 2, so
        a = j, t0 = s'0, b1 = t'0, b0 = s'1 -- again one lane bit exchanged with a register bit. MO = 5 (the copy of
        order 2): words 16 b + 4 a + t, so t = s', a = t' -- two lane bits exchanged with two register bits."""
        x9 = gl.reshape(xb, [WK, 1, NT, 8, 2, 2, 2, 2, 4])  # [.., g, t'1, t'0, s'1, s'0, j]
        if MO == 5:  # order 2 (mma_order(order=2)): words 16 b + 4 a + t, so t = s', a = t', b = j
            b9 = gl.permute(x9, [0, 1, 2, 3, 6, 7, 4, 5, 8])  # [.., g, t1 = s'1, t0 = s'0, a1 = t'1, a0 = t'0, b = j]
        elif MO:
            b9 = gl.permute(x9, [0, 1, 2, 3, 4, 7, 8, 5, 6])  # [.., g, t1 = t'1, t0 = s'0, a = j, b1 = t'0, b0 = s'1]
        else:
            b9 = gl.permute(x9, [0, 1, 2, 3, 4, 7, 5, 6, 8])  # [.., g, t1 = t'1, t0 = s'0, s1 = t'0, s0 = s'1, j]
        return gl.convert_layout(gl.reshape(b9, [WK, 1, NT, 32, 4, 4]), L)

    @gluon.jit
    def _mmsp_mma(va, wl, wh, xb, acc, s4, ASM: gl.constexpr, CONSTRAINTS: gl.constexpr, XS: gl.constexpr,
                  L: gl.constexpr, WK: gl.constexpr, NT: gl.constexpr, CH: gl.constexpr, META: gl.constexpr = 0,
                  MO: gl.constexpr = 0):
        if MO:  # the MMA-order copy holds the metadata words themselves
            meta = wl
        elif META:
            meta = _meta4(wl, wh, s4)
        else:
            meta = (_nib4(wl, s4) & 0xFFFF) | (_nib4(wh, s4) << 16)
        if XS:
            xb = _x_fragments(xb, L, WK, NT, MO)
        acc = gl.inline_asm_elementwise(ASM, CONSTRAINTS, [va, xb, acc, meta], dtype=gl.float32, is_pure=True,
                                        pack=16)
        if CH:  # one accumulator per tile pair (the s = 0 elements; the others are constant zeros)
            acc = gl.where(s4 == 0, acc, 0.0)
        return acc

    @gluon.jit
    def _ar4(n: gl.constexpr, dim: gl.constexpr, L: gl.constexpr):
        """arange(n) along ``dim`` of the 4-D layout L, expanded to rank 4 (size 1 elsewhere)."""
        if dim == 0:
            r = gl.arange(0, n, layout=gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, L))))
            return r[:, None, None, None]
        elif dim == 1:
            r = gl.arange(0, n, layout=gl.SliceLayout(0, gl.SliceLayout(2, gl.SliceLayout(3, L))))
            return r[None, :, None, None]
        elif dim == 2:
            r = gl.arange(0, n, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(3, L))))
            return r[None, None, :, None]
        else:
            r = gl.arange(0, n, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, L))))
            return r[None, None, None, :]

    @gluon.jit
    def _xl_issue(dst, x_ptr, x_off, xc_kw, ss, SS, EVEN_K: gl.constexpr):
        """cp.async of x's super-step(s) ``ss (+ warp)`` ([KX, NT, 8 tokens, 64 words]) into one ring stage; past K:
        skipped (zero-filled); one commit group."""
        if EVEN_K:
            async_copy.async_copy_global_to_shared(dst, x_ptr + (x_off + ss * 64))
        else:
            async_copy.async_copy_global_to_shared(dst, x_ptr + (x_off + ss * 64), mask=(ss + xc_kw) < SS)
        async_copy.commit_group()

    @gluon.jit
    def _xl_step(xs, it, x_ptr, x_off, xc_kw, sb, ITERS, SS, EVEN_K: gl.constexpr, XD: gl.constexpr,
                 KSTEP: gl.constexpr, XLR: gl.constexpr, L: gl.constexpr, KX: gl.constexpr, NT: gl.constexpr):
        """Iteration ``it``'s B fragments from the ring, and the copy of iteration ``it + XD - 1`` into the stage read
        an iteration ago (after the barrier that also makes this stage's copies visible to every thread)."""
        async_copy.wait_group(XD - 2)
        gl.thread_barrier()
        xb = _xl_fragments(xs.index(it % XD), XLR, L, KX, NT)
        nx = it + XD - 1
        _xl_issue(xs.index(nx % XD), x_ptr, x_off, xc_kw, sb + gl.minimum(nx, ITERS - 1) * KSTEP, SS, EVEN_K)
        return xb

    @gluon.jit
    def _xl_fragments(src, XLR: gl.constexpr, L: gl.constexpr, KX: gl.constexpr, NT: gl.constexpr):
        """The B fragments of one ring stage, by ldmatrix: lane 4g + t, register b of MMA a = word 16 a + 4 b + t of
        token g (XLR; mma_order(order=2)), relabelled to L's [KX, 1, NT, 32, 4 (b), 4 (a)] (no data moves)."""
        v = gl.reshape(src.load(XLR), [KX, NT, 8, 4, 4, 4])  # [.., g, a, b, t]
        v = gl.permute(v, [0, 1, 2, 5, 4, 3])  # [.., g, t, b, a]
        return gl.convert_layout(gl.reshape(v, [KX, 1, NT, 32, 4, 4]), L)

    @gluon.jit
    def _mmsp_x_offsets(M, stride_xw, pid_m, nt, g, t, kk, s, j, NT: gl.constexpr, XS: gl.constexpr,
                        MO: gl.constexpr):
        """Word offsets of the B fragments ([WK, 1, NT, 32, 4, 4]) of super-step kk: token ``8 (pid_m NT + nt) + g``
        (past M: token M - 1); inputs 2t + 8j (+1) of MMA s are the inputs 4 (4 q + s) + 2 (t % 2) of q = 2 j +
        t // 2: word 16 j + 8 (t // 2) + 2 s + t % 2 (MO: the roles of s and j swapped; XS, with or without MO:
        16-byte loads of words 16 j + 4 t + s, permuted into the fragments by _x_fragments; MO = 5, the copy of
        order 2: word 16 j + 4 s + t)."""
        tok = gl.minimum(pid_m * (8 * NT) + nt * 8 + g, M - 1).to(gl.int64)
        if XS:  # with or without MO: the permutation into the fragments differs (_x_fragments)
            return tok * stride_xw + kk * 64 + 16 * j + 4 * t + s
        elif MO == 5:  # the copy of order 2: MMA j covers the super-step's inputs 32 j .. 32 j + 31 in order
            return tok * stride_xw + kk * 64 + 16 * j + 4 * s + t
        elif MO:
            return tok * stride_xw + kk * 64 + 16 * s + 8 * (t // 2) + 2 * j + (t % 2)
        else:
            return tok * stride_xw + kk * 64 + 16 * j + 8 * (t // 2) + 2 * s + (t % 2)

    @gluon.jit
    def _mmsp_epilogue(acc, n0, pid_m, pid_k, M, N, MN, y_ptr, b_ptr, o_ptr, c_ptr, stride_ym, stride_om,
                       L: gl.constexpr, RW: gl.constexpr, RT: gl.constexpr, WK: gl.constexpr, NT: gl.constexpr,
                       SPLIT: gl.constexpr, FX: gl.constexpr, HAS_BIAS: gl.constexpr, GDC: gl.constexpr):
        """Sum the accumulators over s (and over the warps, without RW) and store: the output (+ bias), or
        with SPLIT the fp32 partials (FX: the last program of the output tile adds them all)."""
        if RW:  # each warp holds whole sums for its own rows: no reduction across warps
            out = gl.sum(acc, axis=4)  # [WK, RT, NT, 32, 4]
            L5: gl.constexpr = gl.SliceLayout(4, L)
            o_kw = gl.arange(0, WK, layout=gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, gl.SliceLayout(4, L5)))))
            o_r5 = gl.arange(0, RT, layout=gl.SliceLayout(0, gl.SliceLayout(2, gl.SliceLayout(3, gl.SliceLayout(4, L5)))))
            o_n5 = gl.arange(0, NT, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(3, gl.SliceLayout(4, L5)))))
            o_l5 = gl.arange(0, 32, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(4, L5)))))
            o_j5 = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, L5)))))
            o_kw = o_kw[:, None, None, None, None]
            o_rt = o_r5[None, :, None, None, None]
            o_nt = o_n5[None, None, :, None, None]
            o_ln = o_l5[None, None, None, :, None]
            o_j = o_j5[None, None, None, None, :]
            o_row = n0 + o_kw * (16 * RT) + o_rt * 16 + o_ln // 4 + 8 * (o_j >> 1)
        else:
            out = gl.sum(gl.sum(acc, axis=4), axis=0)  # [RT, NT, 32, 4]
            LO: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(4, L))
            o_rt = gl.arange(0, RT, layout=gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, LO))))[:, None, None, None]
            o_nt = gl.arange(0, NT, layout=gl.SliceLayout(0, gl.SliceLayout(2, gl.SliceLayout(3, LO))))[None, :, None, None]
            o_ln = gl.arange(0, 32, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(3, LO))))[None, None, :, None]
            o_j = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, LO))))[None, None, None, :]
            o_row = n0 + o_rt * 16 + o_ln // 4 + 8 * (o_j >> 1)
        o_tok = pid_m * (8 * NT) + o_nt * 8 + 2 * (o_ln % 4) + (o_j & 1)
        if SPLIT and FX:
            # in-kernel split-K fixup: store this program's partial; the last program of the tile to finish
            # (an acq_rel counter per tile, behind a barrier so every thread's partial is stored first) adds
            # all S partials in split order 0..S-1 (its own from registers), as _splitk_reduce does (bit for
            # bit the same result, whichever program is last), adds the bias and resets the counter to 0
            o_ok = (o_tok < M) & (o_row < N)
            p_ptrs = y_ptr + o_tok.to(gl.int64) * stride_ym + o_row
            if GDC == 1:
                gdc_launch_dependents()
            gl.store(p_ptrs + pid_k.to(gl.int64) * MN, out, mask=o_ok)
            gl.thread_barrier()
            tile = c_ptr + pid_m * gl.num_programs(0) + gl.program_id(0)
            done = gl.atomic_add(tile, 1, sem="acq_rel", scope="gpu")
            if done == gl.num_programs(2) - 1:
                tot = gl.zeros_like(out)
                for k in range(0, gl.num_programs(2)):
                    other = gl.load(p_ptrs + k * MN, mask=o_ok & (k != pid_k), other=0.0, cache_modifier=".cg")
                    tot += gl.where(k == pid_k, out, other)
                if HAS_BIAS:
                    tot += gl.load(b_ptr + gl.minimum(o_row, N - 1)).to(gl.float32)
                o_ptrs = o_ptr + o_tok.to(gl.int64) * stride_om + o_row
                gl.store(o_ptrs, tot.to(o_ptr.dtype.element_ty), mask=o_ok)
                gl.store(tile, 0)
        else:
            if HAS_BIAS:
                out += gl.load(b_ptr + gl.minimum(o_row, N - 1)).to(gl.float32)
            y_ptrs = y_ptr + o_tok.to(gl.int64) * stride_ym + o_row
            if SPLIT:
                y_ptrs += pid_k.to(gl.int64) * MN
            if GDC == 1:
                gdc_launch_dependents()
            gl.store(y_ptrs, out.to(y_ptr.dtype.element_ty), mask=(o_tok < M) & (o_row < N))


    @gluon.jit
    def _sp24_mmsp_gl(
        x_ptr, v_ptr, m_ptr, y_ptr, b_ptr,
        M, N, SS, KG, KM, stride_xw, stride_ym, ITERS, MN, o_ptr, c_ptr, stride_om,
        L: gl.constexpr, HAS_BIAS: gl.constexpr, IS_BF16: gl.constexpr, EVEN_K: gl.constexpr, SPLIT: gl.constexpr,
        WK: gl.constexpr, RT: gl.constexpr, NT: gl.constexpr, PF: gl.constexpr, XS: gl.constexpr,
        CH: gl.constexpr, PD: gl.constexpr, PL: gl.constexpr, RW: gl.constexpr, AS: gl.constexpr, KSTEP: gl.constexpr,
        ROWS: gl.constexpr, ASM: gl.constexpr, CONSTRAINTS: gl.constexpr, GDC: gl.constexpr = 0,
        FX: gl.constexpr = 0, META: gl.constexpr = 0, EW: gl.constexpr = 0, TM: gl.constexpr = 0, EV: gl.constexpr = 0,
        MO: gl.constexpr = 0, XD: gl.constexpr = 0, XLC: gl.constexpr = None, XLR: gl.constexpr = None,
    ):
        # EWA: with PDL and EW (EARLY) the register-prefetch paths request the first super-step's weights before
        # griddepcontrol.wait (_mmsp_first); otherwise nothing is read or written before the previous kernel is done
        EWA: gl.constexpr = GDC != 0 and EW != 0 and AS == 0 and PF != 0
        if GDC and not EWA:
            gdc_enter(GDC)
        # x_ptr: int32 [M, K/2] (stride_xw words per token); v_ptr: int32 [N, KG = K/4] (a group's kept
        # pair); m_ptr: int64 [N, KM = K/64] (16 nibbles); SS = K/128 super-steps; ITERS = cdiv(SS, WK).
        pid_n = gl.program_id(0)
        pid_m = gl.program_id(1)
        # split-K (SPLIT): program_id(2) takes ITERS iterations (ITERS * WK super-steps) from sb and writes
        # fp32 partial sums to y_ptr[split, M, N] (MN = M * N, stride_ym = N); _splitk_reduce adds them, or
        # with FX the last program of each output tile to finish (counted in c_ptr) adds them into o_ptr
        pid_k = gl.program_id(2)
        # RW: the warps split the program's rows (WK groups of RT row tiles) and all read the same super-step
        # (x from L1 after the first warp), instead of splitting the super-steps of one row block; KSTEP
        # super-steps per iteration of a program, ROWS rows per program (kernel_consts)
        if SPLIT:
            sb = pid_k * (ITERS * KSTEP)
        else:
            sb = 0
        kw, rt, nt, lane, s, j, g, t = _mmsp_ids(WK, RT, NT, L)
        if RW:
            kk = kw * 0  # the warp's super-step within an iteration (shape [WK, 1, ...] kept)
            rw = kw * (16 * RT)  # the warp's first row within the program
        else:
            kk = kw
            rw = kw * 0
        n0 = pid_n * ROWS
        if MO:
            # the MMA-order copy (mma_order): the roles of the last two dimensions swap -- dimension 4 (``s``
            # here) is the register of an MMA, dimension 5 (``j``) the MMA -- so that a lane's four registers of
            # one MMA are consecutive (one 16-byte load, no operand moves; _mma4_asm(mo=True)). Tiles past
            # the last read the last (their outputs are not stored).
            tile = gl.minimum((n0 + rw) // 16 + rt, (N + 15) // 16 - 1).to(gl.int64)
            a_off = tile * (SS * 512) + kk * 512 + 128 * j + 4 * lane + s
            m_lo = tile * (SS * 64) + kk * 64 + 8 * g + 4 * (t % 2) + j
            m_hi = m_lo
        else:
            # A: [WK, RT, 1, 32, 4, 4]; rows past N read row N-1 (their outputs are not stored). MMA s takes
            # the physical group 4 q + s as its group q = t + 4 (j >> 1): word 16 (j >> 1) + 4 t + s.
            row_a = gl.minimum(n0 + rw + rt * 16 + g + 8 * (j & 1), N - 1).to(gl.int64)
            a_off = row_a * KG + kk * 32 + 16 * (j >> 1) + 4 * t + s
            # metadata: the 16 nibbles of groups 16 (t % 2) .. + 15 of rows g and g + 8 (one int64 each)
            row_l = gl.minimum(n0 + rw + rt * 16 + g, N - 1).to(gl.int64)
            row_h = gl.minimum(n0 + rw + rt * 16 + g + 8, N - 1).to(gl.int64)
            m_lo = row_l * KM + kk * 2 + (t % 2)
            m_hi = row_h * KM + kk * 2 + (t % 2)
        b_off = _mmsp_x_offsets(M, stride_xw, pid_m, nt, g, t, kk, s, j, NT, XS, MO)
        s4 = s * 4
        if PD > 0:  # L2 prefetch: warp kw, one row of the program per element ([WK, 16 RT], layout PL)
            p_w = gl.arange(0, WK, layout=gl.SliceLayout(1, PL))[:, None]
            p_r = gl.arange(0, 16 * RT, layout=gl.SliceLayout(0, PL))[None, :]
            if RW:
                p_kw = p_w * 0
                p_row = gl.minimum(n0 + p_w * (16 * RT) + p_r, N - 1).to(gl.int64)
            else:
                p_kw = p_w
                p_row = gl.minimum(n0 + p_r + p_w * 0, N - 1).to(gl.int64)
            pv = p_row * KG
            pm = p_row * KM
            for it in range(0, gl.minimum(PD, ITERS)):  # the first PD iterations, before the loop
                _l2_prefetch(v_ptr, m_ptr, pv, pm, p_kw, sb + it * KSTEP, SS)
        acc = gl.zeros([WK, RT, NT, 32, 4, 4], gl.float32, layout=L)
        if AS > 0:
            # AS-stage ring in shared memory filled by cp.async: the bytes in flight hold no registers. Every
            # thread copies exactly the 16/8/4-byte pieces it later reads back itself, so completing its own
            # copy groups (wait_group) is all the synchronisation needed: no barrier. Order: s, lanes, j
            # (one thread's 4 words along s are 16 contiguous bytes; a warp's lanes read consecutive 16-byte
            # pieces: no bank conflicts).
            SL: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [4, 3, 5, 2, 1, 0])  # of one stage
            va_s = gl.allocate_shared_memory(gl.int32, [AS, WK, RT, 1, 32, 4, 4], SL)
            wl_s = gl.allocate_shared_memory(gl.int64, [AS, WK, RT, 1, 32, 1, 1], SL)
            wh_s = gl.allocate_shared_memory(gl.int64, [AS, WK, RT, 1, 32, 1, 1], SL)
            xb_s = gl.allocate_shared_memory(gl.int32, [AS, WK, 1, NT, 32, 4, 4], SL)
            for st in gl.static_range(AS):
                _mmsp_issue(va_s.index(st), wl_s.index(st), wh_s.index(st), xb_s.index(st), x_ptr, v_ptr, m_ptr,
                            a_off, m_lo, m_hi, b_off, kk, sb + st * KSTEP, gl.where(st < ITERS, SS, 0))
            for it in range(0, ITERS):
                slot = it % AS
                async_copy.wait_group(AS - 1)
                va = va_s.index(slot).load(a_off.type.layout)
                wl = wl_s.index(slot).load(m_lo.type.layout)
                wh = wh_s.index(slot).load(m_lo.type.layout)
                xb = xb_s.index(slot).load(b_off.type.layout)
                if not EVEN_K:  # past the end the copies were skipped (zeros): valid indices (0, 1) instead
                    ok = (sb + it * KSTEP + kk) < SS
                    wl = gl.where(ok, wl, 0x4444444444444444)
                    wh = gl.where(ok, wh, 0x4444444444444444)
                acc = _mmsp_mma(va, wl, wh, xb, acc, s4, ASM, CONSTRAINTS, XS, L, WK, NT, CH, META, MO)
                # refill the slot just read (its loads have returned: the MMA consumed them)
                nx = it + AS
                _mmsp_issue(va_s.index(slot), wl_s.index(slot), wh_s.index(slot), xb_s.index(slot), x_ptr, v_ptr,
                            m_ptr, a_off, m_lo, m_hi, b_off, kk, sb + nx * KSTEP, gl.where(nx < ITERS, SS, 0))
            async_copy.wait_group(0)
        elif PF == 0:
            for it in range(0, ITERS):
                if PD > 0:
                    _l2_prefetch(v_ptr, m_ptr, pv, pm, p_kw, sb + (it + PD) * KSTEP, SS)
                va, wl, wh, xb = _mmsp_load(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, kk, sb + it * KSTEP, SS, EVEN_K, MO, EV)
                acc = _mmsp_mma(va, wl, wh, xb, acc, s4, ASM, CONSTRAINTS, XS, L, WK, NT, CH, META, MO)
        elif XD > 0:
            # XL (MO >= 2): x through an XD-stage shared-memory ring filled by cp.async (16 bytes per thread, each
            # token row's 16-byte pieces XOR-swizzled by the row: no bank conflicts), read into the B fragments
            # by ldmatrix (one per MMA and token tile: mma_order(order=2) makes MMA a's inputs x's 16-byte rows);
            # with RW the warps share one super-step's x. The weights as with PF = 1 (registers, one iteration
            # ahead). A CTA barrier per iteration (_xl_step): the stage copied by every thread is complete, and the
            # stage refilled next was read by every warp an iteration ago (the compiler adds a second one, between
            # the ldmatrix reads and the next copies, which its analysis cannot tell apart by stage).
            KX: gl.constexpr = 1 if RW else WK
            xs = gl.allocate_shared_memory(gl.int32, [XD, KX, NT, 8, 64],
                                           gl.SwizzledSharedLayout(4, 1, 8, [3, 2, 1, 0]))
            xc_kw = _ar4(KX, 0, XLC)
            xc_tok = gl.minimum(pid_m * (8 * NT) + _ar4(NT, 1, XLC) * 8 + _ar4(8, 2, XLC), M - 1).to(gl.int64)
            x_off = xc_tok * stride_xw + xc_kw * 64 + _ar4(64, 3, XLC)
            if EWA:  # weights before griddepcontrol.wait, x (the previous kernel's output) after it
                va, wl, wh = _mmsp_load_w(v_ptr, m_ptr, a_off, m_lo, m_hi, kk, sb, SS, EVEN_K, MO, EV)
                gdc_enter(GDC)
            for st in gl.static_range(XD - 1):
                _xl_issue(xs.index(st), x_ptr, x_off, xc_kw, sb + gl.minimum(st, ITERS - 1) * KSTEP, SS, EVEN_K)
            if not EWA:
                va, wl, wh = _mmsp_load_w(v_ptr, m_ptr, a_off, m_lo, m_hi, kk, sb, SS, EVEN_K, MO, EV)
            if PF == 1:
                for it in range(0, ITERS):
                    s_nx = sb + gl.minimum(it + 1, ITERS - 1) * KSTEP  # past the end: re-read the last iteration
                    va1, wl1, wh1 = _mmsp_load_w(v_ptr, m_ptr, a_off, m_lo, m_hi, kk, s_nx, SS, EVEN_K, MO, EV)
                    xb = _xl_step(xs, it, x_ptr, x_off, xc_kw, sb, ITERS, SS, EVEN_K, XD, KSTEP, XLR, L, KX, NT)
                    acc = _mmsp_mma(va, wl, wh, xb, acc, s4, ASM, CONSTRAINTS, XS, L, WK, NT, CH, META, MO)
                    va, wl, wh = va1, wl1, wh1
            elif PF == 2:  # the weights two iterations ahead (twice the bytes in flight per warp)
                va1, wl1, wh1 = _mmsp_load_w(v_ptr, m_ptr, a_off, m_lo, m_hi, kk,
                                             sb + gl.minimum(ITERS - 1, 1) * KSTEP, SS, EVEN_K, MO, EV)
                for it in range(0, ITERS):
                    s_nx = sb + gl.minimum(it + 2, ITERS - 1) * KSTEP
                    va2, wl2, wh2 = _mmsp_load_w(v_ptr, m_ptr, a_off, m_lo, m_hi, kk, s_nx, SS, EVEN_K, MO, EV)
                    xb = _xl_step(xs, it, x_ptr, x_off, xc_kw, sb, ITERS, SS, EVEN_K, XD, KSTEP, XLR, L, KX, NT)
                    acc = _mmsp_mma(va, wl, wh, xb, acc, s4, ASM, CONSTRAINTS, XS, L, WK, NT, CH, META, MO)
                    va, wl, wh = va1, wl1, wh1
                    va1, wl1, wh1 = va2, wl2, wh2
            else:  # PF = 3: the weights one iteration ahead, unrolled by two (no register copies)
                if ITERS % 2 == 1:
                    va1, wl1, wh1 = _mmsp_load_w(v_ptr, m_ptr, a_off, m_lo, m_hi, kk,
                                                 sb + gl.minimum(1, ITERS - 1) * KSTEP, SS, EVEN_K, MO, EV)
                    xb = _xl_step(xs, 0, x_ptr, x_off, xc_kw, sb, ITERS, SS, EVEN_K, XD, KSTEP, XLR, L, KX, NT)
                    acc = _mmsp_mma(va, wl, wh, xb, acc, s4, ASM, CONSTRAINTS, XS, L, WK, NT, CH, META, MO)
                    va, wl, wh = va1, wl1, wh1
                for it in range(ITERS % 2, ITERS, 2):
                    va1, wl1, wh1 = _mmsp_load_w(v_ptr, m_ptr, a_off, m_lo, m_hi, kk, sb + (it + 1) * KSTEP, SS,
                                                 EVEN_K, MO, EV)
                    xb = _xl_step(xs, it, x_ptr, x_off, xc_kw, sb, ITERS, SS, EVEN_K, XD, KSTEP, XLR, L, KX, NT)
                    acc = _mmsp_mma(va, wl, wh, xb, acc, s4, ASM, CONSTRAINTS, XS, L, WK, NT, CH, META, MO)
                    va, wl, wh = _mmsp_load_w(v_ptr, m_ptr, a_off, m_lo, m_hi, kk,
                                              sb + gl.minimum(it + 2, ITERS - 1) * KSTEP, SS, EVEN_K, MO, EV)
                    xb = _xl_step(xs, it + 1, x_ptr, x_off, xc_kw, sb, ITERS, SS, EVEN_K, XD, KSTEP, XLR, L, KX, NT)
                    acc = _mmsp_mma(va1, wl1, wh1, xb, acc, s4, ASM, CONSTRAINTS, XS, L, WK, NT, CH, META, MO)
            async_copy.wait_group(0)
        elif PF == 1:  # register prefetch: the loads of iteration it + 1 are issued in iteration it
            va, wl, wh, xb = _mmsp_first(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, kk, sb, SS, EVEN_K, EWA, GDC, MO, EV)
            for it in range(0, ITERS):
                if PD > 0:
                    _l2_prefetch(v_ptr, m_ptr, pv, pm, p_kw, sb + (it + PD) * KSTEP, SS)
                s_nx = sb + gl.minimum(it + 1, ITERS - 1) * KSTEP  # past the end: re-read the last iteration
                va1, wl1, wh1, xb1 = _mmsp_load(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, kk, s_nx, SS, EVEN_K, MO, EV)
                acc = _mmsp_mma(va, wl, wh, xb, acc, s4, ASM, CONSTRAINTS, XS, L, WK, NT, CH, META, MO)
                va, wl, wh, xb = va1, wl1, wh1, xb1
        elif PF == 3:  # one iteration ahead, unrolled by two: two register sets, no copy from one to the other
            va, wl, wh, xb = _mmsp_first(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, kk, sb, SS, EVEN_K, EWA, GDC, MO, EV)
            if ITERS % 2 == 1:  # an odd count: one iteration before the pairs
                va1, wl1, wh1, xb1 = _mmsp_load(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, kk,
                                                sb + gl.minimum(1, ITERS - 1) * KSTEP, SS, EVEN_K, MO, EV)
                acc = _mmsp_mma(va, wl, wh, xb, acc, s4, ASM, CONSTRAINTS, XS, L, WK, NT, CH, META, MO)
                va, wl, wh, xb = va1, wl1, wh1, xb1
            for it in range(ITERS % 2, ITERS, 2):
                va1, wl1, wh1, xb1 = _mmsp_load(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, kk,
                                                sb + (it + 1) * KSTEP, SS, EVEN_K, MO, EV)
                acc = _mmsp_mma(va, wl, wh, xb, acc, s4, ASM, CONSTRAINTS, XS, L, WK, NT, CH, META, MO)
                s_nx = sb + gl.minimum(it + 2, ITERS - 1) * KSTEP  # past the end: re-read the last iteration
                va, wl, wh, xb = _mmsp_load(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, kk, s_nx, SS, EVEN_K, MO, EV)
                acc = _mmsp_mma(va1, wl1, wh1, xb1, acc, s4, ASM, CONSTRAINTS, XS, L, WK, NT, CH, META, MO)
        else:  # two iterations ahead
            va, wl, wh, xb = _mmsp_first(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, kk, sb, SS, EVEN_K, EWA, GDC, MO, EV)
            va1, wl1, wh1, xb1 = _mmsp_load(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, kk,
                                            sb + gl.minimum(ITERS - 1, 1) * KSTEP, SS, EVEN_K, MO, EV)
            for it in range(0, ITERS):
                if PD > 0:
                    _l2_prefetch(v_ptr, m_ptr, pv, pm, p_kw, sb + (it + PD) * KSTEP, SS)
                s_nx = sb + gl.minimum(it + 2, ITERS - 1) * KSTEP
                va2, wl2, wh2, xb2 = _mmsp_load(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, kk, s_nx, SS, EVEN_K, MO, EV)
                acc = _mmsp_mma(va, wl, wh, xb, acc, s4, ASM, CONSTRAINTS, XS, L, WK, NT, CH, META, MO)
                va, wl, wh, xb = va1, wl1, wh1, xb1
                va1, wl1, wh1, xb1 = va2, wl2, wh2, xb2
        if MO:  # back to dimension 4 = MMA, 5 = register (a renaming of each thread's registers)
            acc = gl.convert_layout(gl.permute(acc, [0, 1, 2, 3, 5, 4]), L)
        _mmsp_epilogue(acc, n0, pid_m, pid_k, M, N, MN, y_ptr, b_ptr, o_ptr, c_ptr, stride_ym, stride_om,
                       L, RW, RT, WK, NT, SPLIT, FX, HAS_BIAS, GDC)

    @gluon.jit
    def _tma_issue(v_desc, m_desc, va_s, ml_s, mh_s, bars, slot, n0, col, pred, NBYTES: gl.constexpr,
                   WK: gl.constexpr):
        """Bulk tensor copies of one stage (WK super-steps from ``col``) into ``slot``: values, and the
        metadata twice (from row n0 and from row n0 + 8; tma_layouts), counted on the slot's barrier."""
        bar = bars.index(slot)
        mbarrier.expect(bar, NBYTES, pred=pred)
        tma.async_copy_global_to_shared(v_desc, [n0, col * 32], bar, va_s.index(slot), pred=pred)
        tma.async_copy_global_to_shared(m_desc, [n0, col * 2], bar, ml_s.index(slot), pred=pred)
        tma.async_copy_global_to_shared(m_desc, [n0 + 8, col * 2], bar, mh_s.index(slot), pred=pred)

    @gluon.jit
    def _sp24_mmsp_tma_gl(
        x_ptr, v_desc, m_desc, y_ptr, b_ptr,
        M, N, SS, stride_xw, stride_ym, ITERS, MN, o_ptr, c_ptr, stride_om,
        L: gl.constexpr, HAS_BIAS: gl.constexpr, IS_BF16: gl.constexpr, EVEN_K: gl.constexpr, SPLIT: gl.constexpr,
        WK: gl.constexpr, RT: gl.constexpr, NT: gl.constexpr, PF: gl.constexpr, XS: gl.constexpr,
        CH: gl.constexpr, PD: gl.constexpr, PL: gl.constexpr, RW: gl.constexpr, AS: gl.constexpr, KSTEP: gl.constexpr,
        ROWS: gl.constexpr, ASM: gl.constexpr, CONSTRAINTS: gl.constexpr, TM: gl.constexpr,
        VS: gl.constexpr, MS: gl.constexpr, VL: gl.constexpr, ML: gl.constexpr, EVEN_N: gl.constexpr,
        GDC: gl.constexpr = 0, FX: gl.constexpr = 0, META: gl.constexpr = 0, EW: gl.constexpr = 0, EV: gl.constexpr = 0,
        MO: gl.constexpr = 0, XD: gl.constexpr = 0, XLC: gl.constexpr = None, XLR: gl.constexpr = None,
    ):
        """:func:`_sp24_mmsp_gl` (RW = 0, MO = 0) with the packed weights streamed through a ``TM``-stage ring in
        shared memory by Hopper's bulk tensor copies (TMA): a program's WK super-steps of 16 RT rows per
        stage, ``TM - 1`` stages in flight while the warps compute on one, without registers held for them
        (the register-prefetch kernel holds one iteration per warp in registers; cuBLAS's M = 16 kernels run
        11-stage TMA pipelines). x is read from global memory as there (PF: one iteration ahead). A slot is
        refilled after a CTA barrier, one iteration after it was read. Rows past N and super-steps past K
        arrive as zeros (the copies' out-of-bounds fill); their metadata is replaced by valid indices."""
        pid_n = gl.program_id(0)
        pid_m = gl.program_id(1)
        pid_k = gl.program_id(2)
        if SPLIT:
            sb = pid_k * (ITERS * WK)
        else:
            sb = 0
        n0 = pid_n * ROWS
        kw, rt, nt, lane, s, j, g, t = _mmsp_ids(WK, RT, NT, L)
        b_off = _mmsp_x_offsets(M, stride_xw, pid_m, nt, g, t, kw, s, j, NT, XS, 0)
        s4 = s * 4
        ok_l = (n0 + rt * 16 + g) < N  # rows of the metadata of lanes t = 0, 1 (tma_layouts)
        ok_h = (n0 + rt * 16 + g + 8) < N
        NBYTES: gl.constexpr = 16 * RT * 32 * WK * 4 + 2 * (16 * RT * 2 * WK * 8)
        va_s = gl.allocate_shared_memory(gl.int32, [TM, 16 * RT, 32 * WK], VS)
        ml_s = gl.allocate_shared_memory(gl.int64, [TM, 16 * RT, 2 * WK], MS)
        mh_s = gl.allocate_shared_memory(gl.int64, [TM, 16 * RT, 2 * WK], MS)
        bars = gl.allocate_shared_memory(gl.int64, [TM, 1], mbarrier.MBarrierLayout())
        for st in gl.static_range(TM):
            mbarrier.init(bars.index(st), count=1)
        fence_async_shared()
        if GDC and not EW:
            gdc_enter(GDC)
        for st in gl.static_range(TM):  # the first TM stages (weights only: before the wait with EW)
            _tma_issue(v_desc, m_desc, va_s, ml_s, mh_s, bars, st, n0, sb + st * WK, st < ITERS, NBYTES, WK)
        if GDC and EW:
            gdc_enter(GDC)
        acc = gl.zeros([WK, RT, NT, 32, 4, 4], gl.float32, layout=L)
        if PF:
            xb = _mmsp_load_x(x_ptr, b_off, kw, sb, SS, EVEN_K)
        for it in range(0, ITERS):
            slot = it % TM
            mbarrier.wait(bars.index(slot), (it // TM) & 1)
            va = va_s.index(slot)._reinterpret(gl.int32, [WK, RT, 1, 32, 4, 4], VL).load(L)
            wl = ml_s.index(slot)._reinterpret(gl.int64, [WK, RT, 1, 32, 1, 1], ML).load(L)
            wh = mh_s.index(slot)._reinterpret(gl.int64, [WK, RT, 1, 32, 1, 1], ML).load(L)
            if not EVEN_K:
                ok = (sb + it * WK + kw) < SS
                wl = gl.where(ok, wl, 0x4444444444444444)
                wh = gl.where(ok, wh, 0x4444444444444444)
            if not EVEN_N:
                wl = gl.where(ok_l, wl, 0x4444444444444444)
                wh = gl.where(ok_h, wh, 0x4444444444444444)
            if PF:
                xb1 = _mmsp_load_x(x_ptr, b_off, kw, sb + gl.minimum(it + 1, ITERS - 1) * WK, SS, EVEN_K)
            else:
                xb = _mmsp_load_x(x_ptr, b_off, kw, sb + it * WK, SS, EVEN_K)
            gl.thread_barrier()  # every warp has read the slot of iteration it - 1: refill it
            prev = it - 1 + TM
            _tma_issue(v_desc, m_desc, va_s, ml_s, mh_s, bars, (it + TM - 1) % TM, n0, sb + prev * WK,
                       (it >= 1) & (prev < ITERS), NBYTES, WK)
            acc = _mmsp_mma(va, wl, wh, xb, acc, s4, ASM, CONSTRAINTS, XS, L, WK, NT, CH, META)
            if PF:
                xb = xb1
        for st in gl.static_range(TM):
            mbarrier.invalidate(bars.index(st))
        _mmsp_epilogue(acc, n0, pid_m, pid_k, M, N, MN, y_ptr, b_ptr, o_ptr, c_ptr, stride_ym, stride_om,
                       L, RW, RT, WK, NT, SPLIT, FX, HAS_BIAS, GDC)

# (WK, RT, NT, PF[, XS[, CH[, PD[, SK[, RW[, AS[, FX[, TM[, MO]]]]]]]]]): warps (splitting the super-steps, or with RW = 1 the rows),
# 16-row tiles per warp, 8-token tiles, register prefetch (0-2 iterations ahead; 3: one ahead with the loop
# unrolled by two, eleventh session), x read with 16-byte loads and
# permuted by warp shuffles (XS = 1) or with 32-bit loads straight into the fragments, chained accumulator
# (CH), L2 prefetch distance in iterations (PD; 0 = none), K splits over programs (SK; fp32 partials + a
# reduction kernel), warps splitting rows (RW); measured on an H100 in the eighth session (below); AS:
# shared-memory stages filled by cp.async (>= 2, with PF = PD = 0; measured on an H100 in the ninth session:
# 18 configurations, all correct; the best of them within +-1% of the best of these at M = 16 in 8 of 12 rows
# (1.06-1.11x the time in the others) and 1.1-1.5x the time at M = 1; one 5% win (bf16 4096x4096, M = 8) is
# not enough to add compiling and timing to every tuning, so none joined).
# FX (tenth session): with SK > 1, the last program of each output tile adds the partials (no reduction
# kernel); measured on an H100 (11 configurations, PDL off and on): within 1-4% of the reduction-kernel
# configurations in most rows, slower at 4096x4096 with PDL on (13.4 against 12.3 us: PDL already overlaps the
# reduction kernel's launch), faster in one shape in all four measurements: (4, 2, 2, 1, 1, 0, 0, 4, 1, 0, 1) for
# 8192x8192 at M = 16 (fp16 34.8 vs 36.0 and 34.0 vs 35.0 us, bf16 35.0 vs 37.4 and 34.1 vs 35.3 us), which joined.
# PF = 3 (eleventh session): register prefetch with the loop unrolled by two; measured on an H100 at M = 16 (10
# configurations): 0.89-1.014x the speed of the best of these per row, so none joined (an option).
# TM (twelfth session): the weights through a TM-stage shared-memory ring filled by bulk tensor copies
# (_sp24_mmsp_tma_gl); on an H100 correct (bit-identical) but 0.80-0.99x the speed of these per row at M = 8 / 16.
# MO (twelfth session; with XS since the thirteenth): the weights read from mma_order's copy (MMA operand order); on
# an H100 at M = 16 (thirteenth session) 0-10% faster than these on the six Llama-2 shapes (1.62-1.64x over dense on
# the 70B MLP shapes) in a probe (bench/device/mo_probe.py). Not here by default (memory): the dispatcher times them
# only with MO_TUNING (MMSP_MO_CONFIGS).
# Rows per program = 16 * RT (x WK with RW); tokens per program = 8 * NT.
# Measured on an H200 (docs/kernels-log.md): NT = 4 and 8 (M = 17-64) were 0.16-0.45x of dense and are left out.
# CH (sixth element): of 11 chained configurations measured on an H100 (bench/results/mmsp_ch_probe_h100.json)
# the dispatcher picked two, kept here: (2, 4, 2, 0, 1, 1) for 28672x8192 at M = 16 (104 vs 107 us) and
# (4, 1, 1, 1, 0, 1) for fp16 8192x8192 at M = 4; the others were slower than the unchained ones.
MMSP_CONFIGS = {
    8: [(4, 1, 1, 1), (4, 1, 1, 1, 1), (4, 1, 1, 0, 1), (4, 1, 1, 2), (4, 1, 1, 0), (8, 1, 1, 1), (8, 1, 1, 2),
        (8, 2, 1, 1, 1), (8, 2, 1, 1), (4, 2, 1, 2, 1), (4, 1, 1, 1, 0, 1)],
    16: [(4, 2, 2, 1, 1), (2, 2, 2, 1, 1), (8, 2, 2, 1, 1), (4, 1, 2, 1, 1), (2, 4, 2, 0, 1, 1),
         (4, 1, 2, 1, 1, 0, 0, 4, 1), (4, 2, 2, 1, 1, 0, 0, 2, 1), (4, 2, 2, 1, 1, 0, 0, 4, 1, 0, 1)],
}
# The last two (split-K with warps splitting rows) joined in the eighth session: on an H100 at M = 16 they were
# the fastest mmsp configuration for fp16 4096x4096 (13.5 against 14.3 us) and bf16 11008x4096 (26.9 against
# 27.7 us), and within 3% elsewhere on the 7B shapes (bench/results/mmsp_pd_sk_rw_probe_h100.json). L2
# prefetch (PD) won one of 36 rows by 4% (fp16 8192x8192, M = 8) and lowered the DRAM throughput of
# 8192x28672 at M = 16 from 75% to 68% (Nsight Compute): kept as an option, not among these.
# Pruned (seventh session) from 28 configurations to these 16: the 12 left out were never the fastest mmsp
# configuration, nor within 3% of it, in any of the 120 (dtype, shape, M = 1-16) tunings of the H100 and H200
# tables (bench/results/gemm_m1_16_mmsp_h{100,200}.json): (2,2,1,1), (4,2,1,1), (4,2,1,1,1), (4,4,1,0,0),
# (4,4,1,0,1), (2,1,2,1), (2,2,2,1), (4,1,2,1), (4,2,2,0,1), (4,2,2,1), (8,1,2,1,1), (8,2,2,1). Fewer
# configurations: less compile and timing work per layer shape in sparsify. The first of each list is the
# default of sp24_mmsp_gl and the one the GPU tests run on the big shapes.
# Registers (sm_90, offline): 76-253, no spills (the NT = 8 and RT = 2 x NT = 4 configurations spilled).
MMSP_MAX_M = 16
MMSP_K = 128  # in_features must be a multiple (one super-step)


# MO configurations the dispatcher also times when MO_TUNING is on; they run on mma_order's copy, which SparseLinear
# then builds for the layers that choose one. M = 9-16: the fastest per shape and dtype of 27 in a probe on an H100
# (thirteenth session, bench/results/mmsp_mo_xs_probe_h100_s13.json: 2-10% faster than the row-major configurations
# above, except bf16 4096x11008: equal); M = 2-8: the NT = 1 ones that were fastest per row at M = 1 and 8
# (bench/results/mmsp_mo_m1_8_probe_h100_s13.json: up to 17% faster than the row-major ones at M = 8, within 3% of
# gemvg at M = 1, where the row-major kernels are kept). Sixteenth session: the XL ones (MO = 3, 4: x through a
# shared-memory ring, the order-2 copy) that were fastest in probes -- at M = 16 on an H100 on all six Llama-2 shapes
# in both dtypes, 1.57-1.77x over dense (bench/results/mmsp_xl_probe_{bf16,fp16}_m16_h100_s16.json); at M = 8 on an
# H200 on every row, 1.53-1.86x (bench/results/mmsp_xl_nt1_probe_m1_4_8_h200_s16.json; at M = 1 they lose to MO = 1).
# Seventeenth session (H100): MO = 5 (order 2 with x from global memory) passed its GPU test; at M = 1 its best
# two (below) were within -4% .. +4% of the best MO = 1 one on the six shapes, equal on the 70B ones
# (bench/results/mmsp_o2_probe_m1_16_h100_s17.json), so the copy of order 2 can serve M = 1 too; and two more XL
# ones at M = 16, RT = 2 / WK = 2 with SK = 4, the fastest on bf16 and fp16 4096x4096 and 8192x8192 in probes and
# picked in 12 of 36 rows of three dispatcher tables (bench/results/mmsp_xl_rt2_probe_m16_h100_s17.json,
# gemm_m16_mo_xl_h100_s17_{a,b,c}.json).
MMSP_MO_CONFIGS = {
    8: [(4, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1), (4, 2, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1),
        (8, 2, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1), (4, 1, 1, 3, 0, 0, 0, 1, 0, 0, 0, 0, 3),
        (4, 1, 1, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4), (4, 2, 1, 3, 0, 0, 0, 1, 0, 0, 0, 0, 3),
        (4, 1, 1, 3, 0, 0, 0, 1, 0, 0, 0, 0, 5), (8, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 5)],
    16: [(4, 1, 2, 1, 1, 0, 0, 4, 1, 0, 0, 0, 1), (4, 1, 2, 1, 1, 0, 0, 2, 1, 0, 0, 0, 1),
         (4, 2, 2, 1, 1, 0, 0, 4, 1, 0, 1, 0, 1), (4, 2, 2, 1, 1, 0, 0, 2, 1, 0, 0, 0, 1),
         (4, 2, 2, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1), (4, 2, 2, 2, 1, 0, 0, 1, 0, 0, 0, 0, 1),
         (4, 1, 2, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4), (4, 1, 2, 3, 0, 0, 0, 2, 1, 0, 0, 0, 3),
         (4, 2, 2, 3, 0, 0, 0, 2, 1, 0, 0, 0, 4), (4, 2, 2, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4),
         (2, 2, 2, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4),
         # twenty-second session (H100, bench/results/evict_probe_m16_h100_s22.json, plain loads): two-warp programs of
         # 32 rows, the fastest on 4096x11008 in both dtypes (21.72 / 21.59 us against 21.97 / 21.92 for the best above)
         (2, 1, 2, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4)],
}
# Wider MO configurations (eighteenth session): NT = 4 (32 tokens per program) and NT = 8 (64) for M = 17-64
# (batched decode of 17-64 sequences), where the dense GEMM is still bound by the weights' bytes. Registers
# (offline, both dtypes): NT = 4 158-254, NT = 8 XL 236-242, no spills; NT = 8 with x in registers (MO = 1, 5)
# spills 2.2 KB, so order 1 covers M = 33-64 with two NT = 4 tiles. Candidates by default since the nineteenth
# session (MO_WIDE; ``LLMSPARSE_MMSP_WIDE=0`` at import turns them off): on the H100 they passed their GPU tests in
# both dtypes and lifted the dispatcher's M = 32 table from dense / cuSPARSELt (1.00-1.50x) to 1.33-1.72x and M = 64
# to 1.00-1.53x (bench/results/gemm_m32_64_wide{0,1}_h100_s19.*), batch-32 decode of a Llama-2-7B-shaped model
# from 0.99x to 1.25x.
MMSP_MO_WIDE_CONFIGS = {
    32: [(4, 1, 4, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4), (4, 1, 4, 3, 0, 0, 0, 2, 1, 0, 0, 0, 4),
         (4, 2, 4, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4), (2, 2, 4, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4),
         (4, 1, 4, 1, 0, 0, 0, 4, 1, 0, 0, 0, 3), (4, 1, 4, 1, 0, 0, 0, 4, 1, 0, 0, 0, 1),
         (4, 1, 4, 1, 0, 0, 0, 2, 1, 0, 0, 0, 1), (4, 1, 4, 1, 0, 0, 0, 1, 0, 0, 0, 0, 5)],
    64: [(4, 1, 8, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4), (4, 1, 8, 3, 0, 0, 0, 2, 1, 0, 0, 0, 4),
         (4, 1, 8, 1, 0, 0, 0, 4, 1, 0, 0, 0, 3), (2, 1, 8, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4),
         (4, 1, 4, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4), (4, 1, 4, 1, 0, 0, 0, 4, 1, 0, 0, 0, 1),
         # nineteenth session: RT = 2 halves the re-reads of x per weight byte (x from L2 is about 7x the weights'
         # bytes with NT = 8 and RT = 1); NT = 8 with RT = 2 spills (offline, sm_90), so these are the M = 32
         # bucket's RT = 2 configurations over two token tiles. Timed at M = 64 in the twentieth session (H100): the
         # first wins 3 of 4 4096x4096 and all 4 4096x11008 rows (bench/results/gemm_m16_32_64_{a,b}_h100_s20.*)
         (4, 2, 4, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4), (2, 2, 4, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4)],
}
MO_WIDE = env_choice("LLMSPARSE_MMSP_WIDE", {"1": 1, "on": 1, "0": 0, "off": 0}, "1")
MO_WIDE_MAX_M = 64


def mo_max_m() -> int:
    """The largest M the MO configurations cover now: 64 with MO_WIDE, else MMSP_MAX_M (16)."""
    return MO_WIDE_MAX_M if MO_WIDE else MMSP_MAX_M


def mo_configs_for(m: int) -> list[tuple]:
    """The MO configurations (both orders) the dispatcher measures at M: MMSP_MO_CONFIGS up to 16 tokens, with
    MO_WIDE the wider ones of MMSP_MO_WIDE_CONFIGS up to 64; none above."""
    if m <= MMSP_MAX_M:
        return list(MMSP_MO_CONFIGS[8 if m <= 8 else 16])
    if MO_WIDE and m <= MO_WIDE_MAX_M:
        return list(MMSP_MO_WIDE_CONFIGS[32 if m <= 32 else 64])
    return []


# ``LLMSPARSE_MMSP_MO`` at import (or these attributes; per layer ``SparseLinear.mo_storage``):
#   unset, ``compact``: MO storage of MO_STORAGE_ORDER (the default since the eighteenth session);
#   ``compact1`` / ``compact2``: MO storage of that order; ``0`` or ``off``: neither; ``1``: MO tuning (below).
# MO tuning (MO_TUNING): the dispatcher also measures the MO configurations on a *second* copy of the weights beside
# the packed pair (0.5625x the dense size more in every layer that picks one); thirteenth session.
# MO storage (MO_STORAGE; fifteenth session): layers are tuned over what the copy of this order can run (the MO
# configurations of MMSP_MO_CONFIGS at every M <= 16, cuSPARSELt, dense; dispatch.mo_key) and hold that copy
# *instead of* the row-major packed weights, so MO costs no memory. Taken from here (not set per layer) it applies
# only where it was measured to pay (mo_storage_applies: Hopper, Gluon's mmsp kernels, "mmsp" among the paths).
# Order 2 is the default since the eighteenth session (H100, bench/results/*_s18.*): against order 1 it was as fast
# at M = 1 (1.66-1.85x either way) and faster at M = 2-16 (M = 16: 1.55-1.76x against 1.36-1.66x; 7, 10 and 9 of 12
# rows at 1.6x or more in three tables), and against MO storage off it decoded a Llama-2-7B-shaped model as fast
# at batch 1 (bf16 compiled 1.60x vs 1.57x) and faster at batch 16 (1.40x vs 1.26x), with the same memory.
MO_STORAGE_ORDER = 2
_MO_MODES = {"": (0, MO_STORAGE_ORDER), "compact": (0, MO_STORAGE_ORDER), "compact1": (0, 1), "compact2": (0, 2),
             "0": (0, 0), "off": (0, 0), "1": (1, 0)}
MO_TUNING, MO_STORAGE = env_choice("LLMSPARSE_MMSP_MO", _MO_MODES, "")


def mo_storage_applies(device, paths) -> bool:
    """Whether MO_STORAGE (the process-wide setting) applies to a layer on ``device`` measured over ``paths``: on
    CUDA devices of compute capability 9.x (where the MO kernels were measured), with Gluon's mmsp kernels and
    ``"mmsp"`` among the paths (without them the copy could run nothing but cuSPARSELt)."""
    device = torch.device(device)
    if not (MMSP_AVAILABLE and "mmsp" in paths and device.type == "cuda" and torch.cuda.is_available()):
        return False
    try:
        return torch.cuda.get_device_capability(device)[0] == 9
    except (RuntimeError, AssertionError):  # a CUDA that cannot be queried: no MO storage
        return False


def storage_order(in_features: int, order: int | None = None, *, device=None, paths=None) -> int:
    """The MMA-order copy a layer of this width holds instead of its packed weights: ``order``, or by default
    MO_STORAGE where :func:`mo_storage_applies` to ``device`` and ``paths`` (``dispatch.DEFAULT_PATHS`` if None;
    not checked without a device); 0 where the width is not a multiple of MMSP_K, which the MO kernels need."""
    if order is None:
        if device is not None:
            from .dispatch import DEFAULT_PATHS

            if not mo_storage_applies(device, DEFAULT_PATHS if paths is None else paths):
                return 0
        order = MO_STORAGE
    return order if in_features % MMSP_K == 0 else 0


def add_candidates(cfgs) -> None:
    """Add mmsp configurations to the dispatcher's candidates for this process (``bench_kernels.py
    --mmsp-extra``): NT = 1 to the M <= 8 bucket, NT = 2 to M = 9-16; MO ones to MMSP_MO_CONFIGS, where MO tuning
    and MO storage read them (MO ones with NT = 4 or 8 to MMSP_MO_WIDE_CONFIGS, M = 17-32 or 33-64), the others to
    MMSP_CONFIGS. Each is checked first (:func:`kernel_consts`, where
    this Triton has Gluon's linear layouts); ValueError for one that is not valid."""
    for c in map(tuple, cfgs):
        if MMSP_AVAILABLE:
            kernel_consts(c, True)
        if len(c) < 4 or c[2] not in ((1, 2, 4, 8) if is_mo(c) else (1, 2)):
            raise ValueError(f"mmsp candidates cover 8 or 16 tokens (NT 1 or 2; MO ones also 32 or 64, NT 4 or 8, "
                             f"measured with MO_WIDE): {c}")
        if c[2] > 2:
            bucket = MMSP_MO_WIDE_CONFIGS[8 * c[2]]
        else:
            bucket = (MMSP_MO_CONFIGS if is_mo(c) else MMSP_CONFIGS)[8 if c[2] == 1 else 16]
        if c not in bucket:
            bucket.append(c)


def kernel_options(cfg: tuple) -> dict:
    """Launch options of a configuration: RG (14th element), a cap on registers per thread (``maxnreg``; 0: none).
    A cap of 168 lets three 4-warp programs share an SM (65536 registers) where the compiler takes 169-255;
    ptxas spills what no longer fits (offline: :func:`llmsparse.kernels.offline.gluon_mmsp_stats`)."""
    rg = int(cfg[13]) if len(cfg) > 13 else 0
    if rg and not (rg % 8 == 0 and 64 <= rg <= 248):
        raise ValueError(f"mmsp register cap (14th element) must be 0 or a multiple of 8 in 64-248: {cfg}")
    return {"maxnreg": rg} if rg else {}


def row_major_twin(cfg: tuple) -> tuple:
    """An MO configuration's twin on the row-major weights (the same tiling, MO = 0; RG kept)."""
    return tuple(cfg[:12]) + ((0,) + tuple(cfg[13:]) if len(cfg) > 13 else ())


def mo_order(cfg: tuple) -> int:
    """Which :func:`mma_order` copy a configuration reads: 0 (none, the row-major weights), 1 (MO = 1) or 2
    (MO = 2-4: x through a shared-memory ring of MO stages; MO = 5: x from global memory, as MO = 1 reads it)."""
    mo = int(cfg[12]) if len(cfg) > 12 else 0
    return 0 if mo == 0 else (1 if mo == 1 else 2)


def is_mo(cfg: tuple) -> bool:
    """Whether an mmsp configuration reads one of :func:`mma_order`'s copies (13th element MO >= 1)."""
    return mo_order(cfg) != 0


def mmsp_configs_for(m: int) -> list[tuple]:
    if m > MMSP_MAX_M:
        return []
    key = 8 if m <= 8 else 16
    return list(MMSP_CONFIGS[key]) + (list(MMSP_MO_CONFIGS[key]) if MO_TUNING and m > 1 else [])


CONFIG_SYNTAX = "WK,RT,NT,PF[,XS[,CH[,PD[,SK[,RW[,AS[,FX[,TM[,MO[,RG]]]]]]]]]]"


def parse_configs(text: str) -> list[tuple]:
    """``"4,2,2,1,1;4,1,1,0,1,0,0,1,0,3"`` -> configuration tuples (the device scripts' option syntax);
    ValueError unless every entry is 4 to 14 integers (:data:`CONFIG_SYNTAX`)."""
    out = [tuple(int(v) for v in c.split(",")) for c in text.split(";") if c.strip()]
    if any(not 4 <= len(c) <= 14 for c in out):
        raise ValueError(f"mmsp configurations are {CONFIG_SYNTAX}; got {text!r}")
    return out


def config_splits(cfg: tuple) -> int:
    """The number of K splits a configuration asks for (its eighth element SK; 1 without it)."""
    return int(cfg[7]) if len(cfg) > 7 else 1


def split_plan(ss: int, kstep: int, sk: int) -> tuple[int, int, bool]:
    """Split-K of ``ss`` super-steps over programs that take ``kstep`` super-steps per iteration (WK, or 1
    with RW), at most ``sk`` splits: (splits, iterations per program, whether every iteration is full).
    Program k covers super-steps ``[k I kstep, (k+1) I kstep)`` (I = iterations), clipped to ``ss``; no
    split is empty."""
    steps = -(-ss // kstep)  # iterations of one program without split-K
    splits = max(1, min(sk, steps))
    iters = -(-steps // splits)
    splits = -(-steps // iters)
    return splits, iters, ss == splits * iters * kstep


def _nib4_t(w: torch.Tensor, s: int) -> torch.Tensor:
    """:func:`_nib4` on an int64 tensor of 16-nibble words: nibbles s, s+4, s+8, s+12 as 16 bits."""
    wa, wb = w & 0xFFFFFFFF, (w >> 32) & 0xFFFFFFFF
    u = (wa >> (4 * s)) & 0x000F000F
    v = (wb >> (4 * s)) & 0x000F000F
    c = u | (v << 8)
    return (c | (c >> 12)) & 0xFFFF


def _mo_source(tiles: int, ss: int, order: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """Where :func:`mma_order`'s values word ``[tile, super-step, s, lane, j]`` comes from: (row, int32 column) of the
    row-major values (broadcastable index tensors)."""
    ar = lambda v: torch.arange(v, device=dev)  # noqa: E731
    r, q, s, lane, j = (ar(v) for v in (tiles, ss, 4, 32, 4))
    g, t = lane // 4, lane % 4
    row = (16 * r[:, None, None, None, None] + g[None, None, None, :, None] + 8 * (j & 1)[None, None, None, None, :])
    # A register j of lane 4g + t: the MMA's group t + 4 (j >> 1) of rows g (j even) / g + 8 (j odd)
    grp = t[None, None, None, :, None] + 4 * (j >> 1)[None, None, None, None, :]
    sm = s[None, None, :, None, None]
    col = 32 * q[None, :, None, None, None] + (4 * grp + sm if order == 1 else 8 * sm + grp)
    return row, col


def mma_order(values: torch.Tensor, meta: torch.Tensor, order: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A copy of packed 2:4 weights (``values[N, K/2]``, ``meta[N, K/8]`` uint8, :mod:`llmsparse.formats.nm`)
    in the order the MO configurations read them: per 16-row tile and super-step (128 inputs), the A
    operands of its 4 MMAs, ``[s][lane][j]`` int32 (2 KB: lane ``4g + t``'s four registers of MMA s are
    16 contiguous bytes), and their metadata words, ``[g][t % 2][s]`` int32 (256 bytes: the word lane 4g + t
    hands MMA s). Returns ``(values_mo [ceil(N/16), SS * 512], meta_mo [ceil(N/16), SS * 64])`` int32;
    rows past N are zero weights with valid indices. The same bytes as the row-major layout, reordered:
    loads land in the registers the MMAs take (no operand moves) and the metadata needs no rebuilding.
    ``order``: which of the super-step's 32 groups MMA s takes as its group q -- 1: ``4 q + s`` (the row-major
    kernel's choice, so MO = 1 configurations give its results bit for bit), 2: ``8 s + q`` (MMA s covers
    inputs 32 s .. 32 s + 31 in order, so that its B fragments are x's own 16-byte rows: MO >= 2, x read from
    shared memory by ``ldmatrix``; :func:`mo_order`)."""
    if order not in (1, 2):
        raise ValueError(f"mma_order: order must be 1 or 2, got {order}")
    n, kh = values.shape
    k = kh * 2
    if k % 128 or tuple(meta.shape) != (n, k // 8):
        raise ValueError(f"mma_order needs K % 128 == 0 and meta [N, K/8]; got values {tuple(values.shape)}, "
                         f"meta {tuple(meta.shape)}")
    ss, tiles = k // 128, -(-n // 16)
    dev = values.device
    vp = values.contiguous().view(torch.int32)  # [N, K/4]: one int32 per group (its kept pair)
    m64 = meta.contiguous().view(torch.int64)  # [N, K/64]: 16 nibbles per word
    if tiles * 16 != n:
        vp = torch.cat([vp, vp.new_zeros(tiles * 16 - n, vp.shape[1])])
        m64 = torch.cat([m64, m64.new_full((tiles * 16 - n, m64.shape[1]), 0x4444444444444444)])
    row, col = _mo_source(tiles, ss, order, dev)
    v_mo = vp[row, col].reshape(tiles, ss * 512)
    # metadata word of (tile, super-step, g, t2, s): the 4 nibbles of MMA s's groups 4 t2 .. 4 t2 + 3 of row g
    # (low half) and of row g + 8 (high half)
    w = m64.view(tiles, 2, 8, ss, 2)  # [tile, half (rows g / g + 8), g, super-step, int64 word of the super-step]
    if order == 1:  # groups 4 q + s, q = 4 t2 .. 4 t2 + 3: nibbles s, s + 4, s + 8, s + 12 of word t2
        words = torch.stack([_nib4_t(w[:, 0], si) | (_nib4_t(w[:, 1], si) << 16) for si in range(4)], dim=-1)
    else:  # groups 8 s + 4 t2 .. + 3: the 16 bits at 32 (s % 2) + 16 t2 of word s // 2
        def field(half, si, t2):
            return (w[:, half, :, :, si // 2] >> (32 * (si % 2) + 16 * t2)) & 0xFFFF

        words = torch.stack([torch.stack([field(0, si, t2) | (field(1, si, t2) << 16) for si in range(4)], dim=-1)
                             for t2 in range(2)], dim=-2)  # [tile, g, super-step, t2, s]
    words = words.permute(0, 2, 1, 3, 4)  # [tile, super-step, g, t2, s]
    m_mo = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32).reshape(tiles, ss * 64)
    return v_mo.contiguous(), m_mo.contiguous()


def row_major_order(values_mo: torch.Tensor, meta_mo: torch.Tensor, order: int, out_features: int,
                    in_features: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`mma_order`: the row-major packed ``(values [N, K/2] dtype, meta [N, K/8] uint8)``
    of :mod:`llmsparse.formats.nm` back from an MMA-order copy of order ``order`` (bit for bit; the padding rows
    past N are dropped)."""
    if order not in (1, 2):
        raise ValueError(f"row_major_order: order must be 1 or 2, got {order}")
    n, k = int(out_features), int(in_features)
    ss, tiles = k // 128, -(-n // 16)
    if k % 128 or tuple(values_mo.shape) != (tiles, ss * 512) or tuple(meta_mo.shape) != (tiles, ss * 64):
        raise ValueError(f"row_major_order: an MMA-order copy of a {n}x{k} weight is [{tiles}, {ss * 512}] and "
                         f"[{tiles}, {ss * 64}] int32; got {tuple(values_mo.shape)}, {tuple(meta_mo.shape)}")
    dev = values_mo.device
    row, col = _mo_source(tiles, ss, order, dev)
    shape = (tiles, ss, 4, 32, 4)
    vp = torch.zeros(tiles * 16, k // 4, dtype=torch.int32, device=dev)
    vp[row.expand(shape), col.expand(shape)] = values_mo.reshape(shape)
    # the metadata words [tile, super-step, g, t2, s] as unsigned 32 bits: the low 16 of rows g, the high 16 of g + 8
    words = meta_mo.reshape(tiles, ss, 8, 2, 4).to(torch.int64) & 0xFFFFFFFF
    half = torch.stack([words & 0xFFFF, words >> 16], dim=1)  # [tile, half, super-step, g, t2, s]
    # the 64-bit metadata words of row (tile, half, g), super-step, word t2 as two 32-bit halves (lo, hi)
    if order == 1:  # field (t2, s) = nibbles s, s + 4, s + 8, s + 12 of word t2 (s, s + 4 in lo; s + 8, s + 12 in hi)
        def part(i_lo):
            acc = torch.zeros_like(half[..., 0])
            for si in range(4):
                for i in range(2):
                    nib = (half[..., si] >> (4 * (i + i_lo))) & 0xF
                    acc |= nib << (4 * (si + 4 * i))
            return acc
        lo, hi = part(0), part(2)  # [tile, half, super-step, g, t2]
    else:  # field (t2, s) = the 16 bits at 32 (s % 2) + 16 t2 of word s // 2
        lo = torch.stack([half[..., 0, 2 * w2] | (half[..., 1, 2 * w2] << 16) for w2 in range(2)], dim=-1)
        hi = torch.stack([half[..., 0, 2 * w2 + 1] | (half[..., 1, 2 * w2 + 1] << 16) for w2 in range(2)], dim=-1)
    byte = torch.stack([(lo >> (8 * b)) & 0xFF for b in range(4)] + [(hi >> (8 * b)) & 0xFF for b in range(4)],
                       dim=-1)  # [tile, half, super-step, g, word, 8 bytes]
    meta = byte.permute(0, 1, 3, 2, 4, 5).reshape(tiles * 16, k // 8).to(torch.uint8)
    return vp[:n].contiguous().view(dtype), meta[:n].contiguous()


_COUNTERS: dict = {}
_RETIRED: list = []


def tile_counters(device: torch.device, n: int) -> torch.Tensor:
    """int32 zeros, at least ``n``, for the split-K fixup (FX) of kernels launched on the current stream of
    ``device``: a kernel counts its programs per output tile there and the last one sets the count back to
    0, so one buffer serves every launch of that stream in turn (one per stream: kernels on two streams may
    run at once). A buffer outgrown is kept alive, not freed: CUDA graphs captured with it still use it."""
    key = (device, torch.cuda.current_stream(device).cuda_stream)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < n:
        if buf is not None:
            _RETIRED.append(buf)
        buf = _COUNTERS[key] = torch.zeros(max(n, 4096), dtype=torch.int32, device=device)
    return buf


# How the kernel builds the MMA metadata: 1 (default) with byte permutes (:func:`_meta4`), 0 with shifts and masks
# (:func:`_nib4`, the kernel before the eleventh session). The two give the same bits; 0 is for A/B timings
# (``LLMSPARSE_MMSP_META=0`` at import, or this attribute: bench/device/meta_probe.py).
META = env_choice("LLMSPARSE_MMSP_META", {"1": 1, "0": 0}, "1")

# Early weights (twelfth session, opt-in: ``LLMSPARSE_MMSP_EARLY=1`` at import, or this attribute): under PDL the
# register-prefetch configurations request their first super-step's packed weights before
# ``griddepcontrol.wait``, so that a kernel's weight stream starts while the kernel before it finishes. Valid
# only while no kernel launched right before this one writes the packed tensors: true of a model's layers, whose
# weights are written once when they are packed or loaded (followed by other kernels before any forward).
EARLY = env_choice("LLMSPARSE_MMSP_EARLY", {"0": 0, "1": 1}, "0")

# Cache policy of the packed-weight loads (``LLMSPARSE_MMSP_EVICT=0|1|2|3`` at import, or this attribute;
# bench/device/evict_probe.py), on the weight loads into registers (the AS stages' cp.async and the TM bulk copies
# keep theirs): 0 plain loads; 1 (default since the twenty-second session) L1 ``evict_first``; 2 ``.cg`` (:func:`_ldw`);
# 3 the values ``L1::no_allocate`` by inline PTX, the metadata as 1 (:func:`_ldv`; twenty-second session; on an
# H100 in the twenty-third within 0.4% of 1 on the 7B shapes at M = 16, evict_probe_7b_m16_h100_s23.json). The
# outputs are the same bits whatever the policy. Measured on an H100 at M = 16 (twenty-second session,
# bench/results/evict_probe_m16_h100_s22.json: the dispatcher's five order-2 configurations on 8192x8192, 8448x8192
# and 4096x11008, both dtypes): evict-first was faster than plain loads in 29 of 30
# (configuration, row) pairs, the best per row 1.020-1.066x the speed of the best plain one; ``.cg`` 0.984-1.006x.
# Each weight is read once; why the hint pays is not profiled (the XL configurations' x goes to shared memory by
# cp.async, bypassing L1, so it is not room for x). (``evict_first`` with ``.cg`` is refused by ptxas; Triton has no
# ``.cs`` load.)
EVICT = env_choice("LLMSPARSE_MMSP_EVICT", {"0": 0, "1": 1, "2": 2, "3": 3}, "1")


def mmsp_supported(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor) -> bool:
    """The integer views and 16-byte loads this kernel makes exist for these tensors."""
    return (MMSP_AVAILABLE and supported(x, values, meta) and x.shape[1] % MMSP_K == 0
            and values.data_ptr() % 16 == 0 and meta.data_ptr() % 8 == 0)


def tma_descriptors(values: torch.Tensor, meta: torch.Tensor, wk: int, rt: int):
    """Host tensor descriptors of the packed tensors for a TM configuration: int32 ``values`` and int64
    ``meta`` tiles of 16 RT rows x WK super-steps (:func:`tma_layouts`). Built per call (Triton encodes the
    tensor map at every launch anyway; a cache would keep the tensors alive)."""
    if meta.data_ptr() % 16:
        raise ValueError("mmsp TM configurations need 16-byte aligned metadata (bulk tensor copies)")
    lay = tma_layouts(wk, rt)
    return (TensorDescriptor.from_tensor(values.view(torch.int32), [16 * rt, 32 * wk], lay["VS"]),
            TensorDescriptor.from_tensor(meta.view(torch.int64), [16 * rt, 2 * wk], lay["MS"]))


def sp24_mmsp_gl(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None,
                 out_features: int, cfg=MMSP_CONFIGS[8][0], out: torch.Tensor | None = None) -> torch.Tensor:
    """``x[M, K] @ W^T (+ bias)`` on the sparse tensor cores (``mma.sp``), W as packed 2:4 (values, meta);
    for an MO configuration (13th element 1) W as :func:`mma_order`'s copy of them instead."""
    M, K = x.shape
    N = out_features
    kc = kernel_consts(cfg, x.dtype == torch.bfloat16)
    if kc["MO"]:
        tiles = -(-N // 16)
        if not (MMSP_AVAILABLE and x.dtype in (torch.float16, torch.bfloat16) and x.stride(1) == 1
                and K % MMSP_K == 0 and x.stride(0) % 2 == 0 and x.data_ptr() % 4 == 0
                and tuple(values.shape) == (tiles, K // 128 * 512) and tuple(meta.shape) == (tiles, K // 128 * 64)
                and values.dtype == meta.dtype == torch.int32 and values.is_contiguous() and meta.is_contiguous()
                and values.data_ptr() % 16 == 0 and meta.data_ptr() % 16 == 0):
            raise ValueError("sp24_mmsp_gl with an MO configuration needs mma_order's int32 copies "
                             f"[ceil(N/16), K/128 * 512] and [ceil(N/16), K/128 * 64], K % {MMSP_K} == 0")
    elif not mmsp_supported(x, values, meta):
        raise ValueError("sp24_mmsp_gl needs Gluon, fp16/bf16 x with a contiguous last dimension, "
                         f"in_features % {MMSP_K} == 0, 8-byte aligned rows and 16-byte aligned values")
    wk, nt = kc["WK"], kc["NT"]
    SS = K // MMSP_K
    splits, iters, even_k = split_plan(SS, kc["KSTEP"], config_splits(cfg))
    y = torch.empty((M, N), device=x.device, dtype=x.dtype) if out is None else out
    target = y if splits == 1 else torch.empty((splits, M, N), device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(N, kc["ROWS"]), triton.cdiv(M, 8 * nt), splits)
    fixup = splits > 1 and kc["FX"]
    pdl = _gsp.pdl_args(x.device)
    common = dict(HAS_BIAS=bias is not None and (splits == 1 or fixup), EVEN_K=even_k, SPLIT=splits > 1,
                  num_warps=wk, META=META, EW=EARLY, EV=EVICT, **kc, **pdl, **kernel_options(cfg))
    counters = tile_counters(x.device, grid[0] * grid[1]) if fixup else y
    if kc["TM"]:
        v_desc, m_desc = tma_descriptors(values, meta, kc["WK"], kc["RT"])
        _sp24_mmsp_tma_gl[grid](
            x.view(torch.int32), v_desc, m_desc, target, bias if bias is not None else y,
            M, N, SS, x.stride(0) // 2, y.stride(0) if splits == 1 else N, iters, M * N, y, counters, y.stride(0),
            EVEN_N=N % kc["ROWS"] == 0, **tma_layouts(kc["WK"], kc["RT"]), **common)
    else:
        _sp24_mmsp_gl[grid](
            x.view(torch.int32), values.view(torch.int32), meta if kc["MO"] else meta.view(torch.int64), target,
            bias if bias is not None else y,
            M, N, SS, K // 4, K // 64, x.stride(0) // 2, y.stride(0) if splits == 1 else N, iters, M * N,
            y, counters, y.stride(0), **common)
    if splits > 1 and not fixup:
        block = 1024
        _splitk_reduce[(triton.cdiv(M * N, block),)](
            target, y, bias if bias is not None else y, M * N, N, y.stride(0),
            S=splits, HAS_BIAS=bias is not None, BLOCK=block, num_warps=4, **pdl)
    return y
