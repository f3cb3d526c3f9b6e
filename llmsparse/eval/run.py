"""Evaluate several models one after another and show them side by side."""
from __future__ import annotations

import gc
import time
from pathlib import Path

from ..errors import UserError


def _split(s: str | None) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()] if s else []


def evaluate_models(models: list[str], *, ppl: str | None = None, tasks: str | None = None, seqlen: int = 2048,
                    limit: int | None = None, batch_size: int = 4, data_dir: str | None = None,
                    dtype: str | None = None, device: str | None = None, json_out: str | None = None,
                    output: str | None = None, progress: bool = True) -> dict:
    from ..cli.common import RichProgress, console, out_console, write_json
    from ..data import EVAL_SETS, eval_text
    from ..models.load import load_model, parse_dtype, pick_device, resolve
    from .perplexity import perplexity

    ppl_sets = _split(ppl)
    task_list = _split(tasks)
    if not ppl_sets and not task_list:
        ppl_sets = ["wikitext2"]
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: give at least 1")
    if seqlen < 2:
        raise UserError(f"--seqlen {seqlen}: give at least 2")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: give at least 1")
    parse_dtype(dtype)
    dev = pick_device(device)
    if json_out:
        from ..output import check_file_output

        check_file_output(json_out, "--json file")
    if output and not Path(output).is_dir():  # before the evaluation, not after it
        raise UserError(f"-o {output} is not a directory")
    for s in ppl_sets:
        if s not in EVAL_SETS:
            eval_text(s)  # raises for an unknown name / missing file
    if task_list:
        from . import lmeval

        lmeval.check_tasks(task_list, data_dir=data_dir)
    for mname in models:
        resolve(mname)  # missing paths fail before any model is loaded
    texts = {s: eval_text(s) for s in ppl_sets}

    results: dict = {"models": {}, "settings": {"seqlen": seqlen, "limit": limit, "ppl": ppl_sets, "tasks": task_list}}
    for mname in models:
        t0 = time.perf_counter()
        with console.status(f"loading {mname}"):
            m, tok, src = load_model(mname, dtype=dtype)
        m.to(dev)
        res: dict = {"source": str(src), "ppl": {}}
        with RichProgress(enabled=progress) as prog:
            for s in ppl_sets:
                r = perplexity(m, tok, texts[s], seqlen, limit=limit, batch_size=batch_size, device=dev,
                               progress=prog.task(f"{mname}: {s} ppl", limit or 0) if limit else None)
                res["ppl"][s] = r["ppl"]
                res.setdefault("ppl_detail", {})[s] = r
        if task_list:
            from . import lmeval

            res["tasks"] = lmeval.run_tasks(m, tok, task_list, limit=limit, batch_size=batch_size,
                                            data_dir=data_dir, device=str(dev))
        res["time_s"] = round(time.perf_counter() - t0, 2)
        results["models"][mname] = res
        del m
        gc.collect()
    if ppl_sets:
        out_console.print(render_ppl_table(results))
    if task_list:
        from . import lmeval

        out_console.print(lmeval.render_table({k: v["tasks"] for k, v in results["models"].items()}))
    if json_out:
        write_json(json_out, results)
    if output:
        write_json(str(Path(output) / "eval.json"), results)
    return results


def render_ppl_table(results: dict):
    from rich.table import Table

    models = list(results["models"])
    sets = results["settings"]["ppl"]
    t = Table(title=f"perplexity (seqlen {results['settings']['seqlen']}, "
                    f"{'all' if results['settings']['limit'] is None else 'first ' + str(results['settings']['limit'])} windows)")
    t.add_column("dataset")
    for m in models:
        t.add_column(m, justify="right")
    if len(models) > 1:
        for m in models[1:]:
            t.add_column(f"Δ {m}", justify="right")
    for s in sets:
        vals = [results["models"][m]["ppl"][s] for m in models]
        row = [s] + [f"{v:.3f}" for v in vals]
        row += [f"{v - vals[0]:+.3f} ({(v / vals[0] - 1) * 100:+.1f}%)" for v in vals[1:]]
        t.add_row(*row)
    return t
