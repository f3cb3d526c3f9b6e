"""SliceGPT: rotate the residual stream with per-block PCA bases and delete the least important
directions (Ashkboos et al., "SliceGPT: Compress Large Language Models by Deleting Rows and
Columns", ICLR 2024; reference code: github.com/microsoft/TransformerCompression).

Algorithm (the authors' interleaved ``rotate_and_slice``, re-implemented; see docs/slicegpt.md):

for every decoder layer, with its inputs already rotated and sliced by the previous layer's basis:
  1. rotate/slice the attention input weights with the incoming basis Q_in;
  2. run the layer up to the MLP normalisation and take the covariance of that signal (the residual
     stream between attention and MLP, in the original basis, with all earlier slicing applied);
     its eigenvectors Q_mid (descending eigenvalues) rotate/slice the attention output and the MLP
     input; the attention skip connection becomes Q_in^T Q_mid (sliced);
  3. run the whole layer, take the covariance of its output, eigenvectors Q_out rotate/slice the MLP
     output; the MLP skip connection becomes Q_mid^T Q_out (sliced); the layer output, rotated and
     sliced, is the next layer's input.

Deliberate differences from the authors' code (measured in docs/slicegpt.md): the embeddings and the
LM head are not rotated or sliced. Layer 0 reads the un-rotated embeddings (its attention inputs
keep width d, its attention shortcut is d x d'), and the last layer writes back to the original
basis (the authors also keep the head unsliced by default). So tied embeddings stay tied and the
sliced model is smaller than the dense one.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
from torch import nn

from ..calibrate import StopForward, _to, capture_inputs
from ..errors import UserError
from .fusion import check_supported, fuse_norms
from .modeling import (
    SLICED_CONFIG_CLASSES,
    SLICED_MODEL_CLASSES,
    SlicedRMSNorm,
    decoder_layers,
    family_of,
    layer_parts,
    register_auto_classes,
)
from .pca import accumulate_covariance, pca_basis, sliced_dim

ProgressFn = Callable[[int, int, str], None]


def count_params(model: nn.Module) -> int:
    """Parameters counted once each (tied embeddings count once)."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# signal capture (private helpers; the lead's llmsparse.calibrate does the same for pruning)
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def capture_layer0_inputs(model, input_ids: torch.Tensor, batch_size: int, device, store) -> list[dict]:
    """Inputs of decoder layer 0 for every calibration batch, as
    ``[{"hidden": Tensor[b, s, d], "kwargs": dict}]`` (tensors on ``store``). The capture itself is
    the pruning engine's (:func:`llmsparse.calibrate.capture_inputs`)."""
    from ..models.adapters import get_adapter

    cache = capture_inputs(model, get_adapter(model), input_ids, device=torch.device(device), batch_size=batch_size)
    store = torch.device(store)
    out = []
    for i in range(len(cache)):
        h, kw = cache.batch(i)
        kw = dict(kw, use_cache=False)
        out.append({"hidden": h.to(store), "kwargs": _to(kw, store)})
    return out


@torch.no_grad()
def _run_layer(layer, batches: list[dict], device, store, stop_at: nn.Module | None = None) -> list[torch.Tensor]:
    """Run ``layer`` on every batch; with ``stop_at`` return that module's input instead of the output."""
    outs: list[torch.Tensor] = []
    handle = None
    grabbed: dict[str, torch.Tensor] = {}
    if stop_at is not None:

        def pre(_m, args):
            grabbed["x"] = args[0]
            raise StopForward

        handle = stop_at.register_forward_pre_hook(pre)
    try:
        for b in batches:
            h = b["hidden"].to(device)
            kw = _to(b["kwargs"], device)
            try:
                y = layer(h, **kw)
            except StopForward:
                y = grabbed["x"]
            if isinstance(y, tuple):
                y = y[0]
            outs.append(y.to(store))
    finally:
        if handle is not None:
            handle.remove()
    return outs


def _covariance(signals: list[torch.Tensor], device) -> torch.Tensor:
    H = None
    for x in signals:
        H = accumulate_covariance(H, x.to(device))
    return H


# --------------------------------------------------------------------------------------------
# weight rotation (pure tensor ops on nn.Linear data)
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def rotate_inputs(lin: nn.Linear, Q: torch.Tensor) -> None:
    """W <- W Q (Q: [old_in, new_in], float64). The linear now reads the rotated/sliced stream."""
    W = lin.weight.data
    lin.weight.data = (W.to(Q.device, torch.float64) @ Q).to(W.device, W.dtype)
    lin.in_features = Q.shape[1]


