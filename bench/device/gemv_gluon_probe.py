"""Small-M kernels side by side on one GPU: dense cuBLAS and every configuration of the Triton and
Gluon kernels the dispatcher would try at that M (``--paths``; cuSPARSELt is left to bench_kernels.py),
per shape, dtype and M; each checked against dense-with-zeros first.

    python bench/device/gemv_gluon_probe.py --out $OUT/probe.json [--m 1,2,4,8] [--dtype fp16,bf16]
    python bench/device/gemv_gluon_probe.py --out $OUT/mm.json --m 16,32,64,128 --paths mmg,mm,mmb
    python bench/device/gemv_gluon_probe.py --out $OUT/sp.json --m 1,8,16 --paths gemvg,mmg,mmsp --old none

Times: CUDA-graph replays over weight copies that overflow L2 (llmsparse.kernels.timing), medians.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from llmsparse.kernels.dispatch import Choice, ShapeBench, candidates, choice_name, err_limit
from llmsparse.kernels.gluon_mmsp import CONFIG_SYNTAX, parse_configs
from llmsparse.kernels.timing import time_call
from llmsparse.kernels.triton_sp24 import GEMV_CONFIGS, excluded

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (8192, 8192), (28672, 8192), (8192, 28672)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--m", default="1,2,4,8")
    ap.add_argument("--dtype", default="fp16,bf16")
    ap.add_argument("--shapes", default="")
    ap.add_argument("--old", default="all", help="all | none | N (first N Triton gemv configs)")
    ap.add_argument("--paths", default="gemv,gemvg", help="kernel families to time (gemv, gemvg, mmg, mmsp, mm, mmb)")
    ap.add_argument("--mmsp-cfgs", default="", help="extra mmsp configurations to time, e.g. "
                    "'4,2,2,1,1,1;4,4,2,0,1,1' (WK,RT,NT,PF[,XS,CH,PD,SK,RW,AS]; untested ones: run diag_kernels.py --one first)")
    a = ap.parse_args()
    try:
        extra = [Choice("mmsp", c) for c in parse_configs(a.mmsp_cfgs)]
    except ValueError:
        ap.error(f"--mmsp-cfgs: expected '{CONFIG_SYNTAX};...', got {a.mmsp_cfgs!r}")  # one line, exit 2
    ms = [int(v) for v in a.m.split(",")]
    dts = [{"fp16": torch.float16, "bf16": torch.bfloat16}[d] for d in a.dtype.split(",")]
    shapes = [tuple(map(int, s.split("x"))) for s in a.shapes.split(",")] if a.shapes else SHAPES
    old = GEMV_CONFIGS if a.old == "all" else [] if a.old == "none" else GEMV_CONFIGS[: int(a.old)]
    rows = []
    t0 = time.time()
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for dtype in dts:
        for n, k in shapes:
            sb = ShapeBench(n, k, dtype, torch.device("cuda"), with_cslt=False)
            for m in ms:
                paths = tuple(a.paths.split(","))
                cands = [c for c in candidates(m, paths=paths, dtype=dtype, in_features=k) if c.path != "gemv"]
                if k % 128 == 0 and m <= 16:
                    cands += [c for c in extra if not excluded(choice_name(c), dtype)]
                if "gemv" in paths and m <= 8:
                    cands = [Choice("gemv", c) for c in old] + cands
                dense = [time_call(*sb.args(m, Choice("dense")))]
                res = {}
                for c in cands:
                    name = choice_name(c)
                    try:
                        err = sb.check(m, c)
                    except Exception as e:
                        res[name] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                        continue
                    if not err <= err_limit(dtype):
                        res[name] = {"err": err, "bad": True}
                        continue
                    res[name] = {"err": err, "ms": time_call(*sb.args(m, c))}
                dense.append(time_call(*sb.args(m, Choice("dense"))))
                d = statistics.median(dense)
                best = {}
                for p in ("gemv:", "gemvg:", "mmg:", "mmsp:", "mm:", "mmb:"):
                    ok = [(v["ms"], nm) for nm, v in res.items() if nm.startswith(p) and "ms" in v]
                    if ok:
                        best[p[:-1]] = min(ok)
                row = {"dtype": str(dtype)[6:], "out": n, "in": k, "M": m, "dense_ms": dense, "cands": res,
                       "best": {p: {"name": nm, "ms": t, "speedup": d / t} for p, (t, nm) in best.items()}}
                rows.append(row)
                print(row["dtype"], f"{n}x{k}", "M", m, f"dense {d * 1e3:.1f}us",
                      " ".join(f"{p} {v['name']} {v['ms'] * 1e3:.1f}us {v['speedup']:.2f}x" for p, v in row["best"].items()),
                      flush=True)
                with open(a.out, "w") as f:
                    json.dump({"info": info, "rows": rows, "elapsed_s": time.time() - t0}, f, indent=1)
            del sb
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
