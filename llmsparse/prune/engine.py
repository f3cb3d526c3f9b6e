"""The layer-wise engine shared by every calibrated method.

Capture the inputs of decoder layer 0; then, for each decoder layer: move it to the device,
attach statistics hooks, stream the cached batches, prune, re-run the layer so the next one sees
pruned outputs, move it back. Only one decoder layer is on the accelerator at a time.

Two groupings:

* ``layer`` (default, as the Wanda and SparseGPT reference code): the statistics of every linear
  layer come from one pass of the still-dense decoder layer; then all are pruned.
* ``sequential``: sequential groups (attention inputs, attention output, MLP inputs, MLP output)
  are pruned one after another, each group's statistics taken with the earlier groups already
  pruned (one extra, early-stopped pass per group).

Linear layers of one sequential group read the same input, so they share one set of statistics.
"""
from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..calibrate import StopForward, capture_inputs, run_layer
from ..errors import UserError
from ..masks import is_nm, sparsity
from ..models.adapters import get_adapter
from ..spec import CalibSpec, SparsitySpec
from ..stats import STATS
from .registry import get_method


@dataclass
class PruneConfig:
    method: str = "wanda"
    sparsity: SparsitySpec = field(default_factory=lambda: SparsitySpec(ratio=0.5))
    calib: CalibSpec = field(default_factory=CalibSpec)
    seed: int = 0
    ignore: tuple[str, ...] = ()
    grouping: str = "layer"
    batch_size: int = 8
    device: str | None = None
    cache_budget_gb: float | None = None
    method_options: dict = field(default_factory=dict)


class _NullProgress:
    def task(self, description: str, total: int):
        return lambda n=1: None

    def done(self, task_advance):
        pass


def _ignored(full_name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(full_name, p) for p in patterns)


def plan_targets(model: nn.Module, spec: SparsitySpec, ignore=()) -> dict[str, nn.Linear]:
    """Full names of the linear layers that will be pruned; checks N:M widths up front."""
    adapter = get_adapter(model)
    out = {}
    for i, layer in enumerate(adapter.layers(model)):
        for n, mod in adapter.linears(layer).items():
            full = f"{adapter.layers_path}.{i}.{n}"
            if _ignored(full, ignore):
                continue
            spec.check_width(mod.in_features, full)
            out[full] = mod
    if not out:
        raise UserError("no linear layer left to prune (check --ignore)")
    return out


def _linear_report(full: str, weight: torch.Tensor, spec: SparsitySpec) -> dict:
    rep = {"shape": list(weight.shape), "sparsity": round(sparsity(weight), 6)}
    if spec.is_nm:
        ok = is_nm(weight, spec.n, spec.m)
        rep["pattern"] = f"{spec.n}:{spec.m}" if ok else "broken"
        if not ok:
            raise RuntimeError(f"{full}: pruned weight fails the {spec} pattern (bug)")
    return rep


