"""Normalisation fusion for SliceGPT (computational invariance, Ashkboos et al., ICLR 2024, Sec. 3).

Pure tensor helpers (``fuse_scale_into_inputs``, ``center_output_rows``, ``centering_matrix``)
plus ``fuse_norms(model)``, which applies them to a Hugging Face model in place.

After ``fuse_norms`` every normalisation that reads the residual stream inside the decoder stack
is a weight-free RMSNorm (``SlicedRMSNorm`` with weight 1), which commutes with any orthogonal
rotation of the stream. The model computes the same function as before (to float rounding).

Two normalisations are deliberately *not* fused: the one in front of layer 0 and the final one
before the LM head. The residual stream is left in its original basis there (layer 0 reads the
un-rotated embeddings and the last layer writes back to the original basis), so these norms
never see a rotated signal. This keeps tied input/output embeddings tied (see docs/slicegpt.md).

For LayerNorm models (OPT) the mean subtraction is moved out of the norms: every linear layer that
writes to the residual stream gets zero-mean output columns (``center_output_rows``), and the
embedding signal entering the stream is centred by the layer-0 attention shortcut (a d x d
centering matrix, later merged with the first rotation). The final LayerNorm is kept as is.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .modeling import (
    SlicedRMSNorm,
    decoder_layers,
    family_of,
    layer_parts,
    sliced_layer_class,
)


def fuse_scale_into_inputs(
    weight: torch.Tensor, bias: torch.Tensor | None, norm_weight: torch.Tensor, norm_bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fold y = n*g + b (elementwise norm affine) into a following linear W y + c.

    Returns (W diag(g), c + W b) computed in float64 and cast back to W's dtype.
    """
    W = weight.double()
    new_w = (W * norm_weight.double()[None, :]).to(weight.dtype)
    new_b = bias
    if norm_bias is not None:
        c = bias.double() if bias is not None else torch.zeros(W.shape[0], dtype=torch.float64, device=W.device)
        new_b = (c + W @ norm_bias.double()).to(weight.dtype)
    return new_w, new_b


def center_output_rows(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Make a linear layer's outputs zero-mean over the output dimension: C W, C b with C = I - 11^T/d."""
    W = weight.double()
    new_w = (W - W.mean(dim=0, keepdim=True)).to(weight.dtype)
    new_b = None if bias is None else (bias.double() - bias.double().mean()).to(bias.dtype)
    return new_w, new_b


def centering_matrix(d: int, dtype=torch.float64, device=None) -> torch.Tensor:
    return torch.eye(d, dtype=dtype, device=device) - torch.full((d, d), 1.0 / d, dtype=dtype, device=device)


def _norm_affine(norm: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
    w = getattr(norm, "weight", None)
    b = getattr(norm, "bias", None)
    eps = getattr(norm, "variance_epsilon", None)
    if eps is None:
        eps = getattr(norm, "eps", 1e-6)
    return w, b, float(eps)


def check_supported(model) -> str:
    """Return the family name or raise a UserError naming the supported families."""
    mt = getattr(model.config, "model_type", "?")
    if mt.startswith("llmsparse_sliced_") or getattr(model.config, "slicing", None):
        raise UserError(f"this model is already sliced ({mt}); slice the original dense model instead")
    family = family_of(model)
    if family is None:
        raise UserError(
            f"slicing does not support model type '{mt}'; supported families: "
            "Llama (incl. SmolLM), Mistral, Qwen2, Qwen3 (RMSNorm) and OPT (LayerNorm)"
        )
    cfg = model.config
    if family == "opt":
        if not getattr(cfg, "do_layer_norm_before", True) or model.model.decoder.final_layer_norm is None:
            raise UserError("slicing supports pre-LayerNorm OPT models only (not OPT-350m-style post-LN)")
        if model.model.decoder.project_in is not None or model.model.decoder.project_out is not None:
            raise UserError("slicing does not support OPT models with project_in/project_out (e.g. OPT-350m)")
        if not getattr(cfg, "layer_norm_elementwise_affine", True):
            raise UserError("slicing needs OPT LayerNorms with elementwise affine parameters")
    else:
        if getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", None):
            raise UserError("slicing does not support mixture-of-experts models")
    return family


@torch.no_grad()
def fuse_norms(model, *, fuse_first: bool = False) -> nn.Module:
    """Fold normalisation scales (and LayerNorm means/biases) into adjacent linear layers, in place.

    Converts every decoder layer to the sliced-layer class (shortcuts = identity), replaces the
    fused norms with weight-free ``SlicedRMSNorm`` and returns the model. Idempotent.
    ``fuse_first`` also fuses layer 0's input norm (needed when the embeddings are rotated, i.e.
    the authors' layout; RMSNorm families only).
    """
    if getattr(model, "_llmsparse_fused", False):
        return model
    family = check_supported(model)
    layers = decoder_layers(model)
    d = model.config.hidden_size
    for idx, layer in enumerate(layers):
        layer.__class__ = sliced_layer_class(type(layer), family)
        parts = layer_parts(layer, family)
        ref = parts["attn_out"].weight
        # norm in front of attention: kept for layer 0 (stream not rotated there), fused otherwise
        if idx > 0 or fuse_first:
            n1 = getattr(layer, parts["norm1"])
            g, b, eps = _norm_affine(n1)
            for lin in parts["attn_in"]:
                w, bb = fuse_scale_into_inputs(lin.weight.data, _bias(lin), g, b)
                _set(lin, w, bb)
            setattr(layer, parts["norm1"], SlicedRMSNorm(d, d, eps).to(device=ref.device, dtype=ref.dtype))
        n2 = getattr(layer, parts["norm2"])
        g, b, eps = _norm_affine(n2)
        for lin in parts["mlp_in"]:
            w, bb = fuse_scale_into_inputs(lin.weight.data, _bias(lin), g, b)
            _set(lin, w, bb)
        setattr(layer, parts["norm2"], SlicedRMSNorm(d, d, eps).to(device=ref.device, dtype=ref.dtype))
        layer.attn_shortcut = None
        layer.mlp_shortcut = None
        if family == "opt":
            for lin in (parts["attn_out"], parts["mlp_out"]):
                w, bb = center_output_rows(lin.weight.data, _bias(lin))
                _set(lin, w, bb)
            if idx == 0:
                # centre the (embedding) residual that enters layer 0: x -> x C
                sc = nn.Linear(d, d, bias=False, device=ref.device, dtype=ref.dtype)
                sc.weight.data = centering_matrix(d, device=ref.device).to(ref.dtype)
                layer.attn_shortcut = sc
    model._llmsparse_fused = True
    return model


def _bias(lin: nn.Linear) -> torch.Tensor | None:
    return None if lin.bias is None else lin.bias.data


def _set(lin: nn.Linear, w: torch.Tensor, b: torch.Tensor | None) -> None:
    lin.weight.data = w
    if b is not None:
        if lin.bias is None:
            lin.bias = nn.Parameter(b)
        else:
            lin.bias.data = b
