"""Packed 2:4 checkpoint straight into the 2:4 kernels (``load_packed(device="cuda")``): the stored
values+meta become SparseLinear modules without a dense copy; outputs match the dense model."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_packed_to_sparse_kernels(tmp_path, dtype):
    from llmsparse.formats import packed
    from llmsparse.kernels import SparseLinear
    from tests.unit.test_format_packed import pruned_tiny

    m = pruned_tiny("llama", dtype, "2:4")
    packed.save_packed(m, None, tmp_path / "p", {"recipe": {"sparsity": "2:4"}})
    m2, _ = packed.load_packed(tmp_path / "p", device="cuda")
    sl = [x for x in m2.modules() if isinstance(x, SparseLinear)]
    assert len(sl) == 14 and all(x.values.is_cuda for x in sl)
    ids = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        ref = m.cuda()(ids.cuda()).logits.float()
        out = m2(ids.cuda()).logits.float()
    rel = float((out - ref).norm() / ref.norm())
    assert rel < 2e-2, rel


def test_llmsparse_load_routes_packed_to_kernels(tmp_path):
    """``llmsparse.load(path, device="cuda")`` gives SparseLinear layers for a packed 2:4 checkpoint."""
    import llmsparse
    from llmsparse.formats import packed
    from llmsparse.kernels import SparseLinear
    from tests.unit.test_format_packed import pruned_tiny

    m = pruned_tiny("llama", torch.float16, "2:4")
    packed.save_packed(m, None, tmp_path / "p", {"recipe": {"sparsity": "2:4"}})
    m2 = llmsparse.load(str(tmp_path / "p"), device="cuda")
    assert sum(isinstance(x, SparseLinear) for x in m2.modules()) == 14
