"""A/B of the packed weights' cache policy in ``mmsp`` (``gluon_mmsp.EVICT``: 0 plain loads, 1 L1 evict-first, the
default since the twenty-second session; 2 ``.cg``; 3 the values L1 no-allocate), the dispatcher's configurations at
each M, in one process.

    python bench/device/evict_probe.py --out OUT.json [--m 16] [--dtype fp16,bf16] [--shapes llama2-7b,llama2-70b]
        [--modes 0,1,2,3] [--rounds 5] [--extra "4,2,2,2,0,0,0,2,1,0,0,0,4;..."]

For every (dtype, shape, M) and every mmsp configuration a default layer on Hopper is tuned over at that M (the MO ones of
``gluon_mmsp.MO_STORAGE_ORDER``, on that ``mma_order`` copy), each mode is checked against dense-with-zeros and against mode 0
(the same loads with another cache hint: the outputs must be bit for bit equal), then all modes and dense cuBLAS are
timed in turn for ``rounds`` rounds (CUDA-graph replays, weights rotated past L2, medians). Prints per row the best
configuration of each mode and its speedup over dense; writes every timing as JSON. ``--extra``: more configurations
of the same copy order (``gluon_mmsp.CONFIG_SYNTAX``, ``;``-separated), timed beside them with the default policy
(``gluon_mmsp.EVICT`` at start: evict-first since the twenty-second session) only. GPU only.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--m", default="16")
    ap.add_argument("--dtype", default="fp16,bf16")
    ap.add_argument("--shapes", default="llama2-7b,llama2-70b")
    ap.add_argument("--modes", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--extra", default="")
    a = ap.parse_args(argv)
    from llmsparse.kernels.benchmark import parse_shapes

    try:
        ms = [int(v) for v in a.m.split(",")]
        dts = [{"fp16": torch.float16, "bf16": torch.bfloat16}[d] for d in a.dtype.split(",")]
        shapes = parse_shapes(a.shapes)
        modes = [int(v) for v in a.modes.split(",")]
        from llmsparse.kernels import gluon_mmsp as g

        extra = [tuple(int(v) for v in c.split(",")) for c in a.extra.split(";") if c.strip()]
        for c in extra:
            g.kernel_consts(c, False)
            assert g.mo_order(c) == g.MO_STORAGE_ORDER
        assert all(1 <= m <= 64 for m in ms) and a.rounds >= 1 and modes and set(modes) <= {0, 1, 2, 3}
    except (ValueError, KeyError, AssertionError):
        print("evict_probe.py: --m values in 1..64, --dtype fp16,bf16, --shapes as llmsparse bench, --modes from "
              "0,1,2,3, --rounds >= 1, --extra configurations of the default copy order", file=sys.stderr)
        return 2
    except ImportError:
        print("evict_probe.py needs Triton with Gluon", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("evict_probe.py needs a CUDA GPU", file=sys.stderr)
        return 2
    from llmsparse.cli.common import write_json
    from llmsparse.kernels.dispatch import Choice, ShapeBench, err_limit
    from llmsparse.kernels.timing import time_call

    base = g.EVICT
    rows = []
    for dtype in dts:
        for n, k in shapes:
            sb = ShapeBench(n, k, dtype, torch.device("cuda"), with_cslt=False, mo_orders=(g.MO_STORAGE_ORDER,))
            s0 = sb.sets[0]
            for m in ms:
                x = torch.randn(m, k, device="cuda", dtype=dtype)
                cfgs = [c for c in g.mo_configs_for(m) if g.mo_order(c) == g.MO_STORAGE_ORDER] + extra
                res, dense = {}, []
                cmodes = {cfg: ([base] if cfg in extra else modes) for cfg in cfgs}
                for cfg in cfgs:
                    c = Choice("mmsp", cfg)
                    r = res[str(cfg)] = {"err": {}, "bitwise_equal": {}, "ms": {v: [] for v in cmodes[cfg]}}
                    ref = None
                    for v in [0] + [v for v in cmodes[cfg] if v != 0]:
                        g.EVICT = v
                        out = sb.run(c, x, s0)
                        ref = out.clone() if v == 0 else ref
                        r["bitwise_equal"][v] = bool(torch.equal(out, ref))
                        r["err"][v] = sb.check(m, c)
                        if not (r["bitwise_equal"][v] and r["err"][v] <= err_limit(dtype)):
                            r["bad"] = True
                    g.EVICT = base
                for _ in range(a.rounds):
                    dense.append(time_call(*sb.args(m, Choice("dense"))))
                    for cfg in cfgs:
                        r = res[str(cfg)]
                        if r.get("bad"):
                            continue
                        for v in cmodes[cfg]:
                            g.EVICT = v
                            r["ms"][v].append(time_call(*sb.args(m, Choice("mmsp", cfg))))
                    g.EVICT = base
                d = statistics.median(dense)
                best = {}
                for v in modes:
                    ok = [(statistics.median(res[str(c)]["ms"][v]), str(c)) for c in cfgs
                          if c not in extra and res[str(c)]["ms"].get(v)]
                    if ok:
                        t, c = min(ok)
                        best[v] = {"cfg": c, "ms": t, "speedup": d / t}
                row = {"dtype": str(dtype)[6:], "out": n, "in": k, "M": m, "dense_ms": dense, "cands": res,
                       "best": best}
                ok = [(statistics.median(res[str(c)]["ms"][base]), str(c)) for c in extra if res[str(c)]["ms"].get(base)]
                if ok:
                    t, c = min(ok)
                    row["best_extra"] = {"cfg": c, "ms": t, "speedup": d / t}
                rows.append(row)
                bad = [c for c, r in res.items() if r.get("bad")]
                print(f"{row['dtype']:8s} {n}x{k} M {m:2d} dense {d * 1e3:.1f}us  "
                      + "  ".join(f"EV{v} {b['cfg']} {b['ms'] * 1e3:.2f}us {b['speedup']:.3f}x" for v, b in best.items())
                      + (f"  extra {row['best_extra']['cfg']} {row['best_extra']['ms'] * 1e3:.2f}us "
                         f"{row['best_extra']['speedup']:.3f}x" if "best_extra" in row else "")
                      + (f"  BAD {bad}" if bad else ""), flush=True)
                write_json(a.out, {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                   "command": " ".join(sys.argv), "rows": rows})
            del sb
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
