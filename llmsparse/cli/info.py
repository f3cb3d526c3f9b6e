"""``llmsparse info``: parameter counts, per-layer sparsity, N:M pattern checks."""
from __future__ import annotations

import json
from typing import Optional

import typer

EXAMPLES = """
Examples:

  llmsparse info out/wanda-2of4 --pattern 2:4

  llmsparse info smollm2 --matrices --json info.json
"""


def register(app: typer.Typer) -> None:
    @app.command("info", help="Show parameter counts, per-layer sparsity and whether every decoder matrix "
                 "satisfies an N:M pattern (at most N nonzeros in every M consecutive input weights).\n" + EXAMPLES)
    def info_cmd(
        model: str = typer.Argument(..., help="Model: HF dir, .gguf, 'smollm2', llmsparse output."),
        pattern: Optional[str] = typer.Option(None, "--pattern", help="Check this N:M pattern, e.g. 2:4."),
        matrices: bool = typer.Option(False, "--matrices", help="One row per matrix instead of per layer."),
        json_out: Optional[str] = typer.Option(None, "--json", help="Write everything to this JSON file."),
        gguf_file: Optional[str] = typer.Option(None, "--gguf-file"),
    ):
        from rich.table import Table

        from ..inspect import analyse
        from .common import out_console, write_json

        if pattern is not None:
            from ..spec import SparsitySpec
            SparsitySpec.parse(pattern)
        if json_out:
            from ..output import check_file_output

            check_file_output(json_out, "--json file")
        from ..models.load import resolve
        resolve(model, gguf_file)
        info = analyse(model, pattern, gguf_file)
        t = Table(title=f"{model}: {'matrices' if matrices else 'decoder layers'}")
        t.add_column("matrix" if matrices else "layer")
        t.add_column("params", justify="right")
        t.add_column("sparsity", justify="right")
        if pattern:
            t.add_column(f"{pattern} ok", justify="right")
        rows = info["matrices"] if matrices else info["layers"]
        for k, r in rows.items():
            row = [k, f"{r['params']:,}", f"{r['sparsity']:.4f}"]
            if pattern:
                row.append(("yes" if r["pattern_ok"] else "NO") if matrices else f"{r['pattern_ok']}/{r['matrices']}")
            t.add_row(*row)
        out_console.print(t)
        s = Table(title="summary", show_header=False)
        s.add_row("total parameters", f"{info['total_params']:,}")
        s.add_row("decoder linear parameters", f"{info['decoder_linear_params']:,}")
        s.add_row("decoder linear sparsity", f"{info['decoder_linear_sparsity']:.4f}")
        s.add_row("nonzero parameters", f"{info['nonzero_params']:,}")
        if pattern:
            s.add_row(f"matrices satisfying {pattern}", f"{info['pattern_ok']}/{info['pattern_checked']}")
        if "record" in info:
            rec = info["record"]
            for op in rec.get("operations") or []:
                if isinstance(op, dict) and op.get("op") == "slice":  # SliceGPT output: before/after
                    pb, pa = op.get("params_before"), op.get("params_after")
                    if pb and pa:
                        s.add_row("parameters before slicing", f"{pb:,}")
                        s.add_row("parameters after slicing", f"{pa:,} ({pa / pb:.1%})")
                    s.add_row("sliced by", "llmsparse slice: " + ", ".join(
                        f"{k} {op[k]}" for k in ("ratio", "hidden_size", "sliced_hidden_size", "layout", "vocab",
                                                 "group", "tied_embeddings") if k in op)
                        + f", calibration {op.get('calibration', {}).get('spec', '')}")
            if rec.get("kind") is not None or rec.get("recipe"):
                s.add_row("made by", f"llmsparse {rec.get('kind')}: {json.dumps(rec.get('recipe', {}))[:120]}")
        out_console.print(s)
        if info.get("format"):
            from ..formats.packed import format_tables

            for tbl in format_tables(info["format"], matrices):
                out_console.print(tbl)
        if json_out:
            write_json(json_out, info)

