"""2:4 kernels, ``SparseLinear``, the model-level swap and the capability checks.

``sparsify(model)`` swaps every 2:4 ``nn.Linear`` for a :class:`SparseLinear` that holds the packed
weight of :mod:`llmsparse.formats.nm`; on a CUDA GPU each layer runs the path measured fastest for
its token count (Gluon/Triton "load as sparse, compute as dense" kernels at small M, cuSPARSELt at
large M, dense cuBLAS where nothing sparse is faster); elsewhere it runs dense-with-zeros ``F.linear``.
Measured choices are kept on disk (:func:`kernel_cache`). Triton and cuSPARSELt are imported only
when a CUDA path is used.
"""
from .linear import SparseLinear, densify, is_24, kernel_cache, memory_bytes, prepare, sparsify, swap_packed

__all__ = ["SparseLinear", "sparsify", "densify", "prepare", "swap_packed", "is_24", "memory_bytes", "capability",
           "kernel_cache"]


def capability() -> dict:
    """What this machine can run: CUDA, GPU name, Triton, cuSPARSELt, the CUTLASS library (``cutlass``: True, or
    why not)."""
    import torch

    info = {"cuda": torch.cuda.is_available(), "torch": torch.__version__}
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name()
        info["sm"] = "%d.%d" % torch.cuda.get_device_capability()
        try:
            import torch.backends.cusparselt as cs

            info["cusparselt"] = cs.version() if cs.is_available() else None
        except Exception:
            info["cusparselt"] = None
        from . import cutlass_sp24

        info["cutlass"] = True if cutlass_sp24.available() else (cutlass_sp24.reason() or "needs compute capability 9.0")
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    return info
