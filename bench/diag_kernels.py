"""Run every kernel configuration once, each in its own process, and report which ones fault.

A CUDA fault (illegal instruction or address) kills the whole CUDA context, so the dispatcher
cannot skip a faulting configuration in-process. This script finds them on a GPU:

    python bench/diag_kernels.py --out out/diag
    export LLMSPARSE_KERNEL_EXCLUDE="$(cat out/diag/exclude.txt)"

Every kernel family is covered (``dispatch.ALL_PATHS``).
Each configuration runs on two Llama-2-7B shapes (4096x4096 and 4096x11008, so both the
EVEN_K and the masked-K code), fp16 and bf16, against dense-with-zeros F.linear on fresh inputs
into a NaN-poisoned output.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SHAPES = [(4096, 4096), (4096, 11008)]


def parse(name: str):
    from llmsparse.kernels.dispatch import choice_from_name

    c = choice_from_name(name)
    if c.path in ("mm", "mmb"):
        return c, c.cfg[0]
    if c.path in ("gemv", "gemvg"):  # M = 4 and 7
        return c, 4
    if c.path in ("mmg", "mmsp"):  # M = 1 and 16
        return c, 16
    if c.path == "cslt":
        return c, None
    if c.path == "cutlass":  # M = 128 and 131
        return c, 128
    raise ValueError(f"unknown kernel configuration {name!r}")


def one(name: str, dtype_s: str) -> int:
    import torch
    import torch.nn.functional as F

    from llmsparse.formats.nm import pack_nm
    from llmsparse.kernels.cslt import compress, search_alg
    from llmsparse.kernels.dispatch import random_24, run_choice

    dtype = getattr(torch, dtype_s)
    errs = []
    for (n, k) in SHAPES:
        w = random_24(n, k, dtype, "cuda")
        v, m = pack_nm(w, 2, 4)
        if name == "cslt_search":
            for M in (16, 4096):
                a = search_alg(compress(w), torch.randn(M, k, device="cuda", dtype=dtype))
                torch.cuda.synchronize()
                errs.append(f"alg{a}@{M}")
            continue
        c, M0 = parse(name)
        cp = compress(w) if c.path == "cslt" else None
        if c.path == "cutlass":
            from llmsparse.kernels import cutlass_sp24

            ct = cutlass_sp24.compress(w)
        else:
            ct = None
        for M in (([1, 16] if M0 == 16 else [M0, M0 + 3]) if M0 else [16, 4096]):
            x = torch.randn(M, k, device="cuda", dtype=dtype)
            ref = F.linear(x, w).float()
            p = torch.full((M * n,), float("nan"), device="cuda", dtype=dtype)
            del p
            y = run_choice(c, x, values=v, meta=m, dense=w, cslt_packed=cp, bias=None, out_features=n,
                           cutlass=ct).float()
            torch.cuda.synchronize()
            e = float((y - ref).norm() / ref.norm())
            errs.append(e if torch.isfinite(y).all() else float("nan"))
    print("RESULT", json.dumps(errs))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out/diag")
    ap.add_argument("--one", default=None)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--only", default="", help="space-separated name prefixes to test (default: all)")
    ap.add_argument("--dtypes", default="float16,bfloat16")
    ap.add_argument("--extra", default="", help="space-separated configuration names to run besides the "
                    "dispatcher's candidates (e.g. 'mmsp:4,4,2,0,1,1')")
    a = ap.parse_args()
    if a.one:
        return one(a.one, a.dtype)
    from llmsparse.kernels.dispatch import ALL_PATHS, CSLT_ALGS_LARGE, candidates, choice_name

    names = set()
    for m in (1, 4, 16, 32, 64, 128):
        names |= {choice_name(c) for c in candidates(m, cslt_algs=CSLT_ALGS_LARGE, paths=ALL_PATHS)}
    names = sorted(names) + ["cslt_search"]
    if a.only:
        names = [n for n in names if any(n.startswith(p) for p in a.only.split())]
    names += [n for n in a.extra.split() if n not in names]
    jobs = [(nm, d) for d in a.dtypes.split(",") for nm in names]
    os.makedirs(a.out, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    results, running, t0 = {}, [], time.time()
    while jobs or running:
        while jobs and len(running) < a.jobs:
            nm, d = jobs.pop(0)
            p = subprocess.Popen([sys.executable, __file__, "--one", nm, "--dtype", d], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            running.append((nm, d, p, time.time()))
        for item in list(running):
            nm, d, p, ts = item
            if p.poll() is None and time.time() - ts < 120:
                continue
            if p.poll() is None:
                p.kill()
            out = p.communicate()[0]
            line = [ln for ln in out.splitlines() if ln.startswith("RESULT")]
            results[f"{d}/{nm}"] = {"rc": p.returncode, "errs": json.loads(line[0][7:]) if line else None,
                                    "tail": "" if line else out[-600:]}
            running.remove(item)
        time.sleep(0.2)
    bad = sorted(k for k, r in results.items() if r["rc"] != 0 or r["errs"] is None or any(
        (isinstance(e, float) and not (e < (2e-3 if k.startswith("float16") else 1.5e-2))) for e in r["errs"]))
    with open(os.path.join(a.out, "diag.json"), "w") as f:
        json.dump({"results": results, "bad": bad, "seconds": time.time() - t0}, f, indent=1)
    with open(os.path.join(a.out, "exclude.txt"), "w") as f:
        f.write(" ".join(bad))
    print(f"{len(results)} configs in {time.time() - t0:.0f} s; bad: {bad}")
    for k in bad:
        print(k, results[k]["rc"], results[k]["errs"], results[k]["tail"][-300:].replace("\n", " | "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
