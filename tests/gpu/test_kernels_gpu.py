"""GPU tests for the 2:4 kernels (skipped without CUDA). Run on a GPU machine:

    python -m pytest tests/gpu -q
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

from llmsparse.formats.nm import pack_nm, unpack_nm  # noqa: E402
from llmsparse.kernels import SparseLinear, sparsify  # noqa: E402
from llmsparse.kernels.dispatch import random_24  # noqa: E402

DT = [torch.float16, torch.bfloat16]
TOL = {torch.float16: 1e-3, torch.bfloat16: 1e-2}


def rel(a, b):
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


def capture(fn, *args, **kwargs):
    """Warm ``fn(*args, **kwargs)`` up on a side stream, then capture it in a CUDA graph: (graph, its output)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn(*args, **kwargs)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = fn(*args, **kwargs)
    return g, y


def poisoned(m, n, dtype):
    return torch.full((m, n), float("nan"), device="cuda", dtype=dtype)


def assert_graph_replays(run, ref, m, k, dtype):
    """Capture ``run(x)`` in a CUDA graph; two replays on fresh inputs (the output NaN-poisoned before each) give
    ``ref(x)`` bit for bit."""
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    gr, y = capture(run, x)
    for _ in range(2):
        x.copy_(torch.randn_like(x))
        y.fill_(float("nan"))
        gr.replay()
        torch.cuda.synchronize()
        assert torch.equal(y, ref(x))


@pytest.mark.parametrize("dtype", DT + [torch.float32])
def test_pack_roundtrip_gpu_matches_cpu(dtype):
    w = random_24(96, 264, dtype, "cuda")
    v, m = pack_nm(w, 2, 4)
    assert torch.equal(unpack_nm(v, m, 2, 4, 264), w)
    vc, mc = pack_nm(w.cpu(), 2, 4)
    assert torch.equal(v.cpu(), vc) and torch.equal(m.cpu(), mc)


SMALL = [(48, 136), (264, 520)]
BIG = [(4096, 4096), (11008, 4096), (4096, 11008)]
KINDS = ["gemv:1", "mm:16", "mm:32", "mm:64", "mm:128", "mmb:16", "mmb:32", "mmb:64", "mmb:128"]


def _configs(dtype, kind: str, bm: int, every: bool):
    """Configurations of one kernel kind (all of them on small shapes, the first on big ones)."""
    from llmsparse.kernels.triton_sp24 import GEMV_CONFIGS, MM_CONFIGS, MMB_CONFIGS, excluded

    if kind == "gemv":
        cfgs = [c for c in GEMV_CONFIGS if not excluded("gemv:" + ",".join(map(str, c)), dtype)]
    else:
        table = MM_CONFIGS if kind == "mm" else MMB_CONFIGS
        cfgs = [c for c in table[bm] if not excluded(f"{kind}:{bm}:" + ",".join(map(str, c)), dtype)]
    return cfgs if every else cfgs[:1]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("shape", SMALL + BIG)
def test_triton_kernels_vs_dense(shape, dtype, kind):
    """Each kernel against dense-with-zeros F.linear, odd M, NaN-poisoned outputs, with and without bias."""
    from llmsparse.kernels.triton_sp24 import GEMV_MAX_M, sp24_gemv, sp24_mm, sp24_mm_wb

    kind, bm = kind.split(":")
    bm = int(bm)
    n, k = shape
    w = random_24(n, k, dtype, "cuda")
    bias = torch.randn(n, device="cuda", dtype=dtype)
    v, m = pack_nm(w, 2, 4)
    for i, cfg in enumerate(_configs(dtype, kind, bm, every=shape == SMALL[0])):
        if kind == "gemv":
            ms = [1, 3, 8]
        else:
            ms = [1, 13, 17] if bm == 16 else [bm - 5, bm + 3]
        for M in ms:
            x = torch.randn(M, k, device="cuda", dtype=dtype)
            b = bias if (i + M) % 2 else None
            ref = F.linear(x, w, b)
            out = poisoned(M, n, dtype)
            if kind == "gemv":
                assert M <= GEMV_MAX_M
                y = sp24_gemv(x, v, m, b, n, cfg=cfg, out=out)
            elif kind == "mm":
                y = sp24_mm(x, v, m, b, n, block_m=bm, cfg=cfg, out=out)
            else:
                y = sp24_mm_wb(x, v, m, b, n, block_m=bm, cfg=cfg, out=out)
            assert torch.isfinite(y).all(), (kind, bm, cfg, M)
            assert rel(y, ref) < TOL[dtype], (kind, bm, cfg, M, rel(y, ref))


GL_SHAPES = [(48, 160), (264, 544), (37, 96)] + BIG  # K = 160/544/96: partial chunks; N = 37: partial row blocks
SP_SHAPES = [(48, 128), (264, 384), (37, 640)] + BIG  # mmsp needs K % 128 == 0; 3 and 5 super-steps: partial iterations


def _check_configs(kernel, configs_for, ms, shape, dtype):
    """``kernel(x, values, meta, bias, n, cfg=, out=)`` for every configuration ``configs_for(M)`` gives at
    each M (the first one only on big shapes) against dense-with-zeros F.linear: NaN-poisoned outputs,
    bias on every other call. Returns the weight, its packed form and the bias for further checks."""
    n, k = shape
    w = random_24(n, k, dtype, "cuda")
    bias = torch.randn(n, device="cuda", dtype=dtype)
    v, m = pack_nm(w, 2, 4)
    big = shape in BIG
    for M in ms:
        cfgs = configs_for(M)
        for i, cfg in enumerate(cfgs[:1] if big else cfgs):
            x = torch.randn(M, k, device="cuda", dtype=dtype)
            b = bias if (i + M) % 2 else None
            ref = F.linear(x, w, b)
            y = kernel(x, v, m, b, n, cfg=cfg, out=poisoned(M, n, dtype))
            assert torch.isfinite(y).all(), (cfg, M)
            assert rel(y, ref) < TOL[dtype], (cfg, M, rel(y, ref))
    return w, v, m, bias


