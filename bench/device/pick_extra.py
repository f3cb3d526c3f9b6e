"""Pick the experimental mmsp configurations worth adding to the dispatcher, from a probe JSON.

    python bench/device/pick_extra.py PROBE.json "CFG;CFG;..." [--margin 1.03]

CFG lists the experimental configurations (the ``--mmsp-cfgs`` of gemv_gluon_probe.py, or the ``--mo`` of
mo_probe.py, whose rows name them ``mo:CFG``; there every MO/XL configuration not in CFG is a base). For every row
(dtype, shape, M) of the probe, the fastest experimental configuration is compared with the fastest
other one; those that win some row by ``margin`` or more are printed, ``;``-separated (the format of
``bench_kernels.py --mmsp-extra``), after a per-row table on stderr. Configurations with an error above
1e-3 never count.
"""
from __future__ import annotations

import argparse
import json
import sys


def _timed(r: dict) -> dict[str, float]:
    """{candidate: ms} of one probe row whose error is at most 1e-3, candidates named ``path:CFG``."""
    if "cands" in r:  # gemv_gluon_probe.py
        return {k: v["ms"] for k, v in r["cands"].items() if v.get("ms") and v.get("err", 1.0) <= 1e-3}
    # mo_probe.py: microseconds, "mo:CFG" for its own configurations
    return {("mmsp:" + k[3:] if k.startswith("mo:") else k): us * 1e-3 for k, us in r["us"].items()
            if k == "dense" or r["err"].get(k, 1.0) <= 1e-3}


def pick(rows: list[dict], cfgs: list[str], margin: float) -> tuple[list[str], list[str]]:
    new = {"mmsp:" + c for c in cfgs}
    winners: list[str] = []
    lines = []
    for r in rows:
        ok = _timed(r)
        base = {k: t for k, t in ok.items() if k not in new}
        exp = {k: t for k, t in ok.items() if k in new}
        if not base or not exp:
            continue
        kb, ke = min(base, key=base.get), min(exp, key=exp.get)
        gain = base[kb] / exp[ke]
        shape, m = (f"{r['out']}x{r['in']}", r["M"]) if "cands" in r else (r["shape"], r["m"])
        lines.append(f"{r['dtype']:8s} {shape} M={m:<3d} base {kb} {base[kb]*1e3:.1f} us"
                     f"  new {ke} {exp[ke]*1e3:.1f} us  {gain:.3f}x")
        if gain >= margin and ke not in winners:
            winners.append(ke)
    return [w.split(":", 1)[1] for w in winners], lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe")
    ap.add_argument("cfgs")
    ap.add_argument("--margin", type=float, default=1.03)
    a = ap.parse_args(argv)
    try:
        with open(a.probe) as f:
            rows = json.load(f)["rows"]
    except (OSError, ValueError, KeyError) as e:
        print(f"error: cannot read probe {a.probe}: {e}", file=sys.stderr)
        return 2
    try:
        winners, lines = pick(rows, [c for c in a.cfgs.split(";") if c], a.margin)
    except (KeyError, TypeError, AttributeError) as e:
        print(f"error: {a.probe}: rows of neither gemv_gluon_probe.py nor mo_probe.py ({type(e).__name__}: {e})",
              file=sys.stderr)
        return 2
    print("\n".join(lines), file=sys.stderr)
    print(";".join(winners))
    return 0


if __name__ == "__main__":
    sys.exit(main())
