"""CPU side of llmsparse.kernels: the dense-with-zeros fallback, the swap, the dispatcher's pure parts."""
from __future__ import annotations

import inspect
import os
import statistics

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmsparse.kernels import SparseLinear, is_24, sparsify, swap_packed
from llmsparse.kernels import dispatch
from llmsparse.masks import nm_mask


def _w24(out, inp, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g)
    return (w * nm_mask(w.abs(), 2, 4)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fallback_equals_linear(dtype):
    w = _w24(24, 64, dtype)
    b = torch.randn(24).to(dtype)
    lin = SparseLinear.from_dense(w, b)
    x = torch.randn(3, 5, 64).to(dtype)
    y = lin(x)
    assert y.shape == (3, 5, 24)
    assert torch.equal(y, F.linear(x, w, b))
    assert torch.equal(lin.dense_weight(), w)


def test_state_dict_is_packed_and_from_packed_roundtrip():
    w = _w24(16, 32)
    lin = SparseLinear.from_dense(w, None)
    sd = lin.state_dict()
    assert set(sd) == {"values", "meta"}
    assert sd["values"].shape == (16, 16) and sd["meta"].shape == (16, 4) and sd["meta"].dtype == torch.uint8
    lin2 = SparseLinear.from_packed(sd["values"], sd["meta"], 32)
    x = torch.randn(4, 32)
    assert torch.equal(lin2(x), x @ w.t())
    with pytest.raises(ValueError):
        SparseLinear.from_packed(sd["values"], sd["meta"], 64)
    # metadata whose indices are not distinct and increasing (not written by pack_nm) is refused:
    # the GPU kernels rely on i0 < i1
    bad = sd["meta"].clone()
    bad[3, 1] = (bad[3, 1] & 0xF0) | (1 << 2) | 2  # group 2 of row 3: i0 = 2, i1 = 1
    with pytest.raises(ValueError, match="increasing"):
        SparseLinear.from_packed(sd["values"], bad, 32)


def test_from_dense_rejects_non_24():
    with pytest.raises(ValueError):
        SparseLinear.from_dense(torch.ones(4, 8))
    with pytest.raises(ValueError):
        SparseLinear(12, 4)


def test_is_24():
    assert is_24(_w24(8, 16))
    assert not is_24(torch.ones(8, 16))
    assert not is_24(torch.zeros(8, 6))


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(32, 48)
        self.b = nn.Linear(48, 16, bias=False)
        self.c = nn.Linear(16, 8)  # stays dense (not 2:4)
        with torch.no_grad():
            self.a.weight.copy_(_w24(48, 32, seed=1))
            self.b.weight.copy_(_w24(16, 48, seed=2))

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def test_sparsify_swaps_only_24_and_keeps_outputs():
    m = Toy()
    x = torch.randn(7, 32)
    ref = m(x)
    rep = sparsify(m)
    assert rep["swapped"] == ["a", "b"]
    assert rep["skipped"] == {"c": "weight is not 2:4"}
    assert isinstance(m.a, SparseLinear) and isinstance(m.c, nn.Linear)
    assert torch.equal(m(x), ref)


def test_swap_packed():
    from llmsparse.formats.nm import pack_nm

    m = Toy()
    x = torch.randn(2, 32)
    ref = m(x)
    v, meta = pack_nm(m.a.weight.detach(), 2, 4)
    assert swap_packed(m, {"a": (v, meta)}) == ["a"]
    assert torch.equal(m(x), ref)


def test_sparsify_tiny_llama_logits_unchanged():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=97)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Linear) and "lm_head" not in name:
                mod.weight.mul_(nm_mask(mod.weight.abs(), 2, 4))
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        ref = model(ids).logits
        rep = sparsify(model)
        out = model(ids).logits
    assert len(rep["swapped"]) == 14 and "lm_head" in rep["skipped"]
    assert torch.equal(out, ref)


def test_buckets_and_nearest():
    assert dispatch.bucket_of(1) == 1
    assert dispatch.bucket_of(3) == 4
    assert dispatch.bucket_of(17) == 32
    assert dispatch.bucket_of(10**6) == dispatch.BUCKETS[-1]
    t = {1: dispatch.Choice("gemv"), 4096: dispatch.Choice("cslt", (0,))}
    assert dispatch.nearest(t, 2).path == "gemv"
    assert dispatch.nearest(t, 2048).path == "cslt"
    assert dispatch.nearest({}, 8) is None
    assert dispatch.nearest(t, 64).path == "cslt"  # equally far (in log2) from 1 and 4096: the larger


def test_candidates_cover_sizes():
    pytest.importorskip("triton")
    from llmsparse.kernels import gluon_sp24

    from llmsparse.kernels import gluon_mmsp

    c1 = {c.path for c in dispatch.candidates(1)}
    assert c1 == (({"gemvg"} if gluon_sp24.AVAILABLE else set()) | ({"mmsp"} if gluon_mmsp.MMSP_AVAILABLE else set())
                  | {"gemv"})
    # the Triton tensor-core kernels never won a measurement: measured only when asked for
    assert {"mm", "mmb"} <= {c.path for c in dispatch.candidates(1, paths=dispatch.ALL_PATHS)}
    assert not {"mm", "mmb"} & set(dispatch.DEFAULT_PATHS) and set(dispatch.DEFAULT_PATHS) < set(dispatch.ALL_PATHS)
    # mmsp reads 128-input super-steps: only offered when in_features % 128 == 0, and up to M = 16
    if gluon_mmsp.MMSP_AVAILABLE:
        assert {c.path for c in dispatch.candidates(16, in_features=4096)} >= {"mmsp"}
        assert "mmsp" not in {c.path for c in dispatch.candidates(1, in_features=4160)}
        assert "mmsp" not in {c.path for c in dispatch.candidates(17)}
    # the Gluon kernel reads meta as int32 words: only offered when in_features % 32 == 0
    assert "gemvg" not in {c.path for c in dispatch.candidates(1, in_features=4104)}
    assert not any(c.path == "gemvg" for c in dispatch.candidates(16))
    mid = {c.path for c in dispatch.candidates(16)}
    assert ("mmg" in mid) == gluon_sp24.MMA_AVAILABLE
    # offered only where it was measured to win (M <= 16)
    assert not dispatch.candidates(32, paths=("mmg",)) and not dispatch.candidates(8, paths=("mmg",))
    assert {c.path for c in dispatch.candidates(4096)} == {"cslt", "cutlass"}
    # CUTLASS's sparse GEMM: from M = 128, where in_features is a multiple of its 64-wide metadata atom
    assert "cutlass" not in {c.path for c in dispatch.candidates(64)}
    assert "cutlass" not in {c.path for c in dispatch.candidates(4096, in_features=4128)}
    from llmsparse.kernels.cutlass_sp24 import CONFIGS

    assert [c.cfg for c in dispatch.candidates(128, paths=("cutlass",), in_features=4096)] == [
        (i,) for i in range(len(CONFIGS))]
    assert any(c.path == "mm" and c.cfg[0] == 128 for c in dispatch.candidates(256, paths=dispatch.ALL_PATHS))


def test_parse_shapes():
    from llmsparse.kernels.benchmark import parse_shapes

    assert parse_shapes("llama2-7b") == [(4096, 4096), (11008, 4096), (4096, 11008)]
    assert parse_shapes("8192x28672, 16x32") == [(8192, 28672), (16, 32)]
    with pytest.raises(ValueError):
        parse_shapes("big")


def test_bench_cli_without_cuda_is_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from llmsparse.cli.main import main

    rc = main(["bench", "--json", str(tmp_path / "r.json"), "--plot", ""])
    assert rc == 2
    err = capsys.readouterr().err
    assert "CUDA" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args,msg", [(["--paths", "gemvg,warp9"], "unknown kernel path"),
                                      (["--compile", "all"], "--compile must be"),
                                      (["--batch", "0"], "--batch, --gen-tokens"),
                                      (["--prefill-attention", "flash"], "--prefill-attention must be"),
                                      (["--interleave", "-1"], "--interleave must be"),
                                      (["--plot", "/proc/version/x.png"], "is not a directory")])
def test_bench_cli_bad_options_are_one_line_errors(tmp_path, capsys, args, msg):
    from llmsparse.cli.main import main

    rc = main(["bench", "--json", str(tmp_path / "r.json"), "--plot", ""] + args)
    assert rc == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


def test_causal_prefill_attention_equals_the_masked_model_and_refuses_a_cache():
    """benchmark.causal_prefill: a tiny Llama (GQA) gives the same logits as with transformers' sdpa and an explicit
    boolean causal mask (the prefill the bench timed up to the nineteenth session), builds no mask (SDPA's causal
    flag), refuses a forward where query and key differ in length (a decode step with a cache), and leaves the
    model's attention implementation as it was, also after an error; compiled layers give the same logits."""
    import torch._dynamo
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmsparse.kernels import benchmark as B

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=100, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 100, (2, 11))
    mask = torch.ones(11, 11, dtype=torch.bool).tril()[None, None]
    seen = []
    with torch.no_grad():
        ref = model(ids, attention_mask=mask, use_cache=False).logits
        unmasked = model(ids, attention_mask=torch.ones(11, 11, dtype=torch.bool)[None, None], use_cache=False).logits
        orig = B._causal_prefill_attention
        B._causal_prefill_attention = lambda *a, **k: (seen.append(a[4]), orig(*a, **k))[1]
        try:
            with B.causal_prefill(model):
                assert model.config._attn_implementation == B.CAUSAL_PREFILL_ATTN
                out = model(ids, use_cache=False).logits
        finally:
            B._causal_prefill_attention = orig
        assert model.config._attn_implementation == "sdpa"
        assert seen == [None, None]  # one call per layer, no mask
        assert (out - ref).abs().max() < 1e-5 and (unmasked - ref).abs().max() > 1e-2  # the mask matters
        past = model(ids, use_cache=True).past_key_values
        with pytest.raises(ValueError, match="query and key of one length"):
            with B.causal_prefill(model):
                model(ids[:, :1], **{B.cache_arg(model): past}, use_cache=True)
        assert B.cache_arg(model) in inspect.signature(model.forward).parameters  # a name forward takes, no kwargs
        assert model.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="prefill attention"):
        B.time_prefill(model, 8, attention="flash")
    from transformers import MistralConfig, MistralForCausalLM

    for window, ok in ((4, False), (11, True), (None, True)):  # a sliding window shorter than the prompt: refused
        mis = MistralForCausalLM(MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                               num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                               sliding_window=window, attn_implementation="sdpa")).eval()
        with torch.no_grad(), B.causal_prefill(mis):
            if ok:
                mis(ids, use_cache=False)
            else:
                with pytest.raises(ValueError, match="sliding window"):
                    mis(ids, use_cache=False)
    # Dynamo traces it without a graph break (the bench compiles decoder layers; aot_eager: no C++ compiler needed)
    torch._dynamo.reset()
    try:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.compile(backend="aot_eager", fullgraph=True, dynamic=False)
            with B.causal_prefill(model):
                comp = model(ids, use_cache=False).logits
            comp_masked = model(ids, attention_mask=mask, use_cache=False).logits
    finally:
        torch._dynamo.reset()
    assert (comp - ref).abs().max() < 1e-5 and (comp_masked - ref).abs().max() < 1e-5


def test_bench_cli_refuses_a_short_sliding_window_for_the_causal_prefill(tmp_path):
    """llmsparse bench MODEL with the causal prefill: a model whose config attends over a sliding window shorter than
    --prompt-len is refused (one-line UserError) before any GPU work; no window, a window turned off
    (use_sliding_window=False) or one as long as the prompt pass; an unreadable config is left to the model load."""
    from transformers import MistralConfig, Qwen2Config

    from llmsparse.cli.bench import _check_no_short_window
    from llmsparse.errors import UserError

    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=100)
    cases = {"mis4": (MistralConfig(**small, sliding_window=4), False),
             "mis64": (MistralConfig(**small, sliding_window=64), True),
             "misnone": (MistralConfig(**small, sliding_window=None), True),
             "qwen_off": (Qwen2Config(**small, sliding_window=4, use_sliding_window=False), True)}
    for name, (cfg, ok) in cases.items():
        cfg.save_pretrained(tmp_path / name)
        if ok:
            _check_no_short_window(str(tmp_path / name), 64)
        else:
            with pytest.raises(UserError, match="sliding window of 4 tokens"):
                _check_no_short_window(str(tmp_path / name), 64)
    _check_no_short_window(str(tmp_path / "absent"), 64)


