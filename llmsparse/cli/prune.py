"""``llmsparse prune``: one-shot pruning, layer by layer."""
from __future__ import annotations

from typing import List, Optional

import typer

EXAMPLES = """
Examples:

  llmsparse prune smollm2 -m wanda -s 2:4 --calib c4:64x512 --seed 0 -o out/wanda-2of4

  llmsparse prune smollm2 -m sparsegpt -s 0.5 --calib c4:64x512 -o out/sgpt-50

  llmsparse prune ./my-llama -m magnitude -s 4:8 --ignore 'model.layers.0.*' -o out/mag

  llmsparse prune smollm2 -m dsnot --init wanda -s 0.6 --calib c4:64x512 -o out/dsnot-60
"""


def register(app: typer.Typer) -> None:
    @app.command(
        "prune",
        help="Prune a causal LM in one shot (magnitude, wanda, sparsegpt, dsnot).\n\n"
        "--sparsity takes a ratio (0.5 zeroes half the weights of every pruned matrix) or N:M "
        "(at most N nonzero weights in every M consecutive weights along the input dimension; "
        "2:4 keeps 2 of every 4). Embeddings and lm_head are never pruned.\n" + EXAMPLES,
    )
    def prune_cmd(
        model: str = typer.Argument(..., help="HF directory, hub id, .gguf file, or 'smollm2' (built in)."),
        output: str = typer.Option(..., "--output", "-o", help="Output directory (written atomically)."),
        method: str = typer.Option("wanda", "--method", "-m", help="magnitude | wanda | sparsegpt | dsnot"),
        sparsity: str = typer.Option("0.5", "--sparsity", "-s", help="Ratio in (0,1) or N:M pattern, e.g. 2:4."),
        calib: str = typer.Option("c4:128x2048", "--calib", help="SOURCE:NSAMPLESxSEQLEN; SOURCE: c4, wikitext2, a .txt/.jsonl file, hf:NAME."),
        seed: int = typer.Option(0, "--seed", help="Seed for calibration sampling."),
        ignore: Optional[List[str]] = typer.Option(None, "--ignore", help="Glob on full module names to leave dense (repeatable), e.g. '*.down_proj'."),
        grouping: str = typer.Option("layer", "--grouping", help="layer: stats from the dense layer (reference code); sequential: group by group."),
        init: str = typer.Option("wanda", "--init", help="DSnoT: initial pruner (wanda, sparsegpt, magnitude) or existing (refine the zeros already there)."),
        max_cycles: Optional[int] = typer.Option(None, "--max-cycles", help="DSnoT: swaps per row at most."),
        update_threshold: Optional[float] = typer.Option(None, "--update-threshold", help="DSnoT: stop when |reconstruction shift| is below this."),
        pow_var_grow: Optional[float] = typer.Option(None, "--pow-var-grow", help="DSnoT: variance power in the grow criterion."),
        pow_var_prune: Optional[float] = typer.Option(None, "--pow-var-prune", help="DSnoT: variance power in the prune criterion."),
        skip: Optional[str] = typer.Option(None, "--skip", help="DSnoT: none | attn | mlp (optionally plus projection names, e.g. mlp,v_proj): leave those layers as the initial pruner left them."),
        accept: Optional[str] = typer.Option(None, "--accept", help="DSnoT swap acceptance: mse (default) | sign (the paper) | authors (the authors' code as shipped)."),
        blocksize: int = typer.Option(128, "--blocksize", help="SparseGPT: columns per block."),
        percdamp: float = typer.Option(0.01, "--percdamp", help="SparseGPT: dampening, fraction of the mean Hessian diagonal."),
        batch_size: int = typer.Option(8, "--batch-size", help="Calibration sequences per forward."),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 | float16 | bfloat16 (default: checkpoint's; GGUF: float32)."),
        device: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:N or cpu (default: cuda when present)."),
        gguf_file: Optional[str] = typer.Option(None, "--gguf-file", help="GGUF file inside MODEL directory."),
        eval_tasks: Optional[str] = typer.Option(None, "--eval-tasks", help="Run lm-eval tasks on the pruned model (comma list)."),
        save_format: str = typer.Option("dense", "--save-format", help="dense (plain HF checkpoint) or packed (compressed)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
        json_out: Optional[str] = typer.Option(None, "--json", help="Also write the report to this JSON file."),
        trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow custom model code."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    ):
        from ..api import prune_to_dir

        prune_to_dir(
            model, output, method=method, sparsity=sparsity, calib=calib, seed=seed,
            ignore=tuple(ignore or ()), grouping=grouping, batch_size=batch_size, dtype=dtype,
            device=device, gguf_file=gguf_file, overwrite=overwrite, json_out=json_out,
            trust_remote_code=trust_remote_code, progress=not quiet, eval_tasks=eval_tasks,
            save_format=save_format,
            method_options=dict(
                init=init, max_cycles=max_cycles, update_threshold=update_threshold,
                pow_var_grow=pow_var_grow, pow_var_prune=pow_var_prune, skip=skip, accept=accept,
                blocksize=blocksize, percdamp=percdamp,
            ),
        )
