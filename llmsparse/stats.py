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


class MeanVar:
    """Per input channel mean, population variance and sum of squares (Chan et al. merge of batch
    moments, fp64 accumulators: exact to rounding whatever the batch split)."""

    def __init__(self, in_features: int, device=None):
        self.count = 0
        self._mean = torch.zeros(in_features, dtype=torch.float64, device=device)
        self._m2 = torch.zeros(in_features, dtype=torch.float64, device=device)
        self.sq = torch.zeros(in_features, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor) -> None:
        r = x.reshape(-1, x.shape[-1]).double()
        nb = r.shape[0]
        if nb == 0:
            return
        mb = r.mean(0)
        m2b = ((r - mb) ** 2).sum(0)
        n = self.count + nb
        delta = mb - self._mean
        self._mean += delta * (nb / n)
        self._m2 += m2b + delta * delta * (self.count * nb / n)
        self.sq += (r * r).sum(0)
        self.count = n

    @property
    def mean(self) -> torch.Tensor:
        return self._mean.float()

    @property
    def var(self) -> torch.Tensor:
        return (self._m2 / max(self.count, 1)).float()


STATS = {"rownorm": RowNorm, "hessian": Hessian, "meanvar": MeanVar}
