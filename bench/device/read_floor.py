"""How fast can any kernel be at a shape? Time a pure streaming read of the packed 2:4 bytes.

    python bench/device/read_floor.py --out OUT.json [--shapes llama2-7b,llama2-70b] [--m 16] [--dtype fp16,bf16]

For each (dtype, shape) it times, the way the dispatcher times kernels (``timing.time_call``: CUDA-graph
replays, argument sets rotated to overflow L2, median):

* dense cuBLAS ``F.linear`` at each M (the baseline of the issue's targets) and every ``mmsp``
  configuration of the dispatcher (``MMSP_CONFIGS``) at that M, interleaved medians, checked first;
* ``read(sparse)``: a Triton kernel that does nothing but read ``values`` + ``meta``'s byte count
  (0.5625 of the dense weight bytes) from one buffer and write the XOR of its words per program (checked); best of a sweep
  of block sizes, iterations per program and warps. No 2:4 kernel at that shape reads fewer bytes, so
  ``dense / read(sparse)`` bounds from above the speedup any kernel can reach there at small M;
* ``read(dense)``: the same over the dense weight's bytes (how close cuBLAS itself is to streaming).

Writes the rows as JSON and prints a table. GPU only.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

SHAPES = {"llama2-7b": [(4096, 4096), (11008, 4096), (4096, 11008)],
          "llama2-70b": [(8192, 8192), (28672, 8192), (8192, 28672)]}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
SWEEP = [(block, iters, warps) for block in (1024, 2048, 4096) for iters in (1, 2, 4, 8) for warps in (4, 8)]


import triton  # noqa: E402
import triton.language as tl  # noqa: E402


@triton.jit
def _xor(a, b):
    return a ^ b


@triton.jit
def _read_blocks(ptr, n, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    """XOR (per lane) of this program's ITERS consecutive blocks of BLOCK words, masked at ``n``."""
    base = tl.program_id(0) * BLOCK * ITERS
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for i in tl.static_range(ITERS):
        offs = base + i * BLOCK + tl.arange(0, BLOCK)
        acc ^= tl.load(ptr + offs, mask=offs < n, other=0)
    return acc


