"""The Triton 2:4 kernels' arithmetic, checked on the CPU with Triton's interpreter (no GPU needed).

Speed is measured on a GPU (tests/gpu, bench/); this test makes sure every kernel kind computes
``x @ W^T (+ b)`` from the packed layout exactly (float32, against a float64 reference), odd sizes
and masked tails included, in CI; and that the streaming-read kernels of bench/device/read_floor.py and
bench/device/xread_probe.py read every word they are timed on."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")


def test_triton_kernels_in_interpreter():
    script = Path(__file__).with_name("_triton_interp_check.py")
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.endswith(" ok")]
    assert len(lines) == 7, r.stdout  # 5 kernel cases, 2 checksum checks