def test_prefill_breakdown_files_kernels_by_category():
    """benchmark.kernel_category / summarize_kernels (the e2e bench's --breakdown): kernel names as the H100 runs
    name them go to attention, sparse GEMM, dense GEMM or other (first match in that order: cuSPARSELt's sm90 sparse
    kernels are sparse, not dense); per-category sums and the total are the sums of the parts; the top list is
    sorted and capped."""
    from llmsparse.kernels import benchmark as B

    names = {
        "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>, true>(Flash_fwd_params)":
            "attention",
        "fmha_cutlassF_f16_aligned_64x128_rf_sm80(PyTorchMemEffAttention::AttentionKernel<...>::Params)": "attention",
        "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3": "attention",
        "sm90_xmma_sparse_gemm_f16f16_f32f32_f16_tn_n_tilesize128x128x64_warpgroupsize1x1x1": "sparse_gemm",
        "_sp24_mmsp_gl": "sparse_gemm", "_sp24_gemv_gl": "sparse_gemm",
        "nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NTN": "dense_gemm",
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64_warpgroupsize2x1x1_execute_segment_k_off":
            "dense_gemm",
        "void gemv2T_kernel_val<int, int, __half, __half, float, 128, 16, 4, 4, false, false>": "dense_gemm",
        "ampere_fp16_s16816gemm_fp16_64x64_ldg8_f2f_stages_64x5_tn": "dense_gemm",
        "triton_poi_fused_add_mul_silu_3": "other", "triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0": "other",
        "void at::native::elementwise_kernel<128, 2, ...>": "other",
    }
    for n, cat in names.items():
        assert B.kernel_category(n) == cat, n
    times = {n: float(i + 1) for i, n in enumerate(names)}
    got = B.summarize_kernels(times, top=3)
    for cat in ("attention", "sparse_gemm", "dense_gemm", "other"):
        assert got["ms"][cat] == pytest.approx(sum(t for n, t in times.items() if names[n] == cat))
    assert got["total_ms"] == pytest.approx(sum(times.values()))
    n = float(len(names))
    assert [t["ms"] for t in got["top"]] == [n, n - 1, n - 2] and got["top"][0]["category"] == "other"


def test_interleaved_timing_alternates_and_reverses_the_order():
    """timing.interleaved_ms (the e2e bench's --interleave): every call timed once per round, the order reversed every
    other round (A B, B A, A B, ...), times returned per call in round order; benchmark.interleaved_prefill takes the
    medians and dense/2:4; a clock that slows steadily over the rounds costs both sides alike there (equal work gives
    1.00x), where timing all of one side first would not."""
    from llmsparse.kernels import benchmark as B
    from llmsparse.kernels.timing import interleaved_ms

    seen: list[str] = []
    clock = {"t": 0}

    def timer(fn):  # a GPU whose clock drifts: each call takes 1% longer than the one before, times the call's work
        name, work = fn()
        seen.append(name)
        clock["t"] += 1
        return work * (1 + 0.01 * clock["t"])

    calls = {"dense": lambda: ("dense", 10.0), "sparse": lambda: ("sparse", 8.0)}
    t = interleaved_ms(calls, rounds=4, timer=timer)
    assert seen == ["dense", "sparse", "sparse", "dense", "dense", "sparse", "sparse", "dense"]
    assert t["dense"] == pytest.approx([10.1, 10.4, 10.5, 10.8]) and t["sparse"] == pytest.approx([8.16, 8.24, 8.48, 8.56])
    with pytest.raises(ValueError, match="at least one"):
        interleaved_ms(calls, rounds=0, timer=timer)

    class G:  # stands in for B.PrefillGraph
        def __init__(self, work):
            self.work = work

        def replay(self):
            return "g", self.work

    clock["t"] = 0
    same = B.interleaved_prefill({"dense": G(5.0), "sparse": G(5.0)}, rounds=6, timer=timer)
    assert same["speedup"] == pytest.approx(1.0) and same["rounds"] == 6 and len(same["dense_ms_runs"]) == 6
    clock["t"] = 0
    r = B.interleaved_prefill({"dense": G(10.0), "sparse": G(8.0)}, rounds=6, timer=timer)
    assert r["dense_ms"] == pytest.approx(statistics.median(r["dense_ms_runs"]))
    assert r["speedup"] == pytest.approx(r["dense_ms"] / r["sparse_ms"]) == pytest.approx(1.25)  # even rounds: exact
    with pytest.raises(ValueError, match="interleave must be"):  # refused before any work (no model, no GPU needed)
        B.e2e_bench(None, interleave=-1)


def test_densify_restores_linear():
    from llmsparse.kernels import densify

    m = Toy()
    x = torch.randn(3, 32)
    ref = m(x)
    sparsify(m)
    assert densify(m) == 2
    assert type(m.a) is nn.Linear and type(m.b) is nn.Linear and m.b.bias is None
    assert torch.equal(m(x), ref)


class _FakeBench:
    """Stands in for dispatch.ShapeBench on the CPU: no tensors, every candidate exact."""

    have_cslt = False
    sets = []

    def args(self, m, choice):
        return (lambda name: None), [(dispatch.choice_name(choice),)]

    def check(self, m, choice):
        return 0.0


def _scripted_tune(monkeypatch, script, default=9.0, host=None, **kw):
    """Run dispatch.tune for bucket 1 with time_call answering from ``script`` (name -> list of ms) and
    host_ms from ``host`` (name -> ms, default 0.05)."""
    pytest.importorskip("triton")
    from llmsparse.kernels import timing

    calls = []

    def fake_time_call(fn, args_list, **_):
        name = args_list[0][0]
        calls.append(name)
        seq = script.get(name)
        return seq.pop(0) if seq else default

    monkeypatch.setattr(timing, "time_call", fake_time_call)
    monkeypatch.setattr(timing, "host_ms", lambda fn, args_list, **_: (host or {}).get(args_list[0][0], 0.05))
    monkeypatch.setattr(dispatch, "device_name", lambda device=None: "fake-gpu")
    dispatch.clear()
    table = dispatch.tune(64, 64, torch.float16, False, (1,), device="cpu", bench=_FakeBench(),
                          paths=("gemv",), force=True, **kw)
    return table[1], calls


def test_tune_keeps_a_confirmed_win(monkeypatch):
    from llmsparse.kernels.triton_sp24 import GEMV_CONFIGS

    g = "gemv:" + ",".join(map(str, GEMV_CONFIGS[0]))
    c, calls = _scripted_tune(monkeypatch, {"dense:": [1.0, 1.0, 1.0], g: [0.6, 0.61, 0.62]})
    assert c.path == "gemv" and c.cfg == GEMV_CONFIGS[0]
    assert c.ms == pytest.approx(0.61) and c.dense_ms == pytest.approx(1.0)
    assert calls[-4:] == ["dense:", g, "dense:", g]  # interleaved re-measurement


def test_tune_drops_a_win_that_does_not_hold(monkeypatch):
    """First measurement: sparse 1.2x faster; re-measured twice: slower than dense -> dense."""
    from llmsparse.kernels.triton_sp24 import GEMV_CONFIGS

    g = "gemv:" + ",".join(map(str, GEMV_CONFIGS[0]))
    c, _ = _scripted_tune(monkeypatch, {"dense:": [1.0, 0.9, 0.9], g: [0.83, 1.0, 1.0]})
    assert c.path == "dense"
    rec = dispatch.RECORDS[-1]
    assert rec.confirmed["dense"] == [1.0, 0.9, 0.9] and rec.confirmed[g] == [0.83, 1.0, 1.0]
    c, _ = _scripted_tune(monkeypatch, {"dense:": [1.0], g: [0.83]}, confirm=0)  # no confirmation: kept
    assert c.path == "gemv"


def test_tune_refuses_a_path_slow_on_the_host(monkeypatch):
    """Fastest in graph replays but 300 ms per eager call (cuSPARSELt fp16 alg 1 on Hopper): refused."""
    from llmsparse.kernels.triton_sp24 import GEMV_CONFIGS

    g = "gemv:" + ",".join(map(str, GEMV_CONFIGS[0]))
    c, calls = _scripted_tune(monkeypatch, {"dense:": [1.0, 1.0, 1.0], g: [0.5, 0.5, 0.5]}, host={g: 300.0})
    assert c.path == "dense"  # the other configs (9 ms by default) lose to dense
    assert g not in calls  # not even timed
    assert dispatch.RECORDS[-1].errors[g].startswith("refused: one eager call takes 300.0 ms")
    # a dense call that is itself slow on the host raises the limit (10x dense)
    c, _ = _scripted_tune(monkeypatch, {"dense:": [1.0, 1.0, 1.0], g: [0.5, 0.5, 0.5]},
                          host={g: 300.0, "dense:": 40.0})
    assert c.path == "gemv" and c.cfg == GEMV_CONFIGS[0]


