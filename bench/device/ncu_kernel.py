"""Run one kernel configuration (or dense cuBLAS) a few times on fresh 2:4 weights, for a profiler.

    ncu --profile-from-start off --launch-skip 2 --launch-count 1 --section SpeedOfLight \
        --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
        python bench/device/ncu_kernel.py mmsp:4,2,2,1,1 8192x28672 16 bf16

Only the repeated calls run inside cudaProfilerStart/Stop (``--profile-from-start off`` skips set-up).

The name is a dispatcher choice name (``mmsp:4,2,2,1,1``, ``gemvg:...``) or ``dense``; the call is
checked against dense-with-zeros ``F.linear`` first (exit 1 if it is off).
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F


def main() -> int:
    from llmsparse.formats.nm import pack_nm
    from llmsparse.kernels.dispatch import choice_from_name, err_limit, random_24, run_choice

    try:
        name, shape, m, dt = sys.argv[1:5]
        n, k = (int(v) for v in shape.split("x"))
        m = int(m)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dt]
        c = None if name == "dense" else choice_from_name(name)
    except (ValueError, KeyError):
        print("usage: ncu_kernel.py NAME|dense OUTxIN M fp16|bf16  (NAME e.g. mmsp:4,2,2,1,1)", file=sys.stderr)
        return 2
    w = random_24(n, k, dtype, "cuda")
    v, mt = pack_nm(w, 2, 4)
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    if c is None:
        def call():
            return F.linear(x, w)
    else:
        def call():
            return run_choice(c, x, values=v, meta=mt, dense=w, bias=None, out_features=n)
    ref = F.linear(x, w).float()
    y = call().float()
    err = float((y - ref).norm() / ref.norm())
    print(f"{name} {shape} M={m} {dt}: rel err {err:.2e}", flush=True)
    if not err <= err_limit(dtype):
        return 1
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for _ in range(4):
        call()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
