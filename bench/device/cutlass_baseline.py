"""Baseline for the CUTLASS sparse-GEMM probe: dense ``F.linear`` and cuSPARSELt (every valid algorithm, both
result layouts) at the same shapes and token count, timed like ``cutlass_sp24_probe.cu`` (CUDA events around batches
of back-to-back calls, median over batches, no L2 rotation: at M = 4096 the operands exceed L2), the calls here
captured in a CUDA graph.

  python bench/device/cutlass_baseline.py --m 4096 --shapes 4096x4096,11008x4096 --out $OUT/baseline.json
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from llmsparse.kernels import cslt


def timed(fn, iters=50, batches=9):
    """Median and min microseconds per call: ``iters`` calls captured in one CUDA graph (cuSPARSELt's eager
    calls pay milliseconds of host-side plan setup; captured, that is paid once), replayed ``batches`` times."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(iters):
            fn()
    g.replay()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(batches):
        e0.record()
        g.replay()
        e1.record()
        torch.cuda.synchronize()
        ts.append(e0.elapsed_time(e1) * 1000 / iters)
    ts.sort()
    return ts[len(ts) // 2], ts[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--m", type=int, default=4096)
    p.add_argument("--shapes", default="4096x4096,11008x4096,4096x11008,8192x8192,28672x8192,8192x28672")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.manual_seed(0)
    rows = []
    for s in a.shapes.split(","):
        n, k = map(int, s.split("x"))
        w = torch.randn(n, k, device="cuda", dtype=torch.float16)
        idx = torch.rand(n, k // 4, 4, device="cuda").argsort(-1)[..., :2]
        mask = torch.zeros(n, k // 4, 4, device="cuda", dtype=torch.bool).scatter_(-1, idx, True).reshape(n, k)
        w = w * mask
        x = torch.randn(a.m, k, device="cuda", dtype=torch.float16)
        ref = F.linear(x.double(), w.double())
        row = {"out": n, "in": k, "M": a.m, "dense_us": timed(lambda: F.linear(x, w)), "cslt": {}}
        packed = cslt.compress(w)
        for alg in cslt.valid_alg_ids(packed, x):
            for res in (cslt.RESULT_MN, cslt.RESULT_VIEW):
                y = cslt.cslt_linear(x, packed, None, alg, res)
                err = ((y.double() - ref).norm() / ref.norm()).item()
                row["cslt"][f"{alg},{res}"] = {"us": timed(lambda: cslt.cslt_linear(x, packed, None, alg, res)),
                                               "err": err}
        best = min(row["cslt"].items(), key=lambda kv: kv[1]["us"][0])
        print(f"{n}x{k} M {a.m} dense {row['dense_us'][0]:.1f} us  cslt best ({best[0]}) {best[1]['us'][0]:.1f} us "
              f"{row['dense_us'][0] / best[1]['us'][0]:.3f}x", flush=True)
        rows.append(row)
    with open(a.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
