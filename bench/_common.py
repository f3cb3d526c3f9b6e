"""Shared by the bench scripts (they run as ``python bench/NAME.py``, so this folder is on sys.path)."""
from __future__ import annotations

import os
import platform


def machine() -> str:
    """CPU model, visible cores, torch threads and version: quoted next to every CPU timing."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}; {os.cpu_count()} CPU cores visible, torch threads {torch.get_num_threads()}, "
            f"torch {torch.__version__}, Python {platform.python_version()}")
