"""Benchmarks behind ``llmsparse bench`` and ``bench/bench_*.py``: per-shape GEMM timings and
end-to-end prefill/decode of a model, dense vs 2:4, with the same treatment (CUDA graphs) on both
sides. Needs a CUDA GPU.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import statistics
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import dispatch
from .timing import error_line, interleaved_ms, time_call, warm_up

SHAPE_SETS = {
    "llama2-7b": [(4096, 4096), (11008, 4096), (4096, 11008)],
    "llama2-70b": [(8192, 8192), (28672, 8192), (8192, 28672)],
}
DEFAULT_MS = (1, 16, 128, 1024, 4096, 16384)
DTYPES = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}

LLAMA_SHAPES = {
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000),
    "llama2-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                       num_key_value_heads=8, vocab_size=32000),
}


def parse_shapes(spec: str) -> list[tuple[int, int]]:
    """``"llama2-7b,8192x8192"`` -> [(out, in), ...] (``OUTxIN`` of nn.Linear weights)."""
    out: list[tuple[int, int]] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if part in SHAPE_SETS:
            out += SHAPE_SETS[part]
            continue
        try:
            a, b = part.lower().split("x")
            out.append((int(a), int(b)))
        except ValueError:
            raise ValueError(f"bad shape {part!r}: use OUTxIN (e.g. 11008x4096) or one of {sorted(SHAPE_SETS)}")
    return out


def env_info() -> dict:
    from . import capability

    info = capability()
    info["time"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    # the settings that change timings or choices (the kernel cache's signature: kernel sources, PDL mode, mmsp's
    # switches, MO candidates; set by environment variables at import), so a results file says how it was produced;
    # the versions are in info already
    sig = dispatch.cache_signature()
    info["kernel_settings"] = {k: v for k, v in sig.items() if k not in ("torch", "triton")}
    from . import gluon_mmsp

    info["kernel_settings"]["mo_storage"] = int(gluon_mmsp.MO_STORAGE)  # layers holding only the MO copy
    if torch.cuda.is_available():
        info["torch_cuda"] = torch.version.cuda
        info["sms"] = torch.cuda.get_device_properties(0).multi_processor_count
    return info


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _poisoned_run(fn: Callable[[], torch.Tensor], numel: int, dtype) -> torch.Tensor:
    """Fill the allocator's next block of this size with NaN, then run: unwritten outputs show up."""
    p = torch.full((numel,), float("nan"), device="cuda", dtype=dtype)
    del p
    y = fn()
    torch.cuda.synchronize()
    return y


