"""Check benchmark result files against the 2:4 kernel issue's targets (#3), so that "met" is read off measured rows
rather than remembered:

    python bench/targets.py bench/results/gemm_m1_16_h100_s23.json bench/results/gemm_cutlass_*_s24.json \\
        bench/results/e2e_fp16_b1_causal_interleave_h100_s22.json [--gpu H100] [--slower-tol 0.03]

Inputs are the JSON files of ``bench/bench_kernels.py`` / ``llmsparse bench`` (a ``gemm`` list) and of
``bench/bench_e2e.py`` (``decode_speedup``); only files whose ``env.gpu`` contains ``--gpu`` count (the issue's
targets are for one H100); the others are named and skipped.

GEMM rows, keyed (dtype, out x in, M); a row measured in several files is decided by its latest measurement (the
file's ``env.time``), and the count of measurements that met it is shown beside it:

- M = 1 and M = 16: at least 1.6x dense (``speedup``: the eager layer against dense ``F.linear``);
- M = 4096: at least 1.3x;
- every M of the issue's list (1, 16, 128, 1024, 4096, 16384; all needed): not slower than dense, read as
  ``speedup >= 1 - slower_tol`` (where the dispatcher keeps dense, both sides run the same cuBLAS call and their
  ratio is timing noise; 3% by default);
- every row: ``err_vs_dense <= 1e-3`` (the issue's fp16 bound; applied to bf16 too) and every output written.

The speed targets need the six Llama-2 shapes (7B: 4096x4096, 11008x4096, 4096x11008; 70B: 8192x8192, 28672x8192,
8192x28672) in fp16 and bf16; missing rows are listed and count as not met. End to end (per dtype present): a
Llama-2-7B-shaped model (all its layers), batch 1, 128 generated tokens: decode at least 1.4x; a 4096-token prefill
at least 1.2x.

Exit status: 0 every target met, 1 some target missed or not measured, 2 unreadable input (one line on stderr).
"""
from __future__ import annotations

import argparse
import json
import sys

from llmsparse.kernels.benchmark import DEFAULT_MS, SHAPE_SETS

SHAPES = tuple(SHAPE_SETS["llama2-7b"] + SHAPE_SETS["llama2-70b"])  # the six Llama-2 shapes of bench_kernels.py
DTYPES = ("float16", "bfloat16")  # as the result rows spell them
SPEED = {1: 1.6, 16: 1.6, 4096: 1.3}  # M -> the least speedup over dense
ALL_M = DEFAULT_MS  # the benchmark Ms (bench_kernels/llmsparse bench's default): none may be slower than dense
ERR_MAX = 1e-3
E2E = {"decode": 1.4, "prefill": 1.2}


class BadInput(Exception):
    pass


def read(paths: list[str], gpu: str) -> tuple[dict, list, list[str]]:
    """(gemm measurements by row key, e2e results, skipped-file notes) from the files of ``gpu``."""
    gemm: dict[tuple, list[dict]] = {}
    e2e: list[dict] = []
    skipped = []
    for p in paths:
        try:
            with open(p) as f:
                d = json.load(f)
        except (OSError, ValueError) as e:
            raise BadInput(f"{p}: cannot read a JSON result ({type(e).__name__}: {e})") from None
        if not isinstance(d, dict) or ("gemm" not in d and "decode_speedup" not in d):
            raise BadInput(f"{p}: neither a bench_kernels result (no 'gemm') nor a bench_e2e one (no 'decode_speedup')")
        env = d.get("env") or {}
        when = env.get("time", "")
        rows = []
        for r in d.get("gemm", ()):  # checked whichever GPU the file is of
            try:
                key = (r["dtype"], int(r["out"]), int(r["inp"]), int(r["M"]))
                rows.append((key, {"file": p, "time": when, "speedup": float(r["speedup"]), "path": r.get("path"),
                                   "err": r.get("err_vs_dense"), "written": r.get("all_written")}))
            except KeyError as e:
                raise BadInput(f"{p}: a gemm row lacks {e}") from None
            except (TypeError, ValueError) as e:
                raise BadInput(f"{p}: a gemm row has a non-number ({e})") from None
        name = env.get("gpu") or "no GPU named"
        if gpu.lower() not in name.lower():
            skipped.append(f"{p} ({name})")
            continue
        for key, m in rows:
            gemm.setdefault(key, []).append(m)
        if "decode_speedup" in d:
            e2e.append(dict(d, file=p, time=when))
    for ms in gemm.values():
        ms.sort(key=lambda m: m["time"])
    return gemm, e2e, skipped


