"""Programmatic dependent launch (gluon_sp24.PDL) off, mode 1 and mode 2, timed as the dispatcher times.

    python bench/device/pdl_probe.py --out OUT.json [--shapes 4096x4096,8192x28672] [--dtype fp16,bf16]
        [--cases "1:gemvg:1,4,8,1,4;16:mmsp:4,1,2,1,1,0,0,4,1;16:mmsp:4,2,2,1,1"]

For each (dtype, shape, case M:choice): dense cuBLAS, the choice with PDL off, mode 1 (the next kernel may
launch once this one stores) and mode 2 (it may launch at once and wait on the SMs), three interleaved
rounds each (``timing.time_call``: CUDA-graph replays of back-to-back calls over weight copies that
overflow L2, fresh inputs), medians; each PDL mode's call is checked against dense-with-zeros first.
Back-to-back calls of one kernel are the case PDL helps most; in a model the kernel before a linear layer
is a norm or attention kernel, so end-to-end runs say what it is worth there. GPU only (sm_90+).
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
    from llmsparse.kernels import gluon_sp24
    from llmsparse.kernels.dispatch import Choice, ShapeBench, choice_name, err_limit
    from llmsparse.kernels.timing import time_call

    rows = []
    for dt, dtype in zip(a.dtype.split(","), dtypes):
        for shape, (n, k) in zip(a.shapes.split(","), shapes):
            sb = ShapeBench(n, k, dtype, torch.device("cuda"), with_cslt=False)
            for m, c in cases:
                errs = {}
                for mode in (1, 2):
                    gluon_sp24.PDL = mode
                    errs[mode] = sb.check(m, c)
                gluon_sp24.PDL = 0
                t = {"dense": [], "off": [], "pdl1": [], "pdl2": []}
                info = {1: {}, 2: {}}  # whether the PDL timings are graph replays (capture could refuse them)
                if max(errs.values()) <= err_limit(dtype):
                    for _ in range(3):
                        t["dense"].append(time_call(*sb.args(m, Choice("dense"))))
                        for key, mode in (("off", 0), ("pdl1", 1), ("pdl2", 2)):
                            gluon_sp24.PDL = mode
                            t[key].append(time_call(*sb.args(m, c), info=info[mode] if mode else None))
                        gluon_sp24.PDL = 0
                med = {key: statistics.median(v) * 1e3 if v else None for key, v in t.items()}
                r = {"dtype": dt, "shape": shape, "m": m, "choice": choice_name(c), "err_pdl": errs,
                     "pdl_graph": {k: v.get("graph") for k, v in info.items()},
                     "pdl_graph_error": {k: v.get("graph_error") for k, v in info.items()}, "us": med, "runs_ms": t}
                rows.append(r)
                if med["off"] is None:
                    print(f"{dt} {shape} M={m} {r['choice']}: PDL results off by {errs}", flush=True)
                else:
                    print(f"{dt} {shape} M={m} {r['choice']}: dense {med['dense']:.1f} us, off {med['off']:.1f} us "
                          f"({med['dense'] / med['off']:.2f}x), PDL 1 {med['pdl1']:.1f} us "
                          f"({med['dense'] / med['pdl1']:.2f}x), PDL 2 {med['pdl2']:.1f} us "
                          f"({med['dense'] / med['pdl2']:.2f}x); graphs {r['pdl_graph']}", flush=True)
                write_json(a.out, {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows})
            del sb
    return 0


if __name__ == "__main__":
    sys.exit(main())
