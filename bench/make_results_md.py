"""Collect the JSON results under bench/results/ into the tables of docs/results.md.

    python bench/make_results_md.py > docs/results-tables.md
"""
from __future__ import annotations

import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))

# the reference numbers the issue quotes for the original authors' code under P-smol
AUTHORS = {("dense", "0"): 30.47, ("wanda", "0.5"): 69.47}


def psmol_rows():
    rows = {}
    machine = None
    for f in sorted(glob.glob(os.path.join(HERE, "results", "psmol*.json"))):
        d = json.load(open(f))
        machine = machine or d.get("machine")
        for r in d["rows"]:
            rows[(r["method"], r["sparsity"])] = (r, os.path.basename(f))
    return rows, machine


def main():
    rows, machine = psmol_rows()
    print("### P-smol perplexity (WikiText-2 raw test, 128 windows x 512, SmolLM2-135M fp32, C4 64x512 seed 0)\n")
    print("| method | sparsity | ppl | authors' code (quoted in the issue) | diff | measured sparsity | prune wall (s) | source |")
    print("|---|---|---|---|---|---|---|---|")
    order = ["dense", "magnitude", "wanda", "sparsegpt", "dsnot"]
    for key in sorted(rows, key=lambda k: (order.index(k[0]) if k[0] in order else 9, k[1])):
        r, src = rows[key]
        ref = AUTHORS.get(key)
        diff = f"{(r['ppl'] / ref - 1) * 100:+.2f}%" if ref else "—"
        print(f"| {key[0]} | {key[1]} | {r['ppl']:.3f} | {ref if ref else 'held by the issue owner'} | {diff} | "
              f"{r.get('measured_sparsity', 0):.4f} | {r['prune_s']:.1f} | {src} |")
    clean = os.path.exists(os.path.join(HERE, "results", "cpu_timing.json"))
    print(f"\nMachine: {machine}. Prune wall times were taken on a shared machine with a load average of "
          "8-18 (up to ten other CPU-bound jobs), so they say nothing about speed"
          + ("; see the CPU timing table." if clean else "; no clean CPU timing was measured yet "
             "(`bench/bench_cpu_prune.py` is the script for it).") + "\n")
    g = os.path.join(HERE, "results", "gpu_prune_h100.json")
    if os.path.exists(g):
        d = json.load(open(g))
        print(f"### Llama-2-7B-shaped model (random fp16 weights), {d['calib']} calibration, {d['device']}, torch {d['torch']}\n")
        print("| method | sparsity / ratio | wall (s), calibration included | peak GPU memory (GiB) | measured sparsity |")
        print("|---|---|---|---|---|")
        for r in d["runs"]:
            print(f"| {r['method']} | {r.get('sparsity', r.get('ratio'))} | {r['wall_s']:.1f} | "
                  f"{r['peak_gpu_gib']:.2f} | {r.get('measured_sparsity', '—')} |")
        print("\nCommand: `python bench/bench_gpu_prune.py --methods wanda:2:4,sparsegpt:0.5,dsnot:0.6 --slice 0.25`.")
    t = os.path.join(HERE, "results", "cpu_timing.json")
    if os.path.exists(t):
        d = json.load(open(t))
        print(f"\n### CPU prune timing (P-smol calibration), {d['machine']}\n")
        print("| method | sparsity | prune wall (s), calibration included | process CPU time (s) | load average (start → end) |")
        print("|---|---|---|---|---|")
        for r in d["rows"]:
            print(f"| {r['method']} | {r['sparsity']} | {r['prune_s']:.1f} | {r['cpu_s']:.1f} | {r.get('load', '—')} |")


if __name__ == "__main__":
    main()
