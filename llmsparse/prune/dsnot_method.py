"""``dsnot``: an initial pruner (wanda, sparsegpt or magnitude) followed by DSnoT's prune-and-grow
refinement of each mask (``llmsparse.prune.dsnot.refine``), layer by layer in the shared engine.

The refinement swaps which weights are kept; the values of kept weights are the dense weights,
except that with ``--init sparsegpt`` weights kept by both masks keep SparseGPT's updated values
(grown weights come back with their dense value).
"""
from __future__ import annotations

import torch

from ..errors import UserError
from .dsnot import DSnoTOptions, refine, skip_layer
from .registry import register

INITS = ("wanda", "sparsegpt", "magnitude")


@register("dsnot")
class DSnoT:
    def __init__(self, init: str = "wanda", max_cycles=None, update_threshold=None, pow_var_grow=None,
                 pow_var_prune=None, skip=None, blocksize: int = 128, percdamp: float = 0.01, seqlen=None, **_):
        from .registry import get_method

        if init not in INITS:
            raise UserError(f"unknown --init '{init}' for dsnot; choose one of: {', '.join(INITS)}")
        self.init_name = init
        self.init = get_method(init, blocksize=blocksize, percdamp=percdamp)
        given = dict(max_cycles=max_cycles, update_threshold=update_threshold, pow_var_grow=pow_var_grow,
                     pow_var_prune=pow_var_prune, skip=skip, seqlen=seqlen)
        try:
            self.opts = DSnoTOptions(**{k: v for k, v in given.items() if v is not None})
        except ValueError as e:
            raise UserError(f"dsnot: {e}") from None
        self.stats = tuple(dict.fromkeys(self.init.stats + ("meanvar",)))

    def set_calibration(self, calib) -> None:
        """The authors' threshold is in units of one calibration sequence (see DSnoTOptions)."""
        self.opts.seqlen = calib.seqlen

    def options(self) -> dict:
        return {"init": self.init_name, **self.opts.to_dict()}

    def prune(self, weight, stats, spec, name=""):
        new_w, mask, _ = self.init.prune(weight, stats, spec, name)
        if skip_layer(name, self.opts):
            return new_w, mask, {"skipped": True}
        mv = stats["meanvar"]
        keep, info = refine(weight, mask, mv.mean, mv.var, mv.sq_norm, spec, self.opts)
        if new_w is None:
            out = None
        else:  # sparsegpt init: updated values where both masks keep, dense values where grown
            out = torch.where(mask, new_w, weight.to(new_w.dtype))
        return out, keep, {k: (round(v, 6) if isinstance(v, float) else v) for k, v in info.items()}