@torch.no_grad()
def rotate_outputs(lin: nn.Linear, Q: torch.Tensor) -> None:
    """W <- Q^T W, b <- Q^T b (Q: [old_out, new_out]). The linear now writes the rotated/sliced stream."""
    W = lin.weight.data
    lin.weight.data = (Q.T @ W.to(Q.device, torch.float64)).to(W.device, W.dtype)
    if lin.bias is not None:
        b = lin.bias.data
        lin.bias.data = (Q.T @ b.to(Q.device, torch.float64)).to(b.device, b.dtype)
    lin.out_features = Q.shape[1]


def _shortcut(S: torch.Tensor, ref: torch.Tensor) -> nn.Linear | None:
    """Residual map x -> x S as a bias-free Linear (weight S^T); None if S is the identity."""
    if S.shape[0] == S.shape[1] and torch.equal(S, torch.eye(S.shape[0], dtype=S.dtype, device=S.device)):
        return None
    lin = nn.Linear(S.shape[0], S.shape[1], bias=False, device=ref.device, dtype=ref.dtype)
    lin.weight.data = S.T.contiguous().to(ref.device, ref.dtype)
    return lin


def _shortcut_matrix(layer, name: str, d_in: int, device) -> torch.Tensor:
    sc = getattr(layer, name)
    if sc is None:
        return torch.eye(d_in, dtype=torch.float64, device=device)
    return sc.weight.data.to(device, torch.float64).T


# --------------------------------------------------------------------------------------------
# the algorithm
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def rotate_and_slice(
    model,
    layer0_inputs: list[dict],
    new_dim: int,
    *,
    device=None,
    store=None,
    progress: ProgressFn | None = None,
    Q_in: torch.Tensor | None = None,
    one_shortcut: bool = False,
) -> list[dict]:
    """Rotate every decoder layer with PCA bases of its calibration signals and slice to ``new_dim``.

    ``model`` must already be fused (``fuse_norms``). ``layer0_inputs`` comes from
    ``capture_layer0_inputs``. With ``new_dim == hidden_size`` nothing is deleted and the model
    computes the same function as before (computational invariance). ``Q_in`` ([d, k], float64):
    basis the layer-0 inputs are already in (authors' layout with rotated embeddings); default
    None = original basis. ``one_shortcut``: variant that reuses each layer's attention->MLP basis
    for its output, so only the attention skip connection needs a matrix. Experimental and NOT
    recommended: on SmolLM2 (P-smol, 25%) it gave perplexity 64114 vs 202 for the paper's two
    bases (MLP outputs write directions absent from the attention->MLP signal); docs/slicegpt.md. Returns per-layer specs
    ({"in", "mid", "out", "norm1", "attn_shortcut", "mlp_shortcut"}).
    """
    if not getattr(model, "_llmsparse_fused", False):
        raise ValueError("rotate_and_slice needs a fused model: call fuse_norms(model) first")
    family = family_of(model)
    d = model.config.hidden_size
    layers = decoder_layers(model)
    n = len(layers)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    store = torch.device(store) if store is not None else device
    inps = layer0_inputs
    # Q_in: basis of the incoming stream, [d, k_in]; None = original basis
    if Q_in is not None:
        Q_in = Q_in.to(device, torch.float64)
    specs: list[dict] = []
    specs_first_orig = Q_in is None and not isinstance(getattr(layers[0], layer_parts(layers[0], family)["norm1"]), SlicedRMSNorm)
    for idx, layer in enumerate(layers):
        orig_dev = next(layer.parameters()).device
        layer.to(device)
        parts = layer_parts(layer, family)
        ref = parts["attn_out"].weight
        k_in = d if Q_in is None else Q_in.shape[1]

        # (1) attention inputs read the rotated stream; the skip maps it back to the original basis
        if Q_in is not None:
            for lin in parts["attn_in"]:
                rotate_inputs(lin, Q_in)
            old = getattr(layer, parts["norm1"])
            setattr(layer, parts["norm1"], SlicedRMSNorm(k_in, old.full_dim, old.eps).to(device, ref.dtype))
            S_attn = Q_in.T  # [k_in, d]
        else:
            S_attn = _shortcut_matrix(layer, "attn_shortcut", d, device)  # identity, or centering (OPT)
        layer.attn_shortcut = _shortcut(S_attn, ref)

        # (2) PCA of the signal entering the MLP normalisation
        norm2 = getattr(layer, parts["norm2"])
        mid = _run_layer(layer, [{"hidden": b["hidden"], "kwargs": b["kwargs"]} for b in inps], device, store, stop_at=norm2)
        _, Q = pca_basis(_covariance(mid, device))
        del mid
        Q_mid = Q[:, :new_dim]
        rotate_outputs(parts["attn_out"], Q_mid)
        layer.attn_shortcut = _shortcut(S_attn @ Q_mid, ref)
        for lin in parts["mlp_in"]:
            rotate_inputs(lin, Q_mid)
        setattr(layer, parts["norm2"], SlicedRMSNorm(new_dim, norm2.full_dim, norm2.eps).to(device, ref.dtype))
        layer.mlp_shortcut = _shortcut(Q_mid.T.contiguous(), ref)

        # (3) PCA of the layer output (the last layer writes back to the original basis)
        if one_shortcut and idx < n - 1:
            # variant: keep Q_mid for the MLP output too, so the MLP skip connection is the identity
            rotate_outputs(parts["mlp_out"], Q_mid)
            layer.mlp_shortcut = None
            outs = _run_layer(layer, inps, device, store)
            inps = [{"hidden": o, "kwargs": b["kwargs"]} for o, b in zip(outs, inps)]
            Q_in = Q_mid
            k_out = new_dim
        else:
            outs = _run_layer(layer, inps, device, store)
        if one_shortcut and idx < n - 1:
            pass
        elif idx < n - 1:
            _, Q = pca_basis(_covariance(outs, device))
            Q_out = Q[:, :new_dim]
            rotate_outputs(parts["mlp_out"], Q_out)
            layer.mlp_shortcut = _shortcut(Q_mid.T @ Q_out, ref)
            Qs = Q_out.to(store)
            inps = [
                {"hidden": (o.to(torch.float64) @ Qs).to(o.dtype), "kwargs": b["kwargs"]} for o, b in zip(outs, inps)
            ]
            Q_in = Q_out
            k_out = new_dim
        else:
            k_out = d
        del outs
        specs.append(
            {
                "in": k_in,
                "mid": new_dim,
                "out": k_out,
                "norm1": "orig" if (idx == 0 and specs_first_orig) else "rms",
                "attn_shortcut": layer.attn_shortcut is not None,
                "mlp_shortcut": layer.mlp_shortcut is not None,
            }
        )
        layer.to(orig_dev)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if progress is not None:
            progress(idx + 1, n, "rotating and slicing")
    return specs


