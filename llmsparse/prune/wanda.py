"""Wanda (Sun et al., 2023): score ``|W_ij| * ||X_j||_2``, compared per output row (unstructured)
or per group of M input columns (N:M). No weight update."""
from __future__ import annotations

import torch

from ..masks import select_mask
from ..spec import SparsitySpec
from ..stats import RowNorm
from .registry import register


def scores(weight: torch.Tensor, sq_norm: torch.Tensor) -> torch.Tensor:
    """``|W| * sqrt(sq_norm)`` broadcast over rows; ``sq_norm[j]`` is ``sum_t x_tj^2`` up to a
    constant factor (which does not change any per-row ranking)."""
    return weight.abs().float() * sq_norm.float().sqrt().reshape(1, -1)


def prune(weight: torch.Tensor, stat: RowNorm | torch.Tensor, spec: SparsitySpec) -> torch.Tensor:
    sq = stat.sq if isinstance(stat, RowNorm) else stat
    return select_mask(scores(weight, sq), spec, scope="row")


@register("wanda")
class Wanda:
    stats = ("rownorm",)

    def __init__(self, **_):
        pass

    def prune(self, weight, stats, spec, name=""):
        return None, prune(weight, stats["rownorm"], spec), {}
