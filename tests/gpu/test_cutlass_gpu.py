"""GPU tests of the ``cutlass`` prefill path (CUTLASS's Hopper sparse GEMM through ctypes). Skipped without a
compute-capability-9.0 GPU or without the built library (``python -m llmsparse.kernels.build_cutlass build``, or
``LLMSPARSE_CUTLASS_LIB=/path/libllms_sp24.so``; ``LLMSPARSE_CUTLASS=build`` builds it on first use)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmsparse.kernels import cutlass_sp24 as cs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TOL = {torch.float16: 1e-3, torch.bfloat16: 1e-2}


@pytest.fixture(scope="module", autouse=True)
def _library():
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the kernels are sm_90a code")
    if not cs.available():
        pytest.skip(f"CUTLASS library not available: {cs.reason()}")


def rel(a, b):
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


def _w(n, k, dtype, seed=0):
    from llmsparse.kernels.dispatch import random_24

    torch.manual_seed(seed)
    return random_24(n, k, dtype, "cuda")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,k", [(256, 128), (4096, 4096), (1032, 11008)])
def test_every_configuration_matches_dense_with_zeros(dtype, n, k):
    """Each configuration, odd and even token counts, into a NaN-poisoned output, against F.linear on the
    dense-with-zeros weight; with a bias too."""
    w = _w(n, k, dtype)
    a_c, e = cs.compress(w)
    bias = (torch.randn(n, device="cuda") * 0.1).to(dtype)
    for m in (128, 131, 1000):
        x = torch.randn(m, k, device="cuda", dtype=dtype)
        ref = F.linear(x, w)
        for cfg in range(len(cs.CONFIGS)):
            out = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)
            y = cs.gemm(x, a_c, e, cfg, n, out=out)
            assert y.data_ptr() == out.data_ptr() and torch.isfinite(y).all(), (cs.CONFIGS[cfg], m)
            assert rel(y, ref) <= TOL[dtype], (cs.CONFIGS[cfg], m, rel(y, ref))
        yb = cs.gemm(x, a_c, e, 0, n, bias)
        assert rel(yb, F.linear(x, w, bias)) <= TOL[dtype]


def test_small_token_counts_and_empty_input():
    w = _w(512, 256, torch.float16)
    a_c, e = cs.compress(w)
    for m in (1, 7, 64):
        x = torch.randn(m, 256, device="cuda", dtype=torch.float16)
        assert rel(cs.gemm(x, a_c, e, 1, 512), F.linear(x, w)) <= 1e-3
    assert cs.gemm(torch.zeros(0, 256, device="cuda", dtype=torch.float16), a_c, e, 0, 512).shape == (0, 512)


def test_captures_into_a_cuda_graph():
    w = _w(4096, 4096, torch.float16)
    a_c, e = cs.compress(w)
    x = torch.randn(512, 4096, device="cuda", dtype=torch.float16)
    cs.gemm(x, a_c, e, 0, 4096)  # warm-up outside the capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = cs.gemm(x, a_c, e, 0, 4096)
    x.copy_(torch.randn_like(x))
    g.replay()
    torch.cuda.synchronize()
    assert rel(y, F.linear(x, w)) <= 1e-3


def test_sparse_linear_runs_the_cutlass_choice_eagerly_and_compiled():
    """A layer told to measure only CUTLASS (min_speedup 0: kept even where dense is faster) runs it, holds its
    form, and gives the dense-with-zeros result eagerly and under torch.compile."""
    from llmsparse.kernels import SparseLinear

    w = _w(1024, 4096, torch.float16, seed=1)
    lin = SparseLinear.from_dense(w, None).cuda()
    lin.prepare((256,), paths=("cutlass",), min_speedup=0.0)
    assert lin.paths() == {256: "cutlass"} and lin._cutlass_a is not None and lin._cslt is None
    x = torch.randn(200, 4096, device="cuda", dtype=torch.float16)
    assert rel(lin(x), F.linear(x, w)) <= 1e-3
    fn = torch.compile(lin, fullgraph=True)
    assert rel(fn(x), F.linear(x, w)) <= 1e-3


def test_input_at_an_odd_offset():
    """A contiguous view that starts off a 16-byte boundary (TMA needs aligned addresses) is copied, not misread."""
    w = _w(256, 128, torch.float16)
    a_c, e = cs.compress(w)
    base = torch.randn(200 * 128 + 1, device="cuda", dtype=torch.float16)
    x = base[1:].view(200, 128)
    assert x.data_ptr() % 16 and x.is_contiguous()
    assert rel(cs.gemm(x, a_c, e, 4, 256), F.linear(x, w)) <= 1e-3
