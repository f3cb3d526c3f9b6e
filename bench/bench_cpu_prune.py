"""Prune timing on the CPU under protocol P-smol's calibration (SmolLM2-135M fp32, C4 64 x 512).

Reports wall time (calibration sampling, layer-0 capture and all layers included; model loading
excluded) and the process CPU time, with the load average, since a shared machine inflates wall
time:

    python bench/bench_cpu_prune.py --runs wanda:2:4,sparsegpt:0.5,dsnot:2:4 --json bench/results/cpu_timing.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="wanda:2:4,sparsegpt:0.5")
    ap.add_argument("--calib", default="c4:64x512")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from _common import machine

    from llmsparse.models.load import load_model
    from llmsparse.prune.engine import PruneConfig, prune_model
    from llmsparse.spec import SparsitySpec

    torch.set_grad_enabled(False)
    base, tok, _ = load_model("smollm2")
    rows = []
    for item in args.runs.split(","):
        method, sp = item.split(":", 1)
        m = copy.deepcopy(base)
        c0, w0, l0 = time.process_time(), time.perf_counter(), os.getloadavg()[0]
        rep = prune_model(m, tok, PruneConfig(method=method, sparsity=SparsitySpec.parse(sp), calib=args.calib,
                                              device="cpu"))
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        l1 = os.getloadavg()[0]
        rows.append({"method": method, "sparsity": sp, "prune_s": round(wall, 1), "cpu_s": round(cpu, 1),
                     "threads": torch.get_num_threads(), "load": f"{l0:.1f} → {l1:.1f}",
                     "sparsity_measured": rep["sparsity_overall"]})
        print(json.dumps(rows[-1]), flush=True)
        del m
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": machine(), "calib": args.calib, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