def gemm_bench(shapes, ms=DEFAULT_MS, dtypes=(torch.float16, torch.bfloat16), *, stock: bool = True,
               min_speedup: float = dispatch.DEFAULT_MIN_SPEEDUP, log: Callable[[str], None] | None = None,
               paths=None) -> list[dict]:
    """For every dtype, shape and M: dense cuBLAS, ours (dispatcher's pick), best of each of our paths,
    and PyTorch's stock ``to_sparse_semi_structured`` + ``F.linear``; times in ms (graph replays,
    median), relative errors vs dense-with-zeros ``F.linear`` (same dtype) and vs fp32."""
    from . import gluon_mmsp
    from .dispatch import ShapeBench, bucket_of

    rows = []
    dev = torch.device("cuda")
    for dtype in dtypes:
        for (n, k) in shapes:
            t0 = time.time()
            # with gluon_mmsp.MO_STORAGE: the table of layers that hold only the MMA-order copy (dispatch.mo_key)
            mo_only = gluon_mmsp.storage_order(k, device=dev, paths=paths or dispatch.DEFAULT_PATHS)
            use_cutlass = ("cutlass" in (paths or dispatch.DEFAULT_PATHS)
                           and dispatch._cutlass_usable(n, k, dtype, dev))
            sb = ShapeBench(n, k, dtype, dev, with_cslt=True, with_stock=stock, mo_orders=(mo_only,) if mo_only else (),
                            with_cutlass=use_cutlass)
            buckets = sorted({bucket_of(m) for m in ms})
            n_rec = len(dispatch.RECORDS)
            table = dispatch.tune(n, k, dtype, False, buckets, device=dev, min_speedup=min_speedup, bench=sb,
                                  force=True, log=log, paths=paths or dispatch.DEFAULT_PATHS, views=True,
                                  mo_only=mo_only)
            recs = {r.m: r for r in dispatch.RECORDS[n_rec:]}
            key = dispatch.make_key(n, k, dtype, False, dev)
            vt = dispatch.table_for(dispatch.view_key(dispatch.mo_key(key, mo_only) if mo_only else key))
            for m in ms:
                c = table[bucket_of(m)]
                s = sb.sets[0]
                x = torch.randn(m, k, device=dev, dtype=dtype)
                ref = F.linear(x, s["dense"])
                ref32 = F.linear(x.float(), s["dense"].float())

                def run(choice, bench=sb):  # one checked call, its output NaN-poisoned first (the set has no bias)
                    return _poisoned_run(lambda: bench.run(choice, x, s), m * n, dtype)

                y = run(c)
                finite = bool(torch.isfinite(y).all())
                # interleaved (dense, ours) x 3, medians: clocks drift under sustained load
                if c.path == "dense":  # the dispatcher's pick is the dense call itself
                    t_dense = t_ours = statistics.median(time_call(*sb.args(m, c)) for _ in range(3))
                else:
                    td, to = dispatch.time_interleaved(sb, m, c, 3)
                    t_dense, t_ours = statistics.median(td), statistics.median(to)
                row = dict(dtype=str(dtype).replace("torch.", ""), out=n, inp=k, M=m, path=c.path, cfg=list(c.cfg),
                           dense_ms=t_dense, ours_ms=t_ours, speedup=t_dense / t_ours,
                           err_vs_dense=_rel(y, ref), err_vs_fp32=_rel(y, ref32), dense_err_vs_fp32=_rel(ref, ref32),
                           all_written=finite)
                v = vt.get(bucket_of(m))
                if v is not None and dispatch.is_view(v):
                    # what the layer runs under torch.compile: cuSPARSELt's [N, M] result left transposed
                    # (the consumer absorbs the transpose), timed the same way as ours
                    yv = run(v)
                    td, tv = dispatch.time_interleaved(sb, m, v, 3)
                    row.update(view_path=dispatch.choice_name(v), view_ms=statistics.median(tv),
                               view_speedup=statistics.median(td) / statistics.median(tv),
                               view_err_vs_dense=_rel(yv, ref))
                rec = recs.get(bucket_of(m))
                if rec is not None:
                    for p in ("gemvg:", "gemv:", "mmg:", "mmsp:", "mm:", "mmb", "cslt", "cutlass"):
                        ts = [t for name, t in rec.timings.items() if name.startswith(p)]
                        row[f"best_{p.rstrip(':')}_ms"] = min(ts) if ts else None
                    row["tune_dense_ms"] = rec.timings.get("dense")
                if stock and s.get("stock") is not None:
                    try:
                        xs = sb.inputs(m)
                        ys = F.linear(x, s["stock"])
                        row["stock_err_vs_dense"] = _rel(ys, ref)
                        row["stock_ms"] = time_call(lambda xx, ss: F.linear(xx, ss["stock"]),
                                                    [(xx, ss) for xx, ss in zip(xs, sb.sets)])
                        row["stock_speedup"] = t_dense / row["stock_ms"]
                        # eager (no graph) stock and dense at this size: the host-side cost users see
                        row["stock_eager_ms"] = time_call(lambda xx, ss: F.linear(xx, ss["stock"]),
                                                          [(xx, ss) for xx, ss in zip(xs, sb.sets)], use_graph=False)
                    except Exception as e:
                        row["stock_error"] = f"{type(e).__name__}: {str(e)[:160]}"
                rows.append(row)
                if log:
                    log(f"  {row['dtype']} {n}x{k} M={m}: dense {t_dense * 1e3:.1f} us, ours {t_ours * 1e3:.1f} us "
                        f"[{c.path}] {row['speedup']:.2f}x, stock {row.get('stock_speedup', float('nan')):.2f}x, "
                        f"err {row['err_vs_dense']:.1e}"
                        + (f"; compiled [{row['view_path']}] {row['view_speedup']:.2f}x" if "view_ms" in row else ""))
            del sb
            torch.cuda.empty_cache()
            if log:
                log(f"{dtype} {n}x{k}: {time.time() - t0:.1f} s")
    return rows


