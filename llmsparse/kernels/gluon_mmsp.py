"""``mmsp``: a 2:4 kernel on the *sparse* tensor cores (``mma.sp`` m16n8k32), for decode sizes.

EXPERIMENTAL: compiled and inspected offline for sm_90 only (``tests/unit/test_gluon_offline.py``);
not yet run on a GPU, so it is not a dispatcher candidate (``dispatch.DEFAULT_PATHS``) until
``tests/gpu`` has checked it against dense-with-zeros on hardware.

Why: the decode kernels ``gemvg``/``mmg`` spend 6-8 instructions per kept weight selecting inputs or
rebuilding dense MMA fragments. ``mma.sp`` takes the compressed 2:4 operand and its 2-bit indices
as they are, and the packed layout of :mod:`llmsparse.formats.nm` already *is* its register format:

* A (the weights, 16 rows x 32 inputs, compressed to 16 x 16): lane ``4g + t`` holds the kept pair
  of group ``t`` and of group ``t + 4`` for rows ``g`` and ``g + 8``; one kept pair is one int32 of
  ``values`` (register j: row half ``j & 1``, group half ``j >> 1``);
* the metadata: with sparsity selector 0, lanes ``4g`` and ``4g + 1`` supply a 32-bit word whose low
  half holds the nibbles of row ``g`` and whose high half those of row ``g + 8``, for inputs 0-15
  (lane ``4g``) or 16-31 (lane ``4g + 1``); one nibble is ``i0 | i1 << 2``, groups in increasing bit
  order. ``meta`` stores exactly that (little-endian nibbles), so each half is one int16 of ``meta``;
* B (the inputs, 32 x 8 tokens): lane ``4n + t`` holds inputs ``2t + 8j`` and ``2t + 8j + 1`` of token
  ``n`` in register j: one int32 of ``x``;
* D (fp32, 16 rows x 8 tokens): register j of lane ``4g + t`` is row ``g + 8 (j >> 1)``, token
  ``2t + (j & 1)``.

So every operand is a plain 32- or 16-bit load, and one ``mma.sp`` consumes 256 kept weights per warp
(about 1.5 instructions per kept weight per thread, against 8 for ``gemvg``). The instruction runs
through ``inline_asm_elementwise`` with ``pack=4``: all operands live in one register layout
``[WK, KU, RT, NT, 32 lanes, 4 registers]`` (warps split K; KU 32-wide K steps per iteration, each
with its own accumulator; RT 16-row tiles; NT 8-token tiles), so each packed group of 4 elements is
exactly one lane's 4 registers of one MMA.
"""
from __future__ import annotations

import torch

from .gluon_sp24 import AVAILABLE, _log2, supported

try:
    import triton
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl

    MMSP_AVAILABLE = AVAILABLE and hasattr(gl, "DistributedLinearLayout") and hasattr(gl, "inline_asm_elementwise")
except Exception:  # pragma: no cover - depends on the installed Triton
    MMSP_AVAILABLE = False


_LAYOUTS: dict = {}


def mmsp_layout(wk: int, ku: int, rt: int, nt: int):
    """The register layout ``[WK, KU, RT, NT, 32, 4]`` of :func:`_sp24_mmsp_gl`."""
    key = (wk, ku, rt, nt)
    if key not in _LAYOUTS:
        def e(dim, v):
            b = [0] * 6
            b[dim] = v
            return b

        _LAYOUTS[key] = gl.DistributedLinearLayout(
            reg_bases=[e(5, 1), e(5, 2)] + [e(1, 1 << i) for i in range(_log2(ku))]
            + [e(2, 1 << i) for i in range(_log2(rt))] + [e(3, 1 << i) for i in range(_log2(nt))],
            lane_bases=[e(4, 1 << i) for i in range(5)],
            warp_bases=[e(0, 1 << i) for i in range(_log2(wk))],
            block_bases=[], shape=[wk, ku, rt, nt, 32, 4])
    return _LAYOUTS[key]