def _check_strided(choice, w, v, m, bias, dtype, rows=3):
    """A row-strided input (a slice of a wider buffer), then one at a 2-byte offset (copied first),
    through the dispatcher's entry point."""
    from llmsparse.kernels.dispatch import run_choice

    n, k = w.shape
    xb = torch.randn(rows, k + 32, device="cuda", dtype=dtype)
    for x in (xb[:, 32:], xb[:, 1:k + 1]):
        y = run_choice(choice, x, values=v, meta=m, bias=bias, out_features=n)
        assert rel(y, F.linear(x, w, bias)) < TOL[dtype]


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("shape", GL_SHAPES)
def test_gluon_gemv_vs_dense(shape, dtype):
    """The Gluon decode kernel, every configuration (all M it serves) against dense-with-zeros F.linear,
    NaN-poisoned outputs, odd M, with and without bias; on big shapes the first config of each M."""
    from llmsparse.kernels import gluon_sp24 as g
    from llmsparse.kernels.dispatch import Choice

    if not g.AVAILABLE:
        pytest.skip("this Triton has no Gluon")
    w, v, m, bias = _check_configs(g.sp24_gemv_gl, g.configs_for, (1, 2, 3, 4, 5, 8), shape, dtype)
    _check_strided(Choice("gemvg", g.CONFIGS[0]), w, v, m, bias, dtype)


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("shape", GL_SHAPES)
def test_gluon_mm_vs_dense(shape, dtype):
    """The Gluon tensor-core kernel (mma.sync on W fragments rebuilt in registers), every configuration
    on small shapes, odd M around each token block, NaN-poisoned outputs, with and without bias."""
    from llmsparse.kernels import gluon_sp24 as g

    if not g.MMA_AVAILABLE:
        pytest.skip("this Triton has no Gluon mma_v2")
    _check_configs(g.sp24_mm_gl, g.mm_configs_for, (9, 16, 17, 31, 64, 100, 128), shape, dtype)


@pytest.mark.parametrize("dtype", DT)
def test_cslt_path(dtype):
    from llmsparse.kernels.cslt import available, compress, cslt_linear

    if not available():
        pytest.skip("no cuSPARSELt")
    w = random_24(1024, 512, dtype, "cuda")
    c = compress(w)
    b = torch.randn(1024, device="cuda", dtype=dtype)
    for M in (16, 17, 100, 4096):
        x = torch.randn(M, 512, device="cuda", dtype=dtype)
        for result in (1, 0, 2):
            y = cslt_linear(x, c, b if M == 100 else None, 0, result)
            assert y.shape == (M, 1024) and y.is_contiguous() == (result != 2)
            if result == 2:
                assert y.stride(0) == 1  # the transposed view of cuSPARSELt's [N, Mp]
            assert rel(y, F.linear(x, w, b if M == 100 else None)) < TOL[dtype]


@pytest.mark.parametrize("dtype", DT)
def test_compiled_view_choice_matches_dense(dtype):
    """Under torch.compile (Inductor) a view-table choice (cuSPARSELt's [N, M] left transposed, the
    transpose folded into the consumers) gives the dense result through an MLP-like chain, with odd M,
    bias, no graph break, and in a CUDA graph; eager calls keep the normal table's path."""
    import torch._dynamo

    from llmsparse.kernels import dispatch
    from llmsparse.kernels.cslt import available

    if not available():
        pytest.skip("no cuSPARSELt")
    torch.manual_seed(0)
    ws = [random_24(1024, 512, dtype, "cuda"), random_24(1024, 512, dtype, "cuda"), random_24(512, 1024, dtype, "cuda")]
    bias = torch.randn(1024, device="cuda", dtype=dtype)
    lins = [SparseLinear.from_dense(ws[0], bias), SparseLinear.from_dense(ws[1]), SparseLinear.from_dense(ws[2])]
    for lin in lins:
        lin.prepare((64,))
        lin._get_cslt()
        lin._table_view = {64: dispatch.Choice("cslt", (0, 2))}

    def block(h, mods):
        g, u, d = mods
        return h + d(F.silu(g(h)) * u(h))

    comp = torch.compile(lambda h: block(h, lins), fullgraph=True, dynamic=False)
    for M in (64, 37):
        h = torch.randn(1, M, 512, device="cuda", dtype=dtype)
        ref = h + F.linear(F.silu(F.linear(h, ws[0], bias)) * F.linear(h, ws[1]), ws[2])
        assert rel(block(h, lins), ref) < 2 * TOL[dtype]
        y = comp(h)
        assert y.shape == ref.shape and rel(y, ref) < 2 * TOL[dtype]
    h = torch.randn(1, 64, 512, device="cuda", dtype=dtype)
    g, y = capture(comp, h)
    h2 = torch.randn_like(h)
    h.copy_(h2)
    g.replay()
    torch.cuda.synchronize()
    ref = h2 + F.linear(F.silu(F.linear(h2, ws[0], bias)) * F.linear(h2, ws[1]), ws[2])
    assert rel(y, ref) < 2 * TOL[dtype]
    torch._dynamo.reset()


@pytest.mark.parametrize("dtype", DT)
def test_sparse_linear_dispatch_and_graph(dtype):
    w = random_24(512, 1024, dtype, "cuda")
    b = torch.randn(512, device="cuda", dtype=dtype)
    lin = SparseLinear.from_dense(w, b)
    table = lin.prepare((1, 4, 16, 64, 512))
    assert set(table) >= {1, 4, 16, 64, 512}
    for M in (1, 3, 16, 50, 300):
        x = torch.randn(2, M, 1024, device="cuda", dtype=dtype)
        assert rel(lin(x), F.linear(x, w, b)) < TOL[dtype]
    # captured in a CUDA graph, same result as eager
    x = torch.randn(1, 1024, device="cuda", dtype=dtype)
    y_eager = lin(x)
    g, y = capture(lin, x)
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, y_eager)


def test_never_slower_choice_is_recorded():
    from llmsparse.kernels import dispatch

    lin = SparseLinear.from_dense(random_24(2048, 2048, torch.float16, "cuda"))
    table = lin.prepare((1, 16))
    for b in (1, 16):
        c = table[b]
        assert c.path == "dense" or c.ms <= c.dense_ms
        assert not math.isnan(c.dense_ms)
    assert dispatch.RECORDS


def test_sparsify_tiny_llama_logits():
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmsparse.kernels.benchmark import prune_24_

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=1000)
    model = LlamaForCausalLM(cfg).to("cuda", torch.float16).eval()
    prune_24_(model)
    ids = torch.randint(0, 1000, (2, 37), device="cuda")
    with torch.no_grad():
        ref = model(ids).logits.float()
        rep = sparsify(model, buckets=(1, 2, 4, 8, 16, 32, 64, 128), min_speedup=0.0)  # force sparse paths
        assert len(rep["swapped"]) == 14
        out = model(ids).logits.float()
        step = model(ids[:, :1]).logits.float()
        ref1 = ref[:, :1]
    assert rel(out, ref) < 5e-3
    assert rel(step, ref1) < 5e-3


