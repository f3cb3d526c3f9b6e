"""`llmsparse slice`: SliceGPT (delete rows/columns after rotating the residual stream)."""

from __future__ import annotations

from typing import Optional

import typer

HELP = (
    "Slice a model with SliceGPT (Ashkboos et al., ICLR 2024).\n\n"
    "Folds the normalisation scales into the adjacent linear layers, rotates the residual stream of every "
    "decoder block with the eigenvectors of its calibration covariance and deletes the least important "
    "directions: inside the decoder stack the hidden size d becomes round_down((1 - RATIO) * d, ROUND_TO), "
    "giving smaller dense matrices. For the Llama family the embeddings and the LM head are sliced too "
    "(tied stays tied, through one shared basis); OPT keeps them. Supported: Llama "
    "(incl. SmolLM), Mistral, Qwen2, Qwen3 and pre-LN OPT.\n\n"
    "The output loads with AutoModelForCausalLM.from_pretrained(OUT) in a process that has imported "
    "llmsparse.slicing (the sliced classes register themselves), or with llmsparse.slicing.load_sliced(OUT)."
)

EPILOG = (
    "Examples:\n\n"
    "llmsparse slice smollm2 --ratio 0.25 --calib c4:64x512 -o smol-sliced25\n\n"
    "llmsparse slice ./Llama-2-7b-hf --ratio 0.3 --device cuda --dtype float16 -o llama7b-s30"
)


def register(app: typer.Typer) -> None:
    @app.command("slice", help=HELP, epilog=EPILOG)
    def slice_cmd(
        model: str = typer.Argument(..., help="Model: HF directory, .gguf file, hub id or 'smollm2'."),
        ratio: float = typer.Option(..., "--ratio", "-r", help="Fraction of the hidden size to delete, in [0, 1)."),
        calib: Optional[str] = typer.Option(
            None, "--calib", help="Calibration data SOURCE:NSAMPLESxSEQLEN (default c4:128x2048)."
        ),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed for calibration sampling (default 0)."),
        round_to: Optional[int] = typer.Option(
            None, "--round-to", help="Round the sliced hidden size down to a multiple of this (default 8)."
        ),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Calibration batch size (default 8)."),
        layout: Optional[str] = typer.Option(
            None,
            "--layout",
            help="paper (per-block bases with skip-connection matrices; default) or uniform (one basis for the "
            "whole model: a stock transformers model that loads without llmsparse and runs faster, but less "
            "accurate: +12.8% perplexity on SmolLM2 at 25%; Llama family). See docs/slicegpt.md.",
        ),
        vocab: Optional[str] = typer.Option(
            None,
            "--vocab",
            help="slice (default for the Llama family: embeddings and LM head are rotated and sliced too, "
            "tied embeddings stay tied) or keep (embeddings and head untouched; the only choice for OPT). "
            "See docs/slicegpt.md.",
        ),
        group: Optional[int] = typer.Option(
            None,
            "--group",
            help="Share one rotation among N consecutive layers (fewer skip-connection matrices: faster, "
            "less accurate). Default 0: the paper's two bases per layer.",
        ),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="float32, float16 or bfloat16 (default: the model's)."),
        device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda if available)."),
        output: str = typer.Option(..., "--output", "-o", help="Output directory."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
    ) -> None:
        run_slice(
            model=model,
            ratio=ratio,
            calib=calib,
            seed=seed,
            round_to=round_to,
            batch_size=batch_size,
            layout=layout,
            vocab=vocab,
            group=group,
            dtype=dtype,
            device=device,
            output=output,
            overwrite=overwrite,
        )


