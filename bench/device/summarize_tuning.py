"""Summarise the dispatcher's tuning records of a bench_kernels.py run: per (dtype, shape, M) the
dense time and the best time (and config) of every kernel kind. Usage: summarize_tuning.py gemm.json"""
import json
import sys

res = json.load(open(sys.argv[1]))
for r in res["tuning"]:
    _, dt, n, k, _ = r["key"]
    t = r["timings"]
    dense = t.get("dense")
    best = {}
    for name, ms in t.items():
        kind = name.split(":")[0]
        if kind != "dense" and (kind not in best or ms < best[kind][1]):
            best[kind] = (name, ms)
    parts = [f"{kind} {dense / ms:.2f}x ({name})" for kind, (name, ms) in sorted(best.items())]
    print(f"{dt} {n}x{k} M={r['M']}: dense {dense * 1e3:.1f} us | " + " | ".join(parts))
