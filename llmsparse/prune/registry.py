"""Pruning methods register here by name; the engine and the CLI look them up.

A method is a small object with:

* ``stats``: names of the streaming statistics (``llmsparse.stats.STATS``) it needs per linear
  layer, empty when it needs no calibration data;
* ``prune(weight, stats, spec, name) -> (new_weight or None, keep_mask, info)``: pure tensor math.
"""
from __future__ import annotations

from ..errors import UserError

METHODS: dict[str, type] = {}


def register(name: str):
    def deco(cls):
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def get_method(name: str, **options):
    from . import magnitude, sparsegpt, wanda  # noqa: F401  (registration)

    try:
        from . import dsnot_method  # noqa: F401
    except ImportError:
        pass
    if name not in METHODS:
        raise UserError(f"unknown method '{name}'; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name](**options)
