"""The prefill path: cuSPARSELt through PyTorch's private ops, on the sparse tensor cores.

``torch._cslt_compress(W)`` builds cuSPARSELt's own compressed form of a 2:4 weight (values and
metadata in one buffer, layout private to the library); ``torch._cslt_sparse_mm(Wc, x^T,
transpose_result=True, alg_id=a)`` returns ``x W^T`` as a contiguous ``[M, N]``; with
``transpose_result=False`` it returns ``W x^T = [N, M]`` (see :func:`cslt_linear`). The algorithm id
is chosen per (shape, dtype, M bucket) by measurement in :mod:`llmsparse.kernels.dispatch` and
passed as a plain int, so calls capture into CUDA graphs (the per-call plan setup on the host is
then paid once, at capture).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_ROW_ALIGN = 16  # pad the token count to this for cuSPARSELt (fp16/bf16 need multiples of 8)


def available() -> bool:
    try:
        import torch.backends.cusparselt as cs

        return bool(torch.cuda.is_available() and cs.is_available())
    except Exception:
        return False


def compress(dense_with_zeros: torch.Tensor) -> torch.Tensor:
    return torch._cslt_compress(dense_with_zeros.contiguous())


RESULT_MN, RESULT_COPY, RESULT_VIEW = 1, 0, 2  # the second element of a cslt choice (see cslt_linear)


def _pad_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` with zero rows appended up to :func:`padded_rows` (cuSPARSELt's dense operand)."""
    pad = padded_rows(x.shape[0]) - x.shape[0]
    return F.pad(x, (0, 0, 0, pad)) if pad else x


def padded_rows(m):
    """The token count rounded up to 16, as cuSPARSELt is given it (works on symbolic sizes)."""
    return m + (-m) % _ROW_ALIGN


def cslt_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, alg_id: int = 0,
                result: int = RESULT_MN) -> torch.Tensor:
    """``x[M, K] @ W^T (+ bias)`` with ``packed = compress(W)``, as ``[M, N]``.

    ``result``: 1 (``RESULT_MN``) asks cuSPARSELt for a contiguous ``[M, N]``; 0 (``RESULT_COPY``)
    computes ``W x^T = [N, M]`` (the layout PyTorch 2.11's stock path uses) and transposes it with a
    copy; 2 (``RESULT_VIEW``) returns that ``[N, M]`` result as a transposed, non-contiguous view, as
    the stock path does (for callers whose consumer absorbs the transpose: SparseLinear under
    torch.compile). Which is fastest depends on dtype, shape and algorithm; the dispatcher measures."""
    if result not in (RESULT_MN, RESULT_COPY, RESULT_VIEW):
        raise ValueError(f"cslt result layout must be 0, 1 or 2, got {result}")
    M = x.shape[0]
    if result == RESULT_MN:
        y = torch._cslt_sparse_mm(packed, _pad_rows(x).t(), bias=None, transpose_result=True, alg_id=alg_id)[:M]
    else:
        y = cslt_nm(x, packed, alg_id).t()[:M]
        if result == RESULT_COPY:
            y = y.contiguous()
    if bias is not None:
        y = y + bias
    return y


def cslt_nm(x: torch.Tensor, packed: torch.Tensor, alg_id: int) -> torch.Tensor:
    """cuSPARSELt's ``W x^T`` as a contiguous ``[N, Mp]`` (``Mp = padded_rows(M)``, the padded columns
    hold the product with zero rows): what ``result=2`` views, for a custom op whose output must be
    contiguous."""
    return torch._cslt_sparse_mm(packed, _pad_rows(x).t(), bias=None, transpose_result=False, alg_id=alg_id)


def search_alg(packed: torch.Tensor, x: torch.Tensor) -> int | None:
    """cuSPARSELt's own search (fastest alg id for this problem), or None where it fails."""
    try:
        return int(torch._cslt_sparse_mm_search(packed, _pad_rows(x).t(), transpose_result=True))
    except Exception:
        return None


def valid_alg_ids(packed: torch.Tensor, x: torch.Tensor, limit: int = 6) -> list[int]:
    """Alg ids 0..limit-1 that run on this problem (invalid ids raise inside cuSPARSELt)."""
    ok = []
    for a in range(limit):
        try:
            cslt_linear(x, packed, None, a)
            torch.cuda.synchronize()
            ok.append(a)
        except Exception:
            break
    return ok
