"""2:4 kernels written in Gluon (Triton's explicit-layout dialect): ``_sp24_gemv_gl`` for decode
(M <= 8, FMA units) and ``_sp24_mm_gl`` on the tensor cores (mma.sync, offered at 9 <= M <= 16).

Why a second decode kernel: the Triton ``_sp24_gemv`` lets the compiler pick the register layouts,
and the reshapes/joins it needs to pull the nibbles and the 4 candidate inputs of every group apart
cost shared-memory round trips and barriers inside the main loop (about 13 SASS instructions per
kept weight for sm_90, counted offline with Triton's bundled ``nvdisasm``). Here the layout is fixed by
hand so that every tensor of the loop lives in registers of the thread that uses it:

* one 4-D layout ``[TOK, R, C, G]``: ``TOK`` tokens, ``R`` weight rows, ``C`` chunks of ``G``
  consecutive 4-wide groups; a thread holds all ``TOK x RT`` token-rows of its own chunk, so the
  inputs of a chunk are loaded and converted once and reused for ``RT`` rows, and the 2-bit indices
  of a row are loaded once and reused for ``TOK`` tokens;
* the packed arrays are read through integer views, no reshapes: ``values`` as int32 (one word =
  the two kept values of a group), ``meta`` as int32 (nibble ``j`` of word ``w`` = group ``8w + j``),
  ``x`` as int64 (one word = the 4 inputs of a group);
* the kept value's input is selected with two bit tests and two selects, whose bit positions are
  compile-time constants per register (``i0`` is 0, 1 or 2 and ``i1`` is 1, 2 or 3 because the
  indices are sorted and distinct).

This is about 8 instructions per kept weight (fp16) with no barrier in the loop. Math is fp32 (exact
products, fp32 accumulation), output in the input dtype. ``_sp24_mm_gl`` (further down) rebuilds
dense MMA fragments in registers instead; its comments say how. Same packed layout as
:mod:`llmsparse.formats.nm` (nothing is repacked). Needs ``in_features % 32 == 0``.
Triton without Gluon (or an older Gluon API): :data:`AVAILABLE` is False and the dispatcher skips it.
"""
from __future__ import annotations

import torch

from .envknob import env_choice

# Programmatic dependent launch (PDL, Hopper and later; on by default since the tenth session): the small-M
# kernels (gemvg, mmsp, the split-K reduction) are launched with ``launch_pdl=True`` and wait for the previous
# kernel with ``griddepcontrol.wait`` before any load or store, so that a kernel's launch overlaps the end of
# the one before it. They let the next kernel launch (``griddepcontrol.launch_dependents``) before their
# stores (PDL = 1, the default) or right after their wait (PDL = 2: the next kernel's programs may then take
# free SM slots, and wait there, while this one runs). Measured on an H100 (docs/kernels-log.md, tenth session):
# mode 1 took 0.90-1.005x the time of PDL off over 36 (dtype, shape, M = 1/8/16) rows, median 0.98x (most
# gained on the 7B shapes: 4096x4096 at M = 16 13.6 -> 12.3 us; the four rows above 1.0 within 0.5%).
# ``LLMSPARSE_PDL=0`` (off), ``1`` or ``2`` at import, or this attribute; devices older than compute
# capability 9.0 never get it (pdl_args).
_PDL_MODES = {"1": 1, "on": 1, "2": 2, "0": 0, "off": 0}
PDL = env_choice("LLMSPARSE_PDL", _PDL_MODES, "1")


_SM90: dict = {}


def pdl_args(device: torch.device | None = None) -> dict:
    """The extra launch arguments of the small-M kernels: with :data:`PDL` on (and ``device``, when given,
    of compute capability 9.0 or later: ``griddepcontrol`` is Hopper's), the kernels' ``GDC`` mode and
    ``launch_pdl=True``; otherwise none (``GDC`` defaults to 0: the kernels as they were without PDL)."""
    if not PDL:
        return {}
    if device is not None:
        idx = device.index if device.index is not None else torch.cuda.current_device()
        if idx not in _SM90:
            _SM90[idx] = torch.cuda.get_device_capability(idx)[0] >= 9
        if not _SM90[idx]:
            return {}
    return {"GDC": PDL, "launch_pdl": True}


