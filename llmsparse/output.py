"""Writing outputs safely and recording how they were made.

Every output directory is written to a temporary sibling and renamed at the end, so an
interrupted run leaves nothing half-written; an existing output is refused unless
``overwrite`` is set; missing parent directories are made (and removed again if the run
fails). ``llmsparse.json`` records the recipe, seed, versions, wall time and the measured
per-layer sparsity.
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
    check_parent(p, "output")  # missing parent directories are made when the output is written (atomic_dir)
    return p


def check_parent(p: Path, what: str) -> None:
    """Fail early when ``p`` could not be written: its nearest existing ancestor is not a directory or not
    writable (missing parent directories are fine: they are made at the end)."""
    anc = p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise UserError(f"cannot write {what} {p}: {anc} is not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {what} {p}: no write permission in {anc}")


def check_file_output(path: str | os.PathLike, what: str = "file") -> Path:
    """Fail early (before any work) when a result file (``--json``, ``--plot``) could not be written."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"cannot write {what} {p}: it is a directory")
    check_parent(p, what)
    return p


def _make_parents(p: Path) -> list[Path]:
    """Make ``p``'s missing parent directories; returns those made, deepest first (for removal)."""
    made = []
    d = p.parent
    while not d.exists():
        made.append(d)
        d = d.parent
    p.parent.mkdir(parents=True, exist_ok=True)
    return made


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary directory; on success it replaces ``out``; on any error (Ctrl-C too)
    it is removed and ``out`` is left as it was."""
    final = check_output(out, overwrite)
    made = _make_parents(final)
    tmp = final.parent / f".{final.name}.llmsparse-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    ok = False
    try:
        yield tmp
        if final.exists():
            old = final.parent / f".{final.name}.llmsparse-old-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        ok = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not ok:  # a failed run leaves no directories it made behind either
            for d in made:
                with contextlib.suppress(OSError):
                    d.rmdir()


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
