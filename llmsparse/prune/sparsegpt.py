"""SparseGPT (Frantar & Alistarh, 2023): one-shot OBS pruning with a column-wise sweep.

``H = 2 X X^T`` (running mean over sequences), dampened by ``percdamp`` times its mean diagonal;
the upper Cholesky factor ``U`` of ``H^-1`` drives the sweep. Columns are processed in blocks of
``blocksize``; for unstructured sparsity the mask of a block is chosen when the sweep reaches it,
by ``w^2 / U_jj^2`` compared across the block (all rows together); for N:M it is chosen per group
of M columns per row. Every pruned weight's error is spread over the not-yet-processed columns.
"""
from __future__ import annotations

import torch

from ..spec import SparsitySpec
from ..stats import Hessian
from .registry import register


@torch.no_grad()
def prune(
    weight: torch.Tensor,
    H: Hessian | torch.Tensor,
    spec: SparsitySpec,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(new_weight, keep_mask)``; ``new_weight`` has zeros where the mask is False and
    the weight's dtype. With ``inplace`` the Hessian's storage is reused (and destroyed), which
    keeps peak memory at about two ``in x in`` matrices."""
    H = H.H if isinstance(H, Hessian) else H
    H = H.float() if inplace else H.clone().float()
    W = weight.detach().clone().float()
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    idx = torch.arange(cols, device=W.device)
    H[idx, idx] += damp
    L = torch.linalg.cholesky(H)
    del H
    Hinv = torch.cholesky_inverse(L)
    del L
    U = torch.linalg.cholesky(Hinv, upper=True)
    del Hinv
    keep = torch.ones_like(W, dtype=torch.bool)
    nm = spec.is_nm
    if nm and blocksize % spec.m:
        blocksize = max(spec.m, blocksize - blocksize % spec.m)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        d1 = torch.diag(U1)
        if nm:
            prune1 = torch.zeros_like(W1, dtype=torch.bool)
        else:
            metric = W1**2 / d1.reshape(1, -1) ** 2
            k = int(metric.numel() * spec.ratio)
            prune1 = torch.zeros(metric.numel(), dtype=torch.bool, device=W.device)
            if k:
                prune1[torch.sort(metric.flatten(), stable=True)[1][:k]] = True
            prune1 = prune1.view_as(W1)
        for i in range(count):
            w = W1[:, i]
            d = d1[i]
            if nm and i % spec.m == 0:
                metric = W1[:, i : i + spec.m] ** 2 / d1[i : i + spec.m].reshape(1, -1) ** 2
                sel = torch.topk(metric, spec.m - spec.n, dim=1, largest=False)[1]
                prune1[:, i : i + spec.m].scatter_(1, sel, True)
            q = w.masked_fill(prune1[:, i], 0)  # no boolean indexing: no host sync on GPU
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:].addr_(err, U1[i, i:], alpha=-1)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        keep[:, i1:i2] = ~prune1
        W[:, i2:].addmm_(Err1, U[i1:i2, i2:], alpha=-1)
    W[~keep] = 0
    return W.to(weight.dtype), keep


@register("sparsegpt")
class SparseGPT:
    stats = ("hessian",)

    def __init__(self, blocksize: int = 128, percdamp: float = 0.01, **_):
        self.blocksize = blocksize
        self.percdamp = percdamp

    def prune(self, weight, stats, spec, name=""):
        # the linears of one sequential group share one Hessian, so it is copied (not inplace)
        w, mask = prune(weight, stats["hessian"], spec, blocksize=self.blocksize, percdamp=self.percdamp)
        return w, mask, {}
