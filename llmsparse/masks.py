"""Mask selection and pattern validation. Vectorised; no Python loops over columns.

Convention: a *mask* is a boolean tensor shaped like the weight, ``True`` where the weight is
KEPT. Scores are "importance": larger means keep.
"""
from __future__ import annotations

import torch

from .spec import SparsitySpec


def per_row_mask(score: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keep-mask that prunes the ``int(cols * ratio)`` lowest scores of every row."""
    rows, cols = score.shape
    k = int(cols * ratio)
    mask = torch.ones_like(score, dtype=torch.bool)
    if k == 0:
        return mask
    idx = torch.sort(score, dim=1, stable=True)[1][:, :k]
    mask.scatter_(1, idx, False)
    return mask


def per_matrix_mask(score: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keep-mask that prunes the ``int(numel * ratio)`` lowest scores of the whole matrix."""
    k = int(score.numel() * ratio)
    mask = torch.ones(score.numel(), dtype=torch.bool, device=score.device)
    if k:
        idx = torch.sort(score.flatten(), stable=True)[1][:k]
        mask[idx] = False
    return mask.view_as(score)


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask with the ``n`` largest scores of every ``m`` consecutive columns of each row."""
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"width {cols} is not divisible by M={m}")
    g = score.reshape(rows, cols // m, m)
    prune_idx = torch.topk(g, m - n, dim=2, largest=False)[1]
    mask = torch.ones_like(g, dtype=torch.bool)
    mask.scatter_(2, prune_idx, False)
    return mask.reshape(rows, cols)


def select_mask(score: torch.Tensor, spec: SparsitySpec, scope: str = "row") -> torch.Tensor:
    """Keep-mask for ``spec``: N:M groups, or an unstructured ratio compared per row or per matrix."""
    if spec.is_nm:
        return nm_mask(score, spec.n, spec.m)
    if scope == "row":
        return per_row_mask(score, spec.ratio)
    if scope == "matrix":
        return per_matrix_mask(score, spec.ratio)
    raise ValueError(f"unknown scope {scope!r}")


def is_nm(t: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of ``m`` consecutive entries along the last dim has at most ``n`` nonzeros.

    ``t`` may be a weight (nonzero = kept) or a boolean keep-mask.
    """
    if t.shape[-1] % m:
        return False
    nz = (t != 0).reshape(*t.shape[:-1], t.shape[-1] // m, m).sum(-1)
    return bool((nz <= n).all())


def sparsity(t: torch.Tensor) -> float:
    """Fraction of exact zeros."""
    return float((t == 0).sum()) / max(t.numel(), 1)