@pytest.mark.parametrize("dtype", DT)
def test_compiled_sparse_layers_match_eager(dtype):
    """torch.compile (Inductor) of sparsified decoder layers: no graph break (fullgraph), the kernels the
    dispatcher chose run behind the custom op, logits match the eager sparse model, and the compiled
    layers capture into a CUDA graph."""
    import torch._dynamo
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmsparse.kernels.benchmark import prune_24_

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=512, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=8,
                      num_key_value_heads=4, vocab_size=1000)
    model = LlamaForCausalLM(cfg).to("cuda", dtype).eval()
    prune_24_(model)
    with torch.no_grad():
        # force sparse paths; for_compile: the view table's choices (cuSPARSELt's transposed result) too
        rep = sparsify(model, buckets=(1, 64), min_speedup=0.0, cache=None, for_compile=True)
        assert len(rep["swapped"]) == 14
        ids = torch.randint(0, 1000, (1, 64), device="cuda")
        eager = [model(ids).logits.float(), model(ids[:, :1]).logits.float()]
        torch._dynamo.reset()
        for layer in model.model.layers:
            layer.compile(fullgraph=True, dynamic=False)
        comp = [model(ids).logits.float(), model(ids[:, :1]).logits.float()]
        for a, b in zip(comp, eager):
            assert rel(a, b) < 2e-2
        # an explicit mask: transformers builds none in eager calls but one during capture, and the
        # compiled layer would have to recompile (impossible while capturing) on that difference
        x1, mask = ids[:, :1].clone(), torch.ones(1, 1, 1, 1, dtype=torch.bool, device="cuda")
        g, out = capture(model, x1, attention_mask=mask)
        y = out.logits
        g.replay()
        torch.cuda.synchronize()
    assert rel(y.float(), eager[1]) < 2e-2
    torch._dynamo.reset()


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("shape", SP_SHAPES)
def test_gluon_mmsp_vs_dense(shape, dtype):
    """The experimental mma.sp kernel (not a default dispatcher path until this passes on hardware):
    every configuration against dense-with-zeros F.linear, NaN-poisoned outputs, odd M, partial K
    iterations, with and without bias; on big shapes the first configuration of each M."""
    from llmsparse.kernels import gluon_mmsp as g
    from llmsparse.kernels.dispatch import Choice

    if not g.MMSP_AVAILABLE:
        pytest.skip("this Triton has no Gluon linear layouts")
    w, v, m, bias = _check_configs(g.sp24_mmsp_gl, g.mmsp_configs_for, (1, 3, 8, 9, 16), shape, dtype)
    _check_strided(Choice("mmsp", g.MMSP_CONFIGS[8][0]), w, v, m, bias, dtype, rows=5)


# L2 prefetch (7th element PD), split-K (8th, SK), warps splitting rows (9th, RW): opt-in configurations beyond
# the dispatcher's (two SK + RW ones joined MMSP_CONFIGS after the eighth session's H100 measurements)
MMSP_EXPERIMENTAL = {8: [(4, 1, 1, 1, 1, 0, 2), (4, 1, 1, 0, 1, 0, 4), (4, 1, 1, 1, 1, 0, 0, 3),
                         (4, 1, 1, 1, 1, 0, 2, 2, 1), (2, 2, 1, 0, 0, 1, 0, 1, 1),
                         (4, 1, 1, 0, 1, 0, 0, 1, 0, 4), (4, 1, 1, 0, 0, 0, 0, 2, 0, 3)],
                     16: [(4, 2, 2, 1, 1, 0, 2), (2, 4, 2, 0, 1, 1, 3), (4, 2, 2, 1, 1, 0, 8, 2), (2, 1, 2, 2, 1, 0, 0, 4),
                          (4, 1, 2, 1, 1, 0, 0, 3, 1), (2, 2, 2, 1, 1, 0, 0, 1, 1), (4, 1, 2, 1, 1, 0, 4, 2, 1),
                          (4, 2, 2, 0, 1, 0, 0, 1, 0, 3), (4, 1, 2, 0, 1, 0, 0, 4, 1, 3), (2, 4, 2, 0, 1, 1, 0, 1, 0, 2),
                          (4, 1, 2, 0, 1, 0, 0, 4, 1), (1, 1, 2, 0, 1, 0, 0, 8), (4, 1, 2, 0, 1, 1, 0, 4, 1),
                          (4, 1, 2, 3, 1, 0, 0, 4, 1), (4, 2, 2, 3, 1, 1, 0, 2), (2, 2, 2, 3, 1)]}
MMSP_EXPERIMENTAL[8] += [(4, 1, 1, 3, 1), (4, 1, 1, 3, 0, 0, 0, 3)]
# (the last two of M <= 8 before PF = 3 and the three before the last six of M = 16: AS, shared-memory stages filled by
# cp.async; the three after them: light configurations of bench/device/mmsp_session.sh occ; PF = 3 (register
# prefetch unrolled by two, odd and even iteration counts): the last three of M = 16 and two of M <= 8)


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("shape", SP_SHAPES)
def test_gluon_mmsp_l2_prefetch_and_split_k_vs_dense(shape, dtype):
    """Prefetching must not change a result (addresses clamped at the last super-step and row), the
    split-K partials (fp32, reduced by a second kernel that adds the bias) must add up to it, including
    a last split that is partly past K, and so must programs whose warps split the rows (RW; row blocks
    past N clamped and not stored)."""
    from llmsparse.kernels import gluon_mmsp as g

    if not g.MMSP_AVAILABLE:
        pytest.skip("this Triton has no Gluon linear layouts")
    _check_configs(g.sp24_mmsp_gl, lambda M: MMSP_EXPERIMENTAL[8 if M <= 8 else 16], (1, 3, 9, 16), shape, dtype)