def _sliced_config(model, slicing: dict):
    register_auto_classes()
    family = family_of(model)
    cfg_cls = SLICED_CONFIG_CLASSES[family]
    data = model.config.to_dict()
    for k in ("model_type", "quantization_config", "architectures", "transformers_version", "auto_map"):
        data.pop(k, None)
    data["slicing"] = slicing
    cfg = cfg_cls(**data)
    cfg.architectures = [SLICED_MODEL_CLASSES[family].__name__]
    return cfg


@torch.no_grad()
def slice_model(
    model,
    calib_input_ids: torch.LongTensor,
    ratio: float,
    *,
    round_to: int = 8,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
    slice_embeddings: bool = False,
    one_shortcut: bool = False,
) -> dict:
    """Slice ``model`` in place with SliceGPT and return a summary dict.

    calib_input_ids: LongTensor[nsamples, seqlen]. ratio in [0, 1): fraction of the hidden size
    removed; the kept width is round_down((1 - ratio) * d, round_to). On return the model is an
    instance of the registered ``Sliced<Family>ForCausalLM`` class with ``config.slicing`` set.

    ``slice_embeddings=True`` reproduces the authors' layout for comparison (Llama family only):
    the input embeddings are mean-centred, rotated by the PCA basis of the layer-0 inputs and sliced,
    and the LM head is untied (a full V x d copy). The default keeps embeddings and head as they
    are (tied stays tied), see docs/slicegpt.md.
    """
    if not isinstance(ratio, (int, float)) or math.isnan(ratio) or not (0.0 <= ratio < 1.0):
        raise UserError(f"--ratio must be in [0, 1), got {ratio}; e.g. --ratio 0.25 removes 25% of the hidden size")
    if round_to < 1:
        raise UserError(f"--round-to must be a positive integer, got {round_to}")
    check_supported(model)
    if calib_input_ids.ndim != 2 or calib_input_ids.shape[0] < 1:
        raise UserError("calibration input must be a [nsamples, seqlen] tensor of token ids")
    t0 = time.time()
    model.eval()
    d = model.config.hidden_size
    new_dim = sliced_dim(d, ratio, round_to)
    params_before = count_params(model)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    store = dev  # signals stay on the compute device (the CPU path keeps them in RAM anyway)
    family = check_supported(model)
    Q0 = None
    if slice_embeddings:
        if family == "opt":
            raise UserError("slice_embeddings (the authors' layout) is implemented for the Llama family only")
        emb, head = model.get_input_embeddings(), model.get_output_embeddings()
        if head.weight is emb.weight:  # untie: the head keeps the original matrix
            head.weight = nn.Parameter(emb.weight.detach().clone())
        model.config.tie_word_embeddings = False
        W = emb.weight.data.double()
        emb.weight.data = (W - W.mean(dim=-1, keepdim=True)).to(emb.weight.dtype)  # as the authors do
    fuse_norms(model, fuse_first=slice_embeddings)
    inps = capture_layer0_inputs(model, calib_input_ids, batch_size, dev, store)
    if slice_embeddings:
        _, Q = pca_basis(_covariance([b["hidden"] for b in inps], dev))
        Q0 = Q[:, :new_dim]
        emb = model.get_input_embeddings()
        emb.weight.data = (emb.weight.data.to(dev, torch.float64) @ Q0).to(emb.weight.device, emb.weight.dtype)
        emb.embedding_dim = new_dim
        Qs = Q0.to(store)
        inps = [{"hidden": (b["hidden"].to(torch.float64) @ Qs).to(b["hidden"].dtype), "kwargs": b["kwargs"]} for b in inps]
    specs = rotate_and_slice(
        model, inps, new_dim, device=dev, store=store, progress=progress, Q_in=Q0, one_shortcut=one_shortcut
    )
    del inps
    model.to(next(decoder_layers(model)[0].parameters()).device)
    slicing = {
        "method": "slicegpt",
        "full_dim": d,
        "sliced_dim": new_dim,
        "ratio": float(ratio),
        "round_to": int(round_to),
        "eps": float(_first_sliced_norm(model).eps),
        "embed_dim": new_dim if slice_embeddings else d,
        "variant": ("authors-embeddings " if slice_embeddings else "") + ("one-shortcut" if one_shortcut else "paper"),
        "layers": specs,
    }
    model.config = _sliced_config(model, slicing)
    model.__class__ = SLICED_MODEL_CLASSES[family_of(model)]
    params_after = count_params(model)
    return {
        "method": "slicegpt",
        "ratio": float(ratio),
        "round_to": int(round_to),
        "hidden_size": d,
        "sliced_hidden_size": new_dim,
        "num_layers": len(specs),
        "params_before": params_before,
        "params_after": params_after,
        "tied_embeddings": _is_tied(model),
        "calibration": {"nsamples": int(calib_input_ids.shape[0]), "seqlen": int(calib_input_ids.shape[1])},
        "seconds": round(time.time() - t0, 2),
    }


