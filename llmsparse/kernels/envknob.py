"""Developer knobs read from the environment at import (``LLMSPARSE_PDL``, ``LLMSPARSE_MMSP_*``): one reader, so an
unknown value is reported the same way everywhere instead of silently taken for the default."""
from __future__ import annotations

import os
import warnings


def env_choice(name: str, modes: dict, default: str):
    """``modes[value]`` for the environment variable ``name`` (stripped, lower-cased; unset or empty reads as
    ``default``); an unknown value warns once, naming the accepted ones, and gives ``modes[default]``."""
    raw = os.environ.get(name)
    key = (raw or "").strip().lower() or default
    if key not in modes:
        accepted = ", ".join(m for m in modes if m)
        warnings.warn(f"{name}={raw!r} is not one of {accepted}: using {default or 'the default'}", stacklevel=2)
        key = default
    return modes[key]