# split-K with the in-kernel fixup (FX, 11th element): the last program of each output tile adds the partials
MMSP_FIXUP = [(4, 1, 2, 1, 1, 0, 0, 4, 1, 0, 1), (4, 2, 2, 1, 1, 0, 0, 2, 1, 0, 1), (4, 2, 2, 1, 1, 0, 0, 3, 0, 0, 1),
              (4, 1, 1, 1, 1, 0, 0, 8, 1, 0, 1), (4, 1, 2, 0, 1, 0, 0, 4, 1, 3, 1)]


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("shape", [(48, 128), (264, 384), (37, 640), (4096, 4096), (11008, 4096)])
def test_gluon_mmsp_split_k_fixup_equals_the_reduction_kernel(shape, dtype):
    """FX = 1 adds the same fp32 partials in the same order as the reduction kernel, so the output must be
    bit for bit that of the configuration without FX (and near dense-with-zeros), with and without bias, at
    odd M, over repeated calls (each launch leaves its tile counters at 0 for the next) and in CUDA-graph
    replays; a grid larger than any before grows the counter buffer without breaking a captured graph."""
    from llmsparse.kernels import gluon_mmsp as g

    if not g.MMSP_AVAILABLE:
        pytest.skip("this Triton has no Gluon linear layouts")
    n, k = shape
    w = random_24(n, k, dtype, "cuda")
    bias = torch.randn(n, device="cuda", dtype=dtype)
    v, m = pack_nm(w, 2, 4)
    _check_bit_equal(g, MMSP_FIXUP, 10, w, bias, (v, m), (v, m), repeats=3, graph=False)
    for buf in g._COUNTERS.values():
        assert not buf.any()  # every counter back at 0
    cfg = MMSP_FIXUP[0]
    x = torch.randn(16, k, device="cuda", dtype=dtype)
    side = torch.cuda.Stream()  # warmed up and captured on one stream: the graph uses that stream's counters
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        g.sp24_mmsp_gl(x, v, m, bias, n, cfg=cfg)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        y = g.sp24_mmsp_gl(x, v, m, bias, n, cfg=cfg)
    for grow in (False, False, True):
        if grow:  # outgrown: the stream gets a new buffer, the one the graph uses stays alive
            with torch.cuda.stream(side):
                old = g.tile_counters(x.device, 1)
                assert g.tile_counters(x.device, 10 ** 6).data_ptr() != old.data_ptr()
            torch.cuda.synchronize()
        x.copy_(torch.randn_like(x))
        y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(y, g.sp24_mmsp_gl(x, v, m, bias, n, cfg=cfg[:10]))


@pytest.mark.parametrize("dtype", DT)
def test_mmsp_refuses_k_not_multiple_of_128_and_dispatch_falls_back(dtype):
    from llmsparse.kernels import gluon_mmsp as g
    from llmsparse.kernels.dispatch import Choice, candidates, run_choice

    if not g.MMSP_AVAILABLE:
        pytest.skip("this Triton has no Gluon linear layouts")
    n, k = 64, 160
    w = random_24(n, k, dtype, "cuda")
    v, m = pack_nm(w, 2, 4)
    x = torch.randn(4, k, device="cuda", dtype=dtype)
    with pytest.raises(ValueError):
        g.sp24_mmsp_gl(x, v, m, None, n)
    assert not [c for c in candidates(4, paths=("mmsp",), in_features=k) if c.path == "mmsp"]
    y = run_choice(Choice("mmsp", g.MMSP_CONFIGS[8][0]), x, values=v, meta=m, out_features=n)
    assert rel(y, F.linear(x, w)) < TOL[dtype]


@pytest.mark.parametrize("early", [0, 1])
@pytest.mark.parametrize("mode", [1, 2])
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("path,cfg,M", [("gemvg", (1, 4, 8, 1, 4), 1), ("mmsp", (4, 2, 2, 1, 1), 16),
                                        ("mmsp", (4, 1, 2, 1, 1, 0, 0, 4, 1), 16), ("mmsp", (4, 2, 2, 1, 1), 9),
                                        ("mmsp", (4, 1, 2, 1, 1, 0, 0, 4, 1, 0, 1), 16)])
def test_programmatic_dependent_launch_chain(monkeypatch, dtype, path, cfg, M, mode, early):
    """With PDL on (gluon_sp24.PDL) each kernel may start before the previous one ends: a chain of five
    layers where every layer reads the previous one's output (and split-K's reduction reads the partials
    just written) must still equal the dense-with-zeros chain, eagerly and replayed in a CUDA graph; also
    with ``mmsp``'s early weight loads (gluon_mmsp.EARLY: weights requested before the wait, x after)."""
    from llmsparse.kernels import gluon_mmsp, gluon_sp24
    from llmsparse.kernels.dispatch import Choice, run_choice

    if not (gluon_mmsp.MMSP_AVAILABLE if path == "mmsp" else gluon_sp24.AVAILABLE):
        pytest.skip("this Triton lacks the Gluon features of the kernel")
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("programmatic dependent launch needs sm_90 or later")
    if early and path != "mmsp":
        pytest.skip("early weight loads are mmsp's")
    monkeypatch.setattr(gluon_sp24, "PDL", mode)
    monkeypatch.setattr(gluon_mmsp, "EARLY", early)
    n = 1024
    # random_24 keeps half the weights at scale 1/sqrt(n): x 1.4 keeps the activations near unit size over
    # the five layers (x 0.05 shrank them to ~6e-8, fp16 subnormals, where the relative error is rounding)
    ws = [random_24(n, n, dtype, "cuda") * 1.4 for _ in range(5)]
    packed = [pack_nm(w, 2, 4) for w in ws]
    x = torch.randn(M, n, device="cuda", dtype=dtype)
    c = Choice(path, cfg)

    def chain(h):
        for (v, m), w in zip(packed, ws):
            h = run_choice(c, h, values=v, meta=m, dense=w, bias=None, out_features=n)
        return h

    ref = x
    for w in ws:
        ref = F.linear(ref, w)
    assert rel(chain(x), ref) < 5 * TOL[dtype]
    g, y = capture(chain, x)
    for _ in range(3):
        x.copy_(torch.randn_like(x))
        ref = x
        for w in ws:
            ref = F.linear(ref, w)
        y.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        assert torch.isfinite(y).all() and rel(y, ref) < 5 * TOL[dtype]


def _check_bit_equal(g, cfgs, cut, w, bias, packed, variant, repeats, graph=True):
    """Every configuration of ``cfgs`` run on ``variant`` (its weights: the packed pair or a copy of them) must give
    bit for bit what ``cfg[:cut]`` gives on ``packed`` (itself near dense-with-zeros): M = 1, 3, 9, 16 (NT = 1:
    up to 8), with and without bias, ``repeats`` calls; then (``graph``) the first configuration replayed in a
    CUDA graph."""
    n, k = w.shape
    dtype = w.dtype
    for cfg in cfgs:
        for M in (1, 3, 9, 16):
            if cfg[2] == 1 and M > 8:
                continue
            for b in (None, bias):
                x = torch.randn(M, k, device="cuda", dtype=dtype)
                want = g.sp24_mmsp_gl(x, *packed, b, n, cfg=cfg[:cut], out=poisoned(M, n, dtype))
                assert rel(want, F.linear(x, w, b)) < TOL[dtype], (cfg, M)
                for _ in range(repeats):
                    got = g.sp24_mmsp_gl(x, *variant, b, n, cfg=cfg, out=poisoned(M, n, dtype))
                    assert torch.equal(got, want), (cfg, M, b is None, (got - want).abs().max().item())
    if not graph:
        return
    cfg = cfgs[0]
    assert_graph_replays(lambda h: g.sp24_mmsp_gl(h, *variant, bias, n, cfg=cfg),
                         lambda h: g.sp24_mmsp_gl(h, *packed, bias, n, cfg=cfg[:cut]), 16, k, dtype)


