"""Where the time of one call goes: per-kernel GPU durations against the CUDA-graph time per call.

    python bench/device/kernel_times.py mmsp:4,1,2,1,1,0,0,4,1 4096x4096 16 fp16 [dense ...]

For each dispatcher choice name (or ``dense``) given: the call is checked against dense-with-zeros, then
timed like the dispatcher does (``timing.time_call``: CUDA-graph replays over weight copies that overflow
L2, median), then run eagerly under ``torch.profiler`` (CUPTI kernel durations). A split-K choice launches
two kernels (the partial products and the reduction); the difference between the graph time per call and
the sum of the kernels' durations is what launching them costs inside a graph. GPU only.
"""
from __future__ import annotations

import sys
from collections import defaultdict

import torch
import torch.nn.functional as F


def main(argv: list[str] | None = None) -> int:
    from llmsparse.formats.nm import pack_nm
    from llmsparse.kernels.dispatch import choice_from_name, err_limit, random_24, run_choice
    from llmsparse.kernels.timing import rotation_count, time_call

    argv = sys.argv[1:] if argv is None else argv
    try:
        shape, m, dt = argv[1:4]
        names = [argv[0]] + argv[4:]
        n, k = (int(v) for v in shape.split("x"))
        m = int(m)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dt]
        choices = {nm: None if nm == "dense" else choice_from_name(nm) for nm in names}
    except (ValueError, KeyError, IndexError):
        print("usage: kernel_times.py NAME OUTxIN M fp16|bf16 [NAME ...]  (NAME: dense, mmsp:4,2,2,1,1, ...)",
              file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("kernel_times.py needs a CUDA GPU", file=sys.stderr)
        return 2
    sets = []
    for _ in range(rotation_count(n * k * 2)):
        w = random_24(n, k, dtype, "cuda")
        v, mt = pack_nm(w, 2, 4)
        sets.append((torch.randn(m, k, device="cuda", dtype=dtype), w, v, mt))
    bad = 0
    for name, c in choices.items():
        def call(x, w, v, mt, c=c):
            return F.linear(x, w) if c is None else run_choice(c, x, values=v, meta=mt, dense=w, bias=None,
                                                               out_features=n)
        x, w, v, mt = sets[0]
        ref = F.linear(x, w).float()
        err = float((call(x, w, v, mt).float() - ref).norm() / ref.norm())
        if not err <= err_limit(dtype):
            print(f"{name}: rel err {err:.2e} over the limit", flush=True)
            bad += 1
            continue
        graph_us = time_call(call, sets) * 1e3
        calls = 20 * len(sets)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for i in range(calls):
                call(*sets[i % len(sets)])
            torch.cuda.synchronize()
        per = defaultdict(float)
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                per[e.name] += e.device_time_total / calls  # microseconds per call
        kernels = sorted(per.items(), key=lambda t: -t[1])
        total = sum(per.values())
        print(f"{name} {shape} M={m} {dt}: graph {graph_us:.1f} us/call, kernels {total:.1f} us "
              f"(launch gaps ~{graph_us - total:.1f} us); rel err {err:.1e}", flush=True)
        for kn, us in kernels:
            print(f"    {us:7.2f} us  {kn[:110]}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
