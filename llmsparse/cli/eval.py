"""``llmsparse eval``: perplexity (and lm-eval tasks) for one or more models, side by side."""
from __future__ import annotations

from typing import List, Optional

import typer

EXAMPLES = """
Examples:

  llmsparse eval smollm2 out/wanda-2of4 --ppl wikitext2 --seqlen 512 --limit 128 --json result.json

  llmsparse eval smollm2 --ppl wikitext2,c4,ptb

  llmsparse eval smollm2 out/wanda-2of4 --tasks piqa,arc_easy --limit 200
"""


def register(app: typer.Typer) -> None:
    @app.command(
        "eval",
        help="Evaluate models side by side: perplexity over non-overlapping windows "
        "(wikitext2, c4, ptb or a local text file) and lm-eval zero-shot tasks. The first model is "
        "the reference for the delta column.\n" + EXAMPLES,
    )
    def eval_cmd(
        models: List[str] = typer.Argument(..., help="Models: HF dir, hub id, .gguf, 'smollm2', llmsparse outputs."),
        ppl: Optional[str] = typer.Option(None, "--ppl", help="Comma list of perplexity sets: wikitext2, c4, ptb, or a file. Default: wikitext2 (when no --tasks)."),
        tasks: Optional[str] = typer.Option(None, "--tasks", help="Comma list of lm-eval tasks (offline: hellaswag, piqa, arc_easy, boolq, lambada_openai, wikitext)."),
        seqlen: int = typer.Option(2048, "--seqlen", help="Window length for perplexity (capped by nothing: must fit the model's context)."),
        limit: Optional[int] = typer.Option(None, "--limit", help="Perplexity: first N windows. Tasks: first N examples per task."),
        batch_size: int = typer.Option(4, "--batch-size", help="Windows / requests per forward."),
        data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Directory with task data files (overrides the shipped ones)."),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 | float16 | bfloat16."),
        device: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:N or cpu (default: cuda when present)."),
        json_out: Optional[str] = typer.Option(None, "--json", help="Write all results to this JSON file."),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Also save results as eval.json next to this model directory."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    ):
        from ..eval.run import evaluate_models

        evaluate_models(models, ppl=ppl, tasks=tasks, seqlen=seqlen, limit=limit, batch_size=batch_size,
                        data_dir=data_dir, dtype=dtype, device=device, json_out=json_out, output=output,
                        progress=not quiet)