# TM (12th element, twelfth session): the packed weights streamed through a TM-stage shared-memory ring by bulk
# tensor copies (TMA) instead of loaded into registers; the rest of the configuration as without it
MMSP_TMA = [(4, 2, 2, 1, 1, 0, 0, 1, 0, 0, 0, 4), (4, 1, 2, 1, 1, 0, 0, 4, 0, 0, 0, 3), (2, 2, 2, 0, 1, 0, 0, 1, 0, 0, 0, 2),
            (4, 2, 2, 1, 1, 1, 0, 2, 0, 0, 1, 6), (4, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 4), (8, 1, 2, 1, 0, 0, 0, 1, 0, 0, 0, 3)]


@pytest.mark.parametrize("early", [0, 1])
@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("shape", [(48, 128), (264, 384), (37, 640), (4096, 4096), (100, 1152)])
def test_gluon_mmsp_tma_stages_equal_the_register_kernel(shape, dtype, early, monkeypatch):
    """TM > 0 feeds the MMAs the same operands in the same order from shared memory (bulk tensor copies,
    zero-filled past N and K, their metadata replaced), so the output must be bit for bit that of the same
    configuration without TM, and near dense-with-zeros: odd M, bias, rows past N, super-steps past K (3, 5
    and 9 super-steps), split-K with both reductions, repeated calls, a CUDA-graph replay; with and without
    early weight requests under PDL."""
    from llmsparse.kernels import gluon_mmsp as g

    if not (g.MMSP_AVAILABLE and g.TMA_AVAILABLE) or torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("needs Gluon and Hopper's bulk tensor copies")
    monkeypatch.setattr(g, "EARLY", early)
    n, k = shape
    w = random_24(n, k, dtype, "cuda")
    bias = torch.randn(n, device="cuda", dtype=dtype)
    v, m = pack_nm(w, 2, 4)
    _check_bit_equal(g, MMSP_TMA, 11, w, bias, (v, m), (v, m), repeats=2)


# MO (13th element, twelfth session): the weights read from gluon_mmsp.mma_order's copy (MMA operand order)
MMSP_MO = [(4, 2, 2, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1), (4, 1, 2, 2, 0, 0, 0, 4, 1, 0, 0, 0, 1),
           (4, 2, 2, 1, 0, 0, 0, 4, 1, 0, 1, 0, 1), (4, 2, 2, 2, 0, 0, 0, 2, 0, 0, 0, 0, 1),
           (4, 1, 2, 3, 0, 0, 0, 1, 0, 0, 0, 0, 1), (8, 2, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1),
           (2, 4, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1), (4, 1, 2, 1, 1, 0, 0, 4, 1, 0, 0, 0, 1),
           (4, 2, 2, 2, 1, 0, 0, 1, 0, 0, 0, 0, 1),  # these two with XS (x by 16-byte loads and shuffles)
           (4, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1), (4, 2, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1),  # MO at M = 2-8
           # register cap 168 (RG, 14th element; fourteenth session), the second spilling 40 bytes offline
           (4, 1, 2, 2, 1, 0, 0, 4, 1, 0, 0, 0, 1, 168), (4, 2, 2, 1, 1, 0, 0, 2, 1, 0, 0, 0, 1, 168)]


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("shape", [(48, 128), (264, 384), (37, 640), (4096, 4096), (100, 1152)])
def test_gluon_mmsp_mma_order_equals_the_row_major_kernel(shape, dtype):
    """An MO configuration reads mma_order's copy: the same MMAs on the same operands in the same order
    as the configuration without MO, so the output must be bit for bit the same (and near dense-with-zeros):
    odd M, bias, rows past N (tiles padded), super-steps past K, split-K with both reductions, register
    prefetch 0-3, x through shuffles (XS), a CUDA-graph replay."""
    from llmsparse.kernels import gluon_mmsp as g

    if not g.MMSP_AVAILABLE:
        pytest.skip("this Triton has no Gluon linear layouts")
    n, k = shape
    w = random_24(n, k, dtype, "cuda")
    bias = torch.randn(n, device="cuda", dtype=dtype)
    v, m = pack_nm(w, 2, 4)
    _check_bit_equal(g, MMSP_MO, 12, w, bias, (v, m), g.mma_order(v, m), repeats=1)


