"""Writing outputs safely and recording how they were made.

Every output directory is written to a temporary sibling and renamed at the end, so an
interrupted run leaves nothing half-written; an existing output is refused unless
``overwrite`` is set. ``llmsparse.json`` records the recipe, seed, versions, wall time and the
measured per-layer sparsity.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from .errors import UserError


def check_output(out: str | os.PathLike, overwrite: bool) -> Path:
    """Fail early (before any work) when ``out`` exists and may not be replaced."""
    p = Path(out).expanduser()
    if p.exists() and not overwrite:
        raise UserError(f"output {p} already exists; choose another -o or pass --overwrite")
    if p.exists() and not p.is_dir():
        raise UserError(f"output {p} exists and is not a directory")
    if not p.parent.exists():
        raise UserError(f"the parent directory of output {p} does not exist")
    return p


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary directory; on success it replaces ``out``; on any error (Ctrl-C too)
    it is removed and ``out`` is left as it was."""
    final = check_output(out, overwrite)
    tmp = final.parent / f".{final.name}.llmsparse-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            old = final.parent / f".{final.name}.llmsparse-old-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("llmsparse", "torch", "transformers", "accelerate", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def make_record(kind: str, **fields) -> dict:
    return {
        "llmsparse_record": 1,
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": sys.argv,
        "versions": versions(),
        **fields,
    }


def save_model_dir(model, tokenizer, tmp: Path, record: dict) -> None:
    """Write a Hugging Face directory (safetensors, config, tokenizer) plus ``llmsparse.json``."""
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    (tmp / "llmsparse.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
