"""cuSPARSELt's split-K and higher algorithm ids at prefill sizes (fourteenth session): the dispatcher measures
``alg_id`` 0-2 with ``split_k = 1`` only; ``torch._cslt_sparse_mm`` also takes ``split_k`` and ``split_k_mode``
(0: one kernel, 1: two kernels; -1: the library's default).

    python bench/device/cslt_splitk_probe.py --out OUT.json [--dtype fp16] [--m 4096,1024]
        [--shapes 4096x4096,...] [--algs 0,1,2,3] [--splits 1,2,4] [--modes 0,1]

For each (dtype, shape, M): dense cuBLAS ``F.linear``, then every (alg, split_k, mode) with both result layouts
(``tr``: contiguous [M, N] from ``transpose_result=True``; ``nt``: the [N, M] result left as a transposed view,
what SparseLinear's compiled path consumes), CUDA-graph replays over weight copies that overflow L2
(``timing.time_call``), and the host time of one eager call (``timing.host_ms``). Each combination is checked
against dense-with-zeros first (relative error above 1e-3: not timed); combinations cuSPARSELt refuses are
recorded with their error. GPU only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.getcwd())


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="fp16")
    ap.add_argument("--m", default="4096,1024")
    ap.add_argument("--shapes", default="4096x4096,11008x4096,4096x11008,8192x8192,28672x8192,8192x28672")
    ap.add_argument("--algs", default="0,1,2,3")
    ap.add_argument("--splits", default="1,2,4")
    ap.add_argument("--modes", default="0,1")
    a = ap.parse_args(argv)
    try:
        dts = [{"fp16": torch.float16, "bf16": torch.bfloat16}[d] for d in a.dtype.split(",")]
        ms, algs, splits, modes = _ints(a.m), _ints(a.algs), _ints(a.splits), _ints(a.modes)
        shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
        if any(len(s) != 2 for s in shapes):
            raise ValueError(f"shapes are OUTxIN, got {a.shapes!r}")
    except (KeyError, ValueError) as e:
        ap.error(f"bad list: {e}")
    if not torch.cuda.is_available():
        print("cslt_splitk_probe: needs a CUDA GPU", file=sys.stderr)
        return 2
    from llmsparse.kernels.dispatch import random_24
    from llmsparse.kernels.timing import host_ms, rotation_count, time_call

    rows = []
    for dt in dts:
        for n, k in shapes:
            nsets = rotation_count(n * k * 2)
            ws = [random_24(n, k, dt, "cuda") for _ in range(nsets)]
            cs = [torch._cslt_compress(w) for w in ws]
            for m in ms:
                xs = [torch.randn(m, k, device="cuda", dtype=dt) for _ in range(nsets)]
                ref = F.linear(xs[0], ws[0]).float()
                row = {"dtype": str(dt)[6:], "shape": f"{n}x{k}", "m": m, "us": {}, "host_ms": {}, "err": {},
                       "refused": {}}
                row["us"]["dense"] = time_call(F.linear, list(zip(xs, ws))) * 1e3
                for alg in algs:
                    for sk in splits:
                        for mode in modes if sk > 1 else (-1,):
                            for tr in (True, False):
                                name = f"a{alg}_k{sk}_m{mode}_{'tr' if tr else 'nt'}"

                                def f(x, c, alg=alg, sk=sk, mode=mode, tr=tr):
                                    y = torch._cslt_sparse_mm(c, x.t(), transpose_result=tr, alg_id=alg, split_k=sk,
                                                              split_k_mode=mode)
                                    return y if tr else y.t()
                                try:
                                    y = f(xs[0], cs[0])
                                    torch.cuda.synchronize()
                                except Exception as e:  # an id or split the library refuses for this problem
                                    row["refused"][name] = str(e).splitlines()[0][:120]
                                    continue
                                err = float((y.float() - ref).norm() / ref.norm())
                                row["err"][name] = err
                                if err > 1e-3:
                                    continue
                                row["host_ms"][name] = host_ms(f, [(xs[0], cs[0])], calls=1)
                                row["us"][name] = time_call(f, list(zip(xs, cs))) * 1e3
                dense = row["us"]["dense"]
                best = {lay: min(((v, kk) for kk, v in row["us"].items() if kk.endswith(lay)), default=(None, None))
                        for lay in ("tr", "nt")}
                row["best"] = {lay: best[lay][1] for lay in best}
                rows.append(row)
                msg = " ".join(f"{lay}: {best[lay][1]} {best[lay][0]:.1f} us ({dense / best[lay][0]:.2f}x)"
                               for lay in best if best[lay][0])
                k1 = {lay: min((v for kk, v in row["us"].items() if kk.endswith(lay) and "_k1_" in kk), default=None)
                      for lay in ("tr", "nt")}
                print(f"{row['dtype']} {n}x{k} M={m}: dense {dense:.1f} us; best {msg}; best split_k=1: "
                      + " ".join(f"{lay} {v:.1f}" for lay, v in k1.items() if v) + f"; refused {len(row['refused'])}",
                      flush=True)
                _dump(a.out, rows)
            del ws, cs
            torch.cuda.empty_cache()
    return 0


def _dump(path: str, rows: list) -> None:
    """The rows so far (written after every row, so a call cut short by its time limit keeps them)."""
    with open(path + ".tmp", "w") as fh:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "cusparselt": torch.backends.cusparselt.version(), "rows": rows}, fh, indent=1)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