# XL (MO >= 2, fourteenth session): x through a shared-memory ring of MO stages, read by ldmatrix; the weights from
# mma_order(order=2)'s copy (MMA s takes the super-step's inputs 32 s .. 32 s + 31)
MMSP_XL = [(4, 1, 2, 1, 0, 0, 0, 4, 1, 0, 0, 0, 2), (4, 1, 2, 1, 0, 0, 0, 1, 0, 0, 0, 0, 3),
           (4, 2, 2, 1, 0, 0, 0, 2, 1, 0, 0, 0, 4), (4, 2, 2, 1, 0, 0, 0, 4, 1, 0, 1, 0, 3),
           (2, 2, 2, 1, 0, 0, 0, 1, 0, 0, 0, 0, 2), (4, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 3),
           (4, 1, 1, 1, 0, 0, 0, 2, 1, 0, 0, 0, 2),
           (4, 2, 2, 3, 0, 0, 0, 2, 1, 0, 0, 0, 4), (4, 1, 1, 3, 0, 0, 0, 1, 0, 0, 0, 0, 3),  # PF = 3: unrolled by two
           (4, 1, 2, 2, 0, 0, 0, 4, 1, 0, 0, 0, 4), (4, 2, 2, 2, 0, 0, 0, 1, 0, 0, 0, 0, 3)]  # PF = 2: two ahead


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("shape", [(48, 128), (264, 384), (37, 640), (4096, 4096), (100, 1152)])
def test_gluon_mmsp_x_through_shared_memory(shape, dtype):
    """XL configurations against dense-with-zeros and against their row-major twins (the same products summed
    in another order inside the MMAs, so close, not bit-equal): odd M, bias, rows past N, super-steps past K,
    split-K with both reductions, warps sharing x (RW), ring depths 2-4, the weights 1 or 2 iterations ahead
    (PF 1-3), outputs NaN-poisoned; then a CUDA-graph replay of the first."""
    from llmsparse.kernels import gluon_mmsp as g

    if not g.MMSP_AVAILABLE:
        pytest.skip("this Triton has no Gluon linear layouts")
    n, k = shape
    w = random_24(n, k, dtype, "cuda")
    bias = torch.randn(n, device="cuda", dtype=dtype)
    v, m = pack_nm(w, 2, 4)
    v2, m2 = g.mma_order(v, m, 2)
    for cfg in MMSP_XL:
        for M in (1, 3, 9, 16):
            if cfg[2] == 1 and M > 8:
                continue
            for b in (None, bias):
                x = torch.randn(M, k, device="cuda", dtype=dtype)
                ref = F.linear(x, w, b)
                twin = g.sp24_mmsp_gl(x, v, m, b, n, cfg=g.row_major_twin(cfg), out=poisoned(M, n, dtype))
                got = g.sp24_mmsp_gl(x, v2, m2, b, n, cfg=cfg, out=poisoned(M, n, dtype))
                assert rel(got, ref) < TOL[dtype], (cfg, M, b is None, rel(got, ref))
                assert rel(got, twin) < TOL[dtype], (cfg, M, b is None)
    run = lambda h: g.sp24_mmsp_gl(h, v2, m2, bias, n, cfg=MMSP_XL[0])  # noqa: E731
    assert_graph_replays(run, run, 16, k, dtype)


# MO = 5 (sixteenth session): the copy of order 2 with x read from global memory as MO = 1 reads it (32-bit loads,
# or 16-byte loads and shuffles with XS): what lets one copy of order 2 serve M = 1 as well as the XL ones M = 2-16
MMSP_O2 = [(4, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 5), (4, 2, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 5),
           (8, 2, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 5), (4, 1, 1, 3, 0, 0, 0, 1, 0, 0, 0, 0, 5),
           (4, 1, 2, 1, 0, 0, 0, 4, 1, 0, 0, 0, 5), (4, 2, 2, 1, 0, 0, 0, 2, 1, 0, 0, 0, 5),
           (4, 2, 2, 1, 0, 0, 0, 4, 1, 0, 1, 0, 5), (4, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 5),  # PF = 0
           (8, 2, 2, 1, 0, 0, 0, 1, 0, 0, 0, 0, 5), (4, 1, 2, 1, 1, 0, 0, 4, 1, 0, 0, 0, 5)]  # WK = 8; XS


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("shape", [(48, 128), (264, 384), (37, 640), (4096, 4096), (100, 1152)])
def test_gluon_mmsp_order_2_with_x_from_global_memory(shape, dtype):
    """MO = 5 against dense-with-zeros, and bit for bit against its XL twin (MO = 3: the same MMAs on the same
    operands in the same order, x through shared memory instead) where one exists (PF >= 1, no XS; WK <= 4 here):
    odd M, bias, rows past N, super-steps past K, split-K with both reductions; then a CUDA-graph replay."""
    from llmsparse.kernels import gluon_mmsp as g

    if not g.MMSP_AVAILABLE:
        pytest.skip("this Triton has no Gluon linear layouts")
    n, k = shape
    w = random_24(n, k, dtype, "cuda")
    bias = torch.randn(n, device="cuda", dtype=dtype)
    v2, m2 = g.mma_order(*pack_nm(w, 2, 4), 2)
    for cfg in MMSP_O2:
        assert g.mo_order(cfg) == 2
        xl = cfg[:12] + (3,) if cfg[3] and not cfg[4] and cfg[0] <= 4 else None  # XL's tested range
        for M in (1, 3, 9, 16):
            if cfg[2] == 1 and M > 8:
                continue
            for b in (None, bias):
                x = torch.randn(M, k, device="cuda", dtype=dtype)
                got = g.sp24_mmsp_gl(x, v2, m2, b, n, cfg=cfg, out=poisoned(M, n, dtype))
                assert rel(got, F.linear(x, w, b)) < TOL[dtype], (cfg, M, b is None, rel(got, F.linear(x, w, b)))
                if xl is not None:
                    assert torch.equal(got, g.sp24_mmsp_gl(x, v2, m2, b, n, cfg=xl, out=poisoned(M, n, dtype))), cfg
    run = lambda h: g.sp24_mmsp_gl(h, v2, m2, bias, n, cfg=MMSP_O2[0])  # noqa: E731
    assert_graph_replays(run, run, 1, k, dtype)


@pytest.mark.parametrize("dtype", DT)
def test_sparse_linear_runs_an_mma_order_choice_on_its_copy(dtype, monkeypatch):
    """With an MO configuration chosen for M = 9-16 (gluon_mmsp.MO_TUNING; the table set by hand here, the
    dispatcher's timing is the benchmarks'), a SparseLinear builds mma_order's copy and its eager and
    torch.compile-d forwards give bit for bit the same configuration's output on the row-major weights."""
    from llmsparse.kernels import dispatch, gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("this Triton has no Gluon linear layouts")
    monkeypatch.setattr(gluon_mmsp, "MO_TUNING", 1)
    w = random_24(264, 384, dtype, "cuda")
    lin = SparseLinear.from_dense(w, torch.randn(264, device="cuda", dtype=dtype))
    cfg = gluon_mmsp.MMSP_MO_CONFIGS[16][0]
    lin._table = {16: dispatch.Choice("mmsp", cfg)}
    lin._materialize()
    assert lin._mo_values is not None
    x = torch.randn(13, 384, device="cuda", dtype=dtype)
    want = dispatch.run_choice(dispatch.Choice("mmsp", cfg[:12]), x, values=lin.values, meta=lin.meta,
                               bias=lin.bias, out_features=264)
    assert rel(want, F.linear(x, w, lin.bias)) < TOL[dtype]
    assert torch.equal(lin(x), want)
    fn = torch.compile(lin._compiled_forward, fullgraph=True)
    assert torch.equal(fn(x), want)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("dtype", DT)
