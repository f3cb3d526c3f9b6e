"""``llmsparse export``: write a model as a packed (compressed sparse) or a plain dense checkpoint."""
from __future__ import annotations

from typing import Optional

import typer

EXAMPLES = """
Examples:

  llmsparse export out/wanda-2of4 --format packed -o out/wanda-2of4-packed

  llmsparse export out/wanda-2of4-packed --format dense -o out/wanda-2of4-hf

  llmsparse export out/sgpt-50 --format packed --max-shard-size 1GB -o out/sgpt-50-packed --json export.json
"""


def register(app: typer.Typer) -> None:
    @app.command(
        "export",
        help="Write a model as a compressed sparse checkpoint (--format packed) or as a plain Hugging Face "
        "checkpoint with zeros in place (--format dense, readable by every loader).\n\n"
        "Packed: each decoder weight is stored as N:M (kept values + 2-bit positions for 2:4; at most N nonzero "
        "weights in every M consecutive weights along the input dimension), as a bitmask (unstructured), or "
        "dense, whichever it satisfies; embeddings, head and norms stay dense. A packed directory is read by "
        "llmsparse (every command taking MODEL, and llmsparse.load), not by plain from_pretrained. "
        "Format: docs/format.md.\n" + EXAMPLES,
    )
    def export_cmd(
        model: str = typer.Argument(..., help="Model: HF dir, .gguf, 'smollm2', llmsparse output (dense or packed)."),
        output: str = typer.Option(..., "--output", "-o", help="Output directory (written atomically)."),
        fmt: str = typer.Option("packed", "--format", "-f", help="packed (compressed sparse) or dense (plain HF)."),
        pattern: Optional[str] = typer.Option(None, "--pattern", help="N:M pattern to use wherever a weight satisfies "
                                              "it, e.g. 2:4 (default: the recipe's, else the smallest that holds)."),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 | float16 | bfloat16 (default: the model's)."),
        max_shard_size: str = typer.Option("1GB", "--max-shard-size", help="Largest weight file (packed); larger "
                                           "models are sharded with an index file."),
        gguf_file: Optional[str] = typer.Option(None, "--gguf-file", help="GGUF file inside MODEL directory."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
        json_out: Optional[str] = typer.Option(None, "--json", help="Also write the export record to this JSON file."),
        trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow custom model code."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    ):
        export_model(model, output, fmt=fmt, pattern=pattern, dtype=dtype, max_shard_size=max_shard_size,
                     gguf_file=gguf_file, overwrite=overwrite, json_out=json_out,
                     trust_remote_code=trust_remote_code, progress=not quiet)


def export_model(model: str, output: str, *, fmt: str = "packed", pattern: str | None = None, dtype: str | None = None,
                 max_shard_size: str = "1GB", gguf_file: str | None = None, overwrite: bool = False,
                 json_out: str | None = None, trust_remote_code: bool = False, progress: bool = True) -> dict:
    """Load ``model`` (anything llmsparse reads) and write it to ``output`` as ``fmt``. Returns the record."""
    import time

    from ..errors import UserError
    from ..formats import codecs, packed
    from ..models.load import load_model, parse_dtype, read_llmsparse_record, resolve
    from ..output import atomic_dir, check_file_output, check_output, make_record, save_model_dir
    from .common import RichProgress, console, out_console, write_json

    if fmt not in ("packed", "dense"):
        raise UserError(f"unknown --format '{fmt}'; use packed or dense")
    if pattern is not None:
        if packed.parse_pattern(pattern) is None:
            raise UserError(f"--pattern {pattern} is not N:M; write e.g. 2:4")
    packed.parse_size(max_shard_size)
    parse_dtype(dtype)
    check_output(output, overwrite)
    if json_out:
        check_file_output(json_out, "--json file")
    src = resolve(model, gguf_file)
    source_record = read_llmsparse_record(src.path) if src.kind == "dir" else None
    if pattern is None and source_record:
        pattern = (source_record.get("recipe") or {}).get("sparsity")
    t0 = time.perf_counter()
    with console.status(f"loading {src}"):
        m, tok, src = load_model(model, dtype=dtype, gguf_file=gguf_file, trust_remote_code=trust_remote_code,
                                 tokenizer=False)
        try:
            from ..models.load import load_tokenizer

            tok = load_tokenizer(src, trust_remote_code)
        except Exception:  # a checkpoint without a tokenizer is still exportable
            tok = None
    t_load = time.perf_counter() - t0
    record = make_record("export", source=str(src), format=fmt, pattern=pattern,
                         source_record={k: source_record.get(k) for k in ("kind", "recipe", "source")}
                         if source_record else None)
    if source_record and "recipe" in source_record:
        record["recipe"] = source_record["recipe"]
    t1 = time.perf_counter()
    with atomic_dir(output, overwrite) as tmp:
        if fmt == "packed":
            with RichProgress(enabled=progress) as prog:
                summary = packed.save_packed(m, tok, tmp, record, prefer=pattern, max_shard_size=max_shard_size,
                                             progress=prog)
        else:
            pref = packed.parse_pattern(pattern)
            excluded = packed._excluded_prefixes(m)
            counts, layers = {}, {}
            for name, t in packed._unique_state(m):
                if t.is_floating_point() and t.dim() >= 2 and not any(name.startswith(p) for p in excluded):
                    ch = codecs.choose(t.detach().cpu(), pref)
                    layers[name] = ch.pattern
                    counts[ch.pattern] = counts.get(ch.pattern, 0) + 1
            record["layer_patterns"] = layers
            save_model_dir(m, tok, tmp, record)
            summary = {"name": "dense", "layers_by_pattern": counts,
                       "sparse_layers": sum(v for k, v in counts.items() if k != "dense")}
            record["format"] = summary
            (tmp / "llmsparse.json").write_text(__import__("json").dumps(record, indent=2, default=str) + "\n")
    record["wall_time_s"] = {"load": round(t_load, 3), "write": round(time.perf_counter() - t1, 3)}
    if json_out:
        write_json(json_out, record)
    if not summary["sparse_layers"]:
        console.print(f"[yellow]note:[/] {src} is not sparse: no decoder weight satisfies an N:M pattern or is "
                      "sparse enough for a bitmask; every layer was written dense")
    _print_summary(record, output, fmt)
    _ = out_console
    return record


def _print_summary(record: dict, output: str, fmt: str) -> None:
    from rich.table import Table

    from .common import out_console

    s = record["format"]
    t = Table(title=f"llmsparse export → {output} ({fmt})", show_header=False)
    for pat, n in sorted(s["layers_by_pattern"].items()):
        t.add_row(f"layers {pat}", str(n))
    if fmt == "packed":
        if s.get("linear_dense_bytes"):
            t.add_row("decoder weights", f"{s['linear_stored_bytes'] / 1e6:,.1f} MB of {s['linear_dense_bytes'] / 1e6:,.1f} MB "
                      f"dense ({s['linear_ratio']:.4f}x)")
        t.add_row("all tensors", f"{s['tensor_bytes'] / 1e6:,.1f} MB of {s['dense_tensor_bytes'] / 1e6:,.1f} MB dense "
                  f"({s['ratio']:.4f}x)")
        t.add_row("weight files", ", ".join(s["files"]) + f" ({s['weights_file_bytes'] / 1e6:,.1f} MB on disk)")
    w = record.get("wall_time_s", {})
    t.add_row("time (s)", f"load {w.get('load', 0):.1f}, write {w.get('write', 0):.1f}")
    out_console.print(t)