# --------------------------------------------------------------------------- end to end

def build_llama(shape: str = "llama2-7b", dtype=torch.float16, device="cuda", layers: int | None = None):
    """A Llama-shaped model with random weights (no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = dict(LLAMA_SHAPES[shape])
    if layers:
        kw["num_hidden_layers"] = layers
    cfg = LlamaConfig(**kw, max_position_embeddings=8192, attn_implementation="sdpa")
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.to(dtype).eval()


def prune_24_(model: nn.Module, skip=("lm_head",)) -> int:
    """Magnitude 2:4 on every nn.Linear except ``skip`` (in place, dense-with-zeros). Returns the count."""
    n = 0
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Linear) and not any(s in name for s in skip) and mod.in_features % 4 == 0:
                w = mod.weight
                g = w.view(w.shape[0], -1, 4)
                drop = g.abs().topk(2, dim=2, largest=False).indices
                g.scatter_(2, drop, 0)
                n += 1
    return n


COMPILE_MODES = ("none", "layers", "model")


def decoder_layers(model: nn.Module):
    """The decoder layers of a Hugging Face decoder-only model (``model.model.layers``), or None."""
    return getattr(getattr(model, "model", None), "layers", None)


def compile_model(model: nn.Module, mode: str = "layers") -> None:
    """torch.compile for the end-to-end bench (Inductor, static shapes, no Inductor CUDA graphs: the
    bench captures its own). ``"layers"``: each decoder layer (regional compilation: identical layers
    share one compiled graph, so compiling takes seconds, not minutes); ``"model"``: the whole
    forward. Applied to the dense model before timing it; the swapped SparseLinear layers are then
    recompiled on first use, so both sides get the same treatment."""
    if mode == "none":
        return
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    import torch._dynamo

    cfg = torch._dynamo.config
    layers = decoder_layers(model)
    if mode == "layers" and layers is None:
        raise ValueError("compile='layers' needs model.model.layers (a decoder-only HF model)")
    # entries per compiled frame: dense and 2:4, prefill and decode, and in decode with a static cache one
    # per layer (transformers indexes the cache by the layer's integer layer_idx, which Dynamo specializes)
    limit = 8 * max(8, len(layers) if layers is not None else 8)
    for knob in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(cfg, knob):
            setattr(cfg, knob, max(limit, getattr(cfg, knob)))
    if mode == "layers":
        for layer in layers:
            layer.compile(dynamic=False)
    else:
        model.compile(dynamic=False)


def _untimed():
    """Untimed passes (the decode prompt, the logits check) run eagerly, so that only the timed shapes
    are compiled."""
    try:
        return torch.compiler.set_stance("force_eager")
    except (AttributeError, TypeError):  # older torch
        return contextlib.nullcontext()


CAUSAL_PREFILL_ATTN = "llmsparse_causal_prefill"
_CAUSAL_REGISTERED = False
PREFILL_ATTENTION = ("causal", "mask")


def _causal_prefill_attention(module, query, key, value, attention_mask, **kwargs):
    """Attention of a prefill without cache and without padding: PyTorch's SDPA with ``is_causal=True`` and no
    materialized mask, so SDPA may pick its flash or cuDNN kernels (an explicit mask rules them out). transformers'
    own ``sdpa`` path does the same in eager calls but builds a full mask while a CUDA graph is being captured; this
    one does the same thing in both. Refuses anything but square (query and key of one length) attention, and a
    sliding window shorter than the keys."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[-2] != key.shape[-2]:
        raise ValueError("causal-prefill attention needs a prefill without cache: query and key of one length, got "
                         f"{query.shape[-2]} and {key.shape[-2]}")
    window = kwargs.get("sliding_window")
    if window is not None and window < key.shape[-2]:
        raise ValueError(f"causal-prefill attention has no sliding window ({window} < {key.shape[-2]} tokens): "
                         "use the explicit mask (--prefill-attention mask)")
    return sdpa_attention_forward(module, query, key, value, None, is_causal=True, **kwargs)


def _registered_attention(*args, **kwargs):
    return _causal_prefill_attention(*args, **kwargs)  # looked up at each call (tests wrap it)


