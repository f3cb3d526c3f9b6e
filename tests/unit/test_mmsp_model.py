"""The register assignment of the experimental ``mma.sp`` kernel (``llmsparse/kernels/gluon_mmsp.py``),
checked on the CPU against a model of the instruction (PTX ISA, ``mma.sp`` m16n8k32 with 16-bit
inputs, sparsity selector 0). The addresses below restate the kernel's formulas; the model restates
the PTX fragment layouts. If both are right the product equals x @ W^T; the GPU test
(``tests/gpu``) is what checks the hardware agrees."""
from __future__ import annotations

import numpy as np
import torch

from llmsparse.formats.nm import pack_nm
from llmsparse.kernels.dispatch import random_24


def _mma_sp_model(a_regs, b_regs, c_regs, e_regs):
    """D = A B + C for one warp: a/b/c regs [32 lanes, 4]; A/B as (lo, hi) float pairs, e: uint32 [32]."""
    A = np.zeros((16, 32))
    for i in range(16):
        for gi in range(8):
            lane_e = 4 * (i % 8) + gi // 4  # selector 0: lanes 4g (inputs 0-15) and 4g+1 (16-31)
            word = int(e_regs[lane_e])
            nib = (word >> (16 * (i // 8) + 4 * (gi % 4))) & 0xF
            i0, i1 = nib & 3, nib >> 2
            for which, idx in ((0, i0), (1, i1)):
                c = 2 * gi + which
                lane, reg, half = 4 * (i % 8) + (c % 8) // 2, (i // 8) + 2 * (c // 8), c % 2
                A[i, 4 * gi + idx] += a_regs[lane][reg][half]
    B = np.zeros((32, 8))
    for k in range(32):
        for n in range(8):
            B[k, n] = b_regs[4 * n + (k % 8) // 2][k // 8][k % 2]
    D = A @ B
    out = np.array(c_regs, dtype=np.float64)
    for i in range(16):
        for n in range(8):
            out[4 * (i % 8) + n // 2][2 * (i // 8) + n % 2] += D[i, n]
    return out


def test_mmsp_register_assignment_computes_x_wt():
    N, K, M = 16, 64, 8
    w = random_24(N, K, torch.float32, "cpu", generator=torch.Generator().manual_seed(0))
    vals, meta = pack_nm(w, 2, 4)  # values [N, K/2], meta [N, K/8] uint8
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(1))
    vpair = vals.view(N, K // 4, 2).numpy()  # int32 word (row, group) = the group's kept pair
    m16 = meta.numpy().view(np.uint16)  # int16 word (row, h) = nibbles of groups 4h..4h+3 (little endian)
    xpair = x.view(M, K // 2, 2).numpy()
    acc = np.zeros((32, 4))
    for s in range(K // 32):  # the kernel's formulas, WK = KU = RT = NT = 1, pid 0
        a = [[None] * 4 for _ in range(32)]
        b = [[None] * 4 for _ in range(32)]
        e = np.zeros(32, dtype=np.uint32)
        for lane in range(32):
            g, t = lane // 4, lane % 4
            for j in range(4):
                row_a = g + 8 * (j & 1)
                a[lane][j] = vpair[row_a, s * 8 + t + 4 * (j >> 1)]
                tok = g
                b[lane][j] = xpair[tok, s * 16 + t + 4 * j]
            lo = int(m16[g, s * 2 + t % 2])
            hi = int(m16[g + 8, s * 2 + t % 2])
            e[lane] = (lo & 0xFFFF) | (hi << 16)
        acc = _mma_sp_model(a, b, acc, e)
    y = np.zeros((M, N))
    for lane in range(32):
        for j in range(4):
            row = lane // 4 + 8 * (j >> 1)
            tok = 2 * (lane % 4) + (j & 1)
            y[tok, row] = acc[lane][j]
    np.testing.assert_allclose(y, (x.double() @ w.double().t()).numpy(), rtol=1e-6, atol=1e-6)
