"""The Gluon decode kernel compiled for sm_90 on the CPU (Triton's bundled ptxas/nvdisasm): it must
compile for both dtypes, and its main loop must stay free of barriers, shared-memory round trips
and register spills -- the property that made it faster than the Triton kernel (docs/kernels-log.md)."""
import re

import pytest

triton = pytest.importorskip("triton")
from llmsparse.kernels import gluon_sp24, offline  # noqa: E402

pytestmark = pytest.mark.skipif(not (gluon_sp24.AVAILABLE and offline.tools_available()),
                                reason="needs Triton with Gluon and its bundled CUDA tools")


@pytest.fixture(autouse=True)
def _plain_weight_loads(monkeypatch):
    """The structural tests below count load opcodes of plain loads (``LDG.E.128`` ...); the shipped kernel marks
    its weight loads L1 evict-first (``gluon_mmsp.EVICT`` = 1: ``LDG.E.EF.128``), which
    test_mmsp_weight_cache_policy_changes_only_the_weight_loads shows is the only difference (it passes the policy
    explicitly and checks the default)."""
    from llmsparse.kernels import gluon_mmsp

    monkeypatch.setattr(gluon_mmsp, "EVICT", 0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("cfg", [gluon_sp24.CONFIGS[0], gluon_sp24.CONFIGS_MULTI[4][0]])
def test_gluon_gemv_main_loop_is_register_only(dtype, cfg):
    s = offline.gluon_gemv_stats(dtype, cfg, has_bias=True)
    assert s["stack"] == 0, s
    assert s["loop_barriers"] == 0 and s["loop_shared"] == 0, s
    # one FMA per kept weight and token held by a thread: every product is in the loop, none twice
    assert s["loop_ffma"] == s["kept_per_iteration"], s
    # about 8 instructions per kept weight (13 for the Triton kernel); a regression would show here
    assert s["loop"] / s["kept_per_iteration"] < 10, s


@pytest.mark.skipif(not gluon_sp24.MMA_AVAILABLE, reason="needs Gluon's mma_v2 and linear layouts")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("cfg,even_k", [((2, 1, 8, 16, 1), True), ((2, 2, 4, 32, 4), False)])
def test_gluon_mm_fragments_are_built_in_registers(dtype, cfg, even_k):
    """The tensor-core kernel rebuilds W's MMA fragments in the registers that hold the packed weights:
    the layout conversions it asks for must all be register renamings (no shared memory, no barrier)."""
    s = offline.gluon_mm_stats(dtype, cfg, has_bias=True, even_k=even_k)
    assert s["stack"] == 0, s
    assert s["loop_barriers"] == 0 and s["loop_shared"] == 0, s
    wn, rn, krep, bm = cfg[:4]
    assert s["loop_mma"] == rn * krep * (bm // 8), s  # one m16n8k16 per 16 rows x 16 k x 8 tokens of a warp
    assert s["loop"] / s["kept_per_iteration"] < 12, s


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("cfg,even_k", [((4, 1, 1, 1), True), ((4, 1, 1, 0), True), ((4, 2, 2, 1), False),
                                         ((8, 1, 2, 2), False), ((4, 2, 2, 1, 1), True), ((4, 1, 1, 0, 1), False),
                                         ((4, 2, 2, 1, 1, 1), False)])
def test_gluon_mmsp_feeds_the_sparse_tensor_cores_from_wide_loads(dtype, cfg, even_k):
    """The experimental mma.sp kernel: four HMMA.SP per 16 rows x 128 inputs x 8 tokens of a warp; the
    weights read with one 16-byte load per (row, group half) of a 16-row tile and the metadata with one
    8-byte load per row (the point of the K permutation; the first version made 32- and 16-bit loads), no
    shared memory, barrier or spill in the loop."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts")
    s = offline.gluon_mmsp_stats(dtype, cfg, has_bias=True, even_k=even_k, keep_lines=True)
    lines = s.pop("lines")
    assert s["stack"] == 0, s
    assert s["loop_barriers"] == 0 and s["loop_shared"] == 0, s
    wk, rt, nt, pf = cfg[:4]
    xs = len(cfg) > 4 and cfg[4]
    assert sum("HMMA.SP.16832.F32" in x for x in lines) == 4 * rt * nt, s
    # weights: rows g, g+8 x group halves per row tile; with XS also x: 4 registers j per token tile
    assert sum("LDG.E.128" in x for x in lines) == 4 * rt + (4 * nt if xs else 0), s
    assert sum("LDG.E.64" in x for x in lines) == 2 * rt, s  # metadata of rows g and g+8
    # x without XS: one 32-bit load per fragment register; with XS: none, and the permutation by shuffles
    assert sum(bool(re.search(r"LDG\.E(\.U16)? ", x)) for x in lines) == (0 if xs else 16 * nt), s
    assert sum("SHFL" in x for x in lines) == (8 * nt if xs else 0), s


@pytest.mark.parametrize("cfg", [(4, 2, 2, 1, 1), (4, 1, 2, 1, 1, 0, 0, 4, 1), (2, 4, 2, 0, 1, 1)])
def test_gluon_mmsp_metadata_by_byte_permutes(cfg):
    """META = 1 (the default): per row tile and super-step the 4 MMAs' metadata words come from 8 byte
    permutes (two per row's nibble transpose, one per MMA to join rows g and g + 8) and a few shifts and
    logic ops, instead of the per-MMA shift-and-mask chains of META = 0; same loads and MMAs, no spill, a
    main loop at least 12% shorter."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts")
    new = offline.gluon_mmsp_stats("bfloat16", cfg, even_k=True, keep_lines=True, meta=1)
    old = offline.gluon_mmsp_stats("bfloat16", cfg, even_k=True, keep_lines=True, meta=0)
    nl, ol = new.pop("lines"), old.pop("lines")
    rt = cfg[1]
    assert sum(bool(re.search(r"\bPRMT\b", x)) for x in nl) == 8 * rt
    assert not any(re.search(r"\bPRMT\b", x) for x in ol)
    for op in ("LDG.E.128", "LDG.E.64", "HMMA"):
        assert sum(op in x for x in nl) == sum(op in x for x in ol), op
    assert new["stack"] == 0 and new["loop"] <= 0.88 * old["loop"], (new["loop"], old["loop"])


@pytest.mark.parametrize("dtype", ["bfloat16"])
def test_gluon_mmsp_chained_accumulator_frees_registers(dtype):
    """CH = 1 keeps one accumulator per (row tile, token tile) instead of one per MMA of a super-step:
    12 fewer registers per tile pair, which is what makes 4 row tiles x 2 token tiles fit."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts")
    sep = offline.gluon_mmsp_stats(dtype, (4, 2, 2, 1, 1, 0), even_k=True)
    ch = offline.gluon_mmsp_stats(dtype, (4, 2, 2, 1, 1, 1), even_k=True)
    assert ch["stack"] == 0 and ch["regs"] <= sep["regs"] - 40, (sep["regs"], ch["regs"])
    assert ch["loop_mma"] == sep["loop_mma"]


@pytest.mark.parametrize("cfg,even_k", [((4, 2, 2, 1, 1, 0, 2), True), ((4, 1, 1, 1, 1, 0, 4), False),
                                         ((2, 4, 2, 0, 1, 1, 3), True)])
def test_gluon_mmsp_l2_prefetch(cfg, even_k):
    """PD > 0: per iteration, one per-lane L2 prefetch of values and one of metadata for each row of the
    program a thread covers (no warp-uniform bulk prefetch: ptxas serializes those over the lanes), and
    the loop otherwise unchanged: the same MMAs and loads, no spill, barrier or shared memory."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts")
    s = offline.gluon_mmsp_stats("bfloat16", cfg, has_bias=True, even_k=even_k, keep_lines=True)
    lines = s.pop("lines")
    base = offline.gluon_mmsp_stats("bfloat16", cfg[:6], has_bias=True, even_k=even_k, keep_lines=True)
    base_lines = base.pop("lines")
    assert s["stack"] == 0 and s["loop_barriers"] == 0 and s["loop_shared"] == 0, s
    rt = cfg[1]
    assert sum("CCTL.E.PF2" in x for x in lines) == 2 * max(1, 16 * rt // 32), s
    assert not any("UBLKPF" in x for x in lines)
    assert s["loop_mma"] == base["loop_mma"] == 4 * rt * cfg[2]
    for op in ("LDG.E.128", "LDG.E.64", "SHFL"):
        assert sum(op in x for x in lines) == sum(op in x for x in base_lines), op
    assert s["loop"] <= base["loop"] + 32 * max(1, 16 * rt // 32), (s["loop"], base["loop"])  # address arithmetic


def test_gluon_mmsp_split_k_changes_only_the_epilogue():
    """SK > 1: the main loop is the unsplit one (same MMAs, loads, no spill); only the start super-step
    (a per-program offset) and the fp32 partial store differ."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts")
    base = offline.gluon_mmsp_stats("float16", (4, 2, 2, 1, 1), even_k=True, keep_lines=True)
    sk = offline.gluon_mmsp_stats("float16", (4, 2, 2, 1, 1, 0, 0, 2), even_k=True, keep_lines=True)
    bl, sl = base.pop("lines"), sk.pop("lines")
    assert sk["stack"] == 0 and sk["loop_mma"] == base["loop_mma"] and sk["regs"] <= base["regs"] + 2
    for op in ("LDG.E.128", "LDG.E.64", "SHFL", "HMMA"):
        assert sum(op in x for x in sl) == sum(op in x for x in bl), op
    # the rest is register moves (both at 253-255 registers; 229 vs 238 instructions with _meta4)
    assert abs(sk["loop"] - base["loop"]) <= 12, (sk["loop"], base["loop"])


def test_gluon_mmsp_rows_per_warp_needs_no_cross_warp_reduction():
    """RW = 1 (ninth element): the warps of a program split its rows and read the same super-steps, so
    each warp ends with whole sums for its rows: the kernel uses no shared memory at all (the K-split
    kernel reduces across warps through shared memory), and the main loop is the same."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts")
    ks = offline.gluon_mmsp_stats("bfloat16", (4, 1, 2, 1, 1), even_k=True, keep_lines=True)
    rw = offline.gluon_mmsp_stats("bfloat16", (4, 1, 2, 1, 1, 0, 0, 1, 1), even_k=True, keep_lines=True)
    kl, rl = ks.pop("lines"), rw.pop("lines")
    assert ks["shared"] > 0 and rw["shared"] == 0, (ks["shared"], rw["shared"])
    assert rw["stack"] == 0 and rw["loop_mma"] == ks["loop_mma"]
    for op in ("LDG.E.128", "LDG.E.64", "SHFL"):
        assert sum(op in x for x in rl) == sum(op in x for x in kl), op


@pytest.mark.parametrize("cfg", [(4, 1, 2, 1, 1, 0, 0, 4, 1, 0, 1), (4, 2, 2, 1, 1, 0, 0, 2, 0, 0, 1)])
def test_gluon_mmsp_split_k_fixup_publishes_partials_before_counting(cfg):
    """FX = 1 (eleventh element): no second kernel for split-K. Each program stores its fp32 partial, then
    (all threads past a barrier) one thread releases them at GPU scope (MEMBAR.GPU before the ATOMG add on
    the tile's counter, which invalidates L1 after it: acquire); the last program reads the other partials
    past L1 (LDG .STRONG.GPU) only after that, and stores the output. The main loop is the one of the
    same configuration without FX, with no spill."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts")
    cap = {}
    orig = offline.compile_sass

    def keep(src, nw, arch=90, maxnreg=0):
        cap["r"] = orig(src, nw, arch, maxnreg)
        return cap["r"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(offline, "compile_sass", keep)
        fx = offline.gluon_mmsp_stats("float16", cfg, even_k=False, keep_lines=True)
        ins = [ln for ln in cap["r"]["sass"].splitlines() if re.match(r"\s+/\*[0-9a-f]{4}\*/", ln)]
    base = offline.gluon_mmsp_stats("float16", cfg[:10], even_k=False, keep_lines=True)
    fl, bl = fx.pop("lines"), base.pop("lines")
    assert fx["stack"] == 0 and fx["loop_mma"] == base["loop_mma"] and fx["regs"] <= base["regs"] + 8
    for op in ("LDG.E.128", "LDG.E.64", "SHFL", "HMMA"):
        assert sum(op in x for x in fl) == sum(op in x for x in bl), op

    def where(pat):
        return [i for i, ln in enumerate(ins) if re.search(pat, ln)]

    atom = where(r"\bATOMG\.E\.ADD\.STRONG\.GPU\b")
    assert len(atom) == 1, atom
    a = atom[0]
    partial_stores = [i for i in where(r"\bSTG\.E\b") if i < a]
    assert partial_stores, "partials stored before the count"
    bar = [i for i in where(r"\bBAR\.SYNC\b") if max(partial_stores) < i < a]
    fence = [i for i in where(r"\bMEMBAR\.(ALL|SC)\.GPU\b") if bar and bar[-1] < i < a]
    assert bar and fence, (bar, fence)
    assert any(re.search(r"\bCCTL\.IVALL\b", ins[i]) for i in range(a + 1, a + 4))
    strong = where(r"\bLDG\.E\.STRONG\.GPU\b")
    assert strong and min(strong) > a, (strong, a)
    assert not any(re.search(r"\bLDG\.E\.STRONG\.GPU\b", ln) for ln in fl)  # main-loop loads unchanged
    assert max(where(r"\bSTG\.E")) > a  # the output (and the counter reset) after the count
    with pytest.raises(ValueError, match="fixup"):
        gluon_mmsp.kernel_consts(cfg[:10] + (2,), False)


@pytest.mark.parametrize("cfg,even_k", [((4, 2, 2, 0, 1, 0, 0, 1, 0, 3), True), ((4, 2, 2, 0, 1, 0, 0, 1, 0, 3), False),
                                         ((4, 1, 2, 0, 1, 0, 0, 4, 1, 3), True), ((4, 1, 1, 0, 0, 0, 0, 1, 0, 4), False)])
def test_gluon_mmsp_shared_memory_stages(cfg, even_k):
    """AS >= 2 (tenth element): every global operand of a super-step goes through cp.async (LDGSTS) into an
    AS-stage shared ring (values and, with XS, x in 16-byte pieces, metadata in 8-byte ones, x without XS
    in 4-byte words) and comes back with LDS, 16 bytes at a time (8 for metadata); the MMAs are those of the register-loading kernel, with no
    global load left in the loop, no spill, and fewer registers than with one register prefetch stage (the smallest tile: within 2)."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts")
    s = offline.gluon_mmsp_stats("float16", cfg, even_k=even_k, keep_lines=True)
    lines = s.pop("lines")
    base = offline.gluon_mmsp_stats("float16", cfg[:3] + (1,) + cfg[4:9], even_k=even_k)
    rt, nt, xs = cfg[1], cfg[2], cfg[4]
    va, meta = 4 * rt, 2 * rt  # per thread and super-step: 16-byte pieces of values, 8-byte metadata words
    x = 4 * nt if xs else 16 * nt  # 16-byte pieces of x, or 4-byte fragment words
    assert sum("LDGSTS.E.BYPASS.128" in ln for ln in lines) == va + (x if xs else 0), s
    assert sum("LDGSTS.E.64" in ln for ln in lines) == meta
    assert sum("LDGSTS" in ln for ln in lines) == va + meta + x
    # read back 16 bytes at a time: a thread's words along s are contiguous in the ring (x too without XS)
    assert sum(bool(re.search(r"\bLDS(\.\d+)? R\d", ln)) for ln in lines) == va + meta + 4 * nt
    assert not any(re.search(r"\bLDG\.E", ln) for ln in lines)
    assert sum("LDGDEPBAR" in ln for ln in lines) == 1 and any("DEPBAR.LE" in ln for ln in lines)
    assert s["loop_mma"] == base["loop_mma"] == 4 * rt * nt and s["stack"] == 0
    # fewer registers than one register prefetch stage, except for the smallest tile (4,1,1,...) with the
    # byte-permute metadata build (88 against 86)
    assert s["regs"] < base["regs"] or (rt == nt == 1 and s["regs"] <= base["regs"] + 2), (s["regs"], base["regs"])


def test_mmsp_stages_exclude_register_and_l2_prefetch():
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts")
    assert gluon_mmsp.kernel_consts((4, 2, 2, 0, 1, 0, 0, 1, 0, 3), False)["AS"] == 3
    assert gluon_mmsp.kernel_consts((4, 2, 2, 1, 1), False)["AS"] == 0
    for bad in ((4, 2, 2, 0, 1, 0, 0, 1, 0, 1), (4, 2, 2, 1, 1, 0, 0, 1, 0, 3), (4, 2, 2, 0, 1, 0, 2, 1, 0, 3),
                (4, 2, 2, 0, 1, 0, 0, 1, 0, -2)):
        with pytest.raises(ValueError, match="stages"):
            gluon_mmsp.kernel_consts(bad, False)


@pytest.mark.parametrize("mode", [1, 2])
@pytest.mark.parametrize("kernel", ["gemvg", "mmsp", "mmsp-split", "mmsp-stages", "reduce"])
def test_programmatic_dependent_launch_orders_memory_behind_the_wait(kernel, mode):
    """PDL (gluon_sp24.PDL, on by default on sm_90+): a kernel may start while the previous one still runs, so
    ``griddepcontrol.wait`` (ACQBULK) must come before its first global load, and ``launch_dependents``
    (PREEXIT) before its stores (mode 1) or right after the wait (mode 2); with PDL off neither instruction
    is emitted (the kernels as they were before PDL)."""
    from llmsparse.kernels import gluon_mmsp

    def order(gdc):
        if kernel == "gemvg":
            return offline.gluon_gemv_stats("float16", gluon_sp24.CONFIGS[0], gdc=gdc)
        if kernel == "reduce":
            return offline.splitk_reduce_gdc(gdc)
        if not gluon_mmsp.MMSP_AVAILABLE:
            pytest.skip("needs Gluon's linear layouts and inline asm")
        cfg = {"mmsp": (4, 2, 2, 1, 1), "mmsp-split": (4, 1, 2, 1, 1, 0, 0, 4, 1),
               "mmsp-stages": (4, 2, 2, 0, 1, 0, 0, 1, 0, 3)}[kernel]
        return offline.gluon_mmsp_stats("bfloat16", cfg, even_k=False, gdc=gdc)

    off, on = order(0), order(mode)
    assert off["gdc_wait"] == -1 and off["gdc_launch"] == -1, off
    assert off["first_load"] >= 0 and off["first_store"] >= 0, off
    assert 0 <= on["gdc_wait"] < on["first_load"], on
    assert 0 <= on["gdc_launch"] < on["first_store"], on
    if mode == 2:
        assert on["gdc_wait"] < on["gdc_launch"] < on["first_load"], on
    else:
        assert on["gdc_launch"] > on["first_load"], on
    if "stack" in on:
        assert on["stack"] == 0 and on["regs"] <= off["regs"] + 4, (off, on)


@pytest.mark.parametrize("cfg", [(4, 1, 2, 1, 1, 0, 0, 4, 1), (4, 2, 2, 1, 1), (4, 2, 2, 2, 1), (4, 2, 2, 3, 1),
                                 (4, 2, 2, 1, 1, 0, 0, 4, 1, 0, 1)])
def test_mmsp_early_weights_request_only_weights_before_the_wait(cfg):
    """gluon_mmsp.EARLY (opt-in): under PDL the register-prefetch configurations request the first super-step's
    packed weights before ``griddepcontrol.wait`` -- per thread 4 RT 16-byte loads of ``values`` and 2 RT 8-byte
    loads of ``meta`` -- and nothing else: x (16-byte loads too, with XS) is the previous kernel's output and
    must come after. Configurations without register prefetch wait first, as without EARLY."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts and inline asm")
    rt = cfg[1]
    for mode in (1, 2):
        st = offline.gluon_mmsp_stats("bfloat16", cfg, even_k=False, gdc=mode, ew=1)
        assert st["stack"] == 0
        before = sorted(st["loads_before_wait"])
        assert before == sorted(["LDG.E.128"] * (4 * rt) + ["LDG.E.64"] * (2 * rt)), (mode, st)
        assert 0 <= st["gdc_launch"] < st["first_store"]
        if mode == 2:
            assert st["gdc_wait"] < st["gdc_launch"]
    plain = offline.gluon_mmsp_stats("bfloat16", (2, 4, 2, 0, 1, 1), gdc=1, ew=1)  # PF = 0: no early loads
    assert plain["loads_before_wait"] == [] and 0 <= plain["gdc_wait"] < plain["first_load"]


def _apply_bases(bases, offset):
    idx = [0] * len(bases[0])
    for bit, b in enumerate(bases):
        if offset >> bit & 1:
            idx = [a ^ c for a, c in zip(idx, b)]
    return tuple(idx)


@pytest.mark.parametrize("wk,rt", [(4, 2), (4, 1), (2, 2), (8, 1), (2, 4)])
def test_mmsp_tma_shared_layouts_put_each_operand_where_the_global_loads_do(wk, rt):
    """tma_layouts: the row-major tiles the bulk copies write ([16 RT rows, 32 WK int32] of values from row n0
    and super-step ss0; [16 RT, 2 WK] int64 of metadata) seen through VL / ML must hand every (warp, row tile,
    lane, s, j) register the word the register-prefetch kernel loads from global memory for it: values word
    ``row * KG + (ss0 + kw) * 32 + 16 (j >> 1) + 4 t + s`` of row ``n0 + 16 rt + g + 8 (j & 1)``; metadata
    int64 ``(ss0 + kw) * 2 + t % 2`` of row ``n0 + 16 rt + g`` for lanes t = 0, 1 (the lanes the MMA reads)."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.TMA_AVAILABLE:
        pytest.skip("needs Gluon's shared linear layouts and TMA")
    lay = gluon_mmsp.tma_layouts(wk, rt)
    cols = 32 * wk
    seen = set()
    for off in range(16 * rt * cols):
        kw, r, nt, lane, s, j = _apply_bases(lay["VL"].offset_bases, off)
        g, t = lane // 4, lane % 4
        assert nt == 0 and kw < wk and r < rt and s < 4 and j < 4
        row, col = 16 * r + g + 8 * (j & 1), kw * 32 + 16 * (j >> 1) + 4 * t + s  # the global kernel's a_off
        assert off == row * cols + col
        seen.add((kw, r, lane, s, j))
    assert len(seen) == wk * rt * 32 * 16
    mcols = 2 * wk
    lanes01 = 0
    for off in range(16 * rt * mcols):
        kw, r, nt, lane, s, j = _apply_bases(lay["ML"].offset_bases, off)
        g, t = lane // 4, lane % 4
        assert nt == s == j == 0 and kw < wk and r < rt
        if t < 2:  # m_lo of the global kernel: row g of the tile, int64 kw * 2 + t % 2
            assert off == (16 * r + g) * mcols + kw * 2 + t
            lanes01 += 1
        else:  # lanes the MMA does not read: row g + 8
            assert off == (16 * r + g + 8) * mcols + kw * 2 + t % 2
    assert lanes01 == wk * rt * 16


@pytest.mark.parametrize("cfg", [(4, 2, 2, 1, 1, 0, 0, 1, 0, 0, 0, 4), (4, 1, 2, 1, 1, 0, 0, 4, 0, 0, 1, 3),
                                 (2, 2, 2, 0, 1, 0, 0, 1, 0, 0, 0, 2)])
def test_mmsp_tma_configurations_compile_to_bulk_copies_and_shared_loads(cfg):
    """A TM configuration compiles (sm_90) without spills to a loop of bulk tensor copies (UTMALDG, three per
    stage: values and the metadata twice), barrier waits, 16-byte shared loads of the values, 8-byte ones of
    the metadata, and the same MMAs as the register kernel; with PDL and EARLY its first copies are issued
    before the wait and no global load is (x comes after it)."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.TMA_AVAILABLE:
        pytest.skip("needs Gluon's shared linear layouts and TMA")
    import llmsparse.kernels.offline as o

    orig = o.compile_sass
    got = {}

    def keep(src, nw, arch=90, maxnreg=0):
        got["r"] = orig(src, nw, arch, maxnreg)
        return got["r"]

    plain = offline.gluon_mmsp_stats("bfloat16", cfg[:11], even_k=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(o, "compile_sass", keep)
        st = offline.gluon_mmsp_stats("bfloat16", cfg, even_k=False, gdc=1, ew=1)
    sass = got["r"]["sass"]
    assert st["stack"] == 0
    assert sass.count("UTMALDG") == 3 * (cfg[11] + 1)  # the prologue's stages and the refill in the loop
    assert "LDS.128" in sass and "LDS.64" in sass and "SYNCS.PHASECHK" in sass
    assert sass.count("HMMA.SP") == plain["loop_mma"] * (2 if cfg[3] == 3 else 1)
    assert st["loads_before_wait"] == [] and 0 <= st["gdc_wait"]
    ins = [ln for ln in sass.splitlines() if re.match(r"\s+/\*[0-9a-f]{4}\*/", ln)]  # as offline.gdc_order
    first_copy = next(i for i, ln in enumerate(ins) if "UTMALDG" in ln)
    assert first_copy < st["gdc_wait"] < st["first_load"]


@pytest.mark.parametrize("cfg", [(4, 2, 2, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1), (4, 1, 2, 2, 0, 0, 0, 4, 1, 0, 0, 0, 1),
                                 (8, 2, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1)])
def test_mmsp_mma_order_loads_straight_into_the_mma_operands(cfg):
    """MO (mma_order's copy): per warp and super-step one 16-byte load per (row tile, MMA) of values and one
    of metadata words per row tile, no byte permutes or shifts rebuilding the metadata, and a shorter main
    loop than the row-major configuration's (same WK, RT, NT, PF with XS = 0; at most 60% of it with one
    iteration of register prefetch, where no register rotation adds moves), in fewer registers."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts and inline asm")
    rt, nt = cfg[1], cfg[2]
    mo = offline.gluon_mmsp_stats("bfloat16", cfg, keep_lines=True)
    plain = offline.gluon_mmsp_stats("bfloat16", cfg[:12], keep_lines=True)
    assert mo["stack"] == 0 and mo["regs"] < plain["regs"]
    loads = [ln for ln in mo["lines"] if "LDG" in ln]
    assert sum("LDG.E.128" in ln for ln in loads) == 4 * rt + rt
    assert sum(bool(re.search(r"LDG\.E\s", ln)) for ln in loads) == 16 * nt  # x: one word per fragment register
    assert not any(re.search(r"\b(PRMT|LOP3)\b", ln) for ln in mo["lines"])
    assert mo["loop_mma"] == plain["loop_mma"] == 4 * rt * nt
    assert mo["loop"] < plain["loop"] and (cfg[3] != 1 or mo["loop"] <= 0.6 * plain["loop"]), (mo, plain)