@contextlib.contextmanager
def causal_prefill(model):
    """Within: ``model`` (a transformers model; every config among its modules) runs
    :func:`_causal_prefill_attention`: transformers builds no mask for an attention implementation it has no mask
    function for, and this one asserts the square shape in which no mask is needed. For prefill timings only."""
    from transformers import AttentionInterface

    global _CAUSAL_REGISTERED
    if not _CAUSAL_REGISTERED:  # once: each change of the mapping could make compiled layers recompile
        AttentionInterface.register(CAUSAL_PREFILL_ATTN, _registered_attention)
        _CAUSAL_REGISTERED = True
    configs = {id(c): c for c in [model.config] + [getattr(m, "config", None) for m in model.modules()]
               if c is not None and hasattr(c, "_attn_implementation")}
    old = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = CAUSAL_PREFILL_ATTN
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = old[k]


def check_prefill_attention(attention: str) -> None:
    if attention not in PREFILL_ATTENTION:
        raise ValueError(f"prefill attention must be one of {PREFILL_ATTENTION}, got {attention!r}")


def _prefill_call(model, prompt_len: int, vocab: int, attention: str):
    """The prefill forward :func:`time_prefill` times and :func:`prefill_breakdown` profiles, and the context it
    runs in: one random sequence of ``prompt_len`` tokens, no cache, only the last position's logits; ``"causal"``:
    no mask, within :func:`causal_prefill`; ``"mask"``: an explicit boolean causal mask, the same on both sides
    (transformers otherwise builds no mask in the eager warm-up calls but a materialized one while a CUDA graph is
    being captured, and a compiled layer would recompile, which cannot happen during capture, on that difference)."""
    check_prefill_attention(attention)
    ids = torch.randint(1, vocab, (1, prompt_len), device="cuda")
    kw = {} if attention == "causal" else {
        "attention_mask": torch.ones(prompt_len, prompt_len, dtype=torch.bool, device="cuda").tril()[None, None]}

    def fwd():
        return model(input_ids=ids, use_cache=False, logits_to_keep=1, **kw).logits

    return fwd, causal_prefill(model) if attention == "causal" else contextlib.nullcontext()


def time_prefill(model, prompt_len: int, graphs: bool = True, vocab: int = 32000, info: dict | None = None,
                 attention: str = "causal") -> float:
    """Milliseconds of one forward over ``prompt_len`` tokens (one sequence, no cache; only the last position's
    logits). ``attention``: ``"causal"`` (SDPA's causal flag, no mask: :func:`causal_prefill`, what serving stacks
    run for a prefill) or ``"mask"`` (an explicit boolean causal mask, as measured up to the nineteenth session:
    SDPA cannot use its flash kernels with one)."""
    fwd, ctx = _prefill_call(model, prompt_len, vocab, attention)
    with torch.no_grad(), ctx:
        return time_call(fwd, [()], target_ms=1.0, replays=7, use_graph=graphs, warmup=2, info=info)


class PrefillGraph:
    """One prefill forward (as :func:`time_prefill` times it) captured in a CUDA graph and kept for later replays,
    with what the graph reads from outside its memory pool (the input ids and mask, held by the forward; the caller
    keeps the model's weights alive). :func:`e2e_bench` holds the dense model's one across the swap to 2:4, to
    replay both sides in turn (``interleave``)."""

    def __init__(self, model, prompt_len: int, vocab: int, attention: str = "causal", warmup: int = 2):
        self.fwd, ctx = _prefill_call(model, prompt_len, vocab, attention)
        with torch.no_grad(), ctx:
            warm_up(self.fwd, n=warmup)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self.fwd()
        self.replay()
        torch.cuda.synchronize()

    def replay(self) -> None:
        self.graph.replay()


def interleaved_prefill(graphs: dict[str, PrefillGraph], rounds: int, timer=None) -> dict:
    """Median milliseconds of each captured prefill, replayed in turn round by round
    (:func:`~llmsparse.kernels.timing.interleaved_ms`), and the dense/2:4 ratio when both are there."""
    t = interleaved_ms({k: g.replay for k, g in graphs.items()}, rounds=rounds, timer=timer)
    res = {"rounds": rounds, **{f"{k}_ms": statistics.median(v) for k, v in t.items()},
           **{f"{k}_ms_runs": v for k, v in t.items()}}
    if "dense" in t and "sparse" in t:
        res["speedup"] = res["dense_ms"] / res["sparse_ms"]
    return res