def test_sparse_linear_with_mo_storage_holds_only_the_copy(dtype, order):
    """SparseLinear.mo_storage = 1 or 2 (LLMSPARSE_MMSP_MO=compact1 / compact2), tuned for real at M = 1, 16, 256 on a 7B-wide
    shape: the MO table's choices only (MO mmsp, cuSPARSELt, dense); the layer holds the MMA-order copy instead of
    values/meta where every choice runs on it; eager (odd M too), CUDA-graph and torch.compile outputs against
    dense-with-zeros; state_dict bit for bit the packed weights; moved to the CPU it keeps the copy, and its
    packed pair and fallback are still exact."""
    from llmsparse.kernels import dispatch, gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("this Triton has no Gluon linear layouts")
    w = random_24(1024, 4096, dtype, "cuda")
    b = torch.randn(1024, device="cuda", dtype=dtype)
    lin = SparseLinear.from_dense(w, b)
    v0, m0 = lin.values.clone(), lin.meta.clone()
    lin.mo_storage = order
    table = lin.prepare((1, 16, 256))
    assert all(c.path in ("dense", "cslt") or dispatch.mo_order(c) == order for c in table.values()), table
    if any(dispatch.mo_order(c) == order for c in table.values()):
        assert lin._stored_order == order and lin.values.numel() == 0 and lin.meta.numel() == 0
    for m in (1, 3, 16, 13, 256):
        x = torch.randn(m, 4096, device="cuda", dtype=dtype)
        assert rel(lin(x), F.linear(x, w, b)) < TOL[dtype], (m, lin._plan(m))
    sd = lin.state_dict()
    assert torch.equal(sd["values"].view(torch.int16), v0.view(torch.int16)) and torch.equal(sd["meta"], m0)
    assert_graph_replays(lin, lin, 16, 4096, dtype)
    x = torch.randn(16, 4096, device="cuda", dtype=dtype)
    fn = torch.compile(lin, fullgraph=True)
    assert rel(fn(x), F.linear(x, w, b)) < TOL[dtype]
    stored = lin._stored_order
    lin.cpu()
    assert lin._stored_order == stored and (lin._mo_values is not None or not stored)
    vc, mc = lin.packed()
    assert torch.equal(vc.view(torch.int16), v0.cpu().view(torch.int16)) and torch.equal(mc, m0.cpu())
    xc = x.cpu()
    assert torch.equal(lin(xc), F.linear(xc, w.cpu(), b.cpu()))


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("shape", [(48, 128), (264, 384), (4096, 4096), (100, 1152)])
def test_gluon_mmsp_wide_mo_configurations(shape, dtype):
    """The MO configurations for M = 17-64 (gluon_mmsp.MMSP_MO_WIDE_CONFIGS: NT = 4 and 8, both copy orders), and
    an M = 16 one of each order, against dense-with-zeros on poisoned outputs: M below, at and past the token tile (1, 17, 32, 33, 64, 100:
    rows of x past M, several token tiles), bias, rows past N, split-K; then a CUDA-graph replay."""
    from llmsparse.kernels import gluon_mmsp as g

    if not g.MMSP_AVAILABLE:
        pytest.skip("this Triton has no Gluon linear layouts")
    n, k = shape
    w = random_24(n, k, dtype, "cuda")
    bias = torch.randn(n, device="cuda", dtype=dtype)
    copies = {o: g.mma_order(*pack_nm(w, 2, 4), o) for o in (1, 2)}
    cfgs = list(dict.fromkeys(c for key in (32, 64) for c in g.MMSP_MO_WIDE_CONFIGS[key]))
    # and the M = 16 ones of both orders past their token tile (what a copy-only layer's fallback runs above M = 16)
    cfgs += [next(c for c in g.MMSP_MO_CONFIGS[16] if g.mo_order(c) == o) for o in (1, 2)]
    for cfg in cfgs:
        v, m = copies[g.mo_order(cfg)]
        for M in (1, 17, 32, 33, 64, 100):
            for b in (None, bias):
                x = torch.randn(M, k, device="cuda", dtype=dtype)
                got = g.sp24_mmsp_gl(x, v, m, b, n, cfg=cfg, out=poisoned(M, n, dtype))
                assert rel(got, F.linear(x, w, b)) < TOL[dtype], (cfg, M, b is None, rel(got, F.linear(x, w, b)))
    v, m = copies[2]
    run = lambda h: g.sp24_mmsp_gl(h, v, m, bias, n, cfg=g.MMSP_MO_WIDE_CONFIGS[64][0])  # noqa: E731
    assert_graph_replays(run, run, 40, k, dtype)


