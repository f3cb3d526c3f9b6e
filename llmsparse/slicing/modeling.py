"""Module structure of a sliced model (SliceGPT), shared by slicing and loading.

A sliced decoder layer is the family's own decoder layer with three changes:

* ``attn_shortcut`` / ``mlp_shortcut``: optional bias-free ``nn.Linear`` on the residual
  (skip) connections. SliceGPT rotates the residual stream of every block with its own
  orthogonal matrix; where the rotation changes between the input and the output of a
  sub-block, the skip connection must apply ``Q_in^T Q_out`` (sliced). ``None`` = identity.
* the normalisations that read a rotated/sliced residual stream are ``SlicedRMSNorm``: an
  RMSNorm over ``dim`` (<= ``full_dim``) entries that still divides by ``full_dim``. This keeps
  the original normalisation constant, as the paper's ``RMSN(hidden_size)`` does, and makes the
  rotated model exactly equivalent to the original one before slicing.
* linear layers have the sliced widths recorded in ``config.slicing``.

With ``vocab="keep"`` the normalisation in front of layer 0 and the final normalisation stay the
family's own modules (the residual stream is not rotated there). With ``vocab="slice"`` (the Llama
default) the embedding is ``V x k``, layer 0's input norm is a ``SlicedRMSNorm`` too, and the final
norm is a ``SlicedRMSNorm`` with an optional ``k x k`` ``proj`` (the head map of a tied model);
``config.slicing["final"]`` records it. Tied embeddings stay tied in both cases.

Checkpoints are saved with ``model_type = "llmsparse_sliced_<family>"``; importing
``llmsparse.slicing`` registers these types with ``AutoConfig`` / ``AutoModelForCausalLM`` so
that ``AutoModelForCausalLM.from_pretrained(path)`` loads them without ``trust_remote_code``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# family name -> (transformers module path, config class, causal LM class)
_FAMILIES: dict[str, tuple[str, str, str]] = {
    "llama": ("transformers.models.llama.modeling_llama", "LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("transformers.models.mistral.modeling_mistral", "MistralConfig", "MistralForCausalLM"),
    "qwen2": ("transformers.models.qwen2.modeling_qwen2", "Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("transformers.models.qwen3.modeling_qwen3", "Qwen3Config", "Qwen3ForCausalLM"),
    "opt": ("transformers.models.opt.modeling_opt", "OPTConfig", "OPTForCausalLM"),
}
LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")
SUPPORTED_FAMILIES = tuple(_FAMILIES)
SLICED_PREFIX = "llmsparse_sliced_"


class SlicedRMSNorm(nn.Module):
    """RMSNorm over the first ``dim`` coordinates of a rotated stream, normalised by ``full_dim``.

    y = weight * x / sqrt(sum(x^2) / full_dim + eps). With dim == full_dim and weight == 1 this is
    the weight-free RMSNorm the fused model uses; computing in float32 like the HF norms.

    ``proj=True`` adds a bias-free ``dim x dim`` linear map after the normalisation (used as the
    final norm when the vocabulary side is sliced and the embeddings stay tied).
    """

    def __init__(self, dim: int, full_dim: int, eps: float, proj: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.full_dim = int(full_dim)
        self.eps = float(eps)
        self.proj = nn.Linear(dim, dim, bias=False) if proj else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.to(torch.float32)
        var = x32.pow(2).sum(-1, keepdim=True) / self.full_dim
        y = self.weight * (x32 * torch.rsqrt(var + self.eps)).to(dtype)
        return y if self.proj is None else self.proj(y)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, full_dim={self.full_dim}, eps={self.eps}"


# --------------------------------------------------------------------------------------------
# decoder-layer forwards with shortcut matrices
# --------------------------------------------------------------------------------------------


def _cache_kwargs(past_key_values, kwargs: dict) -> dict:
    """Pass the KV cache on under the name the caller used (transformers >= 5.24 calls it ``cache``
    and warns when both names are given)."""
    if past_key_values is not None:
        kwargs = dict(kwargs, past_key_values=past_key_values)
    return kwargs


def _llama_like_forward(
    self,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.LongTensor | None = None,
    past_key_values: Any = None,
    use_cache: bool | None = False,
    position_embeddings: Any = None,
    **kwargs,
) -> torch.Tensor:
    residual = hidden_states
    hidden_states = self.input_layernorm(hidden_states)
    hidden_states, _ = self.self_attn(
        hidden_states=hidden_states,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=use_cache,
        position_embeddings=position_embeddings,
        **_cache_kwargs(past_key_values, kwargs),
    )
    if self.attn_shortcut is not None:
        residual = self.attn_shortcut(residual)
    hidden_states = residual + hidden_states
    residual = hidden_states
    hidden_states = self.post_attention_layernorm(hidden_states)
    hidden_states = self.mlp(hidden_states)
    if self.mlp_shortcut is not None:
        residual = self.mlp_shortcut(residual)
    return residual + hidden_states


def _opt_forward(
    self,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    past_key_values: Any = None,
    use_cache: bool | None = False,
    position_ids: torch.LongTensor | None = None,
    **kwargs,
) -> torch.Tensor:
    # pre-LN OPT only (do_layer_norm_before=True); dropout is off in eval and not reproduced here
    residual = hidden_states
    hidden_states = self.self_attn_layer_norm(hidden_states)
    hidden_states, _ = self.self_attn(
        hidden_states=hidden_states,
        position_ids=position_ids,
        attention_mask=attention_mask,
        **_cache_kwargs(past_key_values, kwargs),
    )
    if self.attn_shortcut is not None:
        residual = self.attn_shortcut(residual)
    hidden_states = residual + hidden_states
    residual = hidden_states
    hidden_states = self.final_layer_norm(hidden_states)
    hidden_states = self.fc2(self.activation_fn(self.fc1(hidden_states)))
    if self.mlp_shortcut is not None:
        residual = self.mlp_shortcut(residual)
    return residual + hidden_states


_SLICED_LAYER_CLASSES: dict[type, type] = {}


def sliced_layer_class(base: type, family: str) -> type:
    """A subclass of the family's decoder layer whose forward applies the shortcut matrices."""
    if getattr(base, "_llmsparse_sliced", False):
        return base
    cls = _SLICED_LAYER_CLASSES.get(base)
    if cls is None:
        fwd = _opt_forward if family == "opt" else _llama_like_forward
        cls = type(f"Sliced{base.__name__}", (base,), {"forward": fwd, "_llmsparse_sliced": True})
        _SLICED_LAYER_CLASSES[base] = cls
    return cls


