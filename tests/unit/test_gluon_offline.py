"""The Gluon decode kernel compiled for sm_90 on the CPU (Triton's bundled ptxas/nvdisasm): it must
compile for both dtypes, and its main loop must stay free of barriers, shared-memory round trips
and register spills -- the property that made it faster than the Triton kernel (docs/kernels.md)."""
import pytest

triton = pytest.importorskip("triton")
from llmsparse.kernels import gluon_sp24, offline  # noqa: E402

pytestmark = pytest.mark.skipif(not (gluon_sp24.AVAILABLE and offline.tools_available()),
                                reason="needs Triton with Gluon and its bundled CUDA tools")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("cfg", [gluon_sp24.CONFIGS[0], gluon_sp24.CONFIGS_MULTI[4][0]])
def test_gluon_gemv_main_loop_is_register_only(dtype, cfg):
    s = offline.gluon_gemv_stats(dtype, cfg, has_bias=True)
    assert s["stack"] == 0, s
    assert s["loop_barriers"] == 0 and s["loop_shared"] == 0, s
    # one FMA per kept weight and token held by a thread: every product is in the loop, none twice
    assert s["loop_ffma"] == s["kept_per_iteration"], s
    # about 8 instructions per kept weight (13 for the Triton kernel); a regression would show here
    assert s["loop"] / s["kept_per_iteration"] < 10, s


@pytest.mark.skipif(not gluon_sp24.MMA_AVAILABLE, reason="needs Gluon's mma_v2 and linear layouts")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("cfg,even_k", [((2, 1, 8, 16, 1), True), ((2, 2, 4, 32, 4), False)])
def test_gluon_mm_fragments_are_built_in_registers(dtype, cfg, even_k):
    """The tensor-core kernel rebuilds W's MMA fragments in the registers that hold the packed weights:
    the layout conversions it asks for must all be register renamings (no shared memory, no barrier)."""
    s = offline.gluon_mm_stats(dtype, cfg, has_bias=True, even_k=even_k)
    assert s["stack"] == 0, s
    assert s["loop_barriers"] == 0 and s["loop_shared"] == 0, s
    wn, rn, krep, bm = cfg[:4]
    assert s["loop_mma"] == rn * krep * (bm // 8), s  # one m16n8k16 per 16 rows x 16 k x 8 tokens of a warp
    assert s["loop"] / s["kept_per_iteration"] < 12, s


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("cfg,even_k", [((8, 2, 1, 1, 0), True), ((8, 2, 1, 1, 1), True), ((4, 2, 2, 2, 0), False),
                                         ((8, 2, 1, 2, 1), False)])
def test_gluon_mmsp_feeds_the_sparse_tensor_cores_from_plain_loads(dtype, cfg, even_k):
    """The experimental mma.sp kernel: one HMMA.SP per 16 rows x 32 inputs x 8 tokens of a warp, each
    operand a plain global load (no shared memory, barrier or spill in the loop), and at most 4
    instructions per kept weight a thread handles (gemvg: about 8)."""
    from llmsparse.kernels import gluon_mmsp

    if not gluon_mmsp.MMSP_AVAILABLE:
        pytest.skip("needs Gluon's linear layouts")
    s = offline.gluon_mmsp_stats(dtype, cfg, has_bias=True, even_k=even_k, keep_lines=True)
    lines = s.pop("lines")
    assert s["stack"] == 0, s
    assert s["loop_barriers"] == 0 and s["loop_shared"] == 0, s
    wk, ku, rt, nt = cfg[:4]
    assert sum("HMMA.SP.16832.F32" in x for x in lines) == ku * rt * nt, s
    # kept weights per thread in the loop body (ptxas may unroll it): 8 per MMA of distinct weights
    kept = s["loop_mma"] // nt * 8
    assert s["loop"] / kept < (4 if even_k else 6), s