@torch.no_grad()
def prune_model(model: nn.Module, tokenizer, cfg: PruneConfig, progress=None) -> dict:
    """Prune ``model`` in place. Returns a report (per-linear sparsity, timings, method info)."""
    from ..data import calibration_batches
    from ..models.load import pick_device

    progress = progress or _NullProgress()
    t0 = time.perf_counter()
    spec = SparsitySpec.parse(cfg.sparsity)
    method = get_method(cfg.method, **cfg.method_options)
    adapter = get_adapter(model)
    targets = plan_targets(model, spec, cfg.ignore)
    device = pick_device(cfg.device)
    layers = adapter.layers(model)
    report: dict = {"layers": {}, "method_info": {}}
    dtype = next(model.parameters()).dtype

    cache = None
    if method.stats:
        calib = CalibSpec.parse(cfg.calib)
        if hasattr(method, "set_calibration"):
            method.set_calibration(calib)
        ctx = getattr(model.config, "max_position_embeddings", None)
        if ctx is not None and calib.seqlen > ctx:
            raise UserError(f"calibration seqlen {calib.seqlen} exceeds the model's context of {ctx} tokens; use a smaller seqlen")
        ids = calibration_batches(tokenizer, calib, seed=cfg.seed)
        report["calib_tokens"] = int(ids.numel())
        budget = None
        if device.type == "cuda":
            budget = int((cfg.cache_budget_gb if cfg.cache_budget_gb is not None else 2.0) * 2**30)
        nb = (ids.shape[0] + cfg.batch_size - 1) // cfg.batch_size
        adv = progress.task("calibration: embedding", nb)
        cache = capture_inputs(model, adapter, ids, device=device, batch_size=cfg.batch_size,
                               budget_bytes=budget, progress=adv)
        report["cache_device"] = str(cache.store)
    t_layers = time.perf_counter()
    adv_layer = progress.task(f"{cfg.method} {spec}: layers", len(layers))
    for li, layer in enumerate(layers):
        home = next(layer.parameters()).device
        layer.to(device)
        prefix = f"{adapter.layers_path}.{li}."
        lins = adapter.linears(layer)
        groups = [[n for n in g if prefix + n in targets] for g in adapter.sequential_groups(layer)]
        groups = [g for g in groups if g]
        if cache is None:
            for g in groups:
                for n in g:
                    _apply(method, lins[n], {}, spec, prefix + n, report)
        else:
            passes = [sum(groups, [])] if cfg.grouping == "layer" else groups
            if cfg.grouping not in ("layer", "sequential"):
                raise UserError(f"unknown grouping '{cfg.grouping}'; use layer or sequential")
            for names in passes:
                _stats_pass_and_prune(layer, lins, names, groups, method, spec, prefix, cache, report)
            run_layer(layer, cache, update=True)
        layer.to(home)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        adv_layer()
    report["time_layers_s"] = round(time.perf_counter() - t_layers, 3)
    report["time_total_s"] = round(time.perf_counter() - t0, 3)
    total = sum(targets[n].weight.numel() for n in targets)
    zeros = sum(int((targets[n].weight == 0).sum()) for n in targets)
    report["pruned_linears"] = len(targets)
    report["sparsity_overall"] = round(zeros / total, 6)
    report["dtype"] = str(dtype).replace("torch.", "")
    report["device"] = str(device)
    return report


def _stats_pass_and_prune(layer, lins, names, groups, method, spec, prefix, cache, report):
    # one statistics object per sequential group (its members read the same input); pre-hooks,
    # so the pass can stop before the last group's own matmul
    stats_by_group, hooks = {}, []
    members = [g for g in groups if set(g) & set(names)]
    fired: set = set()  # leads seen in the current batch; stop once every one has fired
    for g in members:
        lead = lins[g[0]]
        st = {s: STATS[s](lead.in_features, device=lead.weight.device) for s in method.stats}
        stats_by_group[tuple(g)] = st

        def hook(mod, args, st=st, key=g[0]):
            for s in st.values():
                s.update(args[0])
            fired.add(key)
            if len(fired) == len(members):
                fired.clear()
                raise StopForward

        hooks.append(lead.register_forward_pre_hook(hook))
    try:
        run_layer(layer, cache, update=False)
    finally:
        for h in hooks:
            h.remove()
    for g, st in stats_by_group.items():
        for n in g:
            _apply(method, lins[n], st, spec, prefix + n, report)


def _apply(method, mod: nn.Linear, stats: dict, spec: SparsitySpec, full: str, report: dict):
    # The methods' math is many small tensor ops (SparseGPT's column sweep, DSnoT's cycles). On the
    # CPU one thread runs them faster than several, and far faster on a busy machine, where
    # OpenMP barriers between threads stall (measured: 2.1 s vs 36 s for a 1536x576 SparseGPT).
    on_cpu = mod.weight.device.type == "cpu"
    threads = torch.get_num_threads()
    if on_cpu:
        torch.set_num_threads(1)
    try:
        new_w, mask, info = method.prune(mod.weight.data, stats, spec, full)
    finally:
        if on_cpu:
            torch.set_num_threads(threads)
    if new_w is not None:
        mod.weight.data.copy_(new_w)
    mod.weight.data[~mask] = 0
    report["layers"][full] = _linear_report(full, mod.weight.data, spec)
    if info:
        report["method_info"][full] = info