def test_host_side_cusparselt_rejection_is_not_a_fault():
    """cuSPARSELt refusing an algorithm id on the host is skippable; a device fault stops tuning."""
    bad_alg = RuntimeError("CUDA error: invalid value when calling `cusparseLtMatmulAlgSetAttribute( &handle, "
                           "&alg_sel, CUSPARSELT_MATMUL_ALG_CONFIG_ID, &alg_id, sizeof(alg_id))`")
    assert not dispatch._fatal(bad_alg)
    assert dispatch._fatal(RuntimeError("CUDA error: an illegal instruction was encountered"))
    assert dispatch._fatal(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not dispatch._fatal(ValueError("config does not fit"))


def test_from_packed_copies_misaligned_views():
    """A packed tensor that is a view at an odd offset (e.g. into a checkpoint buffer) is copied to an
    aligned one: the Gluon kernels read values/meta through int32 views."""
    w = _w24(16, 64)
    sd = SparseLinear.from_dense(w, None).state_dict()
    buf = torch.zeros(sd["meta"].numel() + 3, dtype=torch.uint8)
    meta = buf[3:].view(sd["meta"].shape)
    meta.copy_(sd["meta"])
    assert meta.data_ptr() % 16 == 3
    lin = SparseLinear.from_packed(sd["values"], meta, 64)
    assert lin.meta.data_ptr() % 16 == 0 and torch.equal(lin.meta, sd["meta"])
    assert lin.values.data_ptr() == sd["values"].data_ptr()  # an aligned tensor is kept as is
    x = torch.randn(3, 64)
    assert torch.equal(lin(x), x @ w.t())


def test_compiled_forward_traces_without_graph_breaks_and_matches():
    """The torch.compile path (measured choice read by ``_plan``, kernels behind the opaque
    ``llmsparse::sp24_linear`` custom op) traces with fullgraph=True, its fake kernel agrees with the
    real one (opcheck), and the result equals the dense-with-zeros product. On CPU only the dense
    path can run, so the table is set by hand; tests/gpu compiles a sparsified model on CUDA."""
    w = _w24(24, 64)
    b = torch.randn(24)
    lin = SparseLinear.from_dense(w, b)
    x = torch.randn(5, 64)
    with pytest.raises(RuntimeError, match="prepare"):  # no measured choices yet
        lin._plan(5)
    lin._table = {1: dispatch.Choice("gemvg", (1, 2, 3, 4, 5)), 8: dispatch.Choice("dense")}
    lin._get_dense()
    assert lin._plan(5).path == "dense" and lin._plan(1).path == "gemvg"
    assert lin._plan(4096).path == "dense"  # unmeasured bucket: the nearest measured one
    torch.library.opcheck(torch.ops.llmsparse.sp24_linear,
                          (x, lin.values, lin.meta, lin.bias, lin._dense, None, 24, "dense", []))
    fn = torch.compile(lin._compiled_forward, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(fn(x), F.linear(x, w, b))
    dyn = torch.compile(lin._compiled_forward, backend="aot_eager", fullgraph=True, dynamic=True)
    for m in (3, 6, 7):  # a symbolic token count: the bucket lookup guards on it instead of failing
        xm = torch.randn(m, 64)
        torch.testing.assert_close(dyn(xm), F.linear(xm, w, b))
    with pytest.raises(ValueError, match="dense weight"):
        torch.ops.llmsparse.sp24_linear(x, lin.values, lin.meta, None, None, None, 24, "dense", [])


def test_fallback_never_needs_a_missing_form():
    """keep_dense=False where dense won, or a choice whose form was not built: the substitute path needs
    only the packed weights unless cuSPARSELt's form exists."""
    from llmsparse.kernels.linear import _best_sparse_fallback

    assert _best_sparse_fallback(1, False).path == "mm" and _best_sparse_fallback(1, False).cfg[0] == 16
    assert _best_sparse_fallback(100, True).path == "mm" and _best_sparse_fallback(100, True).cfg[0] == 64
    assert _best_sparse_fallback(4096, False).path == "mm"  # no cuSPARSELt form: not cslt
    assert _best_sparse_fallback(4096, True).path == "cslt"
    lin = SparseLinear.from_dense(_w24(8, 64))
    lin._table = {4096: dispatch.Choice("cslt", (3, 1))}
    assert lin._plan(4096).path == "mm"  # compiled: the chosen form is missing -> packed-only path


def test_eager_choice_goes_through_plan(monkeypatch):
    """Eager calls pick like compiled ones once the bucket is measured (no tuning here: lazy_tune off)."""
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    lin = SparseLinear.from_dense(_w24(8, 64))
    lin.lazy_tune = False
    lin._table = {1: dispatch.Choice("gemvg", (1, 4, 8, 1, 4)), 4096: dispatch.Choice("cslt", (3, 1))}
    assert lin._choose(1).path == "gemvg"
    assert lin._choose(4096).path == "mm"  # cuSPARSELt's form was never built: not the cslt path
    lin._table = {1: dispatch.Choice("dense")}
    lin._dense = lin.dense_weight()
    assert lin._choose(1).path == "dense"
    lin.keep_dense = False
    assert lin._choose(1).path == "mm"


def test_sparsify_paths_are_checked_and_kept(monkeypatch):
    assert dispatch.check_paths(["gemvg", "mmsp"]) == ("gemvg", "mmsp")
    with pytest.raises(ValueError, match="unknown kernel path"):
        dispatch.check_paths(["gemvg", "fast"])
    lin = nn.Linear(64, 8, bias=False)
    with torch.no_grad():
        lin.weight.copy_(_w24(8, 64))
    model = nn.Sequential(lin)
    rep = sparsify(model, paths=("gemvg", "mm"), for_compile=True)
    assert rep["swapped"] == ["0"] and model[0].allowed_paths == ("gemvg", "mm") and model[0].for_compile
    assert rep["compiled_paths"] == {}  # nothing measured on the CPU
    with pytest.raises(ValueError, match="unknown kernel path"):
        sparsify(nn.Sequential(nn.Linear(64, 8)), paths=("nope",))


def test_tune_measures_again_a_bucket_chosen_with_other_paths(monkeypatch):
    """A shared table entry measured with a path outside this call's ``paths`` is not reused."""
    from llmsparse.kernels.triton_sp24 import GEMV_CONFIGS

    g = "gemv:" + ",".join(map(str, GEMV_CONFIGS[0]))
    c, calls = _scripted_tune(monkeypatch, {"dense:": [1.0, 1.0, 1.0], g: [0.5, 0.5, 0.5]})
    assert c.path == "gemv"
    key = dispatch.make_key(64, 64, torch.float16, False, "cpu")
    dispatch.table_for(key)[1] = dispatch.Choice("cslt", (0, 1), 0.4, 1.0)  # as if measured with cslt before
    table = dispatch.tune(64, 64, torch.float16, False, (1,), device="cpu", bench=_FakeBench(), paths=("gemv",))
    assert table[1].path in ("gemv", "dense")  # re-measured, not the cslt entry


def test_diag_script_parses_every_kernel_name():
    """bench/diag_kernels.py runs each configuration by name in its own process: every name the
    dispatcher can produce (all paths, mmsp included) must parse back to the same choice."""
    pytest.importorskip("triton")
    mod = _bench_script("diag_kernels.py")
    names = {dispatch.choice_name(c) for m in (1, 4, 16, 64, 128)
             for c in dispatch.candidates(m, cslt_algs=(0, 1), paths=dispatch.ALL_PATHS)}
    assert {n.split(":")[0] for n in names} >= {"gemv", "mm", "mmb", "cslt", "cutlass"}
    for n in names:
        assert dispatch.choice_name(mod.parse(n)[0]) == n
    with pytest.raises(ValueError, match="unknown kernel"):
        mod.parse("warp:1,2")


def test_records_json_is_json_ready():
    """Benchmark JSON carries every tuning record: keys as lists, tensors' float errors as floats."""
    import json

    rec = dispatch.TuneRecord(("GPU", "float16", 8, 128, False), 16, timings={"dense": 0.02, "mmsp:4,2,2,1,1": 0.015},
                              errors={"mmsp:4,2,2,1,1": torch.tensor(1e-4).item(), "cslt:1,1": "refused: slow"},
                              confirmed={"dense": [0.02, 0.021]})
    out = dispatch.records_json([rec])
    assert out == [{"key": ["GPU", "float16", 8, 128, False], "M": 16,
                    "timings": {"dense": 0.02, "mmsp:4,2,2,1,1": 0.015}, "confirmed": {"dense": [0.02, 0.021]},
                    "errors": {"mmsp:4,2,2,1,1": pytest.approx(1e-4), "cslt:1,1": "refused: slow"}}]
    json.dumps(out)


def test_choice_from_name_inverts_choice_name():
    """Configuration names (LLMSPARSE_KERNEL_EXCLUDE, diag_kernels.py, the probes) read back into choices."""
    from llmsparse.kernels.dispatch import Choice, choice_from_name, choice_name

    for c in [Choice("mm", (16, 32, 256, 4, 3)), Choice("mmb", (64, 128, 128, 4, 3)), Choice("gemv", (4, 1024, 4, 2)),
              Choice("mmsp", (4, 1, 2, 1, 1, 0, 0, 3, 1)), Choice("cslt", (1, 0)), Choice("gemvg", (1, 4, 8, 2, 2))]:
        back = choice_from_name(choice_name(c))
        assert (back.path, back.cfg) == (c.path, c.cfg)
    assert choice_from_name("dense").path == "dense"
    for bad in ("nope:1,2", "mmsp", "mmsp:4,x", "mm:16"):
        with pytest.raises(ValueError):
            choice_from_name(bad)


class _FakeCsltBench(_FakeBench):
    """A ShapeBench stand-in whose shape has cuSPARSELt's form (so tune measures cslt candidates and
    fills the view table)."""

    have_cslt = True
    sets = [{"cslt_packed": None}]

    def inputs(self, m):
        return [torch.zeros(m, 64)]


def _scripted_cslt_tune(monkeypatch, script, views=True, timed=None):
    pytest.importorskip("triton")
    from llmsparse.kernels import cslt, timing

    def fake_time_call(fn, a, **_):
        if timed is not None:
            timed.append(a[0][0])
        return (script.get(a[0][0]) or [9.0]).pop(0)

    monkeypatch.setattr(timing, "time_call", fake_time_call)
    monkeypatch.setattr(timing, "host_ms", lambda fn, a, **_: 0.05)
    monkeypatch.setattr(cslt, "search_alg", lambda packed, x: None)
    monkeypatch.setattr(dispatch, "device_name", lambda device=None: "fake-gpu")
    dispatch.clear()
    table = dispatch.tune(64, 64, torch.float16, False, (4096,), device="cpu", bench=_FakeCsltBench(),
                          paths=("cslt",), force=True, views=views)
    return table[4096], dispatch.table_for(dispatch.view_key(dispatch.make_key(64, 64, torch.float16, False))).get(4096)


def test_candidates_offer_the_view_result_only_when_asked():
    names = {dispatch.choice_name(c) for c in dispatch.candidates(4096, paths=("cslt",), cslt_algs=(0, 3))}
    assert names == {"cslt:0,1", "cslt:0,0", "cslt:3,1", "cslt:3,0"}
    names_v = {dispatch.choice_name(c) for c in dispatch.candidates(4096, paths=("cslt",), cslt_algs=(0, 3),
                                                                   views=True)}
    assert names_v == names | {"cslt:0,2", "cslt:3,2"}
    assert dispatch.is_view(dispatch.choice_from_name("cslt:3,2"))
    assert not dispatch.is_view(dispatch.choice_from_name("cslt:3,0"))
    assert not dispatch.is_view(dispatch.Choice("dense"))


def test_tune_fills_the_view_table_from_the_same_measurements(monkeypatch):
    """cuSPARSELt's untransposed result without its copy (cslt:a,2) may win only the view table (what
    SparseLinear runs under torch.compile); eager callers keep the contiguous choices."""
    script = {"dense:": [1.0, 1.0, 1.0, 1.0, 1.0], "cslt:0,1": [0.98], "cslt:0,0": [1.2],
              "cslt:0,2": [0.7, 0.71, 0.72]}
    normal, view = _scripted_cslt_tune(monkeypatch, script)
    assert normal.path == "dense"  # 0.98 ms: not 1.05x faster
    assert view.path == "cslt" and view.cfg == (0, 2) and view.ms == pytest.approx(0.71)
    rec = dispatch.RECORDS[-1]
    assert rec.confirmed["cslt:0,2"] == [0.7, 0.71, 0.72]
    # the view candidate is slower than the normal winner: the view table repeats the normal choice
    script = {"dense:": [1.0] * 5, "cslt:1,1": [0.6, 0.6, 0.6], "cslt:0,2": [0.8]}
    normal, view = _scripted_cslt_tune(monkeypatch, script)
    assert normal.path == "cslt" and normal.cfg == (1, 1) and view == normal
    # a view win that does not hold when re-measured: the normal choice (dense here)
    script = {"dense:": [1.0, 1.0, 1.0], "cslt:0,2": [0.8, 1.1, 1.1]}
    normal, view = _scripted_cslt_tune(monkeypatch, script)
    assert normal.path == "dense" and view.path == "dense"
    # without views (eager users): no cslt:a,2 timed, no view table
    timed = []
    normal, view = _scripted_cslt_tune(monkeypatch, {"dense:": [1.0] * 3, "cslt:0,2": [0.5]}, views=False, timed=timed)
    assert view is None and normal.path == "dense" and "cslt:0,1" in timed
    assert not any(n.endswith(",2") for n in timed)


def test_compiled_forward_leaves_the_cslt_transpose_to_the_graph(monkeypatch):
    """A view-table choice under torch.compile: the custom op returns cuSPARSELt's [N, Mp] (here a CPU
    stand-in of ``cslt_nm`` computing the same product from the dense weight), the graph transposes,
    slices the padding off and adds the bias; eager keeps the normal table's choice."""
    from llmsparse.kernels import cslt

    def fake_cslt_nm(x, packed, alg_id):  # packed: the dense weight itself in this stand-in
        mp = cslt.padded_rows(x.shape[0])
        return F.linear(F.pad(x, (0, 0, 0, mp - x.shape[0])), packed).t().contiguous()

    monkeypatch.setattr(cslt, "cslt_nm", fake_cslt_nm)
    w = _w24(24, 64)
    b = torch.randn(24)
    lin = SparseLinear.from_dense(w, b)
    lin._table = {4096: dispatch.Choice("dense")}
    lin._table_view = {4096: dispatch.Choice("cslt", (0, 2))}
    lin._get_dense()
    lin._cslt = w.clone()
    assert lin._plan(4000).path == "dense" and lin._plan(4000, view=True).cfg == (0, 2)
    assert lin.compiled_table()[4096].cfg == (0, 2)
    x = torch.randn(37, 64)  # 37 -> 48 padded rows
    torch.library.opcheck(torch.ops.llmsparse.cslt_nm, (x, lin._cslt, 0, 24))
    with pytest.raises(ValueError, match="rows"):
        torch.ops.llmsparse.cslt_nm(x, lin._cslt, 0, 25)
    fn = torch.compile(lin._compiled_forward, backend="aot_eager", fullgraph=True)
    y = fn(x)
    assert y.shape == (37, 24) and y.is_contiguous()  # the copy is the graph's (Inductor folds it into consumers)
    torch.testing.assert_close(y, F.linear(x, w, b))
    dyn = torch.compile(lin._compiled_forward, backend="aot_eager", fullgraph=True, dynamic=True)
    for m in (5, 16, 33):
        xm = torch.randn(m, 64)
        torch.testing.assert_close(dyn(xm), F.linear(xm, w, b))
    lin._cslt = None  # the form is missing: the packed-only fallback, never the view op
    assert lin._plan(4000, view=True).path == "mm"


def test_cslt_result_layouts(monkeypatch):
    """The three result layouts of cslt_linear (row padding, transposes, copy, bias) with a CPU stand-in for
    ``torch._cslt_sparse_mm`` (the 'compressed' weight is the dense one); a bad layout is refused."""
    from llmsparse.kernels import cslt

    def fake_mm(packed, bt, bias=None, transpose_result=False, alg_id=0):
        assert bt.shape[1] % 16 == 0  # the token count is padded for cuSPARSELt
        y = packed @ bt  # [N, Mp]
        return y.t().contiguous() if transpose_result else y

    monkeypatch.setattr(torch, "_cslt_sparse_mm", fake_mm)
    w, b = torch.randn(24, 64), torch.randn(24)
    for m in (16, 37):
        x = torch.randn(m, 64)
        for result in (cslt.RESULT_MN, cslt.RESULT_COPY, cslt.RESULT_VIEW):
            y = cslt.cslt_linear(x, w, b if m == 37 else None, 0, result)
            assert y.shape == (m, 24) and y.is_contiguous() == (result != cslt.RESULT_VIEW)
            torch.testing.assert_close(y, F.linear(x, w, b if m == 37 else None))
        assert cslt.cslt_nm(x, w, 0).shape == (24, cslt.padded_rows(m)) == (24, 16 * -(-m // 16))
    with pytest.raises(ValueError, match="0, 1 or 2"):
        cslt.cslt_linear(torch.zeros(4, 8), torch.zeros(8), None, 0, 3)


def test_bench_cli_gemm_table_shows_the_compiled_choice(tmp_path, monkeypatch, capsys):
    """The GEMM table of ``llmsparse bench`` (the timing itself stubbed: this machine has no GPU) shows
    the view table's speedup under torch.compile where a row has one, and writes every row to the JSON."""
    import json

    from llmsparse.cli.main import main
    from llmsparse.kernels import benchmark as B

    base = dict(dtype="float16", out=4096, inp=4096, path="dense", cfg=[], dense_ms=0.18, ours_ms=0.18,
                speedup=1.0, err_vs_dense=0.0, err_vs_fp32=2e-4, dense_err_vs_fp32=2e-4, all_written=True)
    rows = [dict(base, M=1024), dict(base, M=4096, view_path="cslt:0,2", view_ms=0.125, view_speedup=1.437,
                                    view_err_vs_dense=4e-5)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(B, "gemm_bench", lambda *a, **k: rows)
    monkeypatch.setattr(B, "env_info", lambda: {"gpu": "fake-gpu"})
    from llmsparse.cli import common

    monkeypatch.setattr(common.console, "width", 200)  # one line per row (the table goes to stderr)
    out = tmp_path / "r.json"
    rc = main(["bench", "--shapes", "4096x4096", "--m", "1024,4096", "--dtype", "fp16", "--json", str(out),
               "--plot", ""])
    assert rc in (0, None)
    text = capsys.readouterr().err
    assert "compiled x" in text and "1.44" in text
    saved = json.loads(out.read_text())
    assert [r.get("view_speedup") for r in saved["gemm"]] == [None, 1.437]


@pytest.mark.parametrize("flag,env,want", [([], 0, 0), ([], 1, 1), (["--mma-order"], 0, 1), (["--no-mma-order"], 1, 0),
                                           (["--mo-storage"], 0, "s2"), (["--no-mo-storage"], 1, "s0"),
                                           (["--mo-storage-order", "2"], 0, "s2"),
                                           (["--mo-storage", "--mo-storage-order", "2"], 1, "s2"),
                                           (["--mo-storage-order", "1"], 2, "s1"), (["--mma-order"], 2, "s0")])
def test_bench_cli_mma_order_flag_sets_the_mo_candidates(tmp_path, monkeypatch, flag, env, want):
    """``llmsparse bench --mma-order / --no-mma-order`` turns the MO candidates on or off for the measurement
    (gluon_mmsp.MO_TUNING, which the results' kernel settings record); without the flag the import-time
    setting (LLMSPARSE_MMSP_MO) stands. The timing itself is stubbed (no GPU here)."""
    import json

    from llmsparse.cli.main import main
    from llmsparse.kernels import benchmark as B
    from llmsparse.kernels import gluon_mmsp

    import types

    import llmsparse.kernels as K

    storage = isinstance(want, str)  # --mo-storage: gluon_mmsp.MO_STORAGE instead
    attr, key = ("MO_STORAGE", "mo_storage") if storage else ("MO_TUNING", "mo")
    want = int(want[1]) if storage else want
    monkeypatch.setattr(gluon_mmsp, attr, env)  # restored after the test
    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(K, "capability", lambda: {"gpu": "fake-gpu"})
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(multi_processor_count=1))
    monkeypatch.setattr(B, "gemm_bench", lambda *a, **k: seen.append(getattr(gluon_mmsp, attr)) or [])
    monkeypatch.setattr(gluon_mmsp, "mo_storage_applies", lambda device, paths: True)  # a Hopper GPU
    out = tmp_path / "r.json"
    rc = main(["bench", "--shapes", "4096x4096", "--m", "16", "--dtype", "fp16", "--json", str(out), "--plot", ""] + flag)
    assert rc in (0, None) and seen == [want]
    assert json.loads(out.read_text())["env"]["kernel_settings"][key] == want


def test_bench_cli_says_when_mo_storage_does_not_apply(tmp_path, monkeypatch, capsys):
    """On a GPU where MO storage does not apply (not compute capability 9.x, or mmsp left out of --paths) the results
    record mo_storage 0 (what the layers hold), and an explicit --mo-storage gets a one-line note instead of
    silently doing nothing."""
    import json
    import types

    import llmsparse.kernels as K
    from llmsparse.cli.main import main
    from llmsparse.kernels import benchmark as B
    from llmsparse.kernels import gluon_mmsp

    monkeypatch.setattr(gluon_mmsp, "MO_STORAGE", 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(K, "capability", lambda: {"gpu": "fake-gpu"})
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(multi_processor_count=1))
    monkeypatch.setattr(B, "gemm_bench", lambda *a, **k: [])
    seen = []
    monkeypatch.setattr(gluon_mmsp, "mo_storage_applies", lambda device, paths: seen.append(paths) or "mmsp" in paths)
    for i, (flag, applies, note) in enumerate(((["--mo-storage"], False, True), ([], False, False),
                                               ([], True, False))):
        paths = ["--paths", "gemvg,mmsp,cslt"] if applies else ["--paths", "gemvg,cslt"]
        out = tmp_path / f"r{i}.json"
        rc = main(["bench", "--shapes", "4096x4096", "--m", "16", "--json", str(out), "--plot", ""] + paths + flag)
        err = capsys.readouterr().err
        assert rc in (0, None) and ("MO storage does not apply" in err) == note, (flag, applies, err)
        assert json.loads(out.read_text())["env"]["kernel_settings"]["mo_storage"] == (2 if applies else 0)
    assert seen and all("cslt" in p for p in seen)


@pytest.mark.parametrize("flag", [["--mo-storage-order", "3"], ["--mo-storage-order", "0"],
                                  ["--no-mo-storage", "--mo-storage-order", "2"], ["--mma-order", "--mo-storage"],
                                  ["--mma-order", "--mo-storage-order", "1"]])
def test_bench_cli_rejects_a_bad_mo_storage_order(tmp_path, capsys, flag):
    """A storage order other than 1 or 2, or one given with --no-mo-storage, or MO storage with --mma-order (the
    second-copy mode): one line, exit 2, nothing written."""
    from llmsparse.cli.main import main

    out = tmp_path / "r.json"
    rc = main(["bench", "--shapes", "4096x4096", "--m", "16", "--json", str(out), "--plot", ""] + flag)
    err = capsys.readouterr().err
    assert rc == 2 and "--mo-storage" in err and "Traceback" not in err and not out.exists()
    assert len(err.strip().splitlines()) == 1


def test_pick_extra_keeps_only_configurations_that_win_a_row(tmp_path, capsys):
    """bench/device/pick_extra.py (which probe configurations join the dispatcher table run): a new
    configuration is kept only where it beats every old one by the margin, never with a wrong result."""
    import json

    mod = _bench_script("device/pick_extra.py")
    row = dict(dtype="float16", out=64, **{"in": 128})
    rows = [dict(row, M=1, cands={"mmsp:4,1,1,1": {"ms": 0.010, "err": 1e-5}, "mmsp:4,1,1,0,1,0,2": {"ms": 0.0095, "err": 1e-5}}),
            dict(row, M=16, cands={"mmsp:4,2,2,1,1": {"ms": 0.020, "err": 1e-5}, "mmsp:4,2,2,0,1,0,0,1,0,3": {"ms": 0.015, "err": 1e-5},
                                   "mmsp:2,2,2,0,1,0,0,1,0,3": {"ms": 0.010, "err": 5e-3}})]
    new = ["4,1,1,0,1,0,2", "4,2,2,0,1,0,0,1,0,3", "2,2,2,0,1,0,0,1,0,3"]
    winners, lines = mod.pick(rows, new, 1.03)
    # M=1: 1.053x; M=16: 1.33x (the faster 2,2,2,... has a wrong result and never counts)
    assert winners == ["4,1,1,0,1,0,2", "4,2,2,0,1,0,0,1,0,3"] and len(lines) == 2
    assert "1.333x" in lines[1] and "2,2,2" not in lines[1]
    assert mod.pick(rows, new, 1.06)[0] == ["4,2,2,0,1,0,0,1,0,3"]
    f = tmp_path / "probe.json"
    f.write_text(json.dumps({"rows": rows}))
    assert mod.main([str(f), ";".join(new)]) == 0
    assert capsys.readouterr().out.strip() == "4,1,1,0,1,0,2;4,2,2,0,1,0,0,1,0,3"
    assert mod.main([str(tmp_path / "missing.json"), "4,1,1,1"]) == 2
    assert "cannot read probe" in capsys.readouterr().err
    # mo_probe.py's rows: microseconds, its own configurations as "mo:CFG", the other MO ones part of the base
    mo = [{"dtype": "bf16", "shape": "4096x4096", "m": 16,
           "us": {"dense": 16.6, "mmsp:4,2,2,1,1": 14.0, "mo:4,1,2,1,1,0,0,4,1,0,0,0,1": 11.5,
                  "mo:4,1,2,1,0,0,0,4,1,0,0,0,4": 10.9, "mo:4,2,2,1,0,0,0,1,0,0,0,0,3": 10.0},
           "err": {"mmsp:4,2,2,1,1": 1e-4, "mo:4,1,2,1,1,0,0,4,1,0,0,0,1": 1e-4, "mo:4,1,2,1,0,0,0,4,1,0,0,0,4": 1e-4,
                   "mo:4,2,2,1,0,0,0,1,0,0,0,0,3": float("inf")}}]
    xl = ["4,1,2,1,0,0,0,4,1,0,0,0,4", "4,2,2,1,0,0,0,1,0,0,0,0,3"]
    winners, lines = mod.pick(mo, xl, 1.03)
    assert winners == ["4,1,2,1,0,0,0,4,1,0,0,0,4"] and "4096x4096 M=16" in lines[0] and "1.055x" in lines[0]
    assert mod.pick(mo, xl, 1.06)[0] == []
    f.write_text(json.dumps({"rows": [{"dtype": "bf16", "shape": "4096x4096"}]}))  # neither probe's rows
    assert mod.main([str(f), ";".join(xl)]) == 2
    err = capsys.readouterr()
    assert "neither gemv_gluon_probe.py nor mo_probe.py" in err.err and err.out == ""


def _bench_script(rel: str):
    """A script under bench/ loaded as a module (the scripts are not a package)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "bench" / rel
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_extra_mmsp_candidates_go_where_their_tuning_reads_them(monkeypatch):
    """gluon_mmsp.add_candidates (bench_kernels.py --mmsp-extra): a row-major configuration joins MMSP_CONFIGS, an
    MO one MMSP_MO_CONFIGS (which MO tuning and MO storage read; before, MO extras landed in the row-major list, so
    an MO-storage table never timed them), each in the bucket of its NT, once; an invalid one raises."""
    from llmsparse.kernels import gluon_mmsp as g

    monkeypatch.setattr(g, "MMSP_CONFIGS", {k: list(v) for k, v in g.MMSP_CONFIGS.items()})
    monkeypatch.setattr(g, "MMSP_MO_CONFIGS", {k: list(v) for k, v in g.MMSP_MO_CONFIGS.items()})
    n8, n16 = len(g.MMSP_CONFIGS[8]), len(g.MMSP_MO_CONFIGS[16])
    rm, mo = (8, 2, 1, 2, 1), (2, 4, 2, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4)
    g.add_candidates([rm, mo, mo])
    assert g.MMSP_CONFIGS[8][-1] == rm and len(g.MMSP_CONFIGS[8]) == n8 + 1
    assert g.MMSP_MO_CONFIGS[16][-1] == mo and len(g.MMSP_MO_CONFIGS[16]) == n16 + 1
    assert mo not in g.MMSP_CONFIGS[16]
    monkeypatch.setattr(g, "MO_TUNING", 1)
    assert mo in g.mmsp_configs_for(16) and rm in g.mmsp_configs_for(8)
    for bad in [(4, 2, 4, 1, 1), (4, 1, 2, 0, 0, 0, 0, 4, 1, 0, 0, 0, 3)]:  # NT = 4; XL without register prefetch
        with pytest.raises(ValueError):
            g.add_candidates([bad])


def test_mmsp_configuration_lists_parse_or_fail_in_one_line(monkeypatch, capsys):
    """The device scripts' ``--mmsp-extra``/``--mmsp-cfgs`` syntax (gluon_mmsp.parse_configs): 4 to 14
    integers per entry; bench_kernels.py rejects anything else, or an NT it has no bucket for, with a
    one-line usage error (exit 2) before touching the GPU or the output directory."""
    from llmsparse.kernels.gluon_mmsp import parse_configs

    assert parse_configs("4,2,2,1,1; 4,1,1,0,1,0,0,1,0,3;") == [(4, 2, 2, 1, 1), (4, 1, 1, 0, 1, 0, 0, 1, 0, 3)]
    assert parse_configs("") == []
    assert parse_configs("4,1,2,1,1,0,0,4,1,0,1") == [(4, 1, 2, 1, 1, 0, 0, 4, 1, 0, 1)]
    assert parse_configs("4,2,2,1,1,0,0,1,0,0,0,4") == [(4, 2, 2, 1, 1, 0, 0, 1, 0, 0, 0, 4)]
    assert parse_configs("4,2,2,1,0,0,0,1,0,0,0,0,1") == [(4, 2, 2, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1)]
    assert parse_configs("4,1,2,2,1,0,0,4,1,0,0,0,1,168") == [(4, 1, 2, 2, 1, 0, 0, 4, 1, 0, 0, 0, 1, 168)]
    for bad in ("4,2,2", "4,2,2,1,1,0,0,1,0,3,1,0,1,168,2", "4,2,x,1"):
        with pytest.raises(ValueError):
            parse_configs(bad)
    mod = _bench_script("bench_kernels.py")
    for bad in ("4,2,2", "4,2,4,1,1", "a;b"):
        monkeypatch.setattr("sys.argv", ["bench_kernels.py", "--mmsp-extra", bad, "--out", "/nonexistent/x"])
        with pytest.raises(SystemExit) as e:
            mod.main()
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("bench_kernels.py: error: --mmsp-extra: expected 'WK,RT,NT,PF[")


def test_pdl_launch_arguments_only_on_hopper_or_later(monkeypatch):
    """PDL's launch arguments (gluon_sp24.pdl_args): none while PDL is off; with it on, the kernels' GDC mode
    and launch_pdl, except on a device older than compute capability 9.0 (no griddepcontrol there)."""
    from llmsparse.kernels import gluon_sp24 as g

    caps = {0: (9, 0), 1: (8, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: caps[i])
    monkeypatch.setattr(g, "_SM90", {})
    monkeypatch.setattr(g, "PDL", 0)
    assert g.pdl_args(torch.device("cuda", 0)) == {}
    for mode in (1, 2):
        monkeypatch.setattr(g, "PDL", mode)
        assert g.pdl_args() == {"GDC": mode, "launch_pdl": True}
        assert g.pdl_args(torch.device("cuda", 0)) == {"GDC": mode, "launch_pdl": True}
        assert g.pdl_args(torch.device("cuda", 1)) == {}


def _run_ptx(text: str, args: dict) -> dict:
    """Interpret the few b32 PTX instructions of ``gluon_mmsp._meta4_asm`` (mov.b64 split, shr, shl, and, xor,
    prmt) on Python ints; ``args`` maps operand names ("$4") to values. Returns every register written."""
    reg = dict(args)
    m32 = 0xFFFFFFFF

    def val(tok):
        tok = tok.strip()
        return int(tok, 0) if tok[0].isdigit() else reg[tok]

    body = text.strip()[1:-1]  # drop the braces of the PTX scope
    for ins in [i.strip() for i in body.split(";") if i.strip()]:
        op, _, rest = ins.partition(" ")
        if op == ".reg":
            continue
        if op == "mov.b64":
            dst, src = rest.split("},")
            lo, hi = [r.strip() for r in dst.strip(" {").split(",")]
            reg[lo], reg[hi] = val(src) & m32, val(src) >> 32
            continue
        d, *srcs = [t.strip() for t in rest.split(",")]
        a = [val(t) for t in srcs]
        if op == "shr.b32":
            reg[d] = a[0] >> a[1]
        elif op == "shl.b32":
            reg[d] = (a[0] << a[1]) & m32
        elif op == "and.b32":
            reg[d] = a[0] & a[1]
        elif op == "xor.b32":
            reg[d] = a[0] ^ a[1]
        elif op == "prmt.b32":  # default mode: byte k of d is byte (sel nibble k) of {b, a}
            by = [(a[0] >> 8 * i) & 0xFF for i in range(4)] + [(a[1] >> 8 * i) & 0xFF for i in range(4)]
            reg[d] = sum(by[(a[2] >> 4 * k) & 7] << 8 * k for k in range(4))
        else:
            raise AssertionError(f"unexpected PTX instruction {ins!r}")
    return reg


def test_mmsp_metadata_ptx_gathers_each_mmas_nibbles():
    """The metadata of ``mma.sp`` (m16n8k32, selector 0) for MMA s of a super-step: row g's nibbles s, s + 4,
    s + 8, s + 12 (groups 4q + s) in the low halfword, row g + 8's in the high one. The kernel's PTX (byte
    permutes, ``_meta4_asm``), interpreted instruction by instruction, must give exactly that for random rows
    and for all-equal and single-nibble patterns."""
    import random

    from llmsparse.kernels.gluon_mmsp import _meta4_asm

    asm = _meta4_asm()

    def want(wl, wh, s):
        def gather(w):
            return sum(((w >> 4 * (s + 4 * q)) & 0xF) << 4 * q for q in range(4))
        return gather(wl) | gather(wh) << 16

    rng = random.Random(0)
    cases = [(rng.getrandbits(64), rng.getrandbits(64)) for _ in range(2000)]
    cases += [(0, 0), (2**64 - 1, 0), (0x4444444444444444, 0xEEEEEEEEEEEEEEEE)]
    cases += [(0xF << 4 * p, 0xA << 4 * (15 - p)) for p in range(16)]
    for wl, wh in cases:
        out = _run_ptx(asm, {"$4": wl, "$8": wh})
        assert [out[f"${s}"] for s in range(4)] == [want(wl, wh, s) for s in range(4)], (hex(wl), hex(wh))


def test_results_record_the_kernel_settings(monkeypatch):
    """A results file says how it was produced: env_info carries the settings that change timings or choices
    (set by environment variables at import), as the kernel cache's signature does."""
    from llmsparse.kernels import benchmark as B
    from llmsparse.kernels import gluon_mmsp

    for mo in (0, 1):
        monkeypatch.setattr(gluon_mmsp, "MO_TUNING", mo)
        monkeypatch.setattr(gluon_mmsp, "MO_STORAGE", 1 - mo)
        ks = B.env_info()["kernel_settings"]
        assert ks["mo"] == mo and ks["mo_storage"] == 1 - mo
        assert set(ks) == {"kernels", "pdl", "meta", "early", "evict", "mo", "wide", "mo_storage"}


def test_register_cap_is_a_launch_option_kept_by_the_row_major_twin():
    """RG (14th element): ``maxnreg`` for the launch (not a kernel argument), 0 or absent for none, a multiple of 8
    in 64-248 otherwise (a one-line ValueError for anything else, also from kernel_consts); an MO choice's
    row-major twin drops MO and keeps the tiling and the cap."""
    from llmsparse.kernels import gluon_mmsp as g

    assert g.kernel_options((4, 2, 2, 1)) == {} == g.kernel_options((4, 2, 2, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0))
    assert g.kernel_options((4, 1, 2, 2, 1, 0, 0, 4, 1, 0, 0, 0, 1, 168)) == {"maxnreg": 168}
    for bad in (100, 32, 256, -8):
        with pytest.raises(ValueError, match="register cap"):
            g.kernel_options((4, 2, 2, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, bad))
    if g.MMSP_AVAILABLE:
        with pytest.raises(ValueError, match="register cap"):
            g.kernel_consts((4, 2, 2, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 100), False)
        assert "maxnreg" not in g.kernel_consts((4, 2, 2, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 168), False)
    mo = (4, 1, 2, 2, 1, 0, 0, 4, 1, 0, 0, 0, 1)
    assert g.row_major_twin(mo) == mo[:12]
    assert g.row_major_twin(mo + (168,)) == mo[:12] + (0, 168)
    assert dispatch.row_major_twin(dispatch.Choice("mmsp", mo + (168,))) == dispatch.Choice("mmsp", mo[:12] + (0, 168))
    assert not g.is_mo(g.row_major_twin(mo + (168,)))


def test_x_through_shared_memory_configurations_are_checked_and_read_the_order_2_copy():
    """MO = 2-4 (XL: x through a shared-memory ring of MO stages): valid only with PF = 1-3, without XS, CH, PD, AS or
    TM, and with WK <= 4 when the warps share x (RW); a one-line ValueError otherwise. mo_order says which copy a
    configuration reads, and ShapeBench.run hands each MO choice its own copy (order 1: ``mo``, order 2: ``mo2``)."""
    from llmsparse.kernels import gluon_mmsp as g

    xl = (4, 1, 2, 1, 0, 0, 0, 4, 1, 0, 0, 0, 3)
    assert [g.mo_order(c) for c in ((4, 2, 2, 1), xl[:12] + (0,), xl[:12] + (1,), xl, xl[:12] + (2,))] == [0, 0, 1, 2, 2]
    assert dispatch.mo_order(dispatch.Choice("mmsp", xl)) == 2 and dispatch.mo_order(dispatch.Choice("cslt", (0, 1))) == 0
    assert g.row_major_twin(xl) == xl[:12]
    if g.MMSP_AVAILABLE:
        kc = g.kernel_consts(xl, True)
        assert kc["XD"] == 3 and kc["MO"] == 3 and "XLC" in kc and "XLR" in kc
        assert g.kernel_consts(xl[:12] + (1,), True)["XD"] == 0
        # MO = 5: the order-2 copy with x from global memory (no ring), also with PF = 0 or XS
        for o2 in (xl[:12] + (5,), xl[:3] + (0,) + xl[4:12] + (5,), xl[:4] + (1,) + xl[5:12] + (5,)):
            kc = g.kernel_consts(o2, True)
            assert kc["XD"] == 0 and kc["MO"] == 5 and "XLC" not in kc and g.mo_order(o2) == 2
        for bad in (xl[:3] + (0,) + xl[4:], xl[:4] + (1,) + xl[5:], xl[:12] + (6,), (8,) + xl[1:],
                    xl[:6] + (2,) + xl[7:], xl[:6] + (2,) + xl[7:12] + (5,)):
            with pytest.raises(ValueError, match="MMA-order|MO = 2-4"):
                g.kernel_consts(bad, False)

    class Bench(dispatch.ShapeBench):
        def __init__(self):  # no GPU: only run's choice of copy is under test
            self.n = 8

    seen = []

    def fake_run_choice(c, x, **kw):
        seen.append(kw["mo"])

    s = {"values": 0, "meta": 0, "dense": 0, "bias": None, "mo": "copy1", "mo2": "copy2"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dispatch, "run_choice", fake_run_choice)
        for cfg in (xl, xl[:12] + (1,), xl[:12]):
            Bench().run(dispatch.Choice("mmsp", cfg), None, s)
    assert seen == ["copy2", "copy1", "copy1"]


def test_a_layer_holds_one_mma_order_copy_of_the_order_most_choices_read():
    """SparseLinear with MO choices of both copy orders (MO = 1 and MO >= 2): it builds the copy most of its choices
    read; a choice whose order it lacks plans as its row-major twin, and _mo hands a copy only to a choice of
    the copy's order."""
    from llmsparse.kernels import gluon_mmsp

    o1 = gluon_mmsp.MMSP_MO_CONFIGS[16][0]
    o2 = (4, 1, 2, 1, 0, 0, 0, 4, 1, 0, 0, 0, 3)
    lin = SparseLinear.from_dense(_w24(32, 128).half())
    lin._table = {4: dispatch.Choice("mmsp", o2), 8: dispatch.Choice("mmsp", o2), 16: dispatch.Choice("mmsp", o1)}
    lin._materialize()
    assert lin._mo_order == 2 and torch.equal(lin._mo_values, gluon_mmsp.mma_order(lin.values, lin.meta, 2)[0])
    assert lin._plan(16) == dispatch.Choice("mmsp", o1[:12]) and lin._plan(8) == dispatch.Choice("mmsp", o2)
    assert lin._mo(dispatch.Choice("mmsp", o2))[0] is lin._mo_values and lin._mo(dispatch.Choice("mmsp", o1)) is None
    lin._table = {16: dispatch.Choice("mmsp", o1)}
    lin._materialize()
    assert lin._mo_order == 1 and torch.equal(lin._mo_values, gluon_mmsp.mma_order(lin.values, lin.meta)[0])
    assert lin._plan(16) == dispatch.Choice("mmsp", o1)
    lin._table = {16: dispatch.Choice("mmsp", o1[:12])}
    lin._materialize()
    assert lin._mo_values is None and lin._mo_order == 0


def test_mma_order_choices_are_opt_in_and_run_on_the_copy(monkeypatch):
    """gluon_mmsp.MO_TUNING (opt-in): the MO configurations join the M = 2-16 candidates (NT = 1 ones up to M = 8)
    only when it is on, never at M = 1 (gemvg's, within 3% of MO there);
    run_choice hands an MO configuration the MMA-order copy (a one-line ValueError without it); a layer
    whose table holds an MO choice builds the copy (_materialize) and passes it, and one without the copy
    (not built, or on another device) runs the same configuration on the row-major weights instead."""
    from llmsparse.kernels import gluon_mmsp

    mo_cfg = gluon_mmsp.MMSP_MO_CONFIGS[16][0]
    monkeypatch.setattr(gluon_mmsp, "MO_TUNING", 0)
    assert not any(gluon_mmsp.is_mo(c) for m in (1, 2, 8, 16) for c in gluon_mmsp.mmsp_configs_for(m))
    monkeypatch.setattr(gluon_mmsp, "MO_TUNING", 1)
    for m, key in ((2, 8), (5, 8), (8, 8), (9, 16), (16, 16)):
        assert [c for c in gluon_mmsp.mmsp_configs_for(m) if gluon_mmsp.is_mo(c)] == gluon_mmsp.MMSP_MO_CONFIGS[key]
    assert not any(gluon_mmsp.is_mo(c) for c in gluon_mmsp.mmsp_configs_for(1))
    for key, cfgs in gluon_mmsp.MMSP_MO_CONFIGS.items():  # valid configurations (kernel_consts checks them)
        assert cfgs and all((c[2] == 1) == (key == 8) for c in cfgs)  # one token tile up to M = 8, two above
        if gluon_mmsp.MMSP_AVAILABLE:
            assert all(gluon_mmsp.kernel_consts(c, False)["MO"] >= 1 for c in cfgs)

    seen = {}

    def fake_kernel(x, values, meta, bias, out_features, cfg):
        seen.update(values=values, meta=meta, cfg=cfg)
        return x.new_zeros(x.shape[0], out_features)

    monkeypatch.setattr(gluon_mmsp, "sp24_mmsp_gl", fake_kernel)
    w = _w24(32, 128).half()
    lin = SparseLinear.from_dense(w)
    x = torch.randn(16, 128).half()
    c = dispatch.Choice("mmsp", mo_cfg)
    with pytest.raises(ValueError, match="MMA-order copy"):
        dispatch.run_choice(c, x, values=lin.values, meta=lin.meta, out_features=32)
    lin._table = {16: c}
    assert lin._plan(16) == dispatch.Choice("mmsp", mo_cfg[:12])  # no copy yet: the row-major twin
    lin._materialize()
    vmo, mmo = lin._mo_values, lin._mo_meta
    assert vmo is not None and mmo is not None and torch.equal(vmo, gluon_mmsp.mma_order(lin.values, lin.meta)[0])
    assert lin._plan(16) == c and lin._mo(c)[0] is vmo and lin._mo(dispatch.Choice("mmsp", mo_cfg[:12])) is None
    dispatch.run_choice(c, x, values=lin.values, meta=lin.meta, out_features=32, mo=lin._mo(c))
    assert seen["values"] is vmo and seen["meta"] is mmo and seen["cfg"] == mo_cfg
    lin._table = {16: dispatch.Choice("mmsp", mo_cfg[:12])}
    lin._materialize()  # no MO choice left: the copy is dropped
    assert lin._mo_values is None and lin._mo_meta is None


def test_loading_new_weights_drops_the_derived_forms_of_the_old_ones():
    """SparseLinear.load_state_dict: the CPU fallback's cached dense weight (like the GPU's dense, cuSPARSELt and
    MO forms) was built from the old weights; after a load the layer computes with the new ones."""
    w1, w2, b = _w24(32, 64), _w24(32, 64, seed=3), torch.randn(32)
    lin = SparseLinear.from_dense(w1, b)
    x = torch.randn(4, 64)
    assert torch.equal(lin(x), F.linear(x, w1, b)) and lin._dense is not None
    lin.load_state_dict(SparseLinear.from_dense(w2, b).state_dict())
    assert torch.equal(lin(x), F.linear(x, w2, b))


def test_a_layer_with_mo_storage_holds_only_the_mma_order_copy(monkeypatch):
    """SparseLinear.mo_storage (LLMSPARSE_MMSP_MO=compact): its table is the shape's MO table (dispatch.mo_key,
    whose candidates are the MO configurations of that order, at M = 1 too, and cuSPARSELt); where every choice runs
    on the copy, cuSPARSELt's form or the kept dense weight, it holds the copy instead of values/meta, yet its
    state_dict, dense_weight, CPU forward, loads and dtype moves give the row-major weights bit for bit; one
    choice the copy cannot run (or dense without keep_dense) and it holds the packed buffers again."""
    from llmsparse.kernels import gluon_mmsp, linear

    monkeypatch.setattr(dispatch, "device_name", lambda device=None: "test-gpu")
    o8, o16 = gluon_mmsp.MMSP_MO_CONFIGS[8][0], gluon_mmsp.MMSP_MO_CONFIGS[16][0]
    w, b = _w24(48, 256).half(), torch.randn(48).half()
    lin = SparseLinear.from_dense(w, b)
    v0, m0 = lin.values.clone(), lin.meta.clone()
    full = linear.memory_bytes(lin)
    assert lin._key() == dispatch.make_key(48, 256, torch.float16, True, lin.values.device)
    lin.mo_storage = 1
    assert lin._key() == dispatch.mo_key(dispatch.make_key(48, 256, torch.float16, True, lin.values.device), 1)
    lin._table = {1: dispatch.Choice("mmsp", o8), 16: dispatch.Choice("mmsp", o16), 4096: dispatch.Choice("dense")}
    lin._materialize()
    assert lin._stored_order == 1 and lin.values.numel() == 0 and lin.meta.numel() == 0
    assert torch.equal(lin._mo_values, gluon_mmsp.mma_order(v0, m0, 1)[0]) and lin._dense is not None
    assert "MMA-order copy 1" in repr(lin)
    # the copy replaces the packed pair: the layer holds no more than before besides the kept dense weight
    assert linear.memory_bytes(lin) - lin._dense.numel() * 2 <= full + 16 * 4 * 2
    sd = lin.state_dict()
    assert torch.equal(sd["values"].view(torch.int16), v0.view(torch.int16)) and torch.equal(sd["meta"], m0)
    assert torch.equal(lin.dense_weight(), w)
    x = torch.randn(3, 256).half()
    assert torch.equal(lin(x), F.linear(x, w, b))
    assert lin._plan(1) == dispatch.Choice("mmsp", o8) and lin._mo(dispatch.Choice("mmsp", o16))[0] is lin._mo_values
    other = SparseLinear.from_dense(w, b)
    other.load_state_dict(sd)
    assert torch.equal(other.values.view(torch.int16), v0.view(torch.int16)) and torch.equal(other.meta, m0)
    lin.to("cpu")  # same device and dtype: still only the copy
    assert lin._stored_order == 1 and lin.values.numel() == 0 and lin._table is not None
    # new weights loaded into it: packed buffers again, no stale derived form
    w2 = _w24(48, 256, seed=5).half()
    lin.load_state_dict(SparseLinear.from_dense(w2, b).state_dict())
    assert lin._stored_order == 1 and torch.equal(lin.dense_weight(), w2) and torch.equal(lin._dense, w2)
    lin.float()  # another dtype: the packed buffers follow it, the choices (of the fp16 table) are dropped
    assert lin._stored_order == 0 and lin.values.dtype == torch.float32 and lin._table is None
    assert torch.equal(lin.dense_weight(), w2.float())
    lin = SparseLinear.from_dense(w, b)
    lin.mo_storage = 1
    for table, keep in (({1: dispatch.Choice("gemvg", (1, 4, 8, 1, 4)), 16: dispatch.Choice("mmsp", o16)}, "auto"),
                        ({16: dispatch.Choice("mmsp", o16), 4096: dispatch.Choice("dense")}, False)):
        lin._table, lin.keep_dense = table, keep
        lin._materialize()
        assert lin._stored_order == 0 and torch.equal(lin.values.view(torch.int16), v0.view(torch.int16))
        assert torch.equal(lin.meta, m0) and lin._mo_order == 1  # the copy for the MO choice, beside the buffers
    lin.float()  # a cast: the int32 copy would not follow it; it goes with the fp16 choices
    assert lin._mo_values is None and lin._mo_order == 0 and lin._table is None
    assert torch.equal(lin.dense_weight(), w.float())
    with pytest.raises(ValueError, match="mo_storage"):
        lin.mo_storage = 3
        lin._key()
    if gluon_mmsp.MMSP_AVAILABLE:  # the MO table's candidates: the copy's configurations (at M = 1 too), cuSPARSELt
        for m, key in ((1, 8), (8, 8), (16, 16)):
            for order in (1, 2):  # each order's table holds that order's configurations only
                got = dispatch.candidates(m, paths=dispatch.DEFAULT_PATHS, cslt_algs=(0,), in_features=256,
                                          mo_only=order)
                want = [c for c in gluon_mmsp.MMSP_MO_CONFIGS[key] if gluon_mmsp.mo_order(c) == order]
                assert want and [c.cfg for c in got if c.path == "mmsp"] == want
                assert {c.path for c in got} == ({"mmsp", "cslt"} if m >= 16 else {"mmsp"})


def test_e2e_memory_counts_every_form_a_swapped_layer_holds():
    """``llmsparse bench MODEL`` reports the bytes of the swapped layers: the packed weights, metadata and bias,
    plus every derived form they hold (here an MMA-order copy and a kept dense weight), against the dense
    layers' bytes (weight and bias)."""
    from llmsparse.kernels.benchmark import _sparse_bytes

    torch.manual_seed(0)
    lin = nn.Linear(256, 64, bias=True).half()
    with torch.no_grad():
        lin.weight.mul_(nm_mask(lin.weight.float(), 2, 4).to(lin.weight.dtype))
    model = nn.Sequential(lin, nn.ReLU())
    assert sparsify(model)["swapped"] == ["0"]
    sp = model[0]
    packed = 64 * 128 * 2 + 64 * 256 // 8 + 64 * 2  # values (fp16), meta (2 bits per input), bias
    assert _sparse_bytes(model) == (packed, 64 * 257 * 2)
    sp._mo_values = torch.zeros(4, 512, dtype=torch.int32)
    sp._mo_meta = torch.zeros(4, 64, dtype=torch.int32)
    sp._get_dense()
    assert _sparse_bytes(model) == (packed + 4 * 512 * 4 + 4 * 64 * 4 + 64 * 256 * 2, 64 * 257 * 2)


def test_a_layer_prepared_for_compile_keeps_dense_only_where_compiled_choices_use_it(monkeypatch):
    """keep_dense="auto" with a view table (for_compile): the dense weight is built only where the view table (what
    compiled calls run) picks dense; an eager call where the eager table picked dense then takes a packed-form
    path (here cuSPARSELt's, built for the view choice). Without a view table, an eager dense choice keeps it."""
    from llmsparse.kernels import cslt

    monkeypatch.setattr(cslt, "compress", lambda w: w.clone())  # CPU stand-in for cuSPARSELt's form
    w = _w24(24, 64)
    lin = SparseLinear.from_dense(w)
    lin.for_compile = True
    lin._table = {1: dispatch.Choice("gemvg", (1, 4, 8, 1, 4)), 4096: dispatch.Choice("dense")}
    lin._table_view = {1: dispatch.Choice("gemvg", (1, 4, 8, 1, 4)), 4096: dispatch.Choice("cslt", (0, 2))}
    lin._materialize()
    assert lin._dense is None and lin._cslt is not None
    assert lin._plan(4096, view=True) == dispatch.Choice("cslt", (0, 2))
    assert lin._plan(4096).path == "cslt"  # eager: dense chosen, its weight not kept -> packed-form path
    lin._table_view = {1: dispatch.Choice("gemvg", (1, 4, 8, 1, 4)), 4096: dispatch.Choice("dense")}
    lin._materialize()  # the compiled choice is dense: kept, cuSPARSELt's form dropped
    assert lin._dense is not None and lin._cslt is None and lin._plan(4096, view=True).path == "dense"
    lin._table_view = None
    lin._table = {4096: dispatch.Choice("dense")}
    lin._materialize()
    assert lin._dense is not None and lin._plan(4096).path == "dense"


def test_a_layer_holding_only_the_copy_prepared_for_compile_drops_the_dense_weight(monkeypatch):
    """MO storage with a view table (for_compile): where only the eager table picks dense (fp16 M = 4096: eager
    cuSPARSELt loses, its transposed view wins), the layer no longer keeps the whole dense weight beside the copy and
    cuSPARSELt's form (a Llama-2-7B-shaped fp16 model held 27.5 GB of decoder linears instead of 14.6 GB, H100,
    eighteenth session): an eager call there falls back on cuSPARSELt's form, and at M <= 16 on an MO configuration
    of the copy's order -- never on a path that reads the (empty) packed pair. Without cuSPARSELt's form the eager
    table's dense choices still keep the dense weight."""
    from llmsparse.kernels import cslt, gluon_mmsp, linear

    monkeypatch.setattr(cslt, "compress", lambda w: w.clone())  # CPU stand-in for cuSPARSELt's form
    w = _w24(48, 256).half()
    for order in (1, 2):
        lin = SparseLinear.from_dense(w)
        lin.mo_storage, lin.for_compile = order, True
        mo1 = dispatch.Choice("mmsp", next(c for c in gluon_mmsp.MMSP_MO_CONFIGS[8] if gluon_mmsp.mo_order(c) == order))
        lin._table = {1: mo1, 4096: dispatch.Choice("dense")}
        lin._table_view = {1: mo1, 4096: dispatch.Choice("cslt", (0, 2))}
        lin._materialize()
        assert lin._stored_order == order and lin.values.numel() == 0 and lin._cslt is not None
        assert lin._dense is None
        assert lin._plan(4096, view=True) == dispatch.Choice("cslt", (0, 2)) and lin._plan(4096).path == "cslt"
        assert lin._plan(300).path == "cslt" and lin._plan(1) == mo1
        lin._table = {1: dispatch.Choice("dense"), 16: dispatch.Choice("dense")}
        for m in (1, 3, 8, 13, 16):  # an eager call the table sends to dense: the copy's kernels, not the pair's
            c = lin._plan(m)
            assert c.path == "mmsp" and gluon_mmsp.mo_order(c.cfg) == order and lin._mo(c) is not None, (m, c)
            assert c.cfg in gluon_mmsp.MMSP_MO_CONFIGS[8 if m <= 8 else 16]
        assert linear._best_sparse_fallback(64, False, order).path == "mmsp"
        assert linear._best_sparse_fallback(64, True, 0).path == "mm"  # a layer with its packed pair: as before
        # M = 17-64: the wide MO configurations where they are candidates (MO_WIDE), cuSPARSELt's form otherwise
        for wide in (1, 0):
            monkeypatch.setattr(gluon_mmsp, "MO_WIDE", wide)
            for m, bucket in ((17, 32), (40, 64), (64, 64)):
                c = linear._best_sparse_fallback(m, True, order)
                assert (c.path == "mmsp" and c.cfg in gluon_mmsp.MMSP_MO_WIDE_CONFIGS[bucket]
                        and gluon_mmsp.mo_order(c.cfg) == order) if wide else c.path == "cslt", (wide, m, c)
            assert linear._best_sparse_fallback(65, True, order).path == "cslt"
            lin3 = SparseLinear.from_dense(w)
            lin3.mo_storage, lin3.keep_dense = order, False
            lin3._table = {16: mo1, 64: dispatch.Choice("dense")}  # no cuSPARSELt form: compact only with MO_WIDE
            lin3._materialize()
            assert (lin3._stored_order == order) == bool(wide) and lin3._dense is None
            if wide:
                assert lin3._plan(64).path == "mmsp" and lin3._held(lin3._plan(64)) == lin3._plan(64)
        monkeypatch.setattr(gluon_mmsp, "MO_WIDE", 1)
        lin._table = {1: mo1, 16: dispatch.Choice("dense")}
        lin._table_view = {1: mo1, 16: mo1}  # no cuSPARSELt form to fall back on above M = 16: dense kept
        lin._materialize()
        assert lin._stored_order == order and lin._cslt is None and lin._dense is not None
        assert torch.equal(lin._dense, w)
        # keep_dense=False: dense choices run the fallback, so the layer still holds only the copy (and cuSPARSELt's
        # form) where the fallback needs nothing else -- up to M = 16, or above with cuSPARSELt's form
        lin2 = SparseLinear.from_dense(w)
        lin2.mo_storage, lin2.keep_dense = order, False
        for table, compact in (({1: dispatch.Choice("dense"), 16: mo1}, True),
                               ({16: mo1, 256: dispatch.Choice("dense"), 4096: dispatch.Choice("cslt", (0, 1))}, True),
                               ({16: mo1, 256: dispatch.Choice("dense")}, False)):
            lin2._table = table
            lin2._materialize()
            assert (lin2._stored_order == order) == compact and lin2._dense is None, table
            assert lin2.values.numel() == (0 if compact else lin2.out_features * lin2.in_features // 2)
            if compact:
                assert all(lin2._plan(m).path in ("mmsp", "cslt") and lin2._held(lin2._plan(m)) == lin2._plan(m)
                           for m in (1, 16, 200, 4096))
                assert lin2._plan(200).path == ("cslt" if 4096 in table else "mmsp")
        # the fallback as _compiled_forward reads it (dense chosen, dense weight not to be used): Dynamo traces it
        lin.keep_dense, lin._table_view = False, {1: mo1, 16: dispatch.Choice("dense")}

        def mo_of_plan(x):
            c = lin._plan(x.shape[0], view=True)
            return x * (c.cfg[12] if c.path == "mmsp" else -1)

        fn = torch.compile(mo_of_plan, backend="eager", fullgraph=True, dynamic=True)
        for m in (9, 13, 40):
            got = fn(torch.ones(m, 2))[0, 0].item()
            c = lin._plan(m, view=True)
            assert c.cfg in (gluon_mmsp.MMSP_MO_CONFIGS[16] if m <= 16 else gluon_mmsp.MMSP_MO_WIDE_CONFIGS[64])
            assert got == c.cfg[12]
            assert gluon_mmsp.mo_order(c.cfg) == order


def test_default_mo_storage_applies_only_on_hopper_with_the_mmsp_kernels(monkeypatch):
    """The process-wide MO storage (on by default) reaches a layer only on a CUDA device of compute capability 9.x
    with Gluon's mmsp kernels and "mmsp" among its paths (elsewhere the copy could run only cuSPARSELt, and would
    replace the gemv kernels that win at M = 1); a layer's own mo_storage is taken as given; widths that are not a
    multiple of 128 never hold the copy."""
    from llmsparse.kernels import gluon_mmsp

    monkeypatch.setattr(gluon_mmsp, "MO_STORAGE", 2)
    monkeypatch.setattr(gluon_mmsp, "MMSP_AVAILABLE", True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cap = [(9, 0)]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap[0])
    paths = dispatch.DEFAULT_PATHS
    assert gluon_mmsp.mo_storage_applies("cuda", paths) and gluon_mmsp.storage_order(4096, device="cuda") == 2
    assert gluon_mmsp.storage_order(4096 + 32, device="cuda") == 0
    assert not gluon_mmsp.mo_storage_applies("cpu", paths) and gluon_mmsp.storage_order(4096, device="cpu") == 0
    assert gluon_mmsp.storage_order(4096, device="cuda", paths=("gemvg", "cslt")) == 0
    assert gluon_mmsp.storage_order(4096) == 2  # no device: the setting as it is (the offline tools)
    assert gluon_mmsp.storage_order(4096, 1, device="cpu") == 1  # an explicit order: as given
    cap[0] = (8, 0)
    assert not gluon_mmsp.mo_storage_applies("cuda", paths) and gluon_mmsp.storage_order(4096, device="cuda") == 0
    cap[0] = (10, 0)
    assert gluon_mmsp.storage_order(4096, device="cuda") == 0
    cap[0] = (9, 0)
    monkeypatch.setattr(gluon_mmsp, "MMSP_AVAILABLE", False)
    assert gluon_mmsp.storage_order(4096, device="cuda") == 0
    monkeypatch.setattr(gluon_mmsp, "MMSP_AVAILABLE", True)
    monkeypatch.setattr(dispatch, "device_name", lambda device=None: "test-gpu")
    lin = SparseLinear.from_dense(_w24(16, 256).half())  # on the CPU: the default does not apply ...
    assert lin._storage_order() == 0 and lin._key() == dispatch.make_key(16, 256, torch.float16, False, lin.values.device)
    lin.mo_storage = 1  # ... a layer's own setting does
    assert lin._storage_order() == 1
    lin.mo_storage, lin.values = None, lin.values.to("meta")  # a CUDA-like device type is what the default checks
    monkeypatch.setattr(gluon_mmsp, "mo_storage_applies", lambda device, paths: "mmsp" in paths)
    assert lin._storage_order() == 2
    lin.allowed_paths = ("gemvg", "cslt")
    assert lin._storage_order() == 0


def test_wide_mo_configurations_are_candidates_only_with_mo_wide(monkeypatch):
    """gluon_mmsp.mo_configs_for: MMSP_MO_CONFIGS up to M = 16; M = 17-32 and 33-64 get MMSP_MO_WIDE_CONFIGS only
    with MO_WIDE (on by default since the nineteenth session; LLMSPARSE_MMSP_WIDE=0 turns it off), nothing above 64; a layer holding the
    copy of one order is tuned over that order's wide configurations there (and cuSPARSELt); --mmsp-extra places an
    NT = 4 / 8 MO configuration in the 32 / 64 bucket and refuses a row-major one that wide."""
    from llmsparse.kernels import gluon_mmsp as g

    monkeypatch.setattr(g, "MO_WIDE", 0)
    assert g.mo_configs_for(1) == g.MMSP_MO_CONFIGS[8] and g.mo_configs_for(16) == g.MMSP_MO_CONFIGS[16]
    assert g.mo_configs_for(17) == [] and g.mo_configs_for(64) == []
    monkeypatch.setattr(g, "MO_WIDE", 1)
    assert g.mo_configs_for(16) == g.MMSP_MO_CONFIGS[16]
    for m, key in ((17, 32), (32, 32), (33, 64), (64, 64)):
        assert g.mo_configs_for(m) == g.MMSP_MO_WIDE_CONFIGS[key]
    assert g.mo_configs_for(65) == [] and g.mo_configs_for(4096) == []
    if g.MMSP_AVAILABLE:
        for order in (1, 2):
            got = dispatch.candidates(32, paths=dispatch.DEFAULT_PATHS, cslt_algs=(0,), in_features=256,
                                      mo_only=order)
            want = [c for c in g.MMSP_MO_WIDE_CONFIGS[32] if g.mo_order(c) == order]
            assert want and [c.cfg for c in got if c.path == "mmsp"] == want
            assert {c.path for c in got} == {"mmsp", "cslt"}
        assert not [c for c in dispatch.candidates(32, in_features=256) if c.path == "mmsp"]  # row-major: <= 16
        assert not [c for c in dispatch.candidates(96, in_features=256, mo_only=2) if c.path == "mmsp"]
    monkeypatch.setattr(g, "MMSP_MO_WIDE_CONFIGS", {32: [], 64: []})
    g.add_candidates([(4, 1, 4, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4), (4, 1, 8, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4)])
    assert g.MMSP_MO_WIDE_CONFIGS == {32: [(4, 1, 4, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4)],
                                      64: [(4, 1, 8, 3, 0, 0, 0, 4, 1, 0, 0, 0, 4)]}
    with pytest.raises(ValueError, match="NT 1 or 2"):
        g.add_candidates([(4, 1, 4, 1, 1)])


def _import_runs(var: str, values, code: str) -> dict:
    """``python -c code`` in a fresh process per value of ``values``: the environment variable ``var`` unset (None)
    or set to the value. {value: CompletedProcess} (stdout, stderr as text; a failing run raises)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != var}
    return {val: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                env=env if val is None else {**env, var: val}) for val in values}


def test_mo_env_selects_tuning_or_storage_and_its_order():
    """LLMSPARSE_MMSP_MO at import: unset or compact: MO storage of MO_STORAGE_ORDER (2, the default since the
    eighteenth session); compact1 / compact2: that order; 0 or off: neither; 1: MO tuning (a second copy) without
    storage; anything else: a warning naming the accepted values, and the default."""
    code = ("import warnings; warnings.simplefilter('always'); from llmsparse.kernels import gluon_mmsp as g; "
            "print(g.MO_TUNING, g.MO_STORAGE, g.MO_STORAGE_ORDER)")
    runs = _import_runs("LLMSPARSE_MMSP_MO", (None, "0", "off", "1", "compact", "compact1", "compact2",
                                              " Compact2 ", "bogus"), code)
    got = {val: tuple(map(int, r.stdout.split())) for val, r in runs.items()}
    errs = {val: r.stderr for val, r in runs.items()}
    assert got == {None: (0, 2, 2), "0": (0, 0, 2), "off": (0, 0, 2), "1": (1, 0, 2), "compact": (0, 2, 2),
                   "compact1": (0, 1, 2), "compact2": (0, 2, 2), " Compact2 ": (0, 2, 2), "bogus": (0, 2, 2)}
    assert "LLMSPARSE_MMSP_MO='bogus'" in errs["bogus"] and "compact1" in errs["bogus"]
    assert not any("LLMSPARSE_MMSP_MO" in e for v, e in errs.items() if v != "bogus")


def test_wide_env_turns_the_wide_mo_candidates_off_only_when_asked():
    """LLMSPARSE_MMSP_WIDE at import: unset (the default since the nineteenth session), empty or 1: MO_WIDE on; 0
    or off (any case, spaces trimmed): off (another value warns and gives on). mo_configs_for(32) follows it."""
    code = ("from llmsparse.kernels import gluon_mmsp as g; "
            "print(g.MO_WIDE, int(g.mo_configs_for(32) == g.MMSP_MO_WIDE_CONFIGS[32] != []))")
    runs = _import_runs("LLMSPARSE_MMSP_WIDE", (None, "1", "0", "off", " OFF ", ""), code)
    got = {val: tuple(map(int, r.stdout.split())) for val, r in runs.items()}
    assert got == {None: (1, 1), "1": (1, 1), "0": (0, 0), "off": (0, 0), " OFF ": (0, 0), "": (1, 1)}


def test_an_mo_choice_carries_a_measured_stand_in_for_layers_without_its_copy(monkeypatch):
    """With MO tuning, a bucket won by an MO configuration also records the fastest measured candidate that reads
    the row-major pair (Choice.alt; "dense" when none beat dense by min_speedup), saved and loaded with the cache.
    A layer holds one copy; where its table picks an MO configuration of the other order it runs that stand-in
    (before: the configuration's row-major twin, never measured), and keeps the dense weight if the stand-in is
    dense."""
    pytest.importorskip("triton")
    from llmsparse.kernels import gluon_mmsp, timing

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("this Triton has no Gluon linear layouts")
    monkeypatch.setattr(gluon_mmsp, "MO_TUNING", 1)
    o1 = next(c for c in gluon_mmsp.MMSP_MO_CONFIGS[16] if gluon_mmsp.mo_order(c) == 1)
    o2 = next(c for c in gluon_mmsp.MMSP_MO_CONFIGS[16] if gluon_mmsp.mo_order(c) == 2)
    rm = gluon_mmsp.MMSP_CONFIGS[16][1]
    name = lambda c: dispatch.choice_name(dispatch.Choice("mmsp", c))  # noqa: E731

    def tune_with(times):
        monkeypatch.setattr(timing, "time_call", lambda fn, args_list, **_: times.get(args_list[0][0], 9.0))
        monkeypatch.setattr(timing, "host_ms", lambda fn, args_list, **_: 0.05)
        monkeypatch.setattr(dispatch, "device_name", lambda device=None: "fake-gpu")
        dispatch.clear()
        return dispatch.tune(64, 128, torch.float16, False, (16,), device="cpu", bench=_FakeBench(),
                             paths=("mmsp",), force=True)[16]

    c = tune_with({"dense:": 1.0, name(o2): 0.5, name(rm): 0.7})
    assert c.cfg == o2 and c.alt == dispatch.Choice("mmsp", rm)
    c = tune_with({"dense:": 1.0, name(o2): 0.5, name(rm): 0.99})  # no row-major win over dense
    assert c.cfg == o2 and c.alt == dispatch.Choice("dense")
    c = tune_with({"dense:": 1.0, name(rm): 0.5, name(o2): 0.7})  # not an MO choice: no stand-in
    assert c.cfg == rm and c.alt is None
    # the cache keeps the stand-in
    c = tune_with({"dense:": 1.0, name(o2): 0.5, name(rm): 0.7})
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "choices.json")
        dispatch.save_cache(path)
        dispatch.clear()
        assert dispatch.load_cache(path) == 1
    key = dispatch.make_key(64, 128, torch.float16, False, "cpu")
    assert dispatch.table_for(key)[16].alt == dispatch.Choice("mmsp", rm)

    # a layer whose table picks order 1 at M = 2 and 8, order 2 at M = 16 (row-major stand-in) and M = 4 (dense)
    w = _w24(32, 128).half()
    lin = SparseLinear.from_dense(w)
    o1_8 = next(c for c in gluon_mmsp.MMSP_MO_CONFIGS[8] if gluon_mmsp.mo_order(c) == 1)
    o2_8 = next(c for c in gluon_mmsp.MMSP_MO_CONFIGS[8] if gluon_mmsp.mo_order(c) == 2)
    lin._table = {2: dispatch.Choice("mmsp", o1_8), 8: dispatch.Choice("mmsp", o1),
                  16: dispatch.Choice("mmsp", o2, alt_path="mmsp", alt_cfg=rm),
                  4: dispatch.Choice("mmsp", o2_8, alt_path="dense")}
    lin._materialize()
    assert lin._mo_order == 1  # two choices read order 1, two order 2: the tie goes to order 1
    assert lin._plan(2) == dispatch.Choice("mmsp", o1_8) and lin._plan(16) == dispatch.Choice("mmsp", rm)
    assert lin._plan(4) == dispatch.Choice("dense") and lin._dense is not None  # kept for the stand-in
    lin._table[16] = dispatch.Choice("mmsp", o2)  # no stand-in recorded (an older cache): the row-major twin
    assert lin._plan(16) == dispatch.Choice("mmsp", o2[:12])


@pytest.mark.parametrize("batch", [1, 3])
def test_e2e_decode_loop_generates_what_hf_generate_does(batch):
    """benchmark.decode (the e2e decode loop: static KV cache, one forward per step over the batch, position ids
    expanded over the batch) on the CPU, through a sparsified tiny Llama: its tokens are HF ``generate``'s greedy
    continuation of the same prompts (after the first token, which the prompt pass picks), row by row, and its
    rate counts batch x gen tokens. Bad sizes are refused."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmsparse.kernels import benchmark

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=97, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Linear) and "lm_head" not in name:
                mod.weight.mul_(nm_mask(mod.weight.abs(), 2, 4))
    assert sparsify(model)["swapped"]  # the CPU fallback: dense-with-zeros
    rate, toks, graphs = benchmark.decode(model, prompt_len=5, gen=6, graphs=True, runs=2, vocab=97, seed=3,
                                          batch=batch)
    assert toks.shape == (batch, 6) and not graphs and rate > 0
    prompt = torch.randint(1, 97, (batch, 5), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=7, do_sample=False,
                             pad_token_id=0)
    assert torch.equal(toks, ref[:, 6:])
    with pytest.raises(ValueError, match="batch"):
        benchmark.decode(model, prompt_len=5, gen=6, batch=0)


def test_env_choice_reads_known_values_and_warns_on_others(monkeypatch):
    """envknob.env_choice (the import-time developer knobs): unset or empty gives the default's mode; a known value
    (stripped, any case) its own; an unknown one warns, naming the variable, the value and the accepted values,
    and gives the default's mode."""
    import warnings

    from llmsparse.kernels.envknob import env_choice

    modes = {"0": 0, "1": 1, "off": 0, "2": 2}
    monkeypatch.delenv("LLMSPARSE_TEST_KNOB", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert env_choice("LLMSPARSE_TEST_KNOB", modes, "1") == 1
        for raw, want in (("0", 0), (" OFF ", 0), ("2", 2), ("", 1), ("  ", 1)):
            monkeypatch.setenv("LLMSPARSE_TEST_KNOB", raw)
            assert env_choice("LLMSPARSE_TEST_KNOB", modes, "1") == want
    monkeypatch.setenv("LLMSPARSE_TEST_KNOB", "7")
    with pytest.warns(UserWarning, match=r"LLMSPARSE_TEST_KNOB='7' is not one of 0, 1, off, 2: using 1"):
        assert env_choice("LLMSPARSE_TEST_KNOB", modes, "1") == 1


def test_evict_knob_warns_on_an_unknown_value():
    """LLMSPARSE_MMSP_EVICT=0..3 sets gluon_mmsp.EVICT; another value was taken silently for 1 before the twenty-
    fifth session, now it warns (and still gives 1, the default)."""
    code = ("import warnings; warnings.simplefilter('always'); from llmsparse.kernels import gluon_mmsp as g; "
            "print(g.EVICT)")
    runs = _import_runs("LLMSPARSE_MMSP_EVICT", (None, "0", "3", "9"), code)
    out = {val: (int(r.stdout), "LLMSPARSE_MMSP_EVICT" in r.stderr) for val, r in runs.items()}
    assert out == {None: (1, False), "0": (0, False), "3": (3, False), "9": (1, True)}
