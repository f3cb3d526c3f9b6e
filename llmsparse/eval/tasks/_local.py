"""Local data loading for llmsparse's offline lm-eval tasks.

The YAML files next to this module are lm-eval task configs. They differ from lm-eval's own
configs (``lm_eval/tasks/{hellaswag,piqa,arc,super_glue/boolq,lambada,wikitext}``) only in where
the documents come from: instead of ``dataset_path: <hub id>`` they name
``custom_dataset: !function llmsparse.eval.tasks._local.load_local``, which reads a JSONL file
(optionally gzipped) shipped in ``llmsparse/data/files/tasks/`` or found in a user-given data
directory. No ``datasets.load_dataset`` call, no hub access, no cache directory.

Everything else (prompt, target, choices, metrics, version) is lm-eval's, and where lm-eval
uses a Python helper (HellaSwag's ``preprocess``, WikiText's detokenizer and
``process_results``) the YAML points at lm-eval's own function.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "files" / "tasks"
TASKS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class LocalTask:
    name: str
    split: str  # the split lm-eval evaluates for this task
    files: tuple[str, ...]  # candidate files relative to a data dir, in order of preference
    note: str = ""


HELLASWAG_NOTE = (
    "data: klosax text dump with ctx = ctx_a + ' ' + ctx_b, so ctx_b is not capitalised as in "
    "lm-eval (ActivityNet items); scores close to, not identical with, lm-eval's. Put the original "
    "rowanz hellaswag_val.jsonl at DIR/hellaswag/hellaswag_val.jsonl and pass --data-dir DIR "
    "to remove the deviation"
)

LOCAL_TASKS: dict[str, LocalTask] = {
    t.name: t
    for t in (
        LocalTask(
            "arc_easy", "test", ("arc_easy/ARC-Easy-Test.jsonl",)
        ),
        LocalTask(
            "boolq", "validation", ("boolq/boolq_validation.jsonl",)
        ),
        LocalTask(
            "hellaswag",
            "validation",
            # the original file (ctx_a/ctx_b) wins when a user provides it via --data-dir
            ("hellaswag/hellaswag_val.jsonl", "hellaswag/hellaswag_val.klosax.jsonl"),
            HELLASWAG_NOTE,
        ),
        LocalTask(
            "lambada_openai", "test", ("lambada_openai/lambada_test.jsonl",)
        ),
        LocalTask(
            "piqa", "validation", ("piqa/piqa_validation.jsonl",)
        ),
        LocalTask(
            "wikitext", "test", ("wikitext2/wikitext-2-raw-v1.test.pages.jsonl",)
        ),
    )
}


class MissingDataFile(FileNotFoundError):
    """No data file for a task in any of the searched places."""

    def __init__(self, task: str, searched: list[Path]):
        self.task = task
        self.searched = searched
        super().__init__(f"no data file for task {task!r}; searched: {', '.join(map(str, searched))}")


def find_data_file(task: str, data_dir: str | Path | None = None) -> Path:
    """The file a task reads: first ``data_dir`` (if given), then the package's files.

    Each candidate name is tried as is and with ``.gz`` appended.
    """
    spec = LOCAL_TASKS[task]
    roots = ([Path(data_dir).expanduser()] if data_dir else []) + [PACKAGE_DATA_DIR]
    searched: list[Path] = []
    for root in roots:
        for rel in spec.files:
            for cand in (root / rel, root / (rel + ".gz")):
                searched.append(cand)
                if cand.is_file():
                    return cand
    raise MissingDataFile(task, searched)


def read_jsonl(path: Path) -> tuple[list[dict], str]:
    """Rows of a (possibly gzipped) JSONL file and the sha256 of its uncompressed bytes."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    return rows, hashlib.sha256(raw).hexdigest()


def load_local(llmsparse_task: str, llmsparse_data_dir: str | None = None, **_ignored):
    """lm-eval ``custom_dataset`` hook: a DatasetDict with the task's one evaluation split.

    lm-eval calls it as ``custom_dataset(**metadata, **dataset_kwargs)``; ``llmsparse_task``
    comes from the YAML's ``dataset_kwargs``, ``llmsparse_data_dir`` from the TaskManager
    metadata set by :func:`llmsparse.eval.lmeval.run_tasks`.
    """
    import datasets

    path = find_data_file(llmsparse_task, llmsparse_data_dir or None)
    rows, _ = read_jsonl(path)
    return datasets.DatasetDict({LOCAL_TASKS[llmsparse_task].split: datasets.Dataset.from_list(rows)})


def hellaswag_process_docs(dataset):
    """lm-eval's HellaSwag ``process_docs``, also for data that only has ``ctx``.

    With the original data (``ctx_a``/``ctx_b``) this *is* lm-eval's function. With the shipped
    dump (``ctx`` only) it applies lm-eval's ``preprocess`` to ``activity_label + ": " + ctx``
    (see the deviation note in data/files/tasks/SOURCES.md).
    """
    from lm_eval.tasks.hellaswag import utils as lm_hellaswag

    if "ctx_a" in dataset.column_names:
        return lm_hellaswag.process_docs(dataset)

    def _process_doc(doc):
        return {
            "query": lm_hellaswag.preprocess(doc["activity_label"] + ": " + doc["ctx"]),
            "choices": [lm_hellaswag.preprocess(ending) for ending in doc["endings"]],
            "gold": int(doc["label"]),
        }

    return dataset.map(_process_doc)
