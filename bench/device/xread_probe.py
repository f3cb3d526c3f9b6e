"""Does re-reading x from L2 slow down the weight stream? A probe for the next M = 16 kernel design.

    python bench/device/xread_probe.py --out OUT.json [--shapes 4096x4096,11008x4096,8192x28672]
        [--ratios 0,0.22,0.43,0.87,1.74] [--x-kb 128]

At M = 16 every ``mmsp`` warp iteration reads 4 KB of x (16 tokens x 128 inputs, fp16) beside 2.3 KB of
packed weights per 16-row tile: 1.74 bytes of x per weight byte with one row tile per warp, 0.87 with two,
0.43 with four (cuBLAS's dense tile: 0.125). x (``--x-kb``, 128 KB = 16 tokens x 4096 inputs) stays in L2,
the weights stream from DRAM (copies rotated past L2), so the x bytes cost L2 bandwidth but no DRAM
bandwidth. This times a kernel that streams the packed-weight byte count of each shape (as
``read_floor.py``'s read(sparse)) and, per block of weight words, also reads ``ratio`` times as many words of
x (cycling through the x buffer), best of a block/iteration/warp sweep, against the same kernel at ratio 0.
If the time at 0.87-1.74 stays near ratio 0, the x re-reads are not what holds the kernel below the
streaming rate; if it grows, a kernel that keeps x in shared memory (or registers) across many row tiles is
worth writing. Every run is checked: per-program XOR checksums of the weight and x words it read, against
the CPU. Writes the rows as JSON and prints a table. GPU only.
"""
from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys

import torch

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

SWEEP = [(block, iters, warps) for block in (1024, 2048) for iters in (2, 4, 8) for warps in (4, 8)]

# read_floor.py's weight-block reader and its checksum (one read loop for both scripts)
_spec = importlib.util.spec_from_file_location("read_floor", pathlib.Path(__file__).with_name("read_floor.py"))
rf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rf)
_read_blocks, _xor = rf._read_blocks, rf._xor


@triton.jit
def _read_wx(w_ptr, x_ptr, out, n, NX_SLICES, BLOCK: tl.constexpr, XW: tl.constexpr, XWP: tl.constexpr,
             ITERS: tl.constexpr):
    """Program p reads ITERS blocks of BLOCK weight words and, with each, the x slice (p ITERS + i) mod
    NX_SLICES of XW words (XWP: XW rounded up to a power of two); stores the XOR of everything it read."""
    pid = tl.program_id(0)
    acc = _read_blocks(w_ptr, n, BLOCK, ITERS)
    if XW > 0:
        xacc = tl.zeros([XWP], dtype=tl.int32)
        xo = tl.arange(0, XWP)
        for i in tl.static_range(ITERS):
            s = (pid * ITERS + i) % NX_SLICES
            xacc ^= tl.load(x_ptr + s * XW + xo, mask=xo < XW, other=0)
        tl.store(out + pid, tl.reduce(acc, 0, _xor) ^ tl.reduce(xacc, 0, _xor))
    else:
        tl.store(out + pid, tl.reduce(acc, 0, _xor))


def x_words_per_block(block: int, ratio: float) -> int:
    """Words of x read per block of ``block`` weight words at ``ratio`` (x bytes per weight byte)."""
    return max(0, round(block * ratio))


