"""lm-evaluation-harness bridge: zero-shot tasks on an already loaded model, offline.

The CLI calls four functions:

- :func:`list_offline_tasks` - names of the tasks that run without the Hugging Face hub;
- :func:`check_tasks` - validate a request (names, data files, limit, lm-eval installed)
  before any model is loaded;
- :func:`run_tasks` - evaluate one loaded model (``HFLM(pretrained=model, tokenizer=tok)`` +
  ``lm_eval.simple_evaluate``) and return a JSON-serialisable dict;
- :func:`render_table` - a rich table of several models' results side by side, with deltas
  against the first model.

Offline tasks are lm-eval task configs shipped in ``llmsparse/eval/tasks/*.yaml``; they mirror
lm-eval's own configs (prompts, targets, choices, metrics, versions) and read real data files
from ``llmsparse/data/files/tasks/`` (or ``data_dir``). Task names equal lm-eval's
(``hellaswag``, ``piqa``, ``arc_easy``, ``boolq``, ``lambada_openai``, ``wikitext``). For those
names the offline definition is always used; any other lm-eval task name is passed to lm-eval's
own task registry, which needs the hub to download its data.

``lm_eval`` is imported lazily: importing this module never needs the ``eval`` extra.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llmsparse.errors import UserError
from llmsparse.eval.tasks._local import (
    LOCAL_TASKS,
    PACKAGE_DATA_DIR,
    TASKS_DIR,
    MissingDataFile,
    find_data_file,
    read_jsonl,
)

INSTALL_HINT = "pip install llmsparse[eval]"
DEFAULT_BOOTSTRAP_ITERS = 1000

# metrics shown in percent in the table (fractions in the JSON, as lm-eval reports them)
_PERCENT_METRICS = {"acc", "acc_norm", "exact_match", "f1", "mcc"}


# --------------------------------------------------------------------------- public API


def list_offline_tasks() -> list[str]:
    """Names of the tasks that run offline, from the files shipped with the package."""
    return sorted(LOCAL_TASKS)


def run_tasks(
    model,
    tokenizer,
    tasks: list[str] | str,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    data_dir: str | None = None,
    device: str | None = None,
    bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS,
    verbose: bool = False,
) -> dict:
    """Evaluate a loaded causal LM on lm-eval tasks, zero-shot.

    Args:
        model: a ``transformers`` causal LM (already loaded, e.g. by ``llmsparse.load``; it is
            evaluated as is, pruned weights included, in eval mode).
        tokenizer: its tokenizer (lm-eval sets a pad token on it if it has none).
        tasks: task names (a list, or one comma-separated string). Offline tasks:
            :func:`list_offline_tasks`; other lm-eval task names need the hub.
        limit: evaluate only the first ``limit`` documents of each task (``None``: all).
        batch_size: lm-eval batch size for the loglikelihood requests.
        data_dir: directory with task data files in the package layout
            (``DIR/piqa/piqa_validation.jsonl[.gz]``, ...); files found there take precedence
            over the shipped ones.
        device: move the model to this device first (``None``: leave it where it is).
        bootstrap_iters: bootstrap resamples for the standard error of perplexity metrics
            (accuracies use the closed form). lm-eval's own default is 100000; 1000 gives the
            same standard error to about 2 % in a fraction of the time.
        verbose: let lm-eval's info/warning logs through.

    Returns:
        ``{"tasks": {name: {"metrics": {metric: {"value", "stderr", "higher_is_better"}},
        "version", "n_shot", "n_samples", "n_total", "limit", "source", "split", "data_file",
        "data_sha256", "note"}}, "limit", "batch_size", "num_fewshot", "bootstrap_iters",
        "lm_eval_version", "data_dir", "device", "runtime_s"}``. Non-finite values are ``None``.

    Raises:
        UserError: bad input (unknown task, missing data file, ``limit`` < 1, lm-eval missing).
    """
    names = check_tasks(tasks, data_dir=data_dir, limit=limit, batch_size=batch_size)
    offline = [n for n in names if n in LOCAL_TASKS]
    online = [n for n in names if n not in LOCAL_TASKS]
    files = {n: find_data_file(n, data_dir) for n in offline}
    lm_eval = _import_lm_eval()

    import torch

    if device is not None:
        model.to(device)
    model.eval()

    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with _quiet_lm_eval(verbose):
        task_objs = []
        if offline:
            tm = TaskManager(
                include_path=str(TASKS_DIR),
                include_defaults=False,
                metadata={"llmsparse_data_dir": str(Path(data_dir).expanduser()) if data_dir else None},
            )
            task_objs += list(tm.load(offline)["tasks"].values())
        if online:
            tm_online = TaskManager()
            try:
                task_objs += list(tm_online.load(online)["tasks"].values())  # groups: per subtask
            except Exception as e:  # dataset download failures surface here
                raise UserError(
                    f"could not load lm-eval task(s) {', '.join(online)} from the Hugging Face hub "
                    f"({type(e).__name__}: {_one_line(e)}); offline tasks: "
                    f"{', '.join(list_offline_tasks())}"
                ) from e

        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        t0 = time.perf_counter()
        # lm-eval prints progress chatter ("bootstrapping for stddev") on stdout: keep stdout
        # for results (tables, JSON), send the chatter to stderr with the progress bars
        with torch.inference_mode(), contextlib.redirect_stdout(sys.stderr):
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=task_objs,
                num_fewshot=None,  # the configs' default: 0 for every task here
                limit=limit,
                bootstrap_iters=bootstrap_iters,
                log_samples=False,
                write_out=False,
            )
        runtime = time.perf_counter() - t0

    result = {
        "tasks": {},
        "limit": limit,
        "batch_size": batch_size,
        "num_fewshot": 0,
        "bootstrap_iters": bootstrap_iters,
        "lm_eval_version": _lm_eval_version(),
        "data_dir": str(data_dir) if data_dir else None,
        "device": str(getattr(model, "device", device)),
        "runtime_s": round(runtime, 2),
    }
    names_out = names[:]
    for t in task_objs:  # an online group name expands to its subtasks
        if t.config.task not in names_out:
            names_out.append(t.config.task)
    for name in names_out:
        if name in out["results"]:
            result["tasks"][name] = _task_result(out, name, limit, files.get(name))
    return result


def check_tasks(
    tasks: list[str] | str,
    *,
    data_dir: str | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
) -> list[str]:
    """Validate a task request before any model is loaded; return the task names (deduplicated).

    Checks: at least one name; ``limit`` >= 1 (or None); ``batch_size`` >= 1 (or None);
    ``data_dir`` is a directory; lm-eval is installed; every offline task's data file exists;
    names that are not offline tasks are known to lm-eval and the hub is reachable.
    Raises :class:`UserError` with a one-line message otherwise.
    """
    names = _parse_task_names(tasks)
    _check_limit(limit)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise UserError(f"--batch-size must be a positive integer (got {batch_size!r})")
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise UserError(
            f"--data-dir {data_dir}: not a directory; give a directory laid out like the "
            f"package's task data ({PACKAGE_DATA_DIR}), e.g. DIR/piqa/piqa_validation.jsonl"
        )
    online = [n for n in names if n not in LOCAL_TASKS]
    if online:
        _check_online_tasks(online)  # before the lm-eval import: the offline list is the news
    for n in names:
        if n in LOCAL_TASKS:
            _data_file_or_error(n, data_dir)
    _import_lm_eval()
    return names


def render_table(results_by_model: Mapping[str, Mapping[str, Any]]):
    """A rich table: a row per task metric, a column per model, deltas vs the first model.

    ``results_by_model`` maps a model label (path, name) to a :func:`run_tasks` result.
    Accuracies are shown in percent, ``value ± stderr``; deltas are in the metric's units
    (percentage points for accuracies), green when better, red when worse.
    """
    from rich.table import Table
    from rich.text import Text

    if not results_by_model:
        raise UserError("no results to show")
    labels = list(results_by_model)
    first = labels[0]

    # row order: tasks as they appear across models, metrics in lm-eval's order
    rows: list[tuple[str, str]] = []
    for res in results_by_model.values():
        for tname, tres in res.get("tasks", {}).items():
            for metric in tres.get("metrics", {}):
                if (tname, metric) not in rows:
                    rows.append((tname, metric))

    limits = {res.get("limit") for res in results_by_model.values()}
    versions = {res.get("lm_eval_version") for res in results_by_model.values()} - {None}
    limit_txt = ", ".join("all docs" if lim is None else f"--limit {lim}" for lim in sorted(limits, key=str))
    table = Table(
        title="Zero-shot tasks (lm-eval" + (f" {', '.join(sorted(versions))}" if versions else "") + ")",
        caption=(
            f"0-shot, {limit_txt}; acc in %, value ± standard error; "
            f"Δ = model − {first}" + _notes_caption(results_by_model)
        ),
        caption_justify="left",
    )
    table.add_column("Task")
    table.add_column("Ver", justify="right")
    table.add_column("n", justify="right")
    table.add_column("Metric")
    for label in labels:
        table.add_column(label, justify="right")
    for label in labels[1:]:
        table.add_column(f"Δ {label}" if len(labels) > 2 else "Δ", justify="right")

    prev_task = None
    for tname, metric in rows:
        ftask = _first_with(results_by_model, tname)
        mref = ftask["metrics"][metric] if ftask and metric in ftask["metrics"] else {}
        hib = mref.get("higher_is_better")
        arrow = {True: " ↑", False: " ↓"}.get(hib, "")
        show_task = tname != prev_task
        prev_task = tname
        note = "*" if ftask and ftask.get("note") else ""
        cells: list[Any] = [
            (tname + note) if show_task else "",
            _fmt_version(ftask.get("version")) if (show_task and ftask) else "",
            str(ftask.get("n_samples", "")) if (show_task and ftask) else "",
            metric + arrow,
        ]
        base = _metric(results_by_model[first], tname, metric)
        for label in labels:
            m = _metric(results_by_model[label], tname, metric)
            cells.append(_fmt_value(metric, m))
        for label in labels[1:]:
            m = _metric(results_by_model[label], tname, metric)
            cells.append(_fmt_delta(metric, base, m, hib, Text))
        table.add_row(*cells)
    return table


# --------------------------------------------------------------------------- input checks


def _parse_task_names(tasks) -> list[str]:
    if isinstance(tasks, str):
        tasks = tasks.split(",")
    names: list[str] = []
    for t in tasks or []:
        t = str(t).strip()
        if t and t not in names:
            names.append(t)
    if not names:
        raise UserError(
            f"no task given; use --tasks with one or more of: {', '.join(list_offline_tasks())}"
        )
    return names


def _check_limit(limit):
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise UserError(f"--limit must be a whole number of documents per task (got {limit!r})")
    if limit < 1:
        raise UserError(
            f"--limit must be at least 1 document per task (got {limit}); leave it out to "
            "evaluate every document"
        )
    return limit


def _data_file_or_error(task: str, data_dir) -> Path:
    try:
        return find_data_file(task, data_dir)
    except MissingDataFile as e:
        rel = LOCAL_TASKS[task].files[-1]
        where = f"{data_dir} and " if data_dir else ""
        raise UserError(
            f"task {task}: data file {rel} not found (looked in {where}{PACKAGE_DATA_DIR}, "
            f"also as .gz); put it at DIR/{rel} and pass --data-dir DIR "
            f"(see llmsparse/data/files/tasks/SOURCES.md for where it comes from)"
        ) from e


def _import_lm_eval():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError as e:
        raise UserError(
            f"lm-eval is not installed ({_one_line(e)}); run `{INSTALL_HINT}` to use --tasks"
        ) from e
    return lm_eval


def _hub_offline_env() -> bool:
    return any(
        os.environ.get(k, "").strip().lower() in {"1", "true", "yes", "on"}
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    if _hub_offline_env():
        return False
    import socket

    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _check_online_tasks(online: list[str]) -> None:
    offline_list = ", ".join(list_offline_tasks())
    if not _hub_reachable():
        raise UserError(
            f"unknown offline task(s): {', '.join(online)}; offline tasks are: {offline_list} "
            "(other lm-eval tasks need the Hugging Face hub, which is not reachable here)"
        )
    _import_lm_eval()
    from lm_eval.tasks import TaskManager

    known = set(TaskManager().all_tasks)
    unknown = [t for t in online if t not in known]
    if unknown:
        raise UserError(
            f"unknown task(s): {', '.join(unknown)}; offline tasks are: {offline_list}; "
            "`lm-eval ls tasks` lists lm-eval's own"
        )


# --------------------------------------------------------------------------- results


def _finite(x):
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        x = float(x)
        return x if math.isfinite(x) else None
    return None


def _task_result(out: Mapping[str, Any], name: str, limit, data_file: Path | None) -> dict:
    res = out["results"].get(name, {})
    hib = out.get("higher_is_better", {}).get(name, {})
    metrics: dict[str, dict] = {}
    for key, val in res.items():
        # metric entries are "metric,filter"; skip "alias", "name", "sample_len", stderrs
        if "," not in key or "_stderr," in key:
            continue
        metric, _, filt = key.partition(",")
        label = metric if filt in ("none", "") else f"{metric},{filt}"
        stderr = res.get(f"{metric}_stderr,{filt}")
        metrics[label] = {
            "value": _finite(val),
            "stderr": _finite(stderr),
            "higher_is_better": hib.get(metric),
        }
    ns = out.get("n-samples", {}).get(name, {})
    entry = {
        "metrics": metrics,
        "version": out.get("versions", {}).get(name),
        "n_shot": out.get("n-shot", {}).get(name, 0),
        "n_samples": ns.get("effective"),
        "n_total": ns.get("original"),
        "limit": limit,
        "source": "llmsparse-offline" if name in LOCAL_TASKS else "lm-eval (hub)",
    }
    if data_file is not None:
        entry["split"] = LOCAL_TASKS[name].split
        entry["data_file"] = str(data_file)
        entry["data_sha256"] = _sha256_uncompressed(data_file)
        note = LOCAL_TASKS[name].note
        if note and data_file.name.startswith("hellaswag_val.jsonl"):
            note = ""  # the original data removes the known deviation
        entry["note"] = note
    return entry


def _sha256_uncompressed(path: Path) -> str:
    if path.suffix == ".gz":
        return read_jsonl(path)[1]
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lm_eval_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("lm_eval")
    except Exception:
        return None


def _one_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:200] if s else type(e).__name__


@contextlib.contextmanager
def _quiet_lm_eval(verbose: bool):
    """lm-eval logs every task's config decisions at WARNING; keep errors only unless verbose."""
    if verbose or os.environ.get("LLMSPARSE_DEBUG") == "1":
        yield
        return
    loggers = [logging.getLogger(n) for n in ("lm_eval", "lm-eval", "lm_eval.api.task")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    bars_were_off = None
    try:
        import datasets

        bars_were_off = datasets.is_progress_bar_enabled() is False
        datasets.disable_progress_bars()
    except Exception:
        pass
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, old):
            lg.setLevel(lvl)
        if bars_were_off is False:
            import datasets

            datasets.enable_progress_bars()


