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

Deliberate differences from the authors' code (measured in docs/slicegpt.md): for the Llama family
the vocabulary side is sliced with ONE basis shared by the embeddings and the head (PCA of the
embedding signal and the head input together), so tied embeddings stay tied and the model gets
smaller; the head reads the last layer's basis through a k x k least-squares map (``vocab="slice"``).
With ``vocab="keep"`` (OPT) the embeddings and head are untouched: layer 0 reads the un-rotated
embeddings (its attention skip is d x d') and the last layer writes back to the original basis.
``group=N`` shares one basis among N consecutive layers (fewer skip matrices, faster).
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


@torch.no_grad()
def _run_layer_capture(layer, batches: list[dict], device, store, at: nn.Module) -> tuple[list, list]:
    """Run ``layer`` on every batch; return (inputs of module ``at``, layer outputs)."""
    grabbed: list[torch.Tensor] = []
    handle = at.register_forward_pre_hook(lambda _m, args: grabbed.append(args[0].to(store)))
    try:
        outs = _run_layer(layer, batches, device, store)
    finally:
        handle.remove()
    return grabbed, outs


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


def _setup(model, who: str, device, store, Q_in):
    """Checks and defaults shared by the rotate-and-slice loops: returns
    (family, layers, device, store, Q_in on device in float64, whether layer 0 reads the original basis
    through its own, unfused input norm)."""
    if not getattr(model, "_llmsparse_fused", False):
        raise ValueError(f"{who} needs a fused model: call fuse_norms(model) first")
    family = family_of(model)
    layers = decoder_layers(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    store = torch.device(store) if store is not None else device
    if Q_in is not None:
        Q_in = Q_in.to(device, torch.float64)
    first_orig = Q_in is None and not isinstance(getattr(layers[0], layer_parts(layers[0], family)["norm1"]), SlicedRMSNorm)
    return family, layers, device, store, Q_in, first_orig


def _read_stream(layer, parts: dict, Q: torch.Tensor | None, d: int, device, ref: torch.Tensor):
    """Make the attention inputs of ``layer`` read the residual stream in basis ``Q`` ([d, k];
    None = the original basis): rotate/slice q/k/v and give it a ``SlicedRMSNorm(k)`` input norm.
    Returns (k, S): S maps that stream to the original basis ([k, d]); for the original basis it is
    the layer's current skip map (identity, or OPT's centering)."""
    if Q is None:
        return d, _shortcut_matrix(layer, "attn_shortcut", d, device)
    for lin in parts["attn_in"]:
        rotate_inputs(lin, Q)
    old = getattr(layer, parts["norm1"])
    setattr(layer, parts["norm1"], SlicedRMSNorm(Q.shape[1], old.full_dim, old.eps).to(device, ref.dtype))
    return Q.shape[1], Q.T


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
    rotate_last: bool = False,
    bases: dict | None = None,
) -> list[dict]:
    """Rotate every decoder layer with PCA bases of its calibration signals and slice to ``new_dim``.

    ``model`` must already be fused (``fuse_norms``). ``layer0_inputs`` comes from
    ``capture_layer0_inputs``. With ``new_dim == hidden_size`` nothing is deleted and the model
    computes the same function as before (computational invariance). ``Q_in`` ([d, k], float64):
    basis the layer-0 inputs are already in (authors' layout with rotated embeddings); default
    None = original basis. ``one_shortcut``: variant that uses one basis for each layer's
    attention->MLP signal and its output (PCA of both covariances, each divided by its trace), so
    only the attention skip connection needs a matrix. Experimental, API only: with the basis of
    the attention->MLP signal alone it gave ppl 64114 on SmolLM2 (P-smol, 25%); with the joint
    basis 223 (16 windows; paper layout 241.5 on the same windows). ``group=1`` in
    :func:`rotate_and_slice_grouped` is the better way to one matrix per layer (docs/slicegpt.md).
    ``rotate_last``: the last layer writes its own PCA basis (sliced) like every other layer instead
    of the original basis; that basis ([d, k], float64) is stored as ``bases["last"]`` when a dict
    is given (the caller must then rotate the final norm and the head). Returns per-layer specs
    ({"in", "mid", "out", "norm1", "attn_shortcut", "mlp_shortcut"}).
    """
    # Q_in: basis of the incoming stream, [d, k_in]; None = original basis
    family, layers, device, store, Q_in, specs_first_orig = _setup(model, "rotate_and_slice", device, store, Q_in)
    d = model.config.hidden_size
    n = len(layers)
    inps = layer0_inputs
    specs: list[dict] = []
    for idx, layer in enumerate(layers):
        orig_dev = next(layer.parameters()).device
        layer.to(device)
        parts = layer_parts(layer, family)
        ref = parts["attn_out"].weight

        # (1) attention inputs read the rotated stream; the skip maps it back to the original basis
        k_in, S_attn = _read_stream(layer, parts, Q_in, d, device, ref)
        layer.attn_shortcut = _shortcut(S_attn, ref)

        # (2) PCA of the signal entering the MLP normalisation
        norm2 = getattr(layer, parts["norm2"])
        if one_shortcut and idx < n - 1:
            # one basis for the attention->MLP signal and the layer output: PCA of the sum of both
            # trace-normalised covariances (the MLP output is written in the same basis)
            mid, full = _run_layer_capture(layer, inps, device, store, norm2)
            Cm, Co = _covariance(mid, device), _covariance(full, device)
            _, Q = pca_basis(Cm / Cm.trace() + Co / Co.trace())
            del full, Cm, Co
        else:
            mid = _run_layer(layer, inps, device, store, stop_at=norm2)
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
        elif idx < n - 1 or rotate_last:
            _, Q = pca_basis(_covariance(outs, device))
            Q_out = Q[:, :new_dim]
            rotate_outputs(parts["mlp_out"], Q_out)
            layer.mlp_shortcut = _shortcut(Q_mid.T @ Q_out, ref)
            if idx < n - 1:  # the next layer's inputs, rotated and sliced
                Qs = Q_out.to(store)
                inps = [
                    {"hidden": (o.to(torch.float64) @ Qs).to(o.dtype), "kwargs": b["kwargs"]}
                    for o, b in zip(outs, inps)
                ]
            Q_in = Q_out
            k_out = new_dim
            if idx == n - 1 and bases is not None:
                bases["last"] = Q_out
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


@torch.no_grad()
def rotate_and_slice_grouped(
    model,
    layer0_inputs: list[dict],
    new_dim: int,
    group: int,
    *,
    device=None,
    store=None,
    progress: ProgressFn | None = None,
    Q_in: torch.Tensor | None = None,
    rotate_last: bool = False,
    bases: dict | None = None,
) -> list[dict]:
    """SliceGPT with one basis per group of ``group`` consecutive decoder layers.

    Inside a group the residual stream keeps one basis, so the only skip-connection matrix is at the
    group's first layer (``Q_prev^T P``); ``group=1`` gives one matrix per layer instead of the
    paper's two. The group's basis P is the PCA of the sum of the trace-normalised covariances of
    every residual-stream signal inside the group (each layer's input, attention->MLP signal and
    output), gathered by running the group's layers, still unsliced, on the sliced stream that
    leaves the previous group (interleaved like the paper's algorithm). Arguments as
    :func:`rotate_and_slice`; with ``new_dim == hidden_size`` the model's function is unchanged.
    """
    family, layers, device, store, Q_in, first_orig = _setup(model, "rotate_and_slice_grouped", device, store, Q_in)
    if group < 1:
        raise ValueError("group must be >= 1")
    d = model.config.hidden_size
    n = len(layers)
    specs: list[dict] = []
    inps = layer0_inputs
    done = 0
    for g0 in range(0, n, group):
        idxs = list(range(g0, min(g0 + group, n)))
        homes = [next(layers[i].parameters()).device for i in idxs]
        for i in idxs:
            layers[i].to(device)
        # (1) statistics of the unsliced group, fed with the incoming (sliced) stream in the original basis
        back = None if Q_in is None else Q_in.T.to(store)
        h = [{"hidden": b["hidden"] if back is None else (b["hidden"].to(torch.float64) @ back).to(b["hidden"].dtype),
              "kwargs": b["kwargs"]} for b in inps]
        C = torch.zeros(d, d, dtype=torch.float64, device=device)

        def add(signals):
            Ci = _covariance(signals, device)
            C.add_(Ci / Ci.trace())

        add([b["hidden"] for b in h])
        for i in idxs:
            parts = layer_parts(layers[i], family)
            mid, outs = _run_layer_capture(layers[i], h, device, store, getattr(layers[i], parts["norm2"]))
            add(mid)
            add(outs)
            h = [{"hidden": o, "kwargs": b["kwargs"]} for o, b in zip(outs, h)]
            del mid, outs
        del h
        _, Q = pca_basis(C)
        P = Q[:, :new_dim]
        # (2) rotate and slice the group with P
        for i in idxs:
            layer = layers[i]
            parts = layer_parts(layer, family)
            ref = parts["attn_out"].weight
            last = i == n - 1
            norm1_orig = i == 0 and first_orig
            if i == g0:
                # the attention reads the incoming stream (layer 0 may read the un-rotated embeddings
                # with its own norm); its skip connection moves the stream to P
                k_in, S_prev = _read_stream(layer, parts, Q_in, d, device, ref)
                layer.attn_shortcut = _shortcut(S_prev @ P, ref)
            else:
                k_in, _ = _read_stream(layer, parts, P, d, device, ref)
                layer.attn_shortcut = None
            rotate_outputs(parts["attn_out"], P)
            for lin in parts["mlp_in"]:
                rotate_inputs(lin, P)
            old2 = getattr(layer, parts["norm2"])
            setattr(layer, parts["norm2"], SlicedRMSNorm(new_dim, old2.full_dim, old2.eps).to(device, ref.dtype))
            if last and not rotate_last:
                layer.mlp_shortcut = _shortcut(P.T.contiguous(), ref)  # write back to the original basis
                k_out = d
            else:
                rotate_outputs(parts["mlp_out"], P)
                layer.mlp_shortcut = None
                k_out = new_dim
            specs.append({"in": k_in, "mid": new_dim, "out": k_out,
                          "norm1": "orig" if norm1_orig else "rms",
                          "attn_shortcut": layer.attn_shortcut is not None, "mlp_shortcut": layer.mlp_shortcut is not None})
        # (3) run the sliced group: the next group's inputs (none after the last group)
        for i in idxs if idxs[-1] < n - 1 else ():
            outs = _run_layer(layers[i], inps, device, store)
            inps = [{"hidden": o, "kwargs": b["kwargs"]} for o, b in zip(outs, inps)]
        for i, home in zip(idxs, homes):
            layers[i].to(home)
        Q_in = P
        done += len(idxs)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if progress is not None:
            progress(done, n, "rotating and slicing")
    if rotate_last and bases is not None:
        bases["last"] = Q_in
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
    vocab: str = "auto",
    group: int = 0,
) -> dict:
    """Slice ``model`` in place with SliceGPT and return a summary dict.

    calib_input_ids: LongTensor[nsamples, seqlen]. ratio in [0, 1): fraction of the hidden size
    removed; the kept width is round_down((1 - ratio) * d, round_to). On return the model is an
    instance of the registered ``Sliced<Family>ForCausalLM`` class with ``config.slicing`` set.

    ``slice_embeddings=True`` reproduces the authors' layout for comparison (Llama family only):
    the input embeddings are mean-centred, rotated by the PCA basis of the layer-0 inputs and sliced,
    and the LM head is untied (a full V x d copy). The default keeps embeddings and head as they
    are (tied stays tied), see docs/slicegpt.md.

    ``vocab="slice"`` (Llama family; the default there, ``"auto"``) slices the vocabulary side too and keeps tied embeddings tied:
    the embedding matrix E becomes T = E Q0 (Q0: sliced PCA basis of the layer-0 inputs), the last
    layer writes its own sliced basis Qf, and the head reads it through T and a k x k matrix B that
    best reproduces the original head in least squares, T B ~ H diag(w) Qf (H: the head, w: the
    final norm's scale; exact when nothing is sliced). An untied head is simply rotated and sliced,
    H diag(w) Qf, with no extra matrix. Q0 is not the PCA of the embeddings alone but of the sum of
    the trace-normalised covariances of the embedding signal and of the final norm's output, since
    one basis serves both ends (docs/slicegpt.md has the measurements). ``vocab="keep"`` (OPT's
    default) leaves embeddings and head as they are. ``group=N`` (N >= 1) shares one basis among N
    consecutive layers (:func:`rotate_and_slice_grouped`).
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
    if vocab == "auto":
        vocab = "keep" if (family == "opt" or slice_embeddings) else "slice"
    if vocab not in ("keep", "slice"):
        raise UserError(f"unknown vocab option '{vocab}'; use keep or slice")
    if group < 0 or (group and one_shortcut):
        raise UserError("group must be >= 0 and cannot be combined with one_shortcut")
    if vocab == "slice" and (slice_embeddings or family == "opt"):
        raise UserError("vocab='slice' is implemented for the Llama family (RMSNorm) and excludes slice_embeddings")
    Q0 = None
    head_ref = None
    if vocab == "slice":
        emb, head = model.get_input_embeddings(), model.get_output_embeddings()
        tied = head.weight is emb.weight
        fn = model.model.norm
        # the head computes H diag(w) on the weight-free normalised stream
        head_ref = {
            "tied": tied,
            # the original head and final-norm scale, kept as they are (the embedding tensor is
            # replaced, not modified, when it is rotated); float64 only at the end, in _slice_head
            "H": head.weight.data,
            "w": fn.weight.data.clone(),
            "eps": float(getattr(fn, "variance_epsilon", getattr(fn, "eps", 1e-6))),
        }
    if slice_embeddings:
        if family == "opt":
            raise UserError("slice_embeddings (the authors' layout) is implemented for the Llama family only")
        emb, head = model.get_input_embeddings(), model.get_output_embeddings()
        if head.weight is emb.weight:  # untie: the head keeps the original matrix
            head.weight = nn.Parameter(emb.weight.detach().clone())
        model.config.tie_word_embeddings = False
        W = emb.weight.data.double()
        emb.weight.data = (W - W.mean(dim=-1, keepdim=True)).to(emb.weight.dtype)  # as the authors do
    if vocab == "slice":
        # one basis for the vocabulary side, serving the embeddings and the head alike: PCA of the
        # sum of the trace-normalised covariances of the embedding signal and of the final norm's
        # output (one extra pass of the dense model over the calibration data)
        inps = capture_layer0_inputs(model, calib_input_ids, batch_size, dev, store)
        Ce = _covariance([b["hidden"] for b in inps], dev)
        Cy = _final_norm_covariance(model, inps, dev, store)
        _, Q = pca_basis(Ce / Ce.trace() + Cy / Cy.trace())
        del Ce, Cy
        fuse_norms(model, fuse_first=True)  # layer-0 inputs (the embeddings) are unchanged by fusion
    else:
        fuse_norms(model, fuse_first=slice_embeddings)
        inps = capture_layer0_inputs(model, calib_input_ids, batch_size, dev, store)
        if slice_embeddings:
            _, Q = pca_basis(_covariance([b["hidden"] for b in inps], dev))
    if slice_embeddings or vocab == "slice":
        Q0 = Q[:, :new_dim]
        emb = model.get_input_embeddings()
        emb.weight.data = (emb.weight.data.to(dev, torch.float64) @ Q0).to(emb.weight.device, emb.weight.dtype)
        emb.embedding_dim = new_dim
        Qs = Q0.to(store)
        inps = [{"hidden": (b["hidden"].to(torch.float64) @ Qs).to(b["hidden"].dtype), "kwargs": b["kwargs"]} for b in inps]
    bases: dict = {}
    if group:
        specs = rotate_and_slice_grouped(
            model, inps, new_dim, group, device=dev, store=store, progress=progress, Q_in=Q0,
            rotate_last=vocab == "slice", bases=bases,
        )
    else:
        specs = rotate_and_slice(
            model, inps, new_dim, device=dev, store=store, progress=progress, Q_in=Q0, one_shortcut=one_shortcut,
            rotate_last=vocab == "slice", bases=bases,
        )
    del inps
    final = None
    if vocab == "slice":
        final = _slice_head(model, head_ref, bases["last"], d)
    model.to(next(decoder_layers(model)[0].parameters()).device)
    slicing = {
        "method": "slicegpt",
        "full_dim": d,
        "sliced_dim": new_dim,
        "ratio": float(ratio),
        "round_to": int(round_to),
        "eps": float(_first_sliced_norm(model).eps),
        "embed_dim": new_dim if (slice_embeddings or vocab == "slice") else d,
        "variant": ("authors-embeddings " if slice_embeddings else "")
        + ("sliced-vocab " if vocab == "slice" else "")
        + (f"group-{group}" if group else ("one-shortcut" if one_shortcut else "paper")),
        "layers": specs,
    }
    if final is not None:
        slicing["final"] = final
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
        "vocab": vocab,
        "group": int(group),
        "calibration": {"nsamples": int(calib_input_ids.shape[0]), "seqlen": int(calib_input_ids.shape[1])},
        "seconds": round(time.time() - t0, 2),
    }


@torch.no_grad()
def _final_norm_covariance(model, inps: list[dict], device, store) -> torch.Tensor:
    """Covariance (float64 sum) of the final norm's output of the (unsliced) model, run layer by layer
    from the captured layer-0 inputs (one decoder layer on ``device`` at a time)."""
    h = inps
    for layer in decoder_layers(model):
        orig = next(layer.parameters()).device
        layer.to(device)
        outs = _run_layer(layer, h, device, store)
        h = [{"hidden": o, "kwargs": b["kwargs"]} for o, b in zip(outs, h)]
        layer.to(orig)
    norm = model.model.norm
    orig = next(norm.parameters()).device
    norm.to(device)
    C = _covariance([norm(b["hidden"].to(device)) for b in h], device)
    norm.to(orig)
    return C


@torch.no_grad()
def _slice_head(model, head_ref: dict, Qf: torch.Tensor, d: int) -> dict:
    """Rotate/slice the final norm and the LM head onto the last layer's basis ``Qf`` ([d, k]).

    The head must compute M h for the weight-free normalised stream h (M = H diag(w) Qf, [V, k]).
    Untied head: it becomes M. Tied: the (already sliced) embedding matrix T is shared, and a k x k
    map B with T B ~ M (least squares over the vocabulary, float64 normal equations) goes between
    the final norm and the head. Returns the ``final`` entry of ``config.slicing``."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    k = Qf.shape[1]
    H, w = head_ref["H"].to(Qf.device, torch.float64), head_ref["w"].to(Qf.device, torch.float64)
    M = (H * w[None, :]) @ Qf
    ref = emb.weight
    if head_ref["tied"]:
        T = emb.weight.data.to(Qf.device, torch.float64)
        G = T.T @ T
        G.diagonal().add_(1e-10 * G.diagonal().mean())  # guard against a rank-deficient vocabulary matrix
        B = torch.linalg.solve(G, T.T @ M)
        new_norm = SlicedRMSNorm(k, d, head_ref["eps"], proj=True).to(ref.device, ref.dtype)
        new_norm.proj.weight.data = B.to(ref.device, ref.dtype)  # y = n(h) B^T, logits = y T^T = (T B n(h))^T
        head.weight = emb.weight
        rel = float(torch.linalg.norm(T @ B - M) / torch.linalg.norm(M))
    else:
        new_norm = SlicedRMSNorm(k, d, head_ref["eps"]).to(ref.device, ref.dtype)
        head.weight = nn.Parameter(M.to(head.weight.device, head.weight.dtype))
        rel = 0.0
    head.in_features = k
    model.config.tie_word_embeddings = bool(head_ref["tied"])  # what the loader must rebuild
    model.model.norm = new_norm
    return {"dim": k, "proj": bool(head_ref["tied"]), "head_fit_rel_error": rel}


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
