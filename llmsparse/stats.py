"""Streaming statistics of a linear layer's inputs, accumulated in fp32 batch by batch.

Each statistic takes ``update(x)`` with ``x`` shaped ``[..., in_features]`` (the leading dims are
tokens) and never holds more than one batch of activations.
"""
from __future__ import annotations

import torch


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).float()


class RowNorm:
    """Per input channel sum of squares: ``sq[j] = sum_t x[t, j]^2`` (Wanda's ``||X_j||_2^2``)."""

    def __init__(self, in_features: int, device=None):
        self.sq = torch.zeros(in_features, dtype=torch.float32, device=device)
        self.tokens = 0

    def update(self, x: torch.Tensor) -> None:
        r = _rows(x)
        self.sq += (r * r).sum(0)
        self.tokens += r.shape[0]

    @property
    def norm(self) -> torch.Tensor:
        return self.sq.sqrt()


class Hessian:
    """SparseGPT's layer Hessian ``H = 2/n * sum_s X_s X_s^T`` over ``n`` calibration sequences,
    kept as a running mean (as the reference code does) so it never grows with ``n``."""

    def __init__(self, in_features: int, device=None):
        self.H = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.nsamples = 0

    def update(self, x: torch.Tensor) -> None:
        b = x.shape[0] if x.dim() == 3 else 1
        r = _rows(x)
        self.H *= self.nsamples / (self.nsamples + b)
        self.nsamples += b
        r = r * (2.0 / self.nsamples) ** 0.5
        self.H.addmm_(r.t(), r)


def _meanvar(in_features: int, device=None):
    from .prune.dsnot_stats import MeanVarSq

    return MeanVarSq()


STATS = {"rownorm": RowNorm, "hessian": Hessian, "meanvar": _meanvar}  # meanvar: DSnoT's MeanVarSq
