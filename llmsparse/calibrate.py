"""Capture the inputs of decoder layer 0 and run decoder layers one at a time.

``capture_inputs`` runs the embedding part of the model on the device with a pre-hook on layer 0
that stores the hidden states and the layer's keyword arguments (attention mask, position
embeddings ...) and stops the forward. ``ActivationCache`` keeps those per batch, on the device
while they fit a byte budget and in (pinned) CPU memory otherwise. ``run_layer`` streams every
cached batch through one decoder layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .models.adapters import Adapter


class StopForward(Exception):
    """Raised by a hook to end a forward pass early."""


def _to(obj, device, non_blocking=False):
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, tuple):
        return tuple(_to(o, device, non_blocking) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device, non_blocking) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device, non_blocking) for k, v in obj.items()}
    return obj


@dataclass
class ActivationCache:
    """Hidden states entering the current layer, one tensor per batch, plus the per-batch
    keyword arguments every decoder layer takes (unchanged from layer to layer)."""

    hidden: list[torch.Tensor]
    kwargs: list[dict]
    store: torch.device  # where the hidden states live
    compute: torch.device  # where layers run
    extras: dict = field(default_factory=dict)

    def batch(self, i: int) -> tuple[torch.Tensor, dict]:
        h = self.hidden[i]
        if h.device != self.compute:
            h = h.to(self.compute, non_blocking=True)
        return h, self.kwargs[i]

    def put(self, i: int, h: torch.Tensor) -> None:
        if self.store != self.compute:
            dst = torch.empty(h.shape, dtype=h.dtype, device=self.store,
                              pin_memory=self.compute.type == "cuda")
            dst.copy_(h, non_blocking=True)
            h = dst
        self.hidden[i] = h

    def __len__(self) -> int:
        return len(self.hidden)

    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.hidden)


def _pre_layer_modules(model: nn.Module, adapter: Adapter) -> list[nn.Module]:
    """Modules the forward runs before decoder layer 0: the siblings of the layer list."""
    path = adapter.layers_path.split(".")
    parent = model
    for p in path[:-1]:
        parent = getattr(parent, p)
    layers = getattr(parent, path[-1])
    return [m for m in parent.children() if m is not layers]


@torch.no_grad()
def capture_inputs(
    model: nn.Module,
    adapter: Adapter,
    input_ids: torch.Tensor,
    *,
    device: torch.device,
    batch_size: int = 8,
    budget_bytes: int | None = None,
    progress=None,
) -> ActivationCache:
    """Run ``input_ids`` ``[N, S]`` up to decoder layer 0 and cache that layer's inputs."""
    layers = adapter.layers(model)
    pre = _pre_layer_modules(model, adapter)
    homes = [next(m.parameters(), torch.empty(0)).device for m in pre]
    for m in pre:
        m.to(device)
    hidden, kwargs = [], []

    def hook(mod, args, kw):
        h = args[0] if args else kw.pop("hidden_states")
        kw = {k: v for k, v in kw.items() if k not in ("hidden_states", "past_key_value", "past_key_values")}
        hidden.append(h)
        kwargs.append(kw)
        raise StopForward

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for s in range(0, input_ids.shape[0], batch_size):
            try:
                model(input_ids=input_ids[s : s + batch_size].to(device), use_cache=False)
            except StopForward:
                pass
            if progress is not None:
                progress()
    finally:
        handle.remove()
        for m, home in zip(pre, homes):
            m.to(home)
    total = sum(h.numel() * h.element_size() for h in hidden)
    store = device
    if device.type != "cpu" and budget_bytes is not None and 2 * total > budget_bytes:
        store = torch.device("cpu")
    cache = ActivationCache(hidden=[], kwargs=kwargs, store=store, compute=device)
    for i, h in enumerate(hidden):
        cache.hidden.append(None)
        cache.put(i, h)
    return cache


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def run_layer(layer: nn.Module, cache: ActivationCache, *, update: bool, progress=None) -> None:
    """Stream every cached batch through ``layer``. With ``update`` the outputs replace the
    cached hidden states (they become the next layer's inputs); otherwise they are dropped
    (a pass that only feeds statistics hooks). A ``StopForward`` from a hook ends a batch early."""
    for i in range(len(cache)):
        h, kw = cache.batch(i)
        try:
            out = _first(layer(h, **kw))
        except StopForward:
            out = None
        if update:
            if out is None:
                raise RuntimeError("a hook stopped the forward of an output pass")
            cache.put(i, out)
        if progress is not None:
            progress()
