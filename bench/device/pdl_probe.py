"""Programmatic dependent launch (gluon_sp24.PDL) off, mode 1 and mode 2, timed as the dispatcher times.

    python bench/device/pdl_probe.py --out OUT.json [--shapes 4096x4096,8192x28672] [--dtype fp16,bf16]
        [--cases "1:gemvg:1,4,8,1,4;16:mmsp:4,1,2,1,1,0,0,4,1;16:mmsp:4,2,2,1,1"] [--early]

For each (dtype, shape, case M:choice): dense cuBLAS, the choice with PDL off, mode 1 (the next kernel may
launch once this one stores) and mode 2 (it may launch at once and wait on the SMs), three interleaved
rounds each (``timing.time_call``: CUDA-graph replays of back-to-back calls over weight copies that
overflow L2, fresh inputs), medians; each PDL mode's call is checked against dense-with-zeros first.
Back-to-back calls of one kernel are the case PDL helps most; in a model the kernel before a linear layer
is a norm or attention kernel, so end-to-end runs say what it is worth there. ``--early`` adds modes 1 and 2
with ``mmsp``'s early weight loads (``gluon_mmsp.EARLY``: the first weights requested before the wait). GPU
only (sm_90+).
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", default="4096x4096,8192x28672")
    ap.add_argument("--dtype", default="fp16,bf16")
    ap.add_argument("--cases", default="1:gemvg:1,4,8,1,4;16:mmsp:4,1,2,1,1,0,0,4,1;16:mmsp:4,2,2,1,1")
    ap.add_argument("--early", action="store_true")
    a = ap.parse_args(argv)
    from llmsparse.kernels.dispatch import choice_from_name

    try:
        dtypes = [{"fp16": torch.float16, "bf16": torch.bfloat16}[d] for d in a.dtype.split(",")]
        shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
        cases = [(int(c.split(":", 1)[0]), choice_from_name(c.split(":", 1)[1])) for c in a.cases.split(";") if c]
        if any(len(s) != 2 for s in shapes):
            raise ValueError(a.shapes)
    except (KeyError, ValueError, IndexError) as e:
        print(f"pdl_probe.py: --dtype fp16,bf16; --shapes OUTxIN,...; --cases M:NAME;... ({e!r})", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("pdl_probe.py needs a CUDA GPU", file=sys.stderr)
        return 2
    from llmsparse.cli.common import write_json  # written whole or not at all
    from llmsparse.kernels import gluon_mmsp, gluon_sp24
    from llmsparse.kernels.dispatch import Choice, ShapeBench, choice_name, err_limit
    from llmsparse.kernels.timing import time_call

    rows = []
    for dt, dtype in zip(a.dtype.split(","), dtypes):
        for shape, (n, k) in zip(a.shapes.split(","), shapes):
            sb = ShapeBench(n, k, dtype, torch.device("cuda"), with_cslt=False)
            for m, c in cases:
                # (key, PDL mode, early weights)
                variants = [("off", 0, 0), ("pdl1", 1, 0), ("pdl2", 2, 0)]
                if a.early and c.path == "mmsp":
                    variants += [("pdl1e", 1, 1), ("pdl2e", 2, 1)]
                errs = {}
                for key, mode, early in variants[1:]:
                    gluon_sp24.PDL, gluon_mmsp.EARLY = mode, early
                    errs[key] = sb.check(m, c)
                gluon_sp24.PDL, gluon_mmsp.EARLY = 0, 0
                t = {key: [] for key in ["dense"] + [v[0] for v in variants]}
                info = {key: {} for key, _, _ in variants[1:]}  # whether the PDL timings are graph replays
                if max(errs.values()) <= err_limit(dtype):
                    for _ in range(3):
                        t["dense"].append(time_call(*sb.args(m, Choice("dense"))))
                        for key, mode, early in variants:
                            gluon_sp24.PDL, gluon_mmsp.EARLY = mode, early
                            t[key].append(time_call(*sb.args(m, c), info=info[key] if mode else None))
                        gluon_sp24.PDL, gluon_mmsp.EARLY = 0, 0
                med = {key: statistics.median(v) * 1e3 if v else None for key, v in t.items()}
                r = {"dtype": dt, "shape": shape, "m": m, "choice": choice_name(c), "err_pdl": errs,
                     "pdl_graph": {k: v.get("graph") for k, v in info.items()},
                     "pdl_graph_error": {k: v.get("graph_error") for k, v in info.items()}, "us": med, "runs_ms": t}
                rows.append(r)
                if med["off"] is None:
                    print(f"{dt} {shape} M={m} {r['choice']}: PDL results off by {errs}", flush=True)
                else:
                    print(f"{dt} {shape} M={m} {r['choice']}: dense {med['dense']:.1f} us, " + ", ".join(
                        f"{key} {med[key]:.1f} us ({med['dense'] / med[key]:.2f}x)" for key, _, _ in variants)
                        + f"; graphs {r['pdl_graph']}", flush=True)
                write_json(a.out, {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows})
            del sb
    return 0


if __name__ == "__main__":
    sys.exit(main())