@triton.jit
def _read(ptr, out, n, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    acc = _read_blocks(ptr, n, BLOCK, ITERS)
    tl.store(out + tl.program_id(0), tl.reduce(acc, 0, _xor))


def read_kernel():
    def run(buf: torch.Tensor, out: torch.Tensor, block: int, iters: int, warps: int) -> torch.Tensor:
        n = buf.numel()
        grid = (triton.cdiv(n, block * iters),)
        _read[grid](buf, out, n, BLOCK=block, ITERS=iters, num_warps=warps)
        return out

    return run


def xor_all(t: torch.Tensor) -> int:
    """XOR of all int32 words of ``t`` (the read kernel's checksum), computed on the CPU."""
    import numpy as np

    return int(np.bitwise_xor.reduce(t.cpu().numpy()))


def read_floor_ms(nbytes: int, device, run) -> tuple[float, tuple]:
    """Best time of the read sweep over ``nbytes`` (rounded up to int32 words), L2 overflowed by rotation."""
    from llmsparse.kernels.timing import rotation_count, time_call

    words = -(-nbytes // 4)
    bufs = [torch.randint(-2**30, 2**30, (words,), device=device, dtype=torch.int32)
            for _ in range(rotation_count(nbytes, budget_bytes=2**30))]
    best, arg = float("inf"), None
    ref = xor_all(bufs[0])
    for block, iters, warps in SWEEP:
        out = torch.empty(-(-words // (block * iters)), device=device, dtype=torch.int32)
        got = xor_all(run(bufs[0], out, block, iters, warps))
        if got != ref:  # the kernel must really read every word
            raise RuntimeError(f"read kernel sum mismatch for {block, iters, warps}: {got} != {ref}")
        ms = time_call(lambda b, o=out, c=(block, iters, warps): run(b, o, *c), [(b,) for b in bufs])
        if ms < best:
            best, arg = ms, (block, iters, warps)
    return best, arg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", default="llama2-7b,llama2-70b")
    ap.add_argument("--m", default="16")
    ap.add_argument("--dtype", default="fp16,bf16")
    a = ap.parse_args(argv)
    bad = [v for v in a.shapes.split(",") if v not in SHAPES] + [v for v in a.dtype.split(",") if v not in DTYPES]
    if bad or not all(v.strip().isdigit() for v in a.m.split(",")):
        print(f"read_floor.py: --shapes is a list of {sorted(SHAPES)}, --dtype of fp16/bf16, --m of integers; "
              f"got {bad or a.m}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("read_floor.py needs a CUDA GPU", file=sys.stderr)
        return 2
    from llmsparse.kernels.dispatch import Choice, ShapeBench, choice_name, err_limit, time_interleaved
    from llmsparse.kernels.gluon_mmsp import MMSP_CONFIGS

    run = read_kernel()
    dev = torch.device("cuda")
    ms_list = [int(v) for v in a.m.split(",")]
    rows, floors = [], {}
    for dt in a.dtype.split(","):
        dtype = DTYPES[dt]
        for name in a.shapes.split(","):
            for n, k in SHAPES[name]:
                dense_bytes = n * k * 2
                sparse_bytes = n * k // 2 * 2 + n * k // 8
                if (n, k) not in floors:  # the reads do not depend on the dtype
                    floors[n, k] = read_floor_ms(sparse_bytes, dev, run) + read_floor_ms(dense_bytes, dev, run)
                sp_ms, sp_cfg, de_ms, de_cfg = floors[n, k]
                sb = ShapeBench(n, k, dtype, dev, with_cslt=False)
                for m in ms_list:
                    ours = {}
                    for cfg in MMSP_CONFIGS[8 if m <= 8 else 16]:
                        c = Choice("mmsp", cfg)
                        if sb.check(m, c) <= err_limit(dtype):
                            ours[choice_name(c)] = statistics.median(time_interleaved(sb, m, c, 3)[1])
                    dense_ms = statistics.median(time_interleaved(sb, m, Choice("dense"), 3)[0])
                    best = min(ours, key=ours.get) if ours else None
                    r = {"dtype": dt, "shape": f"{n}x{k}", "m": m, "dense_ms": dense_ms,
                         "read_sparse_ms": sp_ms, "read_sparse_cfg": sp_cfg, "read_dense_ms": de_ms,
                         "read_dense_cfg": de_cfg, "sparse_bytes": sparse_bytes, "dense_bytes": dense_bytes,
                         "ceiling_x": dense_ms / sp_ms, "read_sparse_TBps": sparse_bytes / sp_ms / 1e9,
                         "read_dense_TBps": dense_bytes / de_ms / 1e9, "cublas_TBps": dense_bytes / dense_ms / 1e9,
                         "mmsp": ours, "mmsp_best": best, "mmsp_x": dense_ms / ours[best] if best else None}
                    rows.append(r)
                    write(a.out, rows)  # after every row: a run cut short keeps what it measured
                    print(f"{dt} {n}x{k} M={m}: dense {dense_ms * 1e3:.1f} us ({r['cublas_TBps']:.2f} TB/s), "
                          f"read(dense) {de_ms * 1e3:.1f} us ({r['read_dense_TBps']:.2f} TB/s), "
                          f"read(sparse) {sp_ms * 1e3:.1f} us ({r['read_sparse_TBps']:.2f} TB/s) "
                          f"-> ceiling {r['ceiling_x']:.2f}x; best mmsp {best} "
                          f"{ours[best] * 1e3 if best else float('nan'):.1f} us = {r['mmsp_x'] or float('nan'):.2f}x",
                          flush=True)
                del sb
    return 0


def write(path: str, rows: list[dict]) -> None:
    from llmsparse.cli.common import write_json  # written whole or not at all

    write_json(path, {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows})


if __name__ == "__main__":
    sys.exit(main())
