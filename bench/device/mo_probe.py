"""The MMA-order copy (``gluon_mmsp.mma_order``, MO configurations) against the row-major kernels, at M = 8 / 16.

    python bench/device/mo_probe.py --out OUT.json [--shapes 4096x4096,...] [--dtype bf16,fp16] [--m 16]
        [--mo "4,2,2,1,0,0,0,1,0,0,0,0,1;..."]

MO >= 2 (fourteenth session): x through a shared-memory ring of MO stages read by ldmatrix, the weights from
``mma_order(order=2)``'s copy.

The MO configurations read a second copy of the packed weights laid out in the order the sparse MMAs take
their operands (no operand moves, no metadata rebuilding; 103 instead of 229 instructions in the M = 16 loop
and 134-176 instead of 253 registers, offline). For each (dtype, shape, M): dense cuBLAS, every ``mmsp``
configuration of the dispatcher, and the MO list, three interleaved rounds as the dispatcher times
(``timing.time_call``: CUDA-graph replays over weight copies that overflow L2, fresh inputs), medians;
each candidate is checked against dense-with-zeros first (errors above 1e-3 are not timed). GPU only.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

MO_DEFAULT = ("4,2,2,1,0,0,0,1,0,0,0,0,1;4,2,2,2,0,0,0,1,0,0,0,0,1;2,2,2,1,0,0,0,1,0,0,0,0,1;8,2,2,1,0,0,0,1,0,0,0,0,1;"
              "4,1,2,1,0,0,0,1,0,0,0,0,1;4,1,2,2,0,0,0,1,0,0,0,0,1;4,1,2,1,0,0,0,4,1,0,0,0,1;4,1,2,2,0,0,0,4,1,0,0,0,1;"
              "4,2,2,1,0,0,0,2,1,0,0,0,1;4,2,2,1,0,0,0,4,1,0,1,0,1;4,2,2,1,0,0,0,2,0,0,0,0,1;4,1,2,3,0,0,0,1,0,0,0,0,1;"
              "2,4,2,0,0,0,0,1,0,0,0,0,1;4,1,1,1,0,0,0,1,0,0,0,0,1;4,2,1,1,0,0,0,1,0,0,0,0,1;4,2,1,2,0,0,0,1,0,0,0,0,1;"
              "8,2,1,1,0,0,0,1,0,0,0,0,1;4,1,2,1,1,0,0,4,1,0,0,0,1;4,1,2,2,1,0,0,4,1,0,0,0,1;4,2,2,1,1,0,0,1,0,0,0,0,1;"
              "4,1,2,1,1,0,0,1,0,0,0,0,1;4,2,2,1,1,0,0,2,1,0,0,0,1;4,1,2,1,1,0,0,2,1,0,0,0,1;4,2,2,2,1,0,0,1,0,0,0,0,1;"
              "4,2,2,1,1,0,0,4,1,0,1,0,1;4,1,2,1,1,0,0,8,1,0,1,0,1;4,1,2,2,1,0,0,4,1,0,1,0,1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", default="4096x4096,11008x4096,4096x11008,8192x8192,28672x8192,8192x28672")
    ap.add_argument("--dtype", default="bf16,fp16")
    ap.add_argument("--m", default="16")
    ap.add_argument("--mo", default=MO_DEFAULT)
    a = ap.parse_args(argv)
    from llmsparse.kernels import gluon_mmsp as g
    from llmsparse.kernels import gluon_sp24

    try:
        dtypes = [{"fp16": torch.float16, "bf16": torch.bfloat16}[d] for d in a.dtype.split(",")]
        shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
        ms = [int(v) for v in a.m.split(",")]
        mo = g.parse_configs(a.mo)
        if any(len(s) != 2 for s in shapes) or any(len(c) < 13 or not c[12] for c in mo):
            raise ValueError("shapes OUTxIN; MO configurations have 13 elements, the last 1")
    except (KeyError, ValueError) as e:
        print(f"mo_probe.py: --dtype bf16,fp16; --shapes OUTxIN,...; --m 8,16; --mo CFG;... ({e})", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("mo_probe.py needs a CUDA GPU", file=sys.stderr)
        return 2
    from llmsparse.cli.common import write_json  # written whole or not at all
    from llmsparse.kernels.dispatch import Choice, ShapeBench, choice_name, err_limit
    from llmsparse.kernels.timing import time_call

    rows = []
    for dt, dtype in zip(a.dtype.split(","), dtypes):
        for (n, k) in shapes:
            # the copies the MO configurations read (ShapeBench.run hands each its own)
            sb = ShapeBench(n, k, dtype, torch.device("cuda"), with_cslt=False, mo_orders={g.mo_order(c) for c in mo})
            for m in ms:
                std = [Choice("mmsp", c) for c in g.mmsp_configs_for(m)]
                if m <= 8:  # the decode kernel the dispatcher picks at M = 1: can an MO copy alone serve it?
                    std += [Choice("gemvg", c) for c in gluon_sp24.configs_for(m)]
                mos = [c for c in mo if (c[2] == 1) == (m <= 8)]
                cands = {"dense": sb.args(m, Choice("dense"))}
                errs = {}
                for c in std:
                    errs[choice_name(c)] = sb.check(m, c)
                    cands[choice_name(c)] = sb.args(m, c)
                mo_names = {"mo:" + ",".join(map(str, c)): c for c in mos}
                for name, c in mo_names.items():
                    try:
                        errs[name] = sb.check(m, Choice("mmsp", c))
                    except Exception as e:  # noqa: BLE001 - a configuration that fails is reported, not fatal
                        print(f"{name}: {type(e).__name__}: {str(e)[:200]}", flush=True)
                        errs[name] = float("inf")
                    cands[name] = sb.args(m, Choice("mmsp", c))
                ok = [key for key in cands if key == "dense" or errs.get(key, 1.0) <= err_limit(dtype)]
                t = {key: [] for key in ok}
                for _ in range(3):
                    for key in ok:
                        t[key].append(time_call(*cands[key]))
                med = {key: statistics.median(v) * 1e3 for key, v in t.items()}
                best_std = min((key for key in med if key.startswith(("mmsp:", "gemvg:"))), key=med.get, default=None)
                best_mo = min((key for key in med if key.startswith("mo:")), key=med.get, default=None)
                by_order = {o: min((name for name, c in mo_names.items() if name in med and g.mo_order(c) == o),
                                   key=med.get, default=None) for o in (1, 2)}
                r = {"dtype": dt, "shape": f"{n}x{k}", "m": m, "us": med, "err": errs, "best_std": best_std,
                     "best_mo": best_mo, "best_mo1": by_order[1], "best_xl": by_order[2]}
                rows.append(r)
                d = med["dense"]
                print(f"{dt} {n}x{k} M={m}: dense {d:.1f} us; best row-major {best_std} "
                      f"{med.get(best_std, float('nan')):.1f} us ({d / med.get(best_std, float('nan')):.2f}x); "
                      f"best MO {best_mo} {med.get(best_mo, float('nan')):.1f} us "
                      f"({d / med.get(best_mo, float('nan')):.2f}x)"
                      + "".join(f"; best {lab} {key[3:]} {med[key]:.1f} us ({d / med[key]:.2f}x)"
                                for lab, key in (("MO=1", by_order[1]), ("XL", by_order[2])) if key), flush=True)
                write_json(a.out, {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows})
            del sb
    return 0


if __name__ == "__main__":
    sys.exit(main())
