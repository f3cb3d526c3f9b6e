"""Run the Triton 2:4 kernels in Triton's CPU interpreter (TRITON_INTERPRET=1) and compare them with a
float64 dense-with-zeros reference. Executed in a subprocess by test_kernels_interpreter.py (the
interpreter must be chosen before the kernels are defined). Prints one line per case; exits 1 on a
mismatch."""
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import triton.runtime.interpreter as interp  # noqa: E402

# Triton 3.6's interpreter turns 1-element arrays into ints with int(arr), which numpy >= 2.4 refuses
_orig = interp._patch_lang_tensor


def _patched(tensor, scope):
    _orig(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))


interp._patch_lang_tensor = _patched

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from llmsparse.formats.nm import pack_nm  # noqa: E402
from llmsparse.kernels import triton_sp24 as T  # noqa: E402
from llmsparse.kernels.dispatch import random_24  # noqa: E402

torch.manual_seed(0)
CASES = [  # (kind, out, in, M, cfg, bias)
    ("gemv", 40, 200, 3, (8, 64, 4, 2), True),
    ("gemv", 64, 256, 1, (4, 256, 4, 2), False),
    ("mm", 40, 200, 19, (16, 32, 64, 4, 3), True),
    ("mmb", 64, 256, 5, (16, 32, 128, 4, 3), False),
    ("mmb", 40, 200, 19, (16, 32, 64, 4, 3), True),  # uneven K, masked rows and bias on the X_A branch
]
bad = 0
for kind, n, k, m, cfg, has_bias in CASES:
    w = random_24(n, k, torch.float32, "cpu")
    v, mt = pack_nm(w, 2, 4)
    x = torch.randn(m, k)
    b = torch.randn(n) if has_bias else None
    out = torch.full((m, n), float("nan"))
    if kind == "gemv":
        y = T.sp24_gemv(x, v, mt, b, n, cfg=cfg, out=out)
    elif kind == "mm":
        y = T.sp24_mm(x, v, mt, b, n, block_m=cfg[0], cfg=cfg[1:], out=out)
    elif kind == "mmb":
        y = T.sp24_mm_wb(x, v, mt, b, n, block_m=cfg[0], cfg=cfg[1:], out=out)
    else:
        raise ValueError(kind)
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    err = float((y.double() - ref).norm() / ref.norm())
    ok = bool(torch.isfinite(y).all()) and err < 1e-5
    bad += not ok
    print(f"{kind} {n}x{k} M={m} cfg={cfg} bias={has_bias}: rel err {err:.2e} {'ok' if ok else 'FAIL'}")

# bench/device/read_floor.py's streaming-read kernel (the "no kernel can read these bytes faster" bound of
# docs/kernels-log.md): its per-program XOR checksums must cover every word, a masked tail included, and see a
# flipped bit
import importlib.util  # noqa: E402
import pathlib  # noqa: E402

path = pathlib.Path(__file__).resolve().parents[2] / "bench" / "device" / "read_floor.py"
spec = importlib.util.spec_from_file_location("read_floor", path)
rf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rf)
run = rf.read_kernel()
buf = torch.randint(-2**30, 2**30, (5000,), dtype=torch.int32)
oks = []
for block, iters, warps in ((1024, 1, 4), (1024, 4, 8), (2048, 2, 4)):
    out = torch.empty(-(-buf.numel() // (block * iters)), dtype=torch.int32)
    oks.append(rf.xor_all(run(buf, out, block, iters, warps)) == rf.xor_all(buf))
before = rf.xor_all(buf)
buf[4999] ^= 1 << 7  # in the masked last block
oks.append(rf.xor_all(buf) != before and rf.xor_all(run(buf, out, 2048, 2, 4)) == rf.xor_all(buf))
bad += not all(oks)
print(f"read_floor read kernel checksums {oks}: {'ok' if all(oks) else 'FAIL'}")

# bench/device/xread_probe.py's weight + x read kernel: checksums against its CPU reference, with and
# without x, x slices of a non-power-of-two width, and a flipped bit in x seen
spec = importlib.util.spec_from_file_location("xread_probe", path.with_name("xread_probe.py"))
xp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(xp)
x = torch.randint(-2**30, 2**30, (3000,), dtype=torch.int32)
oks = []
for block, iters, warps, ratio in ((1024, 2, 4, 0.0), (1024, 2, 4, 0.87), (2048, 4, 8, 0.43), (1024, 4, 4, 1.74)):
    xw = xp.x_words_per_block(block, ratio)
    out = torch.empty(-(-buf.numel() // (block * iters)), dtype=torch.int32)
    got = xp.run_wx(buf, x, out, block, iters, warps, xw).numpy()
    oks.append(bool((got == xp.reference(buf, x, block, iters, xw)).all()))
xw = xp.x_words_per_block(1024, 0.87)  # 891 words: program 0 reads slices 0 and 1 once each
out = torch.empty(-(-buf.numel() // 2048), dtype=torch.int32)
before = xp.run_wx(buf, x, out, 1024, 2, 4, xw).numpy().copy()
x[5] ^= 1 << 3  # in slice 0
got = xp.run_wx(buf, x, out, 1024, 2, 4, xw).numpy()
oks.append(bool((got == xp.reference(buf, x, 1024, 2, xw)).all()) and int(got[0]) != int(before[0]))
bad += not all(oks)
print(f"xread_probe kernel checksums {oks}: {'ok' if all(oks) else 'FAIL'}")
sys.exit(1 if bad else 0)