# --------------------------------------------------------------------------- table helpers


def _first_with(results_by_model, tname):
    for res in results_by_model.values():
        if tname in res.get("tasks", {}):
            return res["tasks"][tname]
    return None


def _metric(res, tname, metric):
    return res.get("tasks", {}).get(tname, {}).get("metrics", {}).get(metric)


def _fmt_version(v) -> str:
    return "" if v is None else str(v)


def _scale(metric: str) -> float:
    return 100.0 if metric.split(",")[0] in _PERCENT_METRICS else 1.0


def _decimals(metric: str, ref: float) -> int:
    """Decimals for a metric, chosen from a reference value so value, ± and Δ line up."""
    if _scale(metric) != 1.0:
        return 2
    ref = abs(ref)
    return 1 if ref >= 1000 else 2 if ref >= 10 else 4


def _fmt_num(metric: str, x: float, ref: float | None = None) -> str:
    nd = _decimals(metric, x if ref is None else ref)
    return f"{x * _scale(metric):.{nd}f}"


def _fmt_value(metric: str, m) -> str:
    if not m or m.get("value") is None:
        return "—"
    v = m["value"]
    s = _fmt_num(metric, v)
    if m.get("stderr") is not None:
        s += " ± " + _fmt_num(metric, m["stderr"], ref=v)
    return s