def run_wx(w: torch.Tensor, x: torch.Tensor, out: torch.Tensor, block: int, iters: int, warps: int, xw: int):
    n = w.numel()
    grid = (triton.cdiv(n, block * iters),)
    _read_wx[grid](w, x, out, n, max(1, x.numel() // max(xw, 1)), BLOCK=block, XW=xw,
                   XWP=triton.next_power_of_2(max(xw, 1)), ITERS=iters, num_warps=warps)
    return out


def reference(w: torch.Tensor, x: torch.Tensor, block: int, iters: int, xw: int):
    """The per-program checksums of :func:`_read_wx`, computed on the CPU (numpy)."""
    import numpy as np

    per = block * iters
    progs = -(-w.numel() // per)
    wn = np.zeros(progs * per, dtype=np.int32)
    wn[: w.numel()] = w.cpu().numpy()
    ref = np.bitwise_xor.reduce(wn.reshape(progs, per), axis=1)
    if xw:
        nsl = x.numel() // xw
        xs = np.bitwise_xor.reduce(x.cpu().numpy()[: nsl * xw].reshape(nsl, xw), axis=1)
        idx = (np.arange(progs)[:, None] * iters + np.arange(iters)[None, :]) % nsl
        ref = ref ^ np.bitwise_xor.reduce(xs[idx], axis=1)
    return ref


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", default="4096x4096,11008x4096,8192x28672")
    ap.add_argument("--ratios", default="0,0.22,0.43,0.87,1.74")
    ap.add_argument("--x-kb", type=int, default=128)
    a = ap.parse_args(argv)
    try:
        shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
        ratios = [float(r) for r in a.ratios.split(",")]
        assert all(len(s) == 2 and s[0] > 0 and s[1] > 0 for s in shapes) and all(r >= 0 for r in ratios)
        assert 0 in ratios and a.x_kb > 0 and a.x_kb * 256 >= 2048 * max(ratios)
        ratios = sorted(set(ratios))  # 0 first: the base of the slowdowns
    except (ValueError, AssertionError):
        print("xread_probe.py: --shapes OUTxIN,..., --ratios non-negative numbers including 0, --x-kb at least "
              "8 x the largest ratio (one x slice of a 2048-word block)",
              file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("xread_probe.py needs a CUDA GPU", file=sys.stderr)
        return 2
    from llmsparse.kernels.timing import rotation_count, time_call

    dev = torch.device("cuda")
    x = torch.randint(-2**30, 2**30, (a.x_kb * 256,), device=dev, dtype=torch.int32)
    rows = []
    for n, k in shapes:
        nbytes = n * k // 2 * 2 + n * k // 8  # packed values + metadata, as read_floor.py's read(sparse)
        words = -(-nbytes // 4)
        bufs = [torch.randint(-2**30, 2**30, (words,), device=dev, dtype=torch.int32)
                for _ in range(rotation_count(nbytes, budget_bytes=2**30))]
        base = None
        for ratio in ratios:
            best, arg = float("inf"), None
            for block, iters, warps in SWEEP:
                xw = x_words_per_block(block, ratio)
                out = torch.empty(-(-words // (block * iters)), device=dev, dtype=torch.int32)
                got = run_wx(bufs[0], x, out, block, iters, warps, xw).cpu().numpy()
                if not (got == reference(bufs[0], x, block, iters, xw)).all():
                    raise RuntimeError(f"checksum mismatch at {n}x{k} ratio {ratio} {block, iters, warps}")
                ms = time_call(lambda b, o=out, c=(block, iters, warps), xw=xw: run_wx(b, x, o, *c, xw),
                               [(b,) for b in bufs])
                if ms < best:
                    best, arg = ms, (block, iters, warps, xw)
            base = best if ratio == 0 else base
            r = {"shape": f"{n}x{k}", "ratio": ratio, "actual_ratio": arg[3] / arg[0], "ms": best, "cfg": arg,
                 "weight_TBps": nbytes / best / 1e9, "slowdown": best / base if base else None}
            rows.append(r)
            rf.write(a.out, rows)
            print(f"{n}x{k} x/w {ratio:.2f} (actual {r['actual_ratio']:.2f}): {best * 1e3:.1f} us, weights "
                  f"{r['weight_TBps']:.2f} TB/s, {r['slowdown'] or 1:.3f}x the time without x  {arg}", flush=True)
        del bufs
    return 0


if __name__ == "__main__":
    sys.exit(main())