# --------------------------------------------------------------------------------------------
# per-family module access
# --------------------------------------------------------------------------------------------


def family_of(model_or_config) -> str | None:
    cfg = getattr(model_or_config, "config", model_or_config)
    mt = getattr(cfg, "model_type", None) or ""
    if mt.startswith(SLICED_PREFIX):
        mt = mt[len(SLICED_PREFIX):]
    return mt if mt in _FAMILIES else None


def decoder_layers(model) -> nn.ModuleList:
    if family_of(model) == "opt":
        return model.model.decoder.layers
    return model.model.layers


def layer_parts(layer, family: str) -> dict[str, Any]:
    """Names of the parts SliceGPT touches in one decoder layer."""
    if family == "opt":
        a = layer.self_attn
        return {
            "norm1": "self_attn_layer_norm",
            "norm2": "final_layer_norm",
            "attn_in": [a.q_proj, a.k_proj, a.v_proj],
            "attn_out": a.out_proj,
            "mlp_in": [layer.fc1],
            "mlp_out": layer.fc2,
        }
    a, m = layer.self_attn, layer.mlp
    return {
        "norm1": "input_layernorm",
        "norm2": "post_attention_layernorm",
        "attn_in": [a.q_proj, a.k_proj, a.v_proj],
        "attn_out": a.o_proj,
        "mlp_in": [m.gate_proj, m.up_proj],
        "mlp_out": m.down_proj,
    }


def embeddings(model) -> list[nn.Module]:
    if family_of(model) == "opt":
        d = model.model.decoder
        return [d.embed_tokens, d.embed_positions]
    return [model.model.embed_tokens]


def final_norm(model) -> nn.Module:
    if family_of(model) == "opt":
        return model.model.decoder.final_layer_norm
    return model.model.norm


def norm_eps(model) -> float:
    cfg = model.config
    if family_of(model) == "opt":
        return 1e-5  # nn.LayerNorm default, which OPT uses
    return float(getattr(cfg, "rms_norm_eps", 1e-6))