@pytest.mark.parametrize("cfg", [(4, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 5), (8, 2, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 5),
                                 (4, 1, 2, 1, 0, 0, 0, 4, 1, 0, 0, 0, 5)])
def test_mmsp_order_2_copy_with_x_from_global_memory_loads_like_mo_1(cfg):
    """MO = 5 (sixteenth session: the order-2 copy, x from global memory): the loads of the MO = 1 configuration of
    the same tiling -- one 16-byte load per (row tile, MMA) of values and one of metadata words per row tile, one
    32-bit load per x fragment register -- no shuffles, no shared memory, the same MMAs, a main loop at most 10%
    longer, no spills (only the x addresses differ)."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts and inline asm")
    rt, nt = cfg[1], cfg[2]
    o2 = offline.gluon_mmsp_stats("bfloat16", cfg, keep_lines=True)
    o1 = offline.gluon_mmsp_stats("bfloat16", cfg[:12] + (1,))
    loads = [ln for ln in o2["lines"] if "LDG" in ln]
    assert sum("LDG.E.128" in ln for ln in loads) == 4 * rt + rt
    assert sum(bool(re.search(r"LDG\.E\s", ln)) for ln in loads) == 16 * nt
    assert not any("SHFL" in ln or "LDS" in ln or "STS" in ln for ln in o2["lines"])
    assert o2["stack"] == 0 and o2["loop_shared"] == 0 and o2["loop_mma"] == o1["loop_mma"] == 4 * rt * nt
    assert o2["loop"] <= 1.1 * o1["loop"], (o2, o1)


@pytest.mark.parametrize("cfg", [(4, 1, 2, 1, 1, 0, 0, 4, 1, 0, 0, 0, 1), (4, 2, 2, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1)])
def test_mmsp_mma_order_with_x_shuffles_loads_x_in_16_bytes(cfg):
    """MO with XS (thirteenth session): x read by 16-byte loads (4 per token tile and super-step) and
    permuted into the MO fragments by warp shuffles, no 32-bit loads; the weights as without XS; a shorter
    loop in fewer registers than the row-major configuration with XS."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts and inline asm")
    rt, nt = cfg[1], cfg[2]
    mo = offline.gluon_mmsp_stats("bfloat16", cfg, keep_lines=True)
    plain = offline.gluon_mmsp_stats("bfloat16", cfg[:12], keep_lines=True)
    loads = [ln for ln in mo["lines"] if "LDG" in ln]
    assert sum("LDG.E.128" in ln for ln in loads) == 4 * rt + rt + 4 * nt
    assert not any(re.search(r"LDG\.E\s", ln) for ln in loads)
    assert any("SHFL" in ln for ln in mo["lines"])
    assert mo["stack"] == 0 and mo["regs"] < plain["regs"] and mo["loop"] < plain["loop"], (mo, plain)


