"""Does the packed layout's access pattern slow the weight stream? A probe for the M = 16 kernel.

    python bench/device/layout_probe.py --out OUT.json [--shapes 4096x4096,11008x4096,8192x28672]
        [--steps 1,4,16,32]

The ``mmsp`` kernel reads the packed 2:4 weights row by row: per iteration each program takes, for each of its
R rows (16-64), S super-steps (128 inputs: 128 bytes of ``values`` and 16 of ``meta``, two separate arrays)
-- with the dispatcher's configurations 128-512 bytes per row, rows K bytes apart -- where the streaming
bound of ``read_floor.py`` reads one contiguous buffer 4-16 KB per program iteration and the M = 1 kernel
``gemvg`` 4 KB of each of its rows per iteration (S = 32). This times a kernel that
reads exactly the packed tensors in the kernel's pattern (R rows x S super-steps of values and metadata per
iteration, K split over programs as split-K does), best of an R / iterations / warps sweep for each S,
against read_floor's contiguous read of the same byte count. If the row pattern is much slower than the
contiguous read, a kernel-side tiled copy of the packed weights (each program iteration one contiguous
block) is worth building; if not, the layout is not what holds the kernel below the streaming rate.
Every run is checked: per-program XOR checksums against the CPU. Writes the rows as JSON and prints a
table. GPU only.
"""
from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys

import torch

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

SWEEP = [(rows, iters, warps) for rows in (16, 32, 64) for iters in (2, 4, 8) for warps in (4, 8)]

_spec = importlib.util.spec_from_file_location("read_floor", pathlib.Path(__file__).with_name("read_floor.py"))
rf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rf)


@triton.jit
def _read_rows(v_ptr, m_ptr, out, SS, KG, KMW, R: tl.constexpr, S: tl.constexpr, ITERS: tl.constexpr):
    """Program (p, q) reads rows [p R, (p + 1) R) over super-steps [q ITERS S, (q + 1) ITERS S) (masked at
    SS), S super-steps per iteration: 32 S words of ``values`` (KG words per row) and 4 S words of ``meta``
    (KMW words per row) per row; stores the XOR of every word it read."""
    p = tl.program_id(0)
    q = tl.program_id(1)
    r = (p * R + tl.arange(0, R)).to(tl.int64)
    cv = tl.arange(0, 32 * S)
    cm = tl.arange(0, 4 * S)
    acc_v = tl.zeros([R, 32 * S], dtype=tl.int32)
    acc_m = tl.zeros([R, 4 * S], dtype=tl.int32)
    for i in tl.static_range(ITERS):
        s0 = (q * ITERS + i) * S
        okv = (s0 + cv // 32) < SS
        okm = (s0 + cm // 4) < SS
        acc_v ^= tl.load(v_ptr + r[:, None] * KG + (s0 * 32 + cv)[None, :], mask=okv[None, :], other=0)
        acc_m ^= tl.load(m_ptr + r[:, None] * KMW + (s0 * 4 + cm)[None, :], mask=okm[None, :], other=0)
    tot = tl.reduce(tl.reshape(acc_v, [R * 32 * S]), 0, rf._xor) ^ tl.reduce(tl.reshape(acc_m, [R * 4 * S]), 0, rf._xor)
    tl.store(out + p * tl.num_programs(1) + q, tot)


def run_rows(v: torch.Tensor, m: torch.Tensor, out: torch.Tensor, rows: int, steps: int, iters: int, warps: int):
    n, kg = v.shape
    grid = (n // rows, triton.cdiv(kg // 32, steps * iters))
    _read_rows[grid](v, m, out, kg // 32, kg, m.shape[1], R=rows, S=steps, ITERS=iters, num_warps=warps)
    return out


def reference(v: torch.Tensor, m: torch.Tensor, rows: int, steps: int, iters: int):
    """The per-program checksums of :func:`_read_rows`, on the CPU (numpy)."""
    import numpy as np

    n, kg = v.shape
    per = steps * iters  # super-steps per program
    q = -(-(kg // 32) // per)
    out = np.zeros((n // rows, q), dtype=np.int32)
    vn, mn = v.cpu().numpy(), m.cpu().numpy()
    for j in range(q):
        blk_v = vn[:, j * per * 32:(j + 1) * per * 32].reshape(n // rows, -1)
        blk_m = mn[:, j * per * 4:(j + 1) * per * 4].reshape(n // rows, -1)
        out[:, j] = np.bitwise_xor.reduce(blk_v, axis=1) ^ np.bitwise_xor.reduce(blk_m, axis=1)
    return out.reshape(-1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", default="4096x4096,11008x4096,8192x28672")
    ap.add_argument("--steps", default="1,4,16,32")
    a = ap.parse_args(argv)
    try:
        shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
        steps = sorted({int(s) for s in a.steps.split(",")})
        assert all(len(s) == 2 and s[0] % 64 == 0 and s[1] % 128 == 0 and s[1] > 0 for s in shapes)
        assert steps and all(s > 0 and s & (s - 1) == 0 for s in steps)
    except (ValueError, AssertionError):
        print("layout_probe.py: --shapes OUTxIN,... (OUT a multiple of 64, IN of 128), --steps powers of two",
              file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("layout_probe.py needs a CUDA GPU", file=sys.stderr)
        return 2
    from llmsparse.kernels.timing import rotation_count, time_call

    dev = torch.device("cuda")
    rows_out = []
    for n, k in shapes:
        nbytes = n * k + n * k // 8  # values (K/2 half-precision words = K bytes per row) + metadata
        base, barg = rf.read_floor_ms(nbytes, dev, rf.read_kernel())
        pairs = [(torch.randint(-2**30, 2**30, (n, k // 4), device=dev, dtype=torch.int32),
                  torch.randint(-2**30, 2**30, (n, k // 32), device=dev, dtype=torch.int32))
                 for _ in range(rotation_count(nbytes, budget_bytes=2**30))]
        row = {"shape": f"{n}x{k}", "contiguous_ms": base, "contiguous_cfg": barg, "bytes": nbytes, "steps": {}}
        for s in steps:
            best, arg = float("inf"), None
            for rows, iters, warps in SWEEP:
                if rows * s > 64 * warps:  # more than 64 words of each tile per thread: spills
                    continue
                out = torch.empty(n // rows * triton.cdiv(k // 128, s * iters), device=dev, dtype=torch.int32)
                got = run_rows(*pairs[0], out, rows, s, iters, warps).cpu().numpy()
                if not (got == reference(*pairs[0], rows, s, iters)).all():
                    raise RuntimeError(f"checksum mismatch at {n}x{k} {rows, s, iters, warps}")
                ms = time_call(lambda v, m, o=out, c=(rows, s, iters, warps): run_rows(v, m, o, *c), pairs)
                if ms < best:
                    best, arg = ms, (rows, iters, warps)
            row["steps"][s] = {"ms": best, "cfg": arg, "TBps": nbytes / best / 1e9, "vs_contiguous": best / base}
            print(f"{n}x{k} {s * 128:5d} B per row per iteration: {best * 1e3:.1f} us ({nbytes / best / 1e9:.2f} TB/s), "
                  f"{best / base:.3f}x the contiguous read ({base * 1e3:.1f} us)  {arg}", flush=True)
        rows_out.append(row)
        rf.write(a.out, rows_out)
        del pairs
    return 0


if __name__ == "__main__":
    sys.exit(main())