def _resize_linear(lin: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    if lin.in_features == in_features and lin.out_features == out_features:
        return lin
    w = lin.weight
    new = nn.Linear(in_features, out_features, bias=lin.bias is not None, device=w.device, dtype=w.dtype)
    return new


def convert_layer(layer: nn.Module, family: str, spec: dict, full_dim: int, eps: float) -> None:
    """Give ``layer`` the sliced structure described by ``spec`` (fresh weights where shapes change).

    spec: {"in": int, "mid": int, "out": int, "norm1": "orig"|"rms", "attn_shortcut": bool,
    "mlp_shortcut": bool}. Used when loading a checkpoint (weights come from the file after).
    """
    layer.__class__ = sliced_layer_class(type(layer), family)
    parts = layer_parts(layer, family)
    d_in, d_mid, d_out = spec["in"], spec["mid"], spec["out"]
    ref = parts["attn_out"].weight
    dev, dt = ref.device, ref.dtype

    def set_linear(owner, name, in_f, out_f):
        old = getattr(owner, name)
        setattr(owner, name, _resize_linear(old, in_f, out_f))

    attn = layer.self_attn
    for name in ("q_proj", "k_proj", "v_proj"):
        set_linear(attn, name, d_in, getattr(attn, name).out_features)
    oname = "out_proj" if family == "opt" else "o_proj"
    set_linear(attn, oname, getattr(attn, oname).in_features, d_mid)
    if family == "opt":
        set_linear(layer, "fc1", d_mid, layer.fc1.out_features)
        set_linear(layer, "fc2", layer.fc2.in_features, d_out)
    else:
        m = layer.mlp
        set_linear(m, "gate_proj", d_mid, m.gate_proj.out_features)
        set_linear(m, "up_proj", d_mid, m.up_proj.out_features)
        set_linear(m, "down_proj", m.down_proj.in_features, d_out)
    if spec.get("norm1", "rms") == "rms":
        setattr(layer, parts["norm1"], SlicedRMSNorm(d_in, full_dim, eps).to(device=dev, dtype=dt))
    setattr(layer, parts["norm2"], SlicedRMSNorm(d_mid, full_dim, eps).to(device=dev, dtype=dt))
    layer.attn_shortcut = (
        nn.Linear(d_in, d_mid, bias=False, device=dev, dtype=dt) if spec.get("attn_shortcut") else None
    )
    layer.mlp_shortcut = (
        nn.Linear(d_mid, d_out, bias=False, device=dev, dtype=dt) if spec.get("mlp_shortcut") else None
    )


# --------------------------------------------------------------------------------------------
# registered config/model classes
# --------------------------------------------------------------------------------------------

SLICED_CONFIG_CLASSES: dict[str, type] = {}
SLICED_MODEL_CLASSES: dict[str, type] = {}


def _make_classes(family: str) -> tuple[type, type]:
    import importlib

    mod_path, cfg_name, lm_name = _FAMILIES[family]
    mod = importlib.import_module(mod_path)
    cfg_mod = importlib.import_module(mod_path.replace(".modeling_", ".configuration_"))
    base_cfg = getattr(cfg_mod, cfg_name)
    base_lm = getattr(mod, lm_name)
    model_type = SLICED_PREFIX + family
    cfg_cls = type(f"Sliced{cfg_name}", (base_cfg,), {"model_type": model_type, "__module__": __name__})

    def __init__(self, config):
        base_lm.__init__(self, config)
        apply_slicing_structure(self, config.slicing)

    lm_cls = type(
        f"Sliced{lm_name}",
        (base_lm,),
        {"config_class": cfg_cls, "__init__": __init__, "__module__": __name__},
    )
    return cfg_cls, lm_cls


def apply_slicing_structure(model, slicing: dict) -> None:
    """Turn a freshly built family model into the sliced structure recorded in ``slicing``."""
    family = family_of(model)
    layers = decoder_layers(model)
    k_emb = slicing.get("embed_dim", slicing["full_dim"])
    if k_emb != slicing["full_dim"]:  # authors' layout: sliced input embeddings (Llama family)
        old = model.model.embed_tokens
        model.model.embed_tokens = nn.Embedding(
            old.num_embeddings, k_emb, padding_idx=old.padding_idx, device=old.weight.device, dtype=old.weight.dtype
        )
    for layer, spec in zip(layers, slicing["layers"]):
        convert_layer(layer, family, spec, slicing["full_dim"], slicing["eps"])
    final = slicing.get("final")
    if final:  # sliced vocabulary side: final norm (+ k x k map) and head read the sliced stream
        ref = model.model.embed_tokens.weight
        model.model.norm = SlicedRMSNorm(final["dim"], slicing["full_dim"], slicing["eps"], proj=final["proj"]).to(
            device=ref.device, dtype=ref.dtype
        )
        head = model.get_output_embeddings()
        model.lm_head = nn.Linear(final["dim"], head.out_features, bias=False, device=ref.device, dtype=ref.dtype)
        if getattr(model.config, "tie_word_embeddings", False):
            model.lm_head.weight = model.model.embed_tokens.weight


def register_auto_classes() -> None:
    """Register every sliced family with AutoConfig / AutoModelForCausalLM (idempotent)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    for family in _FAMILIES:
        if family in SLICED_MODEL_CLASSES:
            continue
        try:
            cfg_cls, lm_cls = _make_classes(family)
        except (ImportError, AttributeError):  # family missing from this transformers version
            continue
        AutoConfig.register(cfg_cls.model_type, cfg_cls, exist_ok=True)
        AutoModelForCausalLM.register(cfg_cls, lm_cls, exist_ok=True)
        SLICED_CONFIG_CLASSES[family] = cfg_cls
        SLICED_MODEL_CLASSES[family] = lm_cls
        globals()[cfg_cls.__name__] = cfg_cls
        globals()[lm_cls.__name__] = lm_cls
