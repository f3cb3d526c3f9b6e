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

INITS = ("wanda", "sparsegpt", "magnitude", "existing")


class _Existing:
    stats: tuple[str, ...] = ()

    def prune(self, weight, stats, spec, name=""):
        from ..masks import is_nm

        mask = weight != 0
        if spec.is_nm and not is_nm(mask, spec.n, spec.m):
            raise UserError(f"{name}: its zeros do not form the {spec} pattern that dsnot --init existing was given")
        return None, mask, {}


@register("dsnot")
class DSnoT:
    def __init__(self, init: str = "wanda", max_cycles=None, update_threshold=None, pow_var_grow=None,
                 pow_var_prune=None, skip=None, accept=None, blocksize: int = 128, percdamp: float = 0.01, seqlen=None,
                 dense: dict | None = None, **_):
        from .registry import get_method

        if init not in INITS:
            raise UserError(f"unknown --init '{init}' for dsnot; choose one of: {', '.join(INITS)}")
        self.init_name = init
        self.dense = dense  # for init "existing": {full linear name: dense weight before pruning}
        # "existing": refine the zeros already in the model (DSnoT as a step after any pruner)
        self.init = _Existing() if init == "existing" else get_method(init, blocksize=blocksize, percdamp=percdamp)
        given = dict(max_cycles=max_cycles, update_threshold=update_threshold, pow_var_grow=pow_var_grow,
                     pow_var_prune=pow_var_prune, skip=skip, seqlen=seqlen, accept=accept)
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
        dense = weight
        if self.init_name == "existing":
            # the zeros are already in place: DSnoT needs the weights they replaced
            if not self.dense or name not in self.dense:
                raise UserError("dsnot --init existing needs the dense weights (run it as a recipe step after a pruner)")
            dense = self.dense[name].to(weight.device)
            new_w = weight.clone()
        mv = stats["meanvar"]
        keep, info = refine(dense, mask, mv.mean, mv.var, mv.sq_norm, spec, self.opts)
        if new_w is None:
            out = None if dense is weight else dense
        else:  # earlier values where both masks keep (e.g. SparseGPT's updates), dense values where grown
            out = torch.where(mask, new_w, dense.to(new_w.dtype))
        return out, keep, {k: (round(v, 6) if isinstance(v, float) else v) for k, v in info.items()}
