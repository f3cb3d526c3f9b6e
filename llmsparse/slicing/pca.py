"""Streaming covariance and PCA basis for SliceGPT (pure tensor functions)."""

from __future__ import annotations

import torch


def accumulate_covariance(H: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """H + X^T X in float64, X = x flattened to (tokens, d). Un-normalised (a sum), like the paper's code."""
    x2 = x.reshape(-1, x.shape[-1]).to(torch.float64)
    if H is None:
        H = torch.zeros(x2.shape[1], x2.shape[1], dtype=torch.float64, device=x2.device)
    H.addmm_(x2.T, x2)
    return H


def pca_basis(H: torch.Tensor, damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of a dampened covariance, eigenvalues in descending order.

    Adds ``damp * mean(diag(H))`` to the diagonal (the authors' choice, 1%), then ``eigh`` in
    float64. Returns (eigenvalues[d], eigenvectors[d, d]) with eigenvector i in column i.
    """
    H = H.to(torch.float64).clone()
    idx = torch.arange(H.shape[0], device=H.device)
    H[idx, idx] += damp * torch.mean(torch.diagonal(H))
    vals, vecs = torch.linalg.eigh(H)
    order = torch.argsort(vals, descending=True)
    return vals[order], vecs[:, order]


def sliced_dim(d: int, ratio: float, multiple: int = 8) -> int:
    """round_down((1 - ratio) * d, multiple), at least ``multiple`` (and at most d)."""
    k = int((1.0 - ratio) * d)
    if multiple > 1:
        k -= k % multiple
    return max(min(k, d), min(multiple, d))
