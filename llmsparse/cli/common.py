"""Shared CLI pieces: the rich console, progress bars, JSON output."""
from __future__ import annotations

import json
import os
from pathlib import Path

from rich.console import Console

console = Console(stderr=True)  # progress and tables go to stderr unless asked otherwise
out_console = Console()


class RichProgress:
    """Adapter from the engine's ``task(description, total) -> advance`` protocol to rich."""

    def __init__(self, enabled: bool = True):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console, disable=not enabled, transient=False)

    def __enter__(self):
        self.p.__enter__()
        return self

    def __exit__(self, *a):
        return self.p.__exit__(*a)

    def task(self, description: str, total: int):
        tid = self.p.add_task(description, total=total)
        return lambda n=1: self.p.advance(tid, n)


def write_json(path: str, obj) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary sibling (never half-written), making missing parent
    directories."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(p)
