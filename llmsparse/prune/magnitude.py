"""Magnitude pruning: keep the largest |W|. Unstructured ratios compare across the whole matrix
(as in the Wanda reference code's magnitude baseline); N:M compares inside each group."""
from __future__ import annotations

import torch

from ..masks import select_mask
from ..spec import SparsitySpec
from .registry import register


def prune(weight: torch.Tensor, spec: SparsitySpec) -> torch.Tensor:
    """Keep-mask for ``weight``."""
    return select_mask(weight.abs().float(), spec, scope="matrix")


@register("magnitude")
class Magnitude:
    stats: tuple[str, ...] = ()

    def __init__(self, **_):
        pass

    def prune(self, weight, stats, spec, name=""):
        return None, prune(weight, spec), {}
