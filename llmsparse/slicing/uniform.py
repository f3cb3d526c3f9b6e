"""Experimental: SliceGPT with ONE rotation for the whole residual stream ("uniform" basis).

With a single orthogonal basis Q for every block, all shortcut matrices are the identity, so the
sliced model is an ordinary family model (e.g. ``LlamaForCausalLM``) with ``hidden_size = k`` and
an explicit ``head_dim``: the checkpoint loads with plain ``from_pretrained``, no llmsparse import.
The price is accuracy: one basis cannot follow the residual stream as it drifts through the
blocks, and the statistics come from the dense model (no interleaving). Measured on SmolLM2
(P-smol, 25%): perplexity 227.5 vs 201.7 for the per-block layout, 1.23x vs 1.07x CPU speed-up; ``slice_model`` (per-block bases, the paper's method) is the default.

Choices: Q = eigenvectors of the sum of the trace-normalised covariances of every residual-stream
signal (each layer's input, the attention->MLP signal, the final output), dampened like the
per-block PCA. Norms become the family's RMSNorm over k entries with eps' = eps * d / k and weight
sqrt(d / k), which equals RMS normalisation by the original width d.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ..errors import UserError
from .fusion import check_supported, fuse_norms, fuse_scale_into_inputs
from .modeling import LLAMA_LIKE, decoder_layers, layer_parts
from .pca import pca_basis, sliced_dim
from .slicegpt import _covariance, _run_layer, capture_layer0_inputs, count_params, rotate_inputs, rotate_outputs


@torch.no_grad()
def slice_model_uniform(model, calib_input_ids, ratio: float, *, round_to: int = 8, batch_size: int = 8, device=None):
    if not (0.0 <= ratio < 1.0):
        raise UserError(f"--ratio must be in [0, 1), got {ratio}")
    family = check_supported(model)
    if family not in LLAMA_LIKE:
        raise UserError("uniform slicing needs an RMSNorm family with explicit head_dim (Llama, Mistral, Qwen2/3)")
    model.eval()
    cfg = model.config
    d = cfg.hidden_size
    k = sliced_dim(d, ratio, round_to)
    if k % cfg.num_attention_heads:
        raise UserError(f"uniform slicing: sliced width {k} must be a multiple of the {cfg.num_attention_heads} heads")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    t0 = time.time()
    before = count_params(model)
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head.weight is emb.weight:
        head.weight = nn.Parameter(emb.weight.detach().clone())
    cfg.tie_word_embeddings = False
    fuse_norms(model, fuse_first=True)
    fn = model.model.norm
    eps = float(getattr(fn, "variance_epsilon", 1e-6))
    w, _ = fuse_scale_into_inputs(head.weight.data, None, fn.weight.data, None)
    head.weight.data = w

    # statistics of the dense (fused) model
    inps = capture_layer0_inputs(model, calib_input_ids, batch_size, dev, dev)
    H = torch.zeros(d, d, dtype=torch.float64, device=dev)

    def add(signals):
        C = _covariance(signals, dev)
        H.add_(C / torch.trace(C))

    add([b["hidden"] for b in inps])
    for layer in decoder_layers(model):
        home = next(layer.parameters()).device
        layer.to(dev)
        parts = layer_parts(layer, family)
        add(_run_layer(layer, inps, dev, dev, stop_at=getattr(layer, parts["norm2"])))
        outs = _run_layer(layer, inps, dev, dev)
        add(outs)
        inps = [{"hidden": o, "kwargs": b["kwargs"]} for o, b in zip(outs, inps)]
        layer.to(home)
    del inps
    model.to(next(decoder_layers(model)[0].parameters()).device)
    Q = pca_basis(H)[1][:, :k]

    # rotate + slice everything with the same basis
    emb.weight.data = (emb.weight.data.to(dev, torch.float64) @ Q).to(emb.weight.device, emb.weight.dtype)
    emb.embedding_dim = k
    rotate_inputs(head, Q)
    norm_cls = type(fn)

    def new_norm(ref):
        n = norm_cls(k, eps=eps * d / k).to(device=ref.device, dtype=ref.dtype)
        n.weight.data.fill_((d / k) ** 0.5)
        return n

    for layer in decoder_layers(model):
        parts = layer_parts(layer, family)
        for lin in parts["attn_in"] + parts["mlp_in"]:
            rotate_inputs(lin, Q)
        rotate_outputs(parts["attn_out"], Q)
        rotate_outputs(parts["mlp_out"], Q)
        ref = parts["attn_out"].weight
        setattr(layer, parts["norm1"], new_norm(ref))
        setattr(layer, parts["norm2"], new_norm(ref))
        layer.__class__ = type(layer).__mro__[1]  # back to the family's own decoder layer
        del layer.attn_shortcut, layer.mlp_shortcut
    model.model.norm = new_norm(head.weight)
    cfg.head_dim = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    cfg.hidden_size = k
    cfg.rms_norm_eps = eps * d / k
    model._llmsparse_fused = False
    # recorded in config.json (a plain extra key: the checkpoint stays a stock family model)
    cfg.slicing = {"method": "slicegpt", "layout": "uniform", "full_dim": d, "sliced_dim": k,
                   "ratio": float(ratio), "round_to": int(round_to)}
    return {"method": "slicegpt", "layout": "uniform", "ratio": float(ratio), "round_to": int(round_to),
            "hidden_size": d, "sliced_hidden_size": k, "num_layers": len(decoder_layers(model)),
            "params_before": before, "params_after": count_params(model), "tied_embeddings": False,
            "calibration": {"nsamples": int(calib_input_ids.shape[0]), "seqlen": int(calib_input_ids.shape[1])},
            "seconds": round(time.time() - t0, 2)}