try:  # Gluon is experimental; keep the package importable without it
    import triton
    import triton.language as tl
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl

    AVAILABLE = hasattr(gl, "BlockedLayout") and hasattr(gl, "SliceLayout")
except Exception:  # pragma: no cover - depends on the installed Triton
    AVAILABLE = False
try:  # griddepcontrol for the Triton (non-Gluon) split-K reduction; only compiled with PDL on
    from triton.language.extra.cuda import gdc_launch_dependents as _tl_gdc_launch_dependents
    from triton.language.extra.cuda import gdc_wait as _tl_gdc_wait
except Exception:  # pragma: no cover - a Triton without it cannot run PDL
    _tl_gdc_wait = _tl_gdc_launch_dependents = None
try:
    from triton.experimental.gluon.language.nvidia.ampere import mma_v2

    MMA_AVAILABLE = AVAILABLE and hasattr(gl, "DistributedLinearLayout") and hasattr(gl, "DotOperandLayout")
except Exception:  # pragma: no cover
    MMA_AVAILABLE = False


if AVAILABLE:

    @gluon.jit
    def gdc_wait():
        """``griddepcontrol.wait``: the previous kernel has finished and its writes are visible (no-op
        unless launched with PDL)."""
        gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)

    @gluon.jit
    def gdc_launch_dependents():
        """``griddepcontrol.launch_dependents``: the next kernel may start launching (it still waits for
        this one's completion in its own ``gdc_wait``)."""
        gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)

    @gluon.jit
    def gdc_enter(GDC: gl.constexpr):
        """The PDL wait of a kernel launched in mode ``GDC`` (:data:`PDL`): :func:`gdc_wait`, then in mode 2
        :func:`gdc_launch_dependents` at once (mode 1 launches them before its stores)."""
        gdc_wait()
        if GDC == 2:
            gdc_launch_dependents()

    @gluon.jit
    def _sp24_gemv_gl(
        x_ptr, v_ptr, m_ptr, y_ptr, b_ptr,
        M, N, NCH, KW, KM, stride_xm, stride_ym,
        HAS_BIAS: gl.constexpr, IS_BF16: gl.constexpr,
        TOK: gl.constexpr, RT: gl.constexpr, GPT: gl.constexpr, WR: gl.constexpr, WC: gl.constexpr,
        GDC: gl.constexpr = 0,
    ):
        if GDC:  # PDL: nothing is read or written before the previous kernel is done
            gdc_enter(GDC)
        # x_ptr: int64 [M, K/4]; v_ptr: int32 [N, K/4]; m_ptr: int32 [N, K/32];
        # NCH = K / (4 * GPT) chunks per row; KW = K/4; KM = K/32; stride_xm in int64 words.
        L: gl.constexpr = gl.BlockedLayout([TOK, RT, 1, GPT], [1, 1, 32, 1], [1, WR, WC, 1], [3, 2, 1, 0])
        L_trc: gl.constexpr = gl.SliceLayout(3, L)  # [TOK, R, C]
        L_rc: gl.constexpr = gl.SliceLayout(0, L_trc)  # [R, C]
        L_tcg: gl.constexpr = gl.SliceLayout(1, L)  # [TOK, C, G]
        L_rcg: gl.constexpr = gl.SliceLayout(0, L)  # [R, C, G]
        L_tr: gl.constexpr = gl.SliceLayout(2, L_trc)  # [TOK, R]
        R: gl.constexpr = RT * WR
        C: gl.constexpr = 32 * WC
        pid_m = gl.program_id(0)  # tokens vary fastest: blocks of the same rows run together (L2 reuse)
        pid_n = gl.program_id(1)
        # values: [R, C, G] int32 words
        rn = pid_n * R + gl.arange(0, R, layout=gl.SliceLayout(1, gl.SliceLayout(2, L_rcg)))
        row = gl.minimum(rn, N - 1).to(gl.int64)  # rows past N read row N-1; their outputs are not stored
        rc_v = gl.arange(0, C, layout=gl.SliceLayout(0, gl.SliceLayout(2, L_rcg)))
        rg_v = gl.arange(0, GPT, layout=gl.SliceLayout(0, gl.SliceLayout(1, L_rcg)))
        v_off = row[:, None, None] * KW + rc_v[None, :, None] * GPT + rg_v[None, None, :]
        # meta: [R, C] int32 words (a chunk of GPT < 8 groups uses half or a quarter of a word)
        rn_m = pid_n * R + gl.arange(0, R, layout=gl.SliceLayout(1, L_rc))
        row_m = gl.minimum(rn_m, N - 1).to(gl.int64)
        rc_m = gl.arange(0, C, layout=gl.SliceLayout(0, L_rc))
        m_off = row_m[:, None] * KM + (rc_m[None, :] * GPT) // 8
        m_shift = ((rc_m[None, :] * GPT) % 8) * 4
        # inputs: [TOK, C, G] int64 words
        rt = pid_m * TOK + gl.arange(0, TOK, layout=gl.SliceLayout(1, gl.SliceLayout(2, L_tcg)))
        tok = gl.minimum(rt, M - 1).to(gl.int64)
        rc_x = gl.arange(0, C, layout=gl.SliceLayout(0, gl.SliceLayout(2, L_tcg)))
        rg_x = gl.arange(0, GPT, layout=gl.SliceLayout(0, gl.SliceLayout(1, L_tcg)))
        x_off = tok[:, None, None] * stride_xm + rc_x[None, :, None] * GPT + rg_x[None, None, :]
        # bit j*4 of a meta word = lowest index bit of group j of the chunk (a constant per register)
        rg_b = gl.arange(0, GPT, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, L))))
        b0 = (1 << (rg_b * 4))[None, None, None, :]
        acc = gl.zeros([TOK, R, C, GPT], gl.float32, layout=L)
        for c0 in range(0, NCH, C):
            vw = gl.load(v_ptr + v_off + c0 * GPT, mask=(rc_v[None, :, None] + c0) < NCH, other=0)
            mw = gl.load(m_ptr + m_off + (c0 * GPT) // 8, mask=(rc_m[None, :] + c0) < NCH, other=0)
            xw = gl.load(x_ptr + x_off + c0 * GPT, mask=(rc_x[None, :, None] + c0) < NCH, other=0)
            if GPT < 8:
                mw = mw >> m_shift
            mw = mw[None, :, :, None]
            lo0 = (mw & b0) != 0
            hi0 = (mw & (b0 << 1)) != 0
            lo1 = (mw & (b0 << 2)) != 0
            hi1 = (mw & (b0 << 3)) != 0
            if IS_BF16:  # bf16 -> fp32 is a 16-bit shift
                x0 = (xw << 16).to(gl.int32).to(gl.float32, bitcast=True)
                x1 = (xw & 0xFFFF0000).to(gl.int32).to(gl.float32, bitcast=True)
                x2 = ((xw >> 16) & 0xFFFF0000).to(gl.int32).to(gl.float32, bitcast=True)
                x3 = ((xw >> 32) & 0xFFFF0000).to(gl.int32).to(gl.float32, bitcast=True)
                v0 = (vw << 16).to(gl.float32, bitcast=True)
                v1 = (vw & -65536).to(gl.float32, bitcast=True)
            else:
                x0 = xw.to(gl.int16).to(gl.float16, bitcast=True).to(gl.float32)
                x1 = (xw >> 16).to(gl.int16).to(gl.float16, bitcast=True).to(gl.float32)
                x2 = (xw >> 32).to(gl.int16).to(gl.float16, bitcast=True).to(gl.float32)
                x3 = (xw >> 48).to(gl.int16).to(gl.float16, bitcast=True).to(gl.float32)
                v0 = vw.to(gl.int16).to(gl.float16, bitcast=True).to(gl.float32)
                v1 = (vw >> 16).to(gl.int16).to(gl.float16, bitcast=True).to(gl.float32)
            x0 = x0[:, None, :, :]
            x1 = x1[:, None, :, :]
            x2 = x2[:, None, :, :]
            x3 = x3[:, None, :, :]
            # sorted distinct indices: the first is 0, 1 or 2, the second 1, 2 or 3
            s0 = gl.where(hi0, x2, gl.where(lo0, x1, x0))
            s1 = gl.where(hi1, gl.where(lo1, x3, x2), x1)
            acc = gl.fma(v0[None, :, :, :], s0, acc)
            acc = gl.fma(v1[None, :, :, :], s1, acc)
        out = gl.sum(gl.sum(acc, axis=3), axis=2)  # [TOK, R]
        rn_o = pid_n * R + gl.arange(0, R, layout=gl.SliceLayout(0, L_tr))
        rt_o = pid_m * TOK + gl.arange(0, TOK, layout=gl.SliceLayout(1, L_tr))
        if HAS_BIAS:
            out += gl.load(b_ptr + rn_o, mask=rn_o < N, other=0.0).to(gl.float32)[None, :]
        if GDC == 1:
            gdc_launch_dependents()
        y_ptrs = y_ptr + rt_o[:, None].to(gl.int64) * stride_ym + rn_o[None, :]
        gl.store(y_ptrs, out.to(y_ptr.dtype.element_ty), mask=(rt_o[:, None] < M) & (rn_o[None, :] < N))


# (TOK, RT, GPT, WR, WC): tokens per program, rows per thread, groups per thread-chunk, warps along
# rows, warps along K (num_warps = WR * WC). Rows per program = RT * WR; K per iteration = 128 * WC * GPT.
CONFIGS = [
    (1, 4, 8, 1, 4), (1, 2, 8, 1, 4), (1, 4, 8, 1, 2), (1, 2, 8, 2, 2),
    (1, 4, 4, 1, 4), (1, 8, 4, 1, 4), (1, 2, 8, 1, 8), (1, 4, 8, 2, 2),
    (1, 1, 8, 1, 4), (1, 4, 4, 2, 4),
]
# M = 2..8: several tokens share each decoded weight (registers grow with TOK * RT)
CONFIGS_MULTI = {
    2: [(2, 2, 8, 1, 4), (2, 4, 8, 1, 4), (2, 4, 4, 1, 4), (2, 2, 8, 2, 2)],
    4: [(4, 2, 4, 1, 4), (4, 2, 8, 1, 4), (4, 1, 8, 1, 4), (4, 1, 8, 2, 2)],
    8: [(8, 1, 4, 1, 4), (8, 2, 4, 1, 4), (4, 2, 4, 1, 4)],  # (8, 1, 8, 1, 4) spills registers in bf16
}
MAX_M = 8


def configs_for(m: int) -> list[tuple]:
    if m <= 1:
        return list(CONFIGS)
    b = 2 if m <= 2 else 4 if m <= 4 else 8
    return list(CONFIGS_MULTI[b]) + [c for c in CONFIGS[:3]]


def supported(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor) -> bool:
    """Whether the integer views the kernel reads exist for these tensors."""
    if not AVAILABLE or x.dim() != 2 or x.dtype not in (torch.float16, torch.bfloat16):
        return False
    k = x.shape[1]
    return (k % 32 == 0 and x.stride(1) == 1 and x.stride(0) % 4 == 0 and x.data_ptr() % 8 == 0
            and values.is_contiguous() and meta.is_contiguous() and values.data_ptr() % 4 == 0
            and meta.data_ptr() % 4 == 0)


def sp24_gemv_gl(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None,
                 out_features: int, cfg=CONFIGS[0], out: torch.Tensor | None = None) -> torch.Tensor:
    """``x[M, K] @ W^T (+ bias)`` with ``W`` given as packed 2:4 ``(values, meta)``."""
    if not supported(x, values, meta):
        raise ValueError("sp24_gemv_gl needs Gluon, fp16/bf16 x with a contiguous last dimension, "
                         "in_features % 32 == 0 and 8-byte aligned rows")
    M, K = x.shape
    N = out_features
    tok, rt, gpt, wr, wc = cfg
    y = torch.empty((M, N), device=x.device, dtype=x.dtype) if out is None else out
    xw = x.view(torch.int64)  # [M, K/4]; row stride x.stride(0)/4 words
    grid = (triton.cdiv(M, tok), triton.cdiv(N, rt * wr))
    _sp24_gemv_gl[grid](
        xw, values.view(torch.int32), meta.view(torch.int32), y, bias if bias is not None else y,
        M, N, K // (4 * gpt), K // 4, K // 32, x.stride(0) // 4, y.stride(0),
        HAS_BIAS=bias is not None, IS_BF16=x.dtype == torch.bfloat16,
        TOK=tok, RT=rt, GPT=gpt, WR=wr, WC=wc, num_warps=wr * wc, **pdl_args(x.device),
    )
    return y


if MMA_AVAILABLE:

    @gluon.jit
    def _halves(w, dt: gl.constexpr):
        """int32 tensor -> [..., 2] tensor of its two 16-bit halves (low first), as dtype ``dt``."""
        lo = w.to(gl.int16).to(dt, bitcast=True)
        hi = (w >> 16).to(gl.int16).to(dt, bitcast=True)
        return gl.join(lo, hi)

    @gluon.jit
    def _mm_load(x_ptr, v_ptr, m_ptr, v_off, m_off, x_off, g_rq, rkb, xg, g0, G_TOT, EVEN_K: gl.constexpr):
        if EVEN_K:
            vw = gl.load(v_ptr + v_off + g0)
            mw = gl.load(m_ptr + m_off + g0 // 8)
            xw = gl.load(x_ptr + x_off + g0)
        else:
            vw = gl.load(v_ptr + v_off + g0, mask=(g_rq[:, :, None] + rkb[None, None, :] + g0) < G_TOT, other=0)
            mw = gl.load(m_ptr + m_off + g0 // 8, mask=(g_rq + g0) < G_TOT, other=0)
            xw = gl.load(x_ptr + x_off + g0, mask=(xg[:, :, None] + g0) < G_TOT, other=0)
        return vw, mw, xw

    @gluon.jit
    def _mm_step(vw, mw, xw, acc, m_sh, rkb, BN: gl.constexpr, BK: gl.constexpr, BM: gl.constexpr,
                 DA: gl.constexpr, DB: gl.constexpr, dt: gl.constexpr):
        nib = (mw >> m_sh)[:, :, None] >> (rkb * 4)[None, None, :]  # bits 0-3: the group's nibble
        # dense pairs (w0 | w1 << 16) and (w2 | w3 << 16) from vw = v0 | v1 << 16; the first index
        # is 0, 1 or 2 (bit 0: it is 1, bit 1: it is 2), the second 1, 2 or 3 (bit 3: >= 2, bit 2: odd)
        w01, w23 = gl.inline_asm_elementwise(
            """{
            .reg .pred lo0, hi0, lo1, hi1;
            .reg .b32 t, a, b;
            and.b32 t, $3, 1; setp.ne.b32 lo0, t, 0;
            and.b32 t, $3, 2; setp.ne.b32 hi0, t, 0;
            and.b32 t, $3, 4; setp.ne.b32 lo1, t, 0;
            and.b32 t, $3, 8; setp.ne.b32 hi1, t, 0;
            and.b32 a, $2, 0xFFFF;
            selp.b32 a, a, $2, hi1;
            selp.b32 a, 0, a, hi0;
            shl.b32 b, $2, 16;
            selp.b32 $0, b, a, lo0;
            and.b32 a, $2, 0xFFFF0000;
            selp.b32 a, $2, a, hi0;
            shr.u32 b, $2, 16;
            selp.b32 a, a, b, lo1;
            selp.b32 $1, a, 0, hi1;
            }""",
            "=r,=r,r,r", [vw, nib], dtype=(gl.int32, gl.int32), is_pure=True, pack=1)
        a = gl.join(_halves(w01, dt), _halves(w23, dt))  # [BN, Q, KB, L, H]
        a = gl.permute(a, [0, 2, 4, 1, 3])  # [BN, KB, H, Q, L]
        a = gl.convert_layout(gl.reshape(a, [BN, BK]), DA)
        b = gl.join(_halves(xw.to(gl.int32), dt), _halves((xw >> 32).to(gl.int32), dt))  # [Q, KB, BM, L, H]
        b = gl.permute(b, [1, 4, 0, 3, 2])  # [KB, H, Q, L, BM]
        b = gl.convert_layout(gl.reshape(b, [BK, BM]), DB)
        return mma_v2(a, b, acc)

    @gluon.jit
    def _sp24_mm_gl(
        x_ptr, v_ptr, m_ptr, y_ptr, b_ptr,
        M, N, G_TOT, KW, KM, stride_xm, stride_ym, ITERS, MN,
        LA: gl.constexpr, LX: gl.constexpr, P: gl.constexpr,
        HAS_BIAS: gl.constexpr, IS_BF16: gl.constexpr, EVEN_K: gl.constexpr, SPLIT: gl.constexpr,
        BN: gl.constexpr, BM: gl.constexpr, KREP: gl.constexpr,
    ):
        # y^T[BN, BM] = W[BN, BK] x^T[BK, BM] with mma.sync m16n8k16 (fp32 accumulators). The reduction
        # index of the MMA fragments is permuted so that each thread owns whole 2:4 groups: fragment
        # k = L + 2Q + 8H + 16KB (L, H: the thread's registers, Q: lane % 4, KB: repetitions) is
        # weight/input column 4 * (KREP * Q + KB) + 2H + L. W and x use the same permutation, so the
        # products are unchanged; the dense W fragment is rebuilt in registers from the packed
        # values (one int32 = the group's two kept values) and the group's nibble.
        # Split-K (SPLIT > 1): program_id(2) takes ITERS K steps and writes fp32 partial sums to
        # y_ptr[split, M, N] (MN = M * N); _splitk_reduce adds them up. The next step's loads are
        # issued before the current step is computed (one step of register prefetch).
        G: gl.constexpr = 4 * KREP
        BK: gl.constexpr = 16 * KREP
        DA: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=P, k_width=2)
        DB: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=P, k_width=2)
        dt: gl.constexpr = gl.bfloat16 if IS_BF16 else gl.float16
        LA_rq: gl.constexpr = gl.SliceLayout(2, LA)
        pid_m = gl.program_id(0)  # token blocks vary fastest: the blocks of one row tile run together
        pid_n = gl.program_id(1)
        pid_k = gl.program_id(2)
        # packed weights, [BN, Q, KB]: group KREP * q + kb of the K tile
        rn = pid_n * BN + gl.arange(0, BN, layout=gl.SliceLayout(1, LA_rq))
        row = gl.minimum(rn, N - 1).to(gl.int64)
        rq = gl.arange(0, 4, layout=gl.SliceLayout(0, LA_rq))
        rkb = gl.arange(0, KREP, layout=gl.SliceLayout(0, gl.SliceLayout(1, LA)))
        g_rq = rq[None, :] * KREP
        v_off = (row[:, None] * KW + g_rq)[:, :, None] + rkb[None, None, :]
        m_off = row[:, None] * KM + g_rq // 8  # one meta word holds the nibbles of a thread's KREP <= 8 groups
        m_sh = (g_rq % 8) * 4
        # inputs, [Q, KB, BM] int64 words (4 inputs of a group each)
        rt = pid_m * BM + gl.arange(0, BM, layout=gl.SliceLayout(0, gl.SliceLayout(1, LX)))
        tok = gl.minimum(rt, M - 1).to(gl.int64)
        xq = gl.arange(0, 4, layout=gl.SliceLayout(1, gl.SliceLayout(2, LX)))
        xkb = gl.arange(0, KREP, layout=gl.SliceLayout(0, gl.SliceLayout(2, LX)))
        xg = xq[:, None] * KREP + xkb[None, :]
        x_off = xg[:, :, None] + tok[None, None, :] * stride_xm
        acc = gl.zeros([BN, BM], gl.float32, layout=P)
        g_first = pid_k * ITERS * G
        g_end = gl.minimum(g_first + ITERS * G, G_TOT)
        g_last = g_first + ((g_end - g_first + G - 1) // G - 1) * G  # this split's last step (partial: masked)
        vw, mw, xw = _mm_load(x_ptr, v_ptr, m_ptr, v_off, m_off, x_off, g_rq, rkb, xg, g_first, G_TOT, EVEN_K)
        for g0 in range(g_first, g_end, G):
            g_nx = gl.minimum(g0 + G, g_last)  # the last step re-reads itself instead of running past the end
            vn, mn, xn = _mm_load(x_ptr, v_ptr, m_ptr, v_off, m_off, x_off, g_rq, rkb, xg, g_nx, G_TOT, EVEN_K)
            acc = _mm_step(vw, mw, xw, acc, m_sh, rkb, BN, BK, BM, DA, DB, dt)
            vw = vn
            mw = mn
            xw = xn
        rn_o = pid_n * BN + gl.arange(0, BN, layout=gl.SliceLayout(1, P))
        rt_o = pid_m * BM + gl.arange(0, BM, layout=gl.SliceLayout(0, P))
        o_mask = (rt_o[None, :] < M) & (rn_o[:, None] < N)
        if SPLIT:
            p_ptrs = y_ptr + pid_k.to(gl.int64) * MN + rt_o[None, :].to(gl.int64) * N + rn_o[:, None]
            gl.store(p_ptrs, acc, mask=o_mask)
        else:
            if HAS_BIAS:
                acc += gl.load(b_ptr + rn_o, mask=rn_o < N, other=0.0).to(gl.float32)[:, None]
            y_ptrs = y_ptr + rt_o[None, :].to(gl.int64) * stride_ym + rn_o[:, None]
            gl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=o_mask)


@triton.jit
def _splitk_reduce(p_ptr, y_ptr, b_ptr, MN, N, stride_ym, S: tl.constexpr, HAS_BIAS: tl.constexpr,
                   BLOCK: tl.constexpr, GDC: tl.constexpr = 0):
    """y[m, n] = sum_s p[s, m, n] (+ bias[n]), fp32 partials -> y's dtype."""
    if GDC:  # PDL: the partials are the previous kernel's output
        _tl_gdc_wait()
        if GDC == 2:
            _tl_gdc_launch_dependents()
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < MN
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(S):
        acc += tl.load(p_ptr + s * MN + offs, mask=ok, other=0.0)
    n = offs % N
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=ok, other=0.0).to(tl.float32)
    if GDC == 1:
        _tl_gdc_launch_dependents()
    tl.store(y_ptr + (offs // N).to(tl.int64) * stride_ym + n, acc.to(y_ptr.dtype.element_ty), mask=ok)


def _log2(v: int) -> int:
    if v <= 0 or v & (v - 1):
        raise ValueError(f"{v} is not a power of two")
    return v.bit_length() - 1


_LAYOUTS: dict = {}


def mm_layouts(wn: int, rn: int, krep: int, bm: int):
    """The three register layouts of :func:`_sp24_mm_gl` for (warps, row repeats, K repeats, tokens)."""
    key = (wn, rn, krep, bm)
    if key not in _LAYOUTS:
        bn = 16 * wn * rn
        la = gl.DistributedLinearLayout(  # [BN, 4 (Q), KREP (KB)]: one thread = KREP consecutive groups of 2 rows
            reg_bases=[[0, 0, 1 << i] for i in range(_log2(krep))] + [[8, 0, 0]]
            + [[(16 * wn) << i, 0, 0] for i in range(_log2(rn))],
            lane_bases=[[0, 1, 0], [0, 2, 0], [1, 0, 0], [2, 0, 0], [4, 0, 0]],
            warp_bases=[[16 << i, 0, 0] for i in range(_log2(wn))], block_bases=[], shape=[bn, 4, krep])
        lx = gl.DistributedLinearLayout(  # [4 (Q), KREP (KB), BM]
            reg_bases=[[0, 1 << i, 0] for i in range(_log2(krep))] + [[0, 0, 8 << i] for i in range(_log2(bm // 8))],
            lane_bases=[[1, 0, 0], [2, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 4]],
            warp_bases=[[0, 0, 0] for _ in range(_log2(wn))], block_bases=[], shape=[4, krep, bm])
        p = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[wn, 1], instr_shape=[16, 8])
        _LAYOUTS[key] = (la, lx, p)
    return _LAYOUTS[key]


# (WN, RN, KREP, BM, S): warps (each 16 rows), row repeats per warp, 16-wide K steps per iteration
# (KREP <= 8), tokens per program (a multiple of 8), K splits (S > 1: fp32 partials + a reduction
# kernel; gives small layers enough warps). Rows per program = 16 * WN * RN.
MM_CONFIGS = {
    16: [(2, 1, 8, 16, 1), (2, 1, 8, 16, 2), (2, 1, 8, 16, 4), (2, 1, 8, 16, 8), (4, 1, 8, 16, 4),
         (2, 2, 4, 16, 4), (4, 1, 4, 16, 8), (2, 2, 8, 16, 2)],
    32: [(2, 1, 8, 32, 1), (2, 1, 8, 32, 4), (2, 2, 4, 32, 4), (4, 1, 4, 32, 8), (2, 1, 8, 16, 4)],
    64: [(2, 1, 8, 32, 4), (4, 1, 4, 64, 4), (2, 2, 4, 64, 2), (2, 1, 8, 32, 2)],
}
# the dispatcher offers mmg for 9 <= M <= 16 only: measured on an H200 it beat dense at M=16 on the large
# shapes (1.08-1.19x) and lost at M=32 everywhere (0.76-0.87x); sp24_mm_gl itself takes any M
MM_MIN_M, MM_MAX_M = 9, 16


def mm_configs_for(m: int) -> list[tuple]:
    return list(MM_CONFIGS[16 if m <= 16 else 32 if m <= 32 else 64])


def sp24_mm_gl(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None,
               out_features: int, cfg=MM_CONFIGS[16][0], out: torch.Tensor | None = None) -> torch.Tensor:
    """``x[M, K] @ W^T (+ bias)`` on the tensor cores (mma.sync), W rebuilt in registers from packed 2:4."""
    if not (MMA_AVAILABLE and supported(x, values, meta)):
        raise ValueError("sp24_mm_gl needs Gluon, fp16/bf16 x with a contiguous last dimension, "
                         "in_features % 32 == 0 and 8-byte aligned rows")
    M, K = x.shape
    N = out_features
    wn, rn, krep, bm = cfg[:4]
    splits = cfg[4] if len(cfg) > 4 else 1
    la, lx, p = mm_layouts(wn, rn, krep, bm)
    bn, g = 16 * wn * rn, 4 * krep
    steps = triton.cdiv(K // 4, g)
    splits = max(1, min(splits, steps))
    iters = triton.cdiv(steps, splits)
    splits = triton.cdiv(steps, iters)  # no empty split
    y = torch.empty((M, N), device=x.device, dtype=x.dtype) if out is None else out
    target = y if splits == 1 else torch.empty((splits, M, N), device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(M, bm), triton.cdiv(N, bn), splits)
    _sp24_mm_gl[grid](
        x.view(torch.int64), values.view(torch.int32), meta.view(torch.int32), target,
        bias if bias is not None else y,
        M, N, K // 4, K // 4, K // 32, x.stride(0) // 4, y.stride(0), iters, M * N,
        LA=la, LX=lx, P=p, HAS_BIAS=bias is not None, IS_BF16=x.dtype == torch.bfloat16,
        EVEN_K=(K // 4) % g == 0, SPLIT=splits > 1, BN=bn, BM=bm, KREP=krep, num_warps=wn,
    )
    if splits > 1:
        block = 1024
        _splitk_reduce[(triton.cdiv(M * N, block),)](
            target, y, bias if bias is not None else y, M * N, N, y.stride(0),
            S=splits, HAS_BIAS=bias is not None, BLOCK=block, num_warps=4)
    return y