def _first_sliced_norm(model) -> SlicedRMSNorm:
    for m in model.modules():
        if isinstance(m, SlicedRMSNorm):
            return m
    raise RuntimeError("no SlicedRMSNorm found")


def _is_tied(model) -> bool:
    try:
        return model.get_output_embeddings().weight is model.get_input_embeddings().weight
    except AttributeError:
        return False


def save_sliced(model, tokenizer, out_dir, info: dict | None = None) -> None:
    """Write a checkpoint (safetensors + config.json with ``slicing``) loadable by
    ``AutoModelForCausalLM.from_pretrained`` once ``llmsparse`` is imported, or by ``load_sliced``."""
    if not getattr(model.config, "slicing", None):
        raise UserError("model is not sliced: run slice_model first")
    if getattr(model.config, "quantization_config", None) is not None:  # e.g. left over from a GGUF load
        del model.config.quantization_config
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.save_pretrained(out_dir, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)


def load_sliced(path, dtype=None, device=None):
    """Load a checkpoint written by ``save_sliced`` (no ``trust_remote_code``; safetensors only)."""
    import json
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    register_auto_classes()
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"{path}: no config.json; expected a directory written by `llmsparse slice`")
    cfg_json = json.loads(cfg_file.read_text())
    mt = cfg_json.get("model_type", "")
    if not mt.startswith("llmsparse_sliced_") and not cfg_json.get("slicing"):
        raise UserError(f"{path} is not a sliced checkpoint (model_type '{mt}'); load it with from_pretrained")
    kw: dict[str, Any] = {"use_safetensors": True}
    if dtype is not None:
        kw["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(str(path), **kw)
    if device is not None:
        model.to(device)
    model.eval()
    return model
