"""Architecture facts, one adapter per model family.

An adapter says where the decoder layers, embeddings, final norm and head are, and which linear
layers of a decoder layer form the *sequential groups* (layers whose inputs are the same tensor
and which run in that order). Every adapter passes the shared contract test in
``tests/unit/test_adapters.py``.

Note: mixture-of-experts models in transformers 5 often store experts as fused 3-D parameters
(``experts.gate_up_proj``), not ``nn.Linear``; ``linears()`` lists ``nn.Linear`` modules only, so
such experts are *not* pruned by the foundation methods (reported, never silent: see
``unpruned_params``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from ..errors import UserError


@dataclass(frozen=True)
class Adapter:
    family: str
    layers_path: str  # attribute path from the CausalLM to the ModuleList of decoder layers
    embed_paths: tuple[str, ...]
    final_norm_path: str | None
    head_path: str | None
    groups: tuple[tuple[str, ...], ...] = field(default_factory=tuple)  # names inside one layer

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return _get(model, self.layers_path)

    def get(self, model: nn.Module, path: str | None):
        return _get(model, path) if path else None

    def head(self, model: nn.Module):
        """The output projection (``lm_head``; older GPT-NeoX code calls it ``embed_out``)."""
        for p in (self.head_path, "lm_head", "embed_out"):
            if p and _has(model, p):
                return _get(model, p)
        return None

    def linears(self, layer: nn.Module) -> dict[str, nn.Linear]:
        """All ``nn.Linear`` modules of one decoder layer, by name relative to the layer."""
        return {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}

    def sequential_groups(self, layer: nn.Module) -> list[list[str]]:
        """The linears of ``layer`` in sequential groups; any linear not named in ``groups`` gets a
        group of its own at the end, so nothing is silently skipped."""
        lin = self.linears(layer)
        out, seen = [], set()
        for g in self.groups:
            present = [n for n in g if n in lin]
            if present:
                out.append(present)
                seen.update(present)
        rest = [n for n in lin if n not in seen]
        out.extend([n] for n in rest)
        return out


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _has(obj, path: str) -> bool:
    try:
        _get(obj, path)
        return True
    except AttributeError:
        return False


_LLAMA_GROUPS = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
)

LLAMA = Adapter(
    family="llama",
    layers_path="model.layers",
    embed_paths=("model.embed_tokens",),
    final_norm_path="model.norm",
    head_path="lm_head",
    groups=_LLAMA_GROUPS,
)
OPT = Adapter(
    family="opt",
    layers_path="model.decoder.layers",
    embed_paths=("model.decoder.embed_tokens", "model.decoder.embed_positions"),
    final_norm_path="model.decoder.final_layer_norm",
    head_path="lm_head",
    groups=(
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        ("self_attn.out_proj",),
        ("fc1",),
        ("fc2",),
    ),
)
GPT_NEOX = Adapter(
    family="gpt_neox",
    layers_path="gpt_neox.layers",
    embed_paths=("gpt_neox.embed_in",),
    final_norm_path="gpt_neox.final_layer_norm",
    head_path="lm_head",
    groups=(
        ("attention.query_key_value",),
        ("attention.dense",),
        ("mlp.dense_h_to_4h",),
        ("mlp.dense_4h_to_h",),
    ),
)

# model_type -> adapter. Llama-family models share one layout.
ADAPTERS: dict[str, Adapter] = {
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": LLAMA,
    "qwen3": LLAMA,
    "smollm3": LLAMA,
    "olmo": LLAMA,
    "olmo2": LLAMA,
    "opt": OPT,
    "gpt_neox": GPT_NEOX,
}

SUPPORTED = sorted(set(ADAPTERS))


def get_adapter(model: nn.Module) -> Adapter:
    """The adapter for ``model``; a generic one when the family is unknown but its decoder
    layers can be found; a UserError otherwise."""
    mt = getattr(getattr(model, "config", None), "model_type", None)
    ad = ADAPTERS.get(mt)
    if ad is not None and _has(model, ad.layers_path):
        return ad
    # generic: the ModuleList whose length is the configured number of layers
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and (n is None or len(mod) == n):
            if any(isinstance(x, nn.Linear) for x in mod[0].modules()):
                head = "lm_head" if _has(model, "lm_head") else None
                return Adapter(family=f"generic:{mt}", layers_path=name, embed_paths=(),
                               final_norm_path=None, head_path=head, groups=())
    raise UserError(
        f"model type '{mt}' has no recognisable decoder layers; supported families: {', '.join(SUPPORTED)}"
    )