if MMSP_AVAILABLE:

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
    def _mmsp_load(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, step0, s0, S, EVEN_K: gl.constexpr):
        if EVEN_K:
            va = gl.load(v_ptr + (a_off + s0 * 8))
            lo = gl.load(m_ptr + (m_lo + s0 * 2))
            hi = gl.load(m_ptr + (m_hi + s0 * 2))
            xb = gl.load(x_ptr + (b_off + s0 * 16))
        else:  # steps past K: zero weights (and valid indices 0, 1 in the metadata)
            ok = (step0 + s0) < S
            va = gl.load(v_ptr + (a_off + s0 * 8), mask=ok, other=0)
            lo = gl.load(m_ptr + (m_lo + s0 * 2), mask=ok, other=0x4444)
            hi = gl.load(m_ptr + (m_hi + s0 * 2), mask=ok, other=0x4444)
            xb = gl.load(x_ptr + (b_off + s0 * 16), mask=ok, other=0)
        return va, lo, hi, xb

    @gluon.jit
    def _mmsp_mma(va, lo, hi, xb, acc, IS_BF16: gl.constexpr):
        meta = (lo.to(gl.int32) & 0xFFFF) | (hi.to(gl.int32) << 16)
        if IS_BF16:
            acc = gl.inline_asm_elementwise(
                "mma.sp.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 {$0,$1,$2,$3}, {$4,$5,$6,$7}, "
                "{$8,$9,$10,$11}, {$12,$13,$14,$15}, $16, 0x0;",
                "=f,=f,=f,=f,r,r,r,r,r,r,r,r,f,f,f,f,r,r,r,r",
                [va, xb, acc, meta], dtype=gl.float32, is_pure=True, pack=4)
        else:
            acc = gl.inline_asm_elementwise(
                "mma.sp.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 {$0,$1,$2,$3}, {$4,$5,$6,$7}, "
                "{$8,$9,$10,$11}, {$12,$13,$14,$15}, $16, 0x0;",
                "=f,=f,=f,=f,r,r,r,r,r,r,r,r,f,f,f,f,r,r,r,r",
                [va, xb, acc, meta], dtype=gl.float32, is_pure=True, pack=4)
        return acc

    @gluon.jit
    def _sp24_mmsp_gl(
        x_ptr, v_ptr, m_ptr, y_ptr, b_ptr,
        M, N, S, KG, KH, stride_xw, stride_ym, ITERS,
        L: gl.constexpr, HAS_BIAS: gl.constexpr, IS_BF16: gl.constexpr, EVEN_K: gl.constexpr,
        WK: gl.constexpr, KU: gl.constexpr, RT: gl.constexpr, NT: gl.constexpr, PF: gl.constexpr,
    ):
        # x_ptr: int32 [M, K/2] (stride_xw words per token); v_ptr: int32 [N, KG = K/4] (a group's kept
        # pair); m_ptr: int16 [N, KH = K/16] (4 nibbles); S = K/32 steps; ITERS = cdiv(S, WK*KU).
        pid_n = gl.program_id(0)
        pid_m = gl.program_id(1)
        kw = _ar(WK, 0, L)
        ku = _ar(KU, 1, L)
        rt = _ar(RT, 2, L)
        nt = _ar(NT, 3, L)
        lane = _ar(32, 4, L)
        j = _ar(4, 5, L)
        g = lane // 4
        t = lane % 4
        # A: [WK, KU, RT, 1, 32, 4]; rows past N read row N-1 (their outputs are not stored)
        row_a = gl.minimum(pid_n * (16 * RT) + rt * 16 + g + 8 * (j & 1), N - 1).to(gl.int64)
        step0 = kw * KU + ku  # this register's step within an iteration
        a_off = row_a * KG + step0 * 8 + t + 4 * (j >> 1)
        # metadata halves (int16): row g (low) and g + 8 (high), inputs 16 * (t % 2) .. + 15 of the step
        row_m = gl.minimum(pid_n * (16 * RT) + rt * 16 + g, N - 1).to(gl.int64)
        row_m8 = gl.minimum(pid_n * (16 * RT) + rt * 16 + g + 8, N - 1).to(gl.int64)
        m_lo = row_m * KH + step0 * 2 + (t % 2) + j * 0
        m_hi = row_m8 * KH + step0 * 2 + (t % 2) + j * 0
        # B: [WK, KU, 1, NT, 32, 4]; tokens past M read token M-1
        tok = gl.minimum(pid_m * (8 * NT) + nt * 8 + g, M - 1).to(gl.int64)
        b_off = tok * stride_xw + step0 * 16 + t + 4 * j
        acc = gl.zeros([WK, KU, RT, NT, 32, 4], gl.float32, layout=L)
        if PF:  # one iteration of register prefetch: the next loads are issued before this MMA
            va, lo, hi, xb = _mmsp_load(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, step0, 0, S, EVEN_K)
            for it in range(0, ITERS):
                s_nx = gl.minimum(it + 1, ITERS - 1) * (WK * KU)  # the last iteration re-reads itself
                va2, lo2, hi2, xb2 = _mmsp_load(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, step0, s_nx, S,
                                                EVEN_K)
                acc = _mmsp_mma(va, lo, hi, xb, acc, IS_BF16)
                va = va2
                lo = lo2
                hi = hi2
                xb = xb2
        else:
            for it in range(0, ITERS):
                va, lo, hi, xb = _mmsp_load(x_ptr, v_ptr, m_ptr, a_off, m_lo, m_hi, b_off, step0, it * (WK * KU),
                                            S, EVEN_K)
                acc = _mmsp_mma(va, lo, hi, xb, acc, IS_BF16)
        out = gl.sum(gl.sum(acc, axis=1), axis=0)  # [RT, NT, 32, 4]
        LO: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(1, L))
        o_rt = gl.arange(0, RT, layout=gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, LO))))[:, None, None, None]
        o_nt = gl.arange(0, NT, layout=gl.SliceLayout(0, gl.SliceLayout(2, gl.SliceLayout(3, LO))))[None, :, None, None]
        o_ln = gl.arange(0, 32, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(3, LO))))[None, None, :, None]
        o_j = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, LO))))[None, None, None, :]
        o_row = pid_n * (16 * RT) + o_rt * 16 + o_ln // 4 + 8 * (o_j >> 1)
        o_tok = pid_m * (8 * NT) + o_nt * 8 + 2 * (o_ln % 4) + (o_j & 1)
        if HAS_BIAS:
            out += gl.load(b_ptr + gl.minimum(o_row, N - 1)).to(gl.float32)
        y_ptrs = y_ptr + o_tok.to(gl.int64) * stride_ym + o_row
        gl.store(y_ptrs, out.to(y_ptr.dtype.element_ty), mask=(o_tok < M) & (o_row < N))