# kernel-name patterns of prefill_breakdown's categories, tried in this order (first match wins)
KERNEL_CATEGORIES = (
    ("attention", r"flash|fmha|sdpa|attention|attn|_mha"),
    ("sparse_gemm", r"sparse|cusparselt|sp24|mmsp|spmma"),
    ("dense_gemm", r"gemm|gemv|nvjet|cutlass|xmma|cublas|sm\d\d_|ampere_"),
)


def kernel_category(name: str) -> str:
    """The :data:`KERNEL_CATEGORIES` entry a CUDA kernel's name falls under, else ``"other"`` (norms, rotary,
    activations, residual adds: Inductor's ``triton_*`` kernels and PyTorch's elementwise ones)."""
    import re

    low = name.lower()
    for cat, pat in KERNEL_CATEGORIES:
        if re.search(pat, low):
            return cat
    return "other"


def prefill_breakdown(model, prompt_len: int, vocab: int = 32000, attention: str = "causal", top: int = 12) -> dict:
    """Where one prefill's GPU time goes: one eager forward (as :func:`time_prefill` runs it, outside a CUDA graph)
    under the PyTorch profiler, kernel times summed by :func:`kernel_category` (ms), plus the ``top`` kernels by
    time with their category, so that a misfiled name can be seen. A diagnostic beside the timings, not one of them
    (eager: launch gaps are not in it)."""
    from torch.profiler import ProfilerActivity, profile

    fwd, ctx = _prefill_call(model, prompt_len, vocab, attention)
    with torch.no_grad(), ctx:
        fwd()  # warm (compiled layers compile here)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fwd()
            torch.cuda.synchronize()
    kernels: dict[str, float] = {}
    for ev in prof.events():  # the kernels themselves are the CUDA-side events, each with its own interval
        if getattr(ev, "device_type", None) == torch.autograd.DeviceType.CUDA:
            kernels[ev.name] = kernels.get(ev.name, 0.0) + ev.time_range.elapsed_us() / 1e3
    return summarize_kernels(kernels, top)


def summarize_kernels(kernels: dict, top: int = 12) -> dict:
    """{kernel name: ms} -> ms per :func:`kernel_category`, the total, and the ``top`` kernels by time."""
    by_cat = {cat: 0.0 for cat, _ in KERNEL_CATEGORIES}
    by_cat["other"] = 0.0
    for name, ms in kernels.items():
        by_cat[kernel_category(name)] += ms
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1])[:top]
    return {"ms": by_cat, "total_ms": sum(by_cat.values()),
            "top": [{"kernel": n[:160], "ms": ms, "category": kernel_category(n)} for n, ms in ranked]}


def cache_arg(model) -> str:
    """The name ``model``'s forward takes its KV cache by: ``cache`` since transformers 5.24 (``past_key_values``
    deprecated there, to be removed in 5.40), else ``past_key_values``."""
    fwd = getattr(model, "_orig_mod", model).forward  # a torch.compile wrapper's module underneath
    return "cache" if "cache" in inspect.signature(fwd).parameters else "past_key_values"