@pytest.mark.parametrize("cfg", [(4, 1, 2, 2, 1, 0, 0, 4, 1, 0, 0, 0, 1), (4, 2, 2, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1)])
def test_mmsp_register_cap_reaches_ptxas(cfg):
    """RG (14th element) = 168: the kernel fits three 4-warp programs per SM (<= 168 registers) where it takes
    more without the cap (172-174 offline); the MMAs are unchanged. Whether the spills it may cost pay off is
    the GPU's question (docs/kernels-log.md)."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts and inline asm")
    free = offline.gluon_mmsp_stats("bfloat16", cfg)
    capped = offline.gluon_mmsp_stats("bfloat16", cfg + (168,))
    assert free["regs"] > 168 >= capped["regs"], (free, capped)
    assert capped["loop_mma"] == free["loop_mma"]


@pytest.mark.parametrize("cfg", [(4, 1, 2, 1, 0, 0, 0, 4, 1, 0, 0, 0, 4), (4, 2, 2, 1, 0, 0, 0, 1, 0, 0, 0, 0, 3),
                                 (4, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 3)])
def test_mmsp_x_through_shared_memory_uses_ldmatrix(cfg):
    """XL (MO >= 2): per iteration one ldmatrix.x4 per MMA and token tile (4 NT), 16-byte cp.async for x (4 NT per
    thread, split over the warps with RW), the weights' 16-byte loads as with MO = 1, no shuffles, selects or
    32-bit x loads, no spills; with one row tile and two token tiles a shorter loop than the MO + XS
    configuration of the same tiling (77 against 137 instructions; with one token tile, or two row tiles sharing
    the x fragments, the shuffles cost less and the loops are about as long)."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts and inline asm")
    wk, rt, nt, rw = cfg[0], cfg[1], cfg[2], cfg[8]
    xl = offline.gluon_mmsp_stats("bfloat16", cfg, keep_lines=True)
    xs = offline.gluon_mmsp_stats("bfloat16", cfg[:4] + (1,) + cfg[5:12] + (1,))
    lines = xl["lines"]
    assert sum("LDSM.16.M88.4" in ln for ln in lines) == 4 * nt
    assert sum("LDGSTS.E.BYPASS.128" in ln for ln in lines) == (4 * nt // wk if rw else 4 * nt)
    assert sum("LDG.E.128" in ln for ln in lines) == 5 * rt
    assert not any(re.search(r"\b(SHFL|SEL)\b|LDG\.E\s", ln) for ln in lines)
    assert xl["stack"] == 0
    assert rt > 1 or nt == 1 or xl["loop"] < 0.7 * xs["loop"], (xl, xs)


def test_mmsp_wide_mo_configurations_compile_without_spills():
    """The MO configurations for M = 17-64 (gluon_mmsp.MMSP_MO_WIDE_CONFIGS, eighteenth session, candidates only with
    MO_WIDE until measured on a GPU): every one compiles for sm_90 with no spills; the XL ones (x through shared
    memory) take one ldmatrix.x4 per MMA and token tile and iteration (4 NT: 16 at NT = 4, 32 at NT = 8; twice
    that with PF = 3's two iterations per loop body) and load x only by cp.async; the NT = 8 ones are all XL (with x in registers NT = 8 spills), and both copy orders are covered
    in each bucket."""
    from llmsparse.kernels import gluon_mmsp as g

    if not g.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts and inline asm")
    for bucket, cfgs in g.MMSP_MO_WIDE_CONFIGS.items():
        assert {g.mo_order(c) for c in cfgs} == {1, 2}, bucket
        for cfg in cfgs:
            nt = cfg[2]
            assert g.is_mo(cfg) and nt in ((4,) if bucket == 32 else (4, 8)), cfg
            assert nt < 8 or 2 <= cfg[12] <= 4, cfg
            st = offline.gluon_mmsp_stats("bfloat16", cfg, keep_lines=True)
            assert st["stack"] == 0, (cfg, st["stack"])
            if 2 <= cfg[12] <= 4:
                unroll = 2 if cfg[3] == 3 else 1  # PF = 3: the loop body holds two iterations
                assert sum("LDSM.16.M88.4" in ln for ln in st["lines"]) == 4 * nt * unroll, cfg
                assert not any(re.search(r"LDG\.E\s", ln) for ln in st["lines"]), cfg


@pytest.mark.parametrize("cfg", [(4, 2, 2, 3, 0, 0, 0, 2, 1, 0, 0, 0, 4), (4, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1),
                                 (4, 2, 2, 1, 1, 0, 0, 4, 1, 0, 1)])
def test_mmsp_weight_cache_policy_changes_only_the_weight_loads(cfg):
    """EVICT (the packed weights' cache policy): 1 (the default) marks every 16-byte weight load L1 evict-first, 2
    makes it an L2-only (``.cg``) load, 3 reads the values L1-no-allocate; the x loads, the load count, the
    registers and the MMAs stay as with plain loads."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts and inline asm")
    st = {ev: offline.gluon_mmsp_stats("float16", cfg, keep_lines=True, ev=ev) for ev in (0, 1, 2, 3)}
    # the shipped default (a fresh import, no environment override) is evict-first (twenty-second session: 2-7%
    # faster at M = 16 on an H100)
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LLMSPARSE_MMSP_EVICT"}
    r = subprocess.run([sys.executable, "-c", "from llmsparse.kernels import gluon_mmsp as g; print(g.EVICT)"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ["1"], r.stdout + r.stderr

    def ldg(ev, stats=st):
        return [re.search(r"(LDG\S*)", ln).group(1) for ln in stats[ev]["lines"] if re.search(r"LDG\S*\s", ln)]

    plain = ldg(0)
    assert not any(".EF" in op or "STRONG" in op for op in plain)
    ef = sum(op == "LDG.E.EF.128" for op in ldg(1))
    cg = sum(op == "LDG.E.128.STRONG.GPU" for op in ldg(2))
    assert ef == cg >= 2 * cfg[1]  # at least the values and metadata of every row tile, once per iteration
    # nothing else changed: renamed back, the loads are the plain kernel's (x loads, cp.async copies included)
    assert sorted(op.replace(".EF", "") for op in ldg(1)) == sorted(plain)
    assert sorted(op.replace(".STRONG.GPU", "") for op in ldg(2)) == sorted(plain)
    # 3: the values' 16-byte loads by inline PTX, L1 no-allocate (LDG.E.NA.128), as many as before; the metadata's
    # evict-first as with 1
    na = [op for op in ldg(3) if ".NA" in op]
    assert na and set(na) == {"LDG.E.NA.128"} and len(na) >= cfg[1]
    assert sorted(op.replace(".NA", ".EF") for op in ldg(3)) == sorted(ldg(1))
    # uneven K: the predicated form (zeros past the end) keeps the same loads
    un = {ev: offline.gluon_mmsp_stats("float16", cfg, keep_lines=True, ev=ev, even_k=False) for ev in (1, 3)}
    assert sorted(op.replace(".NA", ".EF") for op in ldg(3, un)) == sorted(ldg(1, un))
    assert un[3]["stack"] == 0 and un[3]["loop_mma"] == un[1]["loop_mma"]
    for ev in (1, 2, 3):
        assert st[ev]["loop_mma"] == st[0]["loop_mma"] and st[ev]["stack"] == 0
        assert abs(st[ev]["regs"] - st[0]["regs"]) <= 8