@pytest.mark.parametrize("dtype", DT)
def test_sparse_linear_with_wide_mo_candidates(dtype, monkeypatch):
    """MO storage of order 2 with MO_WIDE: tuned for real at M = 32 and 64 on a 7B-wide shape, the layer's choices
    there are the wide MO configurations, cuSPARSELt or dense; eager outputs at M = 20, 32, 50, 64 against
    dense-with-zeros, and a CUDA-graph replay at 64."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("this Triton has no Gluon linear layouts")
    monkeypatch.setattr(gluon_mmsp, "MO_WIDE", 1)
    w = random_24(1024, 4096, dtype, "cuda")
    b = torch.randn(1024, device="cuda", dtype=dtype)
    lin = SparseLinear.from_dense(w, b)
    lin.mo_storage = 2
    table = lin.prepare((32, 64))
    wide = set(gluon_mmsp.MMSP_MO_WIDE_CONFIGS[32] + gluon_mmsp.MMSP_MO_WIDE_CONFIGS[64])
    # (the table holds every bucket tuned for this shape so far, other tests' included)
    assert all(table[b].path in ("dense", "cslt") or table[b].cfg in wide for b in (32, 64)), table
    for m in (20, 32, 50, 64):
        x = torch.randn(m, 4096, device="cuda", dtype=dtype)
        assert rel(lin(x), F.linear(x, w, b)) < TOL[dtype], (m, lin._plan(m))
    assert_graph_replays(lin, lin, 64, 4096, dtype)
    # keep_dense=False where dense won at M = 17-64 and no cuSPARSELt form is held: the wide fallback on the copy
    from llmsparse.kernels import dispatch

    lin2 = SparseLinear.from_dense(w, b)
    lin2.mo_storage, lin2.keep_dense, lin2.lazy_tune = 2, False, False
    mo16 = next(c for c in gluon_mmsp.MMSP_MO_CONFIGS[16] if gluon_mmsp.mo_order(c) == 2)
    lin2._table = {16: dispatch.Choice("mmsp", mo16), 32: dispatch.Choice("dense"), 64: dispatch.Choice("dense")}
    lin2._materialize()
    assert lin2._stored_order == 2 and lin2._dense is None and lin2._cslt is None
    for m in (17, 40, 64):
        c = lin2._plan(m)
        assert c.path == "mmsp" and c.cfg in wide, (m, c)
        x = torch.randn(m, 4096, device="cuda", dtype=dtype)
        assert rel(lin2(x), F.linear(x, w, b)) < TOL[dtype], (m, c)


@pytest.mark.parametrize("compile,attention", [("none", "causal"), ("none", "mask"), ("layers", "causal")])
def test_e2e_bench_on_a_tiny_llama_reports_both_sides(compile, attention):
    """kernels.benchmark.e2e_bench end to end on a tiny 2:4 Llama (CUDA graphs, batch 2; eager or compiled layers;
    the prefill with SDPA's causal flag or an explicit mask): both sides timed from graph replays (dense twice,
    before and after), the sparsified model's logits against the dense-with-zeros model's, the swapped layers'
    bytes, the memory logged before the second dense pass (so that a run cut short tells it), and the prefill graphs of
    both sides replayed in turn (``interleave``)."""
    import torch._dynamo
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmsparse.kernels.benchmark import e2e_bench, prune_24_

    torch.manual_seed(0)
    torch._dynamo.reset()
    cfg = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=1000, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).to("cuda", torch.float16).eval()
    prune_24_(model)
    weights = {f"model.layers.{i}.{n[:-len('.weight')]}": p.numel() for i, layer in enumerate(model.model.layers)
               for n, p in layer.named_parameters() if n.endswith("proj.weight")}
    lines: list[str] = []
    res = e2e_bench(model, prompt_len=64, gen=8, decode_prompt=8, batch=2, log=lines.append, compile=compile,
                    prefill_attention=attention, breakdown=compile == "none", interleave=4)
    torch._dynamo.reset()
    if compile == "none":  # the profiled prefill: attention and the dense side's GEMMs seen and filed
        d, sp = res["dense_prefill_breakdown"], res["sparse_prefill_breakdown"]
        assert d["ms"]["attention"] > 0 and sp["ms"]["attention"] > 0, (d["top"], sp["top"])
        assert d["ms"]["dense_gemm"] > 0 and d["ms"]["sparse_gemm"] == 0, d["top"]
        assert d["total_ms"] > 0 and sp["total_ms"] > 0 and d["top"] and sp["top"]
    # a layer where dense is as fast at every measured M stays nn.Linear (here the 128x256 k/v projections may)
    left = {name: r for name, r in res["skipped"].items() if name in weights}
    assert set(res["skipped"]) - set(left) == {"lm_head"}, res["skipped"]
    assert res["swapped"] + len(left) == len(weights) == 14 and res["swapped"] >= 1, res["skipped"]
    assert all(r == "dense is as fast at every measured M" for r in left.values()), left
    dense_bytes = 2 * sum(n for name, n in weights.items() if name not in left)
    assert res["batch"] == 2 and res["prefill_attention"] == attention
    # --interleave: the dense graph (held across the swap) and the 2:4 one replayed in turn
    assert "interleave_error" not in res, res["interleave_error"]
    pi = res["prefill_interleaved"]
    assert pi["rounds"] == 4 and len(pi["dense_ms_runs"]) == len(pi["sparse_ms_runs"]) == 4
    assert all(math.isfinite(t) and t > 0 for t in pi["dense_ms_runs"] + pi["sparse_ms_runs"])
    assert pi["speedup"] == pytest.approx(pi["dense_ms"] / pi["sparse_ms"])
    assert res["logits_rel_err"] < (5e-3 if compile == "none" else 2e-2)
    assert all(res["prefill_timing"][k].get("graph") for k in ("dense", "sparse", "dense_again")), res["prefill_timing"]
    assert res["graphs"]
    assert len(res["dense_prefill_ms_runs"]) == 2 and len(res["dense_decode_tok_s_runs"]) == 2
    for k in ("dense_prefill_ms", "sparse_prefill_ms", "dense_decode_tok_s", "sparse_decode_tok_s"):
        assert math.isfinite(res[k]) and res[k] > 0, k
    assert res["decode_speedup"] == pytest.approx(res["sparse_decode_tok_s"] / res["dense_decode_tok_s"])
    assert 0 < res["sparse_linear_bytes"] and res["dense_linear_bytes"] == dense_bytes
    assert model.config._attn_implementation == "sdpa"
    mem = [i for i, s in enumerate(lines) if s.startswith("decoder linears:")]
    again = [i for i, s in enumerate(lines) if s.startswith("dense again")]
    assert mem and again and mem[0] < again[0]


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("shape", [(264, 384), (37, 640), (4096, 4096)])
def test_gluon_mmsp_weight_cache_policy_leaves_outputs_bit_equal(shape, dtype, monkeypatch):
    """EVICT (the packed weights' cache hint): plain, evict-first (the default), ``.cg`` and L1-no-allocate (inline
    PTX for the values) loads read the same bytes, so every output is bit for bit the plain kernel's: MO copies of
    both orders (XL, x from registers), the row-major layout, uneven K, split-K with both reductions, odd M, bias."""
    from llmsparse.kernels import gluon_mmsp as g

    if not g.MMSP_AVAILABLE:
        pytest.skip("this Triton has no Gluon linear layouts")
    n, k = shape
    w = random_24(n, k, dtype, "cuda")
    bias = torch.randn(n, device="cuda", dtype=dtype)
    v, m = pack_nm(w, 2, 4)
    forms = {0: (v, m), 1: g.mma_order(v, m, 1), 2: g.mma_order(v, m, 2)}
    cfgs = [(4, 2, 2, 3, 0, 0, 0, 2, 1, 0, 0, 0, 4), (4, 1, 2, 1, 1, 0, 0, 4, 1, 0, 0, 0, 1),
            (4, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 5), (4, 2, 2, 1, 1, 0, 0, 4, 1, 0, 1), (4, 2, 2, 1, 1, 0, 0, 2, 1)]
    for cfg in cfgs:
        vv, mm = forms[g.mo_order(cfg)]
        for M in (1, 9, 16):
            if cfg[2] == 1 and M > 8:
                continue
            x = torch.randn(M, k, device="cuda", dtype=dtype)
            outs = []
            for ev in (0, 1, 2, 3):
                monkeypatch.setattr(g, "EVICT", ev)
                outs.append(g.sp24_mmsp_gl(x, vv, mm, bias, n, cfg=cfg, out=poisoned(M, n, dtype)))
            assert rel(outs[0], F.linear(x, w, bias)) < TOL[dtype], (cfg, M)
            assert all(torch.equal(o, outs[0]) for o in outs[1:]), (cfg, M)