def _fmt_delta(metric: str, base, m, hib, Text):
    if not base or not m or base.get("value") is None or m.get("value") is None:
        return Text("—")
    d = m["value"] - base["value"]
    s = _fmt_num(metric, d, ref=base["value"])
    if not s.startswith("-"):
        s = "+" + s
    style = ""
    if hib is not None and d != 0:
        style = "green" if (d > 0) == bool(hib) else "red"
    return Text(s, style=style)


def _notes_caption(results_by_model) -> str:
    notes = {}
    for res in results_by_model.values():
        for tname, tres in res.get("tasks", {}).items():
            if tres.get("note"):
                notes.setdefault(tname, tres["note"])
    return "".join(f"\n* {t}: {n}" for t, n in notes.items())


# --------------------------------------------------------------------------- verification aid


def lm_eval_own_tasks(task_names: Iterable[str], data_dir: str | Path, work_dir: str | Path) -> list:
    """lm-eval's *own* task configs (its YAML from ``lm_eval/tasks``), with only the dataset
    source changed to the same local JSONL files our offline tasks read.

    Used by the tests and ``bench/bench_tasks.py`` to check that our offline definitions give
    the same numbers as lm-eval's. ``datasets.load_dataset("json", data_files=...)`` reads the
    files (no hub access). HellaSwag: lm-eval's own ``process_docs`` needs ``ctx_a``/``ctx_b``;
    the shipped dump only has ``ctx``, so a derived copy with ``ctx_a = ctx, ctx_b = ""`` is
    written to ``work_dir`` (lm-eval then builds the same text as ours; the data deviation
    itself is not tested by this).
    """
    import json

    import lm_eval
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    root = Path(lm_eval.__file__).parent / "tasks"
    yaml_of = {
        "hellaswag": root / "hellaswag" / "hellaswag.yaml",
        "piqa": root / "piqa" / "piqa.yaml",
        "arc_easy": root / "arc" / "arc_easy.yaml",
        "boolq": root / "super_glue" / "boolq" / "default.yaml",
        "lambada_openai": root / "lambada" / "lambada_openai.yaml",
        "wikitext": root / "wikitext" / "wikitext.yaml",
    }
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    tasks = []
    for name in task_names:
        cfg = load_yaml(yaml_of[name], resolve_func=True)
        for k in ("tag", "group"):
            cfg.pop(k, None)
        path = find_data_file(name, data_dir)
        if name == "hellaswag" and "ctx_a" not in read_jsonl(path)[0][0]:
            rows, _ = read_jsonl(path)
            path = work_dir / "hellaswag_ctx_a_b.jsonl"
            with path.open("w") as f:
                for r in rows:
                    r = dict(r)
                    r["ctx_a"], r["ctx_b"] = r.pop("ctx"), ""
                    f.write(json.dumps(r) + "\n")
        split = LOCAL_TASKS[name].split
        cfg.update(
            dataset_path="json",
            dataset_name=None,
            dataset_kwargs={"data_files": {split: str(path)}, "cache_dir": str(work_dir / "hf_datasets")},
            training_split=None,
            validation_split=split if split == "validation" else None,
            test_split=split if split == "test" else None,
        )
        tasks.append(ConfigurableTask(config=cfg))
    return tasks
