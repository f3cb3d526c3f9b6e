"""Streaming per-input-channel statistics for DSnoT: mean, population variance, sum of squares.

``MeanVarSq.update(x)`` takes activations shaped ``[..., in]`` (any leading dims: batch, tokens)
and merges the batch's moments into the running ones with Chan et al.'s parallel formula
(numerically stable; no ``E[x^2] - E[x]^2`` cancellation). Accumulation is fp32 by default
(the design's rule for streamed statistics); pass ``dtype=torch.float64`` for a reference.

Note on the authors' code (zyxxmu/DSnoT, ``lib/layerwrapper.py``): their running ``var`` is the
token-weighted average of the per-batch (per-sequence) variances, which leaves out the spread
of the per-sequence means; ours is the true population variance over every token seen.
"""
from __future__ import annotations

import torch


class MeanVarSq:
    """Running mean, population variance and sum of squares of each input channel."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype
        self._n = 0
        self._mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None  # sum of squared deviations from the running mean
        self._sq: torch.Tensor | None = None  # sum of x^2

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        if x.dim() == 0:
            raise ValueError("MeanVarSq.update needs a tensor shaped [..., in]")
        x = x.detach().reshape(-1, x.shape[-1]).to(self.dtype)
        nb = x.shape[0]
        if nb == 0:
            return
        mb = x.mean(0)
        m2b = (x - mb).square().sum(0)
        sqb = x.square().sum(0)
        if self._mean is None:
            self._n, self._mean, self._m2, self._sq = nb, mb, m2b, sqb
            return
        if mb.shape != self._mean.shape:
            raise ValueError(f"width {mb.shape[0]} differs from the {self._mean.shape[0]} seen before")
        na = self._n
        n = na + nb
        delta = mb - self._mean
        self._mean = self._mean + delta * (nb / n)
        self._m2 = self._m2 + m2b + delta.square() * (na * nb / n)
        self._sq = self._sq + sqb
        self._n = n

    def merge(self, other: "MeanVarSq") -> None:
        """Fold another accumulator (e.g. from another device or worker) into this one."""
        if other._mean is None:
            return
        if self._mean is None:
            self._n, self._mean = other._n, other._mean.clone()
            self._m2, self._sq = other._m2.clone(), other._sq.clone()
            return
        na, nb = self._n, other._n
        n = na + nb
        om = other._mean.to(self._mean)
        delta = om - self._mean
        self._mean = self._mean + delta * (nb / n)
        self._m2 = self._m2 + other._m2.to(self._m2) + delta.square() * (na * nb / n)
        self._sq = self._sq + other._sq.to(self._sq)
        self._n = n

    def _need(self) -> None:
        if self._mean is None:
            raise RuntimeError("MeanVarSq has seen no data")

    @property
    def count(self) -> int:
        """Number of rows (tokens) seen."""
        return self._n

    @property
    def mean(self) -> torch.Tensor:
        self._need()
        return self._mean

    @property
    def var(self) -> torch.Tensor:
        """Population variance (divides by the count)."""
        self._need()
        return (self._m2 / self._n).clamp_min(0)

    @property
    def sq_norm(self) -> torch.Tensor:
        """Sum of x_j^2 over every token seen (Wanda's squared input norm)."""
        self._need()
        return self._sq
