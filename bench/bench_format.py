"""Packed checkpoint format: sizes, export/load time and peak RAM against save_pretrained/from_pretrained.

A Llama-2-7B-shaped model (hidden 4096, intermediate 11008, 32 heads, vocab 32000; ``--layers`` decoder
layers, 32 for the real size) with random fp16 weights, every decoder linear 2:4-sparse. Each step runs
in a fresh subprocess so that its peak RSS (ru_maxrss) is its own:

  save_dense    build the model, ``save_pretrained``                 (time of the save only)
  save_packed   build the model, ``llmsparse.formats.packed.save_packed``
  load_dense    ``AutoModelForCausalLM.from_pretrained`` + touching every page of every tensor
  load_packed   ``llmsparse.formats.packed.load_packed`` + the same touch

(transformers 5 maps safetensors files and reads the pages on first use, so a load is timed until the
weights are in memory; ``load_only_s`` in the JSON is the call alone.)

Loads read files just written (warm page cache, for both). The loaded models are compared (bitwise
weights, identical logits on a short input). Prints a table, writes JSON (``--json``).

  python bench/bench_format.py --layers 4 --json bench/results/format_7bshape_4l.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def config(layers: int):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096,
                       tie_word_embeddings=False)


def build(layers: int, seed: int = 0):
    """Random fp16 Llama-2-7B-shaped model; decoder linears 2:4 (a random kept pair in every group of 4)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    torch.manual_seed(seed)
    with no_init_weights():
        m = AutoModelForCausalLM.from_config(config(layers), dtype=torch.float16)
    drop = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 1, 0], [1, 0, 0, 1], [1, 0, 1, 0], [1, 1, 0, 0]],
                        dtype=torch.bool)
    base = (torch.randn(1 << 24) * 0.02).half()  # random values, tiled (filling 7B with normal_ takes minutes)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
                continue
            flat = p.view(-1)
            off = int(torch.randint(0, 1 << 20, ()))
            for s in range(0, flat.numel(), 1 << 23):
                k = min(1 << 23, flat.numel() - s)
                flat[s: s + k] = base[off: off + k]
            if ".layers." in name:  # 2:4: a random kept pair in every group of 4, zeros as pruners write them
                rows, cols = p.shape
                sel = torch.randint(0, 6, (rows, cols // 4), dtype=torch.int64)
                p.view(rows, cols // 4, 4).masked_fill_(drop[sel], 0)
    return m.eval()


def dense_bytes(m) -> int:
    return sum(t.numel() * t.element_size() for t in m.state_dict().values())


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _anon_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class AnonPeak:
    """Samples RssAnon (anonymous memory: tensors; not the page cache mapped from files) every 20 ms."""

    def __enter__(self):
        import threading

        self.peak, self.stop = _anon_now(), threading.Event()

        def loop():
            while not self.stop.wait(0.02):
                self.peak = max(self.peak, _anon_now())

        self.th = threading.Thread(target=loop, daemon=True)
        self.th.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.th.join()
        self.peak = max(self.peak, _anon_now())


def step(args) -> dict:
    import torch

    torch.set_grad_enabled(False)
    out = {"step": args.step}
    import transformers  # noqa: F401  (imports before the baseline: RSS beyond it is the model's)
    from transformers import AutoModelForCausalLM  # noqa: F401

    from llmsparse.formats import packed  # noqa: F401

    base_rss = _rss_now()
    base_anon = _anon_now()
    mon = AnonPeak().__enter__()
    if args.step in ("save_dense", "save_packed"):
        m = build(args.layers)
        out["model_bytes"] = dense_bytes(m)
        out["rss_after_build"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        d = Path(args.dir)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        t = time.perf_counter()
        if args.step == "save_dense":
            m.save_pretrained(d)
        else:
            from llmsparse.formats import packed

            shard = args.max_shard_size or max(1, int(out["model_bytes"] / 13.5))
            out["max_shard_bytes"] = shard
            out["summary"] = packed.save_packed(m, None, d, {"recipe": {"sparsity": "2:4"}}, max_shard_size=shard)
        out["time_s"] = time.perf_counter() - t
    else:
        import torch

        t = time.perf_counter()
        if args.step == "load_dense":
            from transformers import AutoModelForCausalLM

            m = AutoModelForCausalLM.from_pretrained(args.dir, dtype="auto").eval()
        else:
            from llmsparse.formats import packed

            m, _ = packed.load_packed(args.dir, tokenizer=False)
        out["load_only_s"] = time.perf_counter() - t
        # from_pretrained maps the safetensors file and reads pages on first use: touch every page of
        # every tensor so that both loaders are timed until the weights are really in memory
        acc = 0.0
        for v in m.state_dict().values():
            flat = v.reshape(-1)
            step_ = max(1, 4096 // max(1, v.element_size()))
            acc += float(flat[::step_].float().sum())
        out["time_s"] = time.perf_counter() - t
        out["touch_s"] = out["time_s"] - out["load_only_s"]
        out["model_bytes"] = dense_bytes(m)
        ids = torch.arange(8).unsqueeze(0) * 37 % 32000
        out["logits"] = m(ids).logits[0, -1, :64].float().tolist()
        if args.dump:
            import hashlib

            h = hashlib.sha256()
            for k, v in sorted(m.state_dict().items()):
                h.update(k.encode())
                h.update(v.contiguous().view(torch.uint8).numpy().tobytes())
            out["state_sha256"] = h.hexdigest()
    mon.__exit__(None, None, None)
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["base_rss"] = base_rss
    out["peak_anon"] = mon.peak
    out["base_anon"] = base_anon
    return out


def run_step(name: str, d: Path, layers: int, dump: bool, shard: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--step", name, "--dir", str(d), "--layers", str(layers)]
    if shard:
        cmd += ["--max-shard-size", str(shard)]
    if dump:
        cmd.append("--dump")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{name} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def dir_bytes(d: Path, suffix: str) -> int:
    return sum(f.stat().st_size for f in d.iterdir() if f.name.endswith(suffix))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4, help="decoder layers (32 = Llama-2-7B)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per step; the fastest is reported")
    ap.add_argument("--workdir", default=None, help="where to write the checkpoints (default: a temp dir)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--max-shard-size", type=int, default=None,
                    help="bytes per packed shard (default: model size / 13.5, i.e. the 1 GiB default's share "
                    "of a 13.5 GB Llama-2-7B, so that a reduced shape keeps the 7B proportions)")
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dump", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        print(json.dumps(step(args)))
        return
    work = Path(tempfile.mkdtemp(prefix="bench_format_", dir=args.workdir))
    dd, pd = work / "dense", work / "packed"
    res: dict = {}
    try:
        for name, d in (("save_dense", dd), ("save_packed", pd), ("load_dense", dd), ("load_packed", pd)):
            runs = [run_step(name, d, args.layers, dump=(i == 0 and name.startswith("load")), shard=args.max_shard_size)
                    for i in range(args.repeat)]
            best = min(runs, key=lambda r: r["time_s"])
            best["times_s"] = [r["time_s"] for r in runs]
            for k in ("state_sha256",):
                if k in runs[0]:
                    best[k] = runs[0][k]
            res[name] = best
            print(f"{name:12s} {best['time_s']:8.2f} s  peak RSS {best['peak_rss'] / 1e9:6.2f} GB  "
                  f"peak anon {best['peak_anon'] / 1e9:6.2f} GB", flush=True)
        sizes = {"dense_files": dir_bytes(dd, ".safetensors"), "packed_files": dir_bytes(pd, ".safetensors")}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = res["save_dense"]["model_bytes"]
    s = res["save_packed"]["summary"]
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg": os.getloadavg()},
        "shape": {"hidden": 4096, "intermediate": 11008, "layers": args.layers, "vocab": 32000, "dtype": "float16"},
        "model_bytes": mb,
        "sizes": {**sizes, "linear_ratio": s["linear_ratio"], "files_ratio": sizes["packed_files"] / sizes["dense_files"]},
        "time_s": {k: res[k]["time_s"] for k in res},
        "load_only_s": {k: res[k]["load_only_s"] for k in res if "load_only_s" in res[k]},
        "time_ratio": {"export": res["save_packed"]["time_s"] / res["save_dense"]["time_s"],
                       "load": res["load_packed"]["time_s"] / res["load_dense"]["time_s"]},
        "peak_rss_bytes": {k: res[k]["peak_rss"] for k in res},
        "peak_rss_over_model": {k: res[k]["peak_rss"] / mb for k in res},
        "baseline_rss_bytes": {k: res[k]["base_rss"] for k in res},
        "peak_above_baseline_over_model": {k: (res[k]["peak_rss"] - res[k]["base_rss"]) / mb for k in res},
        "peak_anon_bytes": {k: res[k]["peak_anon"] for k in res},
        "peak_anon_above_baseline_over_model": {k: (res[k]["peak_anon"] - res[k]["base_anon"]) / mb for k in res},
        "max_shard_bytes": res["save_packed"].get("max_shard_bytes"),
        "identical_weights": res["load_dense"]["state_sha256"] == res["load_packed"]["state_sha256"],
        "identical_logits": res["load_dense"]["logits"] == res["load_packed"]["logits"],
        "runs": {k: res[k]["times_s"] for k in res},
    }
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"packed format, Llama-2-7B shapes x {args.layers} layers, fp16 2:4 "
                    f"({mb / 1e9:.2f} GB dense)")
    for c in ("step", "time (s)", "vs dense", "peak RSS (GB)", "(RSS-imports)/model", "(anon-imports)/model"):
        t.add_column(c, justify="left" if c == "step" else "right")
    for k in ("save_dense", "save_packed", "load_dense", "load_packed"):
        rel = "" if "dense" in k else f"{report['time_ratio']['export' if 'save' in k else 'load']:.2f}x"
        t.add_row(k, f"{res[k]['time_s']:.2f}", rel, f"{res[k]['peak_rss'] / 1e9:.2f}",
                  f"{(res[k]['peak_rss'] - res[k]['base_rss']) / mb:.2f}",
                  f"{(res[k]['peak_anon'] - res[k]['base_anon']) / mb:.2f}")
    Console().print(t)
    print(f"files: dense {sizes['dense_files'] / 1e9:.3f} GB, packed {sizes['packed_files'] / 1e9:.3f} GB "
          f"({report['sizes']['files_ratio']:.4f}x); linear weights {s['linear_ratio']:.4f}x; "
          f"identical weights {report['identical_weights']}, identical logits {report['identical_logits']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
