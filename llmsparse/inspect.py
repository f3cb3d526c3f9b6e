"""Read a checkpoint's weights and measure sparsity and N:M patterns (``llmsparse info``)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from .masks import is_nm
from .spec import SparsitySpec

_LAYER_RE = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.")


def iter_tensors(model: str, gguf_file: str | None = None):
    """Yield ``(name, tensor)`` for every tensor, streaming from safetensors when possible."""
    from .models.load import resolve

    src = resolve(model, gguf_file)
    if src.kind == "dir":
        try:
            from .formats import packed
        except ImportError:
            packed = None
        if packed is not None and packed.is_packed(src.path):
            yield from packed.iter_dense_tensors(src.path)
            return
        files = sorted(Path(src.path).glob("*.safetensors"))
        if files:
            from safetensors import safe_open

            for f in files:
                with safe_open(str(f), framework="pt") as h:
                    for k in h.keys():
                        yield k, h.get_tensor(k)
            return
    from .models.load import load_model

    m, _, _ = load_model(model, gguf_file=gguf_file, tokenizer=False)
    seen = set()
    for k, v in m.state_dict().items():
        if v.data_ptr() in seen:  # tied weights counted once
            continue
        seen.add(v.data_ptr())
        yield k, v


def is_prunable_name(name: str) -> bool:
    return bool(_LAYER_RE.search(name)) and name.endswith(".weight")


def analyse(model: str, pattern: str | None = None, gguf_file: str | None = None) -> dict:
    spec = SparsitySpec.parse(pattern) if pattern else None
    if spec is not None and not spec.is_nm:
        from .errors import UserError

        raise UserError(f"--pattern {pattern} is not N:M; write e.g. 2:4")
    mats, total_params, layers = {}, 0, {}
    for name, t in iter_tensors(model, gguf_file):
        total_params += t.numel()
        if t.dim() != 2 or not is_prunable_name(name):
            continue
        z = int((t == 0).sum())
        rec = {"shape": list(t.shape), "params": t.numel(), "zeros": z, "sparsity": z / t.numel()}
        if spec is not None:
            rec["pattern_ok"] = is_nm(t, spec.n, spec.m)
        mats[name] = rec
        li = int(_LAYER_RE.search(name).group(1))
        L = layers.setdefault(li, {"params": 0, "zeros": 0, "matrices": 0, "pattern_ok": 0})
        L["params"] += t.numel()
        L["zeros"] += z
        L["matrices"] += 1
        L["pattern_ok"] += int(rec.get("pattern_ok", False))
    for L in layers.values():
        L["sparsity"] = L["zeros"] / max(L["params"], 1)
    lin_params = sum(r["params"] for r in mats.values())
    lin_zeros = sum(r["zeros"] for r in mats.values())
    out = {
        "model": model,
        "total_params": total_params,
        "decoder_linear_params": lin_params,
        "decoder_linear_zeros": lin_zeros,
        "decoder_linear_sparsity": lin_zeros / max(lin_params, 1),
        "nonzero_params": total_params - lin_zeros,
        "layers": {str(k): layers[k] for k in sorted(layers)},
        "matrices": mats,
    }
    if spec is not None:
        out["pattern"] = str(spec)
        out["pattern_ok"] = sum(r["pattern_ok"] for r in mats.values())
        out["pattern_checked"] = len(mats)
    if Path(model).is_dir():  # packed checkpoints: format, per-layer patterns, on-disk bytes
        try:
            from .formats import packed as _packed
        except ImportError:
            _packed = None
        if _packed is not None and _packed.is_packed(model):
            out["format"] = _packed.describe(model)
    p = Path(model) / "llmsparse.json"
    if p.is_file():
        try:
            out["record"] = json.loads(p.read_text())
        except json.JSONDecodeError:
            pass
    return out
