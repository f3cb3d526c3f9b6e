"""Protocol P-smol: SmolLM2-135M-Instruct (GGUF, fp32), calibration 64 x 512 tokens from the C4
train shard-0 sample (seed 0, Wanda-style sampling), WikiText-2 raw test perplexity over the first
128 windows of 512 tokens.

Runs dense + each (method, sparsity) asked for, prints a table and writes JSON (and a Markdown
table with --markdown). Usage:

    python bench/bench_psmol.py --methods magnitude,wanda,sparsegpt --sparsities 0.5,2:4 \
        --json bench/results/psmol.json --markdown docs/results-psmol.md
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time

import torch

from _common import machine  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="magnitude,wanda,sparsegpt")
    ap.add_argument("--sparsities", default="0.5,2:4")
    ap.add_argument("--calib", default="c4:64x512")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--limit", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-dense", action="store_true")
    ap.add_argument("--method-options", default="{}", help="JSON dict of extra method options")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args()

    from llmsparse.data import wikitext2_test_text
    from llmsparse.eval.perplexity import perplexity
    from llmsparse.models.load import load_model
    from llmsparse.prune.engine import PruneConfig, prune_model
    from llmsparse.spec import SparsitySpec

    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    base, tok, _ = load_model("smollm2", dtype="float32")
    t_load = time.perf_counter() - t0
    text = wikitext2_test_text()
    rows = []

    def evaluate(m):
        t = time.perf_counter()
        r = perplexity(m, tok, text, args.seqlen, limit=args.limit, batch_size=4, device=torch.device(args.device))
        return r["ppl"], time.perf_counter() - t

    if not args.no_dense:
        ppl, te = evaluate(base)
        rows.append({"method": "dense", "sparsity": "0", "ppl": ppl, "prune_s": 0.0, "eval_s": te})
        print(f"dense: ppl {ppl:.3f} (eval {te:.0f}s)", flush=True)
    def save():
        if args.json:
            os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
            with open(args.json, "w") as f:
                json.dump({"protocol": "P-smol", "method_options": json.loads(args.method_options),
                           "calib": args.calib, "seed": args.seed, "seqlen": args.seqlen,
                           "limit": args.limit, "machine": machine(), "load_s": t_load, "rows": rows,
                           "load_avg_end": os.getloadavg()}, f, indent=2)

    save()
    opts = json.loads(args.method_options)
    for method in args.methods.split(","):
        for sp in args.sparsities.split(","):
            m = copy.deepcopy(base)
            cfg = PruneConfig(method=method, sparsity=SparsitySpec.parse(sp), calib=args.calib, seed=args.seed,
                              device=args.device, method_options=opts if method == "dsnot" else {})
            t = time.perf_counter()
            rep = prune_model(m, tok, cfg)
            tp = time.perf_counter() - t
            ppl, te = evaluate(m)
            rows.append({"method": method, "sparsity": sp, "ppl": ppl, "prune_s": tp, "eval_s": te,
                         "measured_sparsity": rep["sparsity_overall"], "method_info_layers": len(rep["method_info"])})
            print(f"{method} {sp}: ppl {ppl:.3f} sparsity {rep['sparsity_overall']:.4f} "
                  f"(prune {tp:.0f}s, eval {te:.0f}s)", flush=True)
            save()
            del m
    result = {"protocol": "P-smol", "calib": args.calib, "seed": args.seed, "seqlen": args.seqlen,
              "limit": args.limit, "machine": machine(), "load_s": t_load, "rows": rows,
              "load_avg_end": os.getloadavg()}
    print(f"\n{'method':<12}{'sparsity':>9}{'ppl':>10}{'prune s':>9}")
    for r in rows:
        print(f"{r['method']:<12}{r['sparsity']:>9}{r['ppl']:>10.3f}{r['prune_s']:>9.1f}")
    save()
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("| method | sparsity | WikiText-2 ppl | prune wall (s) |\n|---|---|---|---|\n")
            for r in rows:
                f.write(f"| {r['method']} | {r['sparsity']} | {r['ppl']:.3f} | {r['prune_s']:.1f} |\n")
            f.write(f"\nMachine: {result['machine']}. Load average at the end: {result['load_avg_end']}.\n")


if __name__ == "__main__":
    main()