# (WK, KU, RT, NT, PF): warps splitting K, 32-wide K steps per iteration (one accumulator each),
# 16-row tiles per warp, 8-token tiles, register prefetch. Rows per program = 16 * RT; tokens per
# program = 8 * NT.
MMSP_CONFIGS = {
    8: [(8, 2, 1, 1, 0), (8, 2, 1, 1, 1), (16, 2, 1, 1, 0), (16, 2, 1, 1, 1), (8, 4, 1, 1, 0), (4, 4, 1, 1, 1),
        (16, 1, 1, 1, 1), (4, 2, 2, 1, 0), (8, 1, 1, 1, 0)],
    16: [(8, 2, 1, 2, 0), (8, 2, 1, 2, 1), (16, 2, 1, 2, 0), (16, 1, 1, 2, 1), (8, 4, 1, 2, 0), (4, 2, 2, 2, 0)],
    32: [(8, 2, 1, 4, 0), (8, 1, 1, 4, 0), (8, 1, 1, 4, 1), (4, 2, 1, 4, 0)],
    64: [(8, 1, 1, 8, 0), (4, 1, 2, 8, 0), (8, 2, 1, 8, 0)],
}
MMSP_MAX_M = 64
# (WK, KU, RT, NT, PF): PF = 1 issues the next iteration's loads before this iteration's MMAs.
# Registers (sm_90, offline): 48-96 for NT=1, 52-128 for NT=2, 62-96 for NT=4, 94-168 for NT=8, no
# spills; KU=8 with NT=1 needs 170-218 (left out)


def mmsp_configs_for(m: int) -> list[tuple]:
    return list(MMSP_CONFIGS[8 if m <= 8 else 16 if m <= 16 else 32 if m <= 32 else 64])


def sp24_mmsp_gl(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None,
                 out_features: int, cfg=MMSP_CONFIGS[8][0], out: torch.Tensor | None = None) -> torch.Tensor:
    """``x[M, K] @ W^T (+ bias)`` on the sparse tensor cores (``mma.sp``), W as packed 2:4 (values, meta)."""
    if not (MMSP_AVAILABLE and supported(x, values, meta)):
        raise ValueError("sp24_mmsp_gl needs Gluon, fp16/bf16 x with a contiguous last dimension, "
                         "in_features % 32 == 0 and 8-byte aligned rows")
    M, K = x.shape
    N = out_features
    wk, ku, rt, nt = cfg[:4]
    pf = cfg[4] if len(cfg) > 4 else 0
    S = K // 32
    iters = triton.cdiv(S, wk * ku)
    y = torch.empty((M, N), device=x.device, dtype=x.dtype) if out is None else out
    grid = (triton.cdiv(N, 16 * rt), triton.cdiv(M, 8 * nt))
    _sp24_mmsp_gl[grid](
        x.view(torch.int32), values.view(torch.int32), meta.view(torch.int16), y,
        bias if bias is not None else y,
        M, N, S, K // 4, K // 16, x.stride(0) // 2, y.stride(0), iters,
        L=mmsp_layout(wk, ku, rt, nt), HAS_BIAS=bias is not None, IS_BF16=x.dtype == torch.bfloat16,
        EVEN_K=S % (wk * ku) == 0, WK=wk, KU=ku, RT=rt, NT=nt, PF=bool(pf), num_warps=wk,
    )
    return y