def _row(key: tuple) -> str:
    dtype, n, k, m = key
    return f"{'fp16' if dtype == 'float16' else 'bf16' if dtype == 'bfloat16' else dtype} {n}x{k} M={m}"


def _required(ms) -> list[tuple]:
    """The row keys a target needs: every shape x dtype at each M of ``ms``."""
    return [(dt, n, k, m) for dt in DTYPES for n, k in SHAPES for m in ms]


def check(gemm: dict, e2e: list, slower_tol: float = 0.03) -> list[dict]:
    """One entry per target: name, met (bool), and lines saying which rows decided it."""
    out = []
    for m, least in SPEED.items():
        want = _required((m,))
        missing = [_row(w) for w in want if w not in gemm]
        low, lines = [], []
        for w in want:
            if w in gemm:
                ms = gemm[w]
                last = ms[-1]
                ok = last["speedup"] >= least
                n_ok = sum(x["speedup"] >= least for x in ms)
                lines.append(f"{_row(w)}: {last['speedup']:.2f}x ({last['path']}) "
                             f"{'ok' if ok else 'MISSED'}; {n_ok} of {len(ms)} measurements >= {least}x")
                if not ok:
                    low.append(_row(w))
        lines += [f"{r}: not measured" for r in missing]
        out.append({"target": f"M = {m}: >= {least}x dense, 6 shapes x fp16/bf16", "met": not low and not missing,
                    "lines": lines, "missed": low + missing})
    slow = [(k, ms[-1]) for k, ms in sorted(gemm.items()) if ms[-1]["speedup"] < 1 - slower_tol]
    missing = [_row(w) for w in _required(ALL_M) if w not in gemm]
    out.append({"target": f"no M slower than dense (latest speedup >= {1 - slower_tol:.2f}x), 6 shapes x "
                          f"fp16/bf16 x M = {', '.join(map(str, ALL_M))} ({len(gemm)} rows measured)",
                "met": not slow and not missing,
                "lines": [f"{_row(k)}: {m['speedup']:.2f}x ({m['path']}, {m['file']})" for k, m in slow]
                + [f"{r}: not measured" for r in missing], "missed": [_row(k) for k, _ in slow] + missing})
    bad = []
    for k, ms in sorted(gemm.items()):
        for m in ms:
            err = m["err"]
            if err is None or not err <= ERR_MAX or m["written"] is False:
                bad.append(f"{_row(k)}: err {err} written {m['written']} ({m['file']})")
    n_meas = sum(len(ms) for ms in gemm.values())
    out.append({"target": f"err vs dense-with-zeros <= {ERR_MAX:g}, every output written ({n_meas} measurements)",
                "met": not bad and bool(gemm), "lines": bad or ([] if gemm else ["no GEMM rows"]), "missed": bad})
    runs = [r for r in e2e if r.get("batch", 1) == 1 and r.get("gen_tokens") == 128
            and r.get("prompt_len") == 4096 and "7b" in str(r.get("model", "")).lower() and r.get("layers") is None]
    for what, least in E2E.items():
        lines, missed = [], []
        for dt in sorted({r.get("dtype") for r in runs}):
            r = max((x for x in runs if x.get("dtype") == dt), key=lambda x: x["time"])
            s = r.get(f"{what}_speedup")
            ok = s is not None and s >= least
            lines.append(f"{dt}: {s:.2f}x ({r['file']})" if s is not None else f"{dt}: no {what} ({r['file']})")
            if not ok:
                missed.append(dt)
        none = "no batch-1, 128-token, 4096-prefill run of the whole 7B model given"
        out.append({"target": f"end to end, 7B shapes, batch 1: {what} >= {least}x dense",
                    "met": bool(runs) and not missed, "lines": lines or [none], "missed": missed})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="JSON results of bench_kernels.py / llmsparse bench and bench_e2e.py")
    ap.add_argument("--gpu", default="H100", help="count only files whose env.gpu contains this (default H100)")
    ap.add_argument("--slower-tol", type=float, default=0.03,
                    help="a speedup down to 1 - this still counts as not slower than dense (default 0.03)")
    a = ap.parse_args(argv)
    if not 0 <= a.slower_tol < 1:
        print(f"error: --slower-tol must be in [0, 1), got {a.slower_tol}", file=sys.stderr)
        return 2
    try:
        gemm, e2e, skipped = read(a.files, a.gpu)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s in skipped:
        print(f"skipped (not {a.gpu}): {s}")
    results = check(gemm, e2e, a.slower_tol)
    for t in results:
        print(f"{'MET   ' if t['met'] else 'MISSED'} {t['target']}")
        for line in t["lines"]:
            print(f"         {line}")
    return 0 if all(t["met"] for t in results) else 1


if __name__ == "__main__":
    sys.exit(main())
