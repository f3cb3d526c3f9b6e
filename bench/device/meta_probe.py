"""A/B of the mmsp metadata build: byte permutes (``gluon_mmsp.META = 1``, :func:`_meta4`) against shifts and
masks (``0``, :func:`_nib4`), the same configurations in the same process.

    python bench/device/meta_probe.py --out OUT.json [--m 1,8,16] [--dtype fp16,bf16] [--shapes llama2-7b,llama2-70b]

For every (dtype, shape, M) and every configuration of the dispatcher's ``MMSP_CONFIGS`` at that M, both
builds are checked (against dense-with-zeros, and against each other: the metadata words are the same, so the
outputs must be bit for bit equal), then timed alternately (``rounds`` times each, CUDA-graph replays,
inputs rotated past L2, medians) beside dense cuBLAS. Prints per row the best configuration of each build
and its speedup over dense; writes every timing as JSON. GPU only.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--m", default="1,8,16")
    ap.add_argument("--dtype", default="fp16,bf16")
    ap.add_argument("--shapes", default="llama2-7b,llama2-70b")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    from llmsparse.kernels.benchmark import parse_shapes

    try:
        ms = [int(v) for v in a.m.split(",")]
        dts = [{"fp16": torch.float16, "bf16": torch.bfloat16}[d] for d in a.dtype.split(",")]
        shapes = parse_shapes(a.shapes)
        assert all(1 <= m <= 16 for m in ms) and a.rounds >= 1
    except (ValueError, KeyError, AssertionError):
        print("meta_probe.py: --m values in 1..16, --dtype fp16,bf16, --shapes as llmsparse bench, --rounds >= 1",
              file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("meta_probe.py needs a CUDA GPU", file=sys.stderr)
        return 2
    from llmsparse.cli.common import write_json
    from llmsparse.kernels import gluon_mmsp as g
    from llmsparse.kernels.dispatch import Choice, ShapeBench, err_limit, run_choice
    from llmsparse.kernels.timing import time_call

    def mode(v: int):
        g.META = v

    rows = []
    for dtype in dts:
        for n, k in shapes:
            sb = ShapeBench(n, k, dtype, torch.device("cuda"), with_cslt=False)
            s0 = sb.sets[0]
            for m in ms:
                x = torch.randn(m, k, device="cuda", dtype=dtype)
                dense, res = [], {}
                for cfg in g.mmsp_configs_for(m):
                    c = Choice("mmsp", cfg)
                    outs = {}
                    for v in (0, 1):
                        mode(v)
                        outs[v] = run_choice(c, x, values=s0["values"], meta=s0["meta"], dense=s0["dense"],
                                             bias=None, out_features=n)
                    mode(1)
                    err = sb.check(m, c)
                    same = bool(torch.equal(outs[0], outs[1]))
                    res[str(cfg)] = {"err": err, "bitwise_equal": same, "ms": {0: [], 1: []}}
                    if not same or not err <= err_limit(dtype):
                        res[str(cfg)]["bad"] = True
                for _ in range(a.rounds):
                    dense.append(time_call(*sb.args(m, Choice("dense"))))
                    for cfg in g.mmsp_configs_for(m):
                        r = res[str(cfg)]
                        if r.get("bad"):
                            continue
                        for v in (0, 1):
                            mode(v)
                            r["ms"][v].append(time_call(*sb.args(m, Choice("mmsp", cfg))))
                mode(1)
                d = statistics.median(dense)
                best = {}
                for v in (0, 1):
                    ok = [(statistics.median(r["ms"][v]), c) for c, r in res.items() if r["ms"][v]]
                    if ok:
                        t, c = min(ok)
                        best[v] = {"cfg": c, "ms": t, "speedup": d / t}
                row = {"dtype": str(dtype)[6:], "out": n, "in": k, "M": m, "dense_ms": dense, "cands": res, "best": best}
                rows.append(row)
                bad = [c for c, r in res.items() if r.get("bad")]
                print(f"{row['dtype']:8s} {n}x{k} M {m:2d} dense {d * 1e3:.1f}us  "
                      + "  ".join(f"META{v} {b['cfg']} {b['ms'] * 1e3:.1f}us {b['speedup']:.2f}x" for v, b in best.items())
                      + (f"  new/old {best[1]['ms'] / best[0]['ms']:.3f}" if len(best) == 2 else "")
                      + (f"  BAD {bad}" if bad else ""), flush=True)
                write_json(a.out, {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows})
            del sb
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