def decode(model, prompt_len: int = 32, gen: int = 128, graphs: bool = True, runs: int = 3, vocab: int = 32000,
           seed: int = 0, batch: int = 1):
    """Greedy generation of ``gen`` tokens after a ``prompt_len`` prompt for each of ``batch`` sequences (random
    prompts), static KV cache, on the model's device. Each step is one model forward over the batch (captured once
    into a CUDA graph when ``graphs``, on CUDA). Returns (median tokens/s over ``runs`` generations, counting
    ``batch`` tokens per step; the generated ids ``[batch, gen]``; whether graphs were used). On the CPU: eager,
    wall-clock timed (a correctness path for tests, not a benchmark)."""
    from transformers import StaticCache

    if batch < 1 or gen < 1 or prompt_len < 1:
        raise ValueError(f"decode needs batch, gen and prompt_len >= 1, got {batch}, {gen}, {prompt_len}")
    dev = next(model.parameters()).device
    cuda = dev.type == "cuda"
    g = torch.Generator(device=dev).manual_seed(seed)
    prompt = torch.randint(1, vocab, (batch, prompt_len), device=dev, generator=g)
    cache = StaticCache(config=model.config, max_cache_len=prompt_len + gen + 8)
    ckw = cache_arg(model)
    ids = torch.zeros((batch, 1), dtype=torch.long, device=dev)
    pos = torch.zeros((1,), dtype=torch.long, device=dev)
    toks = torch.zeros((batch, gen + 8), dtype=torch.long, device=dev)

    def reset():
        cache.reset()  # in place (static addresses kept); transformers 5 tracks the write position inside
        with torch.no_grad(), _untimed():
            out = model(input_ids=prompt, **{ckw: cache}, cache_position=torch.arange(prompt_len, device=dev),
                        use_cache=True, logits_to_keep=1)
        ids.copy_(out.logits[:, -1:].argmax(-1))
        pos.fill_(prompt_len)

    def step():
        out = model(input_ids=ids, **{ckw: cache}, cache_position=pos,
                    position_ids=pos.view(1, 1).expand(batch, 1), use_cache=True)
        ids.copy_(out.logits[:, -1:].argmax(-1))
        toks.index_copy_(1, pos - prompt_len, ids)
        pos.add_(1)

    used_graph = False
    graph = None
    with torch.no_grad():
        reset()
        if cuda:
            warm_up(step)
        if graphs and cuda:
            try:
                reset()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    step()
                used_graph = True
            except Exception:
                graph = None
                torch.cuda.synchronize()
        rates = []
        for _ in range(runs):
            reset()
            if cuda:
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            else:
                t0 = time.perf_counter()
            for _ in range(gen):
                if graph is not None:
                    graph.replay()
                else:
                    step()
            if cuda:
                end.record()
                torch.cuda.synchronize()
                secs = start.elapsed_time(end) / 1e3
            else:
                secs = time.perf_counter() - t0
            rates.append(batch * gen / secs)
    out = toks[:, :gen].clone()
    graph = cache = None  # frees the graph and the KV cache (the closures above are not called again)
    if cuda:
        torch.cuda.empty_cache()
    return statistics.median(rates), out, used_graph