def run_slice(
    *,
    model: str,
    ratio: float,
    calib: str | None = None,
    seed: int | None = None,
    round_to: int | None = None,
    batch_size: int | None = None,
    layout: str | None = None,
    vocab: str | None = None,
    group: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    output: str,
    overwrite: bool = False,
) -> dict:
    """The `slice` command as a function (the CLI is a thin layer over it). Returns the info dict."""
    import json
    import math
    import time
    from pathlib import Path

    from ..errors import UserError

    # resolve defaults in one place
    calib = calib if calib is not None else "c4:128x2048"
    seed = 0 if seed is None else seed
    round_to = 8 if round_to is None else round_to
    batch_size = 8 if batch_size is None else batch_size
    layout = "paper" if layout is None else layout
    if layout not in ("paper", "uniform"):
        raise UserError(f"unknown --layout '{layout}'; use paper or uniform")
    vocab = "auto" if vocab is None else vocab
    if vocab not in ("auto", "keep", "slice"):
        raise UserError(f"unknown --vocab '{vocab}'; use slice or keep")
    group = 0 if group is None else group
    if group < 0:
        raise UserError(f"--group must be 0 (paper: two bases per layer) or a positive number of layers, got {group}")
    if layout == "uniform" and (vocab != "auto" or group):
        raise UserError("--vocab and --group apply to --layout paper; uniform has one basis and slices the vocabulary side")
    if math.isnan(ratio) or not (0.0 <= ratio < 1.0):
        raise UserError(f"--ratio must be in [0, 1), got {ratio}; e.g. --ratio 0.25 removes 25% of the hidden size")
    if round_to < 1:
        raise UserError(f"--round-to must be a positive integer, got {round_to}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be a positive integer, got {batch_size}")
    from ..output import atomic_dir, check_output, versions

    out = check_output(output, overwrite)  # before any work

    from ..models.load import load_model, pick_device, read_llmsparse_record

    rec = read_llmsparse_record(model) if Path(model).expanduser().is_dir() else None
    if rec is not None and _is_sliced_record(rec):
        raise UserError(f"{model} is already sliced (see its llmsparse.json); slice the original dense model instead")

    from ..data import calibration_batches
    from ..spec import CalibSpec
    from ..slicing import save_sliced, slice_model

    dev = pick_device(device)
    spec = CalibSpec.parse(calib)
    m, tok, src = load_model(model, dtype=dtype)
    ids = calibration_batches(tok, spec, seed=seed)

    progress_cb = None
    try:
        from rich.progress import Progress

        prog = Progress(transient=True)
        task = prog.add_task("slicing", total=None)

        def progress_cb(done: int, total: int, desc: str) -> None:
            prog.update(task, completed=done, total=total, description=desc)

        prog.start()
    except ImportError:  # pragma: no cover
        prog = None
    try:
        if layout == "uniform":
            from ..slicing.uniform import slice_model_uniform

            info = slice_model_uniform(m, ids, ratio, round_to=round_to, batch_size=batch_size, device=dev)
        else:
            info = slice_model(
                m, ids, ratio, round_to=round_to, batch_size=batch_size, device=dev, progress=progress_cb,
                vocab=vocab, group=group,
            )
    finally:
        if prog is not None:
            prog.stop()

    info["layout"] = layout
    info["calibration"].update({"source": spec.source, "seed": seed, "spec": str(spec)})
    record = {
        "method": "slicegpt",
        "operations": [{"op": "slice", **info}],
        "source_model": str(src),
        "dtype": str(next(m.parameters()).dtype).replace("torch.", ""),
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with atomic_dir(out, overwrite) as tmp:  # nothing half-written on error or Ctrl-C
        save_sliced(m, tok, tmp, info)
        (tmp / "llmsparse.json").write_text(json.dumps(record, indent=2))
    _print_summary(info, out)
    return info


def _is_sliced_record(rec: dict) -> bool:
    if rec.get("method") == "slicegpt":
        return True
    for op in rec.get("operations", []) or []:
        if isinstance(op, dict) and (op.get("op") == "slice" or op.get("method") == "slicegpt"):
            return True
    return False


def _print_summary(info: dict, out) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        print(info)
        return
    t = Table(title=f"SliceGPT -> {out}")
    t.add_column("")
    t.add_column("before", justify="right")
    t.add_column("after", justify="right")
    t.add_row("hidden size", str(info["hidden_size"]), str(info["sliced_hidden_size"]))
    pb, pa = info["params_before"], info["params_after"]
    t.add_row("parameters", f"{pb:,}", f"{pa:,} ({pa / pb:.1%})")
    t.add_row("calibration", "", info["calibration"].get("spec", ""))
    t.add_row("time", "", f"{info['seconds']:.1f} s")
    Console().print(t)
