"""Per-shape 2:4 GEMM benchmark: dense cuBLAS vs ours (dispatcher) vs PyTorch stock 2:4.

    python bench/bench_kernels.py --shapes llama2-7b,llama2-70b --m 1,16,128,1024,4096,16384 \
        --dtype fp16,bf16 --out out/kernels

Writes OUT/gemm.json (every number, the device, the command), OUT/gemm.md (markdown table),
OUT/gemm.png (speedup vs M) and prints the table. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch


def md_table(rows) -> str:
    from llmsparse.kernels.benchmark import fmt_us

    lines = ["| dtype | out x in | M | dense us | ours us | path | speedup | under torch.compile | stock us | "
             "stock speedup | err vs dense | err vs fp32 (dense's) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        stock = (f"{fmt_us(r.get('stock_ms'))} | {r['stock_speedup']:.2f}" if r.get("stock_speedup") else "- | -")
        comp = (f"{fmt_us(r['view_ms'])} us {r['view_speedup']:.2f}x ({r['view_err_vs_dense']:.0e})"
                if r.get("view_ms") else "same")
        lines.append(f"| {r['dtype']} | {r['out']}x{r['inp']} | {r['M']} | {fmt_us(r['dense_ms'])} | "
                     f"{fmt_us(r['ours_ms'])} | {r['path']} | {r['speedup']:.2f} | {comp} | {stock} | "
                     f"{r['err_vs_dense']:.1e} | {r['err_vs_fp32']:.1e} ({r['dense_err_vs_fp32']:.1e}) |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="llama2-7b,llama2-70b")
    ap.add_argument("--m", default="1,16,128,1024,4096,16384")
    ap.add_argument("--dtype", default="fp16,bf16")
    ap.add_argument("--no-stock", action="store_true")
    ap.add_argument("--min-speedup", type=float, default=1.05,
                    help="a sparse path must beat dense by this factor (default: the dispatcher's, as users get it)")
    ap.add_argument("--paths", default="", help="kernel families the dispatcher measures (default: dispatch.DEFAULT_PATHS)")
    ap.add_argument("--mmsp-extra", default="", help="mmsp configurations to add to the dispatcher's candidates for "
                    "this run, e.g. '4,4,2,0,1,1;4,2,1,1,1,1' (WK,RT,NT,PF[,XS,CH,PD,SK,RW,AS]; NT=1: M<=8 bucket, NT=2: M=9-16); "
                    "check them with diag_kernels.py first")
    ap.add_argument("--out", default="out/kernels")
    a = ap.parse_args()
    from llmsparse.kernels import dispatch

    try:
        paths = dispatch.check_paths(a.paths.split(",")) if a.paths else None
    except ValueError as e:
        ap.error(f"--paths: {e}")  # one line, exit 2, before anything is written
    from llmsparse.kernels import gluon_mmsp
    from llmsparse.kernels.gluon_mmsp import CONFIG_SYNTAX, parse_configs

    try:
        gluon_mmsp.add_candidates(parse_configs(a.mmsp_extra))
    except ValueError as e:  # the syntax, or a configuration kernel_consts refuses: say which and why
        ap.error(f"--mmsp-extra: expected '{CONFIG_SYNTAX};...' with NT 1 or 2, got {a.mmsp_extra!r} ({e})")
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    from llmsparse.kernels import benchmark as B

    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    rows = B.gemm_bench(B.parse_shapes(a.shapes), [int(v) for v in a.m.split(",")],
                        [B.DTYPES[d] for d in a.dtype.split(",")], stock=not a.no_stock,
                        min_speedup=a.min_speedup, log=lambda s: print(s, flush=True),
                        paths=paths)
    res = {"env": B.env_info(), "command": "python " + " ".join(sys.argv), "seconds": time.time() - t0, "gemm": rows,
           "tuning": dispatch.records_json()}
    with open(os.path.join(a.out, "gemm.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    md = md_table(rows)
    with open(os.path.join(a.out, "gemm.md"), "w") as f:
        f.write(md + "\n")
    try:
        B.plot_speedups(rows, os.path.join(a.out, "gemm.png"))
    except Exception as e:  # matplotlib missing: the table and JSON are the record
        print(f"plot skipped: {e}")
    print(f"\n{res['env'].get('gpu')} torch {torch.__version__} triton {res['env'].get('triton')} "
          f"cuSPARSELt {res['env'].get('cusparselt')}  ({res['seconds']:.0f} s)")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