def e2e_bench(model, *, prompt_len: int = 4096, gen: int = 128, decode_prompt: int = 32, graphs: bool = True,
              compile: str = "none", min_speedup: float = dispatch.DEFAULT_MIN_SPEEDUP,
              log: Callable[[str], None] | None = None, paths=None, batch: int = 1,
              prefill_attention: str = "causal", breakdown: bool = False, interleave: int = 0) -> dict:
    """Dense (dense-with-zeros) vs ``sparsify``-ed model: prefill of ``prompt_len`` tokens (one sequence), decode
    of ``gen`` tokens for ``batch`` sequences (M = ``batch`` rows per linear; tokens/s count all of them); the same
    treatment on both sides (CUDA graphs; with ``compile``, also torch.compile, see :func:`compile_model`; the
    prefill's attention: ``prefill_attention``, see :func:`time_prefill`; ``breakdown``: also where each side's
    prefill time goes, :func:`prefill_breakdown`; ``interleave``: with graphs, also that many rounds of the dense
    and the 2:4 prefill graphs replayed in turn, the dense graph and weights held across the swap,
    :func:`interleaved_prefill`). The model must already be 2:4 in its decoder linears; it is sparsified in
    place."""
    if interleave < 0:
        raise ValueError(f"interleave must be a number of rounds >= 0, got {interleave}")
    check_prefill_attention(prefill_attention)  # before any work
    from .dispatch import bucket_of
    from .linear import sparsify

    log = log or (lambda s: None)
    vocab = model.config.vocab_size
    res: dict = {"prompt_len": prompt_len, "gen_tokens": gen, "decode_prompt": decode_prompt, "batch": batch,
                 "compile": compile, "prefill_attention": prefill_attention}
    chk = torch.randint(1, vocab, (1, 64), device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
    with torch.no_grad():
        ref_logits = model(input_ids=chk, use_cache=False).logits.float()
    compile_model(model, compile)  # compiled at the first call of each timed shape, in the warm-up calls
    pinfo: dict = {"dense": {}, "sparse": {}, "dense_again": {}}
    res["prefill_timing"] = pinfo  # whether each prefill timing is of graph replays (and why not)
    res["dense_prefill_ms"] = time_prefill(model, prompt_len, graphs, vocab, info=pinfo["dense"],
                                           attention=prefill_attention)
    log(f"dense prefill {prompt_len}: {res['dense_prefill_ms']:.2f} ms ({_how(pinfo['dense'])})")
    held: dict = {}  # interleave: the dense prefill graph and the dense weights it reads, kept across the swap
    if interleave and graphs:
        held["weights"] = list(model.parameters())
        held["dense"] = _try(res, "interleave_error", lambda: PrefillGraph(model, prompt_len, vocab, prefill_attention))
        if held["dense"] is None:
            held.clear()  # no graph: nothing to hold the weights for
    if breakdown:
        res["dense_prefill_breakdown"] = prefill_breakdown(model, prompt_len, vocab, prefill_attention)
        log(f"dense prefill kernels: {_fmt_breakdown(res['dense_prefill_breakdown'])}")
    res["dense_decode_tok_s"], dense_toks, g1 = decode(model, decode_prompt, gen, graphs, vocab=vocab, batch=batch)
    log(f"dense decode: {res['dense_decode_tok_s']:.1f} tok/s (graphs={g1})")
    t0 = time.time()
    # the timed sizes are measured; the untimed eager passes (prompt, logits check) use the nearest
    buckets = sorted({bucket_of(batch), bucket_of(prompt_len)})
    rep = sparsify(model, min_speedup=min_speedup, buckets=buckets, lazy_tune=False, log=log, paths=paths,
                   for_compile=compile != "none")
    res["sparsify_s"] = time.time() - t0
    res["swapped"] = len(rep["swapped"])
    res["skipped"] = rep["skipped"]  # name -> reason (e.g. dense as fast at every measured M)
    res["paths"] = {k: {str(b): p for b, p in v.items()} for k, v in rep["paths"].items()}
    res["compiled_paths"] = {k: {str(b): p for b, p in v.items()} for k, v in rep["compiled_paths"].items()}
    log(f"sparsify: {len(rep['swapped'])} layers swapped, {len(rep['skipped'])} left dense in {res['sparsify_s']:.1f} s; "
        f"paths {res['paths']}")
    with torch.no_grad():
        sp_logits = model(input_ids=chk, use_cache=False).logits.float()
        if compile != "none":
            with _untimed():
                sp_eager = model(input_ids=chk, use_cache=False).logits.float()
            # the compiled 2:4 model against the eager one (same kernels; Inductor fuses the rest)
            res["compiled_vs_eager_rel_err"] = float((sp_logits - sp_eager).norm() / sp_eager.norm())
    res["logits_rel_err"] = float((sp_logits - ref_logits).norm() / ref_logits.norm())
    res["sparse_prefill_ms"] = time_prefill(model, prompt_len, graphs, vocab, info=pinfo["sparse"],
                                            attention=prefill_attention)
    log(f"2:4 prefill {prompt_len}: {res['sparse_prefill_ms']:.2f} ms ({_how(pinfo['sparse'])})")
    if breakdown:
        res["sparse_prefill_breakdown"] = prefill_breakdown(model, prompt_len, vocab, prefill_attention)
        log(f"2:4 prefill kernels: {_fmt_breakdown(res['sparse_prefill_breakdown'])}")
    if held.get("dense") is not None:
        held["sparse"] = _try(res, "interleave_error", lambda: PrefillGraph(model, prompt_len, vocab, prefill_attention))
        if held["sparse"] is not None:
            res["prefill_interleaved"] = _try(res, "interleave_error", lambda: interleaved_prefill(
                {"dense": held["dense"], "sparse": held["sparse"]}, interleave))
        if res.get("prefill_interleaved"):
            pi = res["prefill_interleaved"]
            log(f"prefill {prompt_len}, graphs replayed in turn ({interleave} rounds): dense {pi['dense_ms']:.2f} ms, "
                f"2:4 {pi['sparse_ms']:.2f} ms, {pi['speedup']:.2f}x")
    held.clear()  # the dense graph and weights go before the 2:4 decode
    torch.cuda.empty_cache()
    res["sparse_decode_tok_s"], sp_toks, g2 = decode(model, decode_prompt, gen, graphs, vocab=vocab, batch=batch)
    log(f"2:4 decode: {res['sparse_decode_tok_s']:.1f} tok/s (graphs={g2})")
    res["graphs"] = bool(g1 and g2 and pinfo["dense"].get("graph") and pinfo["sparse"].get("graph")) if graphs else False
    res["sparse_linear_bytes"], res["dense_linear_bytes"] = _sparse_bytes(model)
    # logged now, so that a run cut short (a time limit) still tells the memory
    log(f"decoder linears: 2:4 {res['sparse_linear_bytes'] / 1e9:.2f} GB vs dense {res['dense_linear_bytes'] / 1e9:.2f} GB")
    # dense again (same weights, swapped back), so that clock drift over the run does not favour a side
    from .linear import densify

    densify(model)
    torch.cuda.empty_cache()
    d2_prefill = time_prefill(model, prompt_len, graphs, vocab, info=pinfo["dense_again"], attention=prefill_attention)
    d2_decode, _, _ = decode(model, decode_prompt, gen, graphs, vocab=vocab, batch=batch)
    log(f"dense again: prefill {d2_prefill:.2f} ms, decode {d2_decode:.1f} tok/s")
    res["dense_prefill_ms_runs"] = [res["dense_prefill_ms"], d2_prefill]
    res["dense_decode_tok_s_runs"] = [res["dense_decode_tok_s"], d2_decode]
    res["dense_prefill_ms"] = (res["dense_prefill_ms"] + d2_prefill) / 2
    res["dense_decode_tok_s"] = (res["dense_decode_tok_s"] + d2_decode) / 2
    res["decode_speedup"] = res["sparse_decode_tok_s"] / res["dense_decode_tok_s"]
    res["prefill_speedup"] = res["dense_prefill_ms"] / res["sparse_prefill_ms"]
    res["prefill_tok_s_dense"] = prompt_len / (res["dense_prefill_ms"] / 1e3)
    res["prefill_tok_s_sparse"] = prompt_len / (res["sparse_prefill_ms"] / 1e3)
    res["greedy_tokens_match"] = float((sp_toks == dense_toks).float().mean())
    return res


def _try(res: dict, key: str, fn):
    """``fn()``, or None with the first error recorded under ``res[key]`` (an optional extra measurement must not
    cost the run)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 -- recorded, and the run goes on without the extra
        res.setdefault(key, error_line(e))
        return None


def _fmt_breakdown(b: dict) -> str:
    return ", ".join(f"{k} {v:.2f} ms" for k, v in b["ms"].items()) + f" (total {b['total_ms']:.2f} ms, eager)"


def _how(info: dict) -> str:
    return "graph replays" if info.get("graph") else "eager" + (f": {info['graph_error']}" if info.get("graph_error") else "")


def _sparse_bytes(model) -> tuple[int, int]:
    """Bytes the swapped layers hold (packed weights, metadata, bias and every derived form the chosen kernels
    need: cuSPARSELt's copy, the MMA-order copy, a kept dense weight), and what the same layers took dense."""
    from .linear import SparseLinear, memory_bytes

    layers = [m for m in model.modules() if isinstance(m, SparseLinear)]
    dense = sum(m.out_features * (m.in_features + (m.bias is not None)) * m.values.element_size() for m in layers)
    return sum(memory_bytes(m) for m in layers), dense


# --------------------------------------------------------------------------- output

def plot_speedups(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["dtype"], r["out"], r["inp"]) for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, which, title in ((axes[0], "speedup", "ours (dispatcher)"), (axes[1], "stock_speedup", "PyTorch stock 2:4")):
        for key in keys:
            rs = sorted((r for r in rows if (r["dtype"], r["out"], r["inp"]) == key), key=lambda r: r["M"])
            xs = [r["M"] for r in rs if r.get(which)]
            ys = [r[which] for r in rs if r.get(which)]
            if xs:
                ax.plot(xs, ys, marker="o", label=f"{key[0]} {key[1]}x{key[2]}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("M (tokens)")
        ax.set_title(f"{title}: speedup over dense cuBLAS")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("dense time / 2:4 time (CUDA graphs)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt_us(ms) -> str:
    return "-" if ms is None or (isinstance(ms, float) and math.isnan(ms)) else f"{ms * 1e3:.1f}"
