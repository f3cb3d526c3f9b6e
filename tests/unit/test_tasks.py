"""Offline lm-eval tasks: shipped data, configs, first-document prompts, bad input, table.

No model is run here (see tests/integration/test_tasks_lmeval.py for that).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import sys
from pathlib import Path

import pytest

from llmsparse.errors import UserError
from llmsparse.eval import lmeval
from llmsparse.eval.tasks import _local

OFFLINE = ["arc_easy", "boolq", "hellaswag", "lambada_openai", "piqa", "wikitext"]


# --------------------------------------------------------------------------- shipped files


def test_list_offline_tasks_and_yaml_files():
    assert lmeval.list_offline_tasks() == OFFLINE
    yamls = sorted(p.stem for p in _local.TASKS_DIR.glob("*.yaml"))
    assert yamls == OFFLINE
    for name in OFFLINE:
        text = (_local.TASKS_DIR / f"{name}.yaml").read_text()
        assert re.search(rf"^task: {name}$", text, re.M)
        assert f"llmsparse_task: {name}" in text


def test_shipped_data_matches_sources_md():
    """Every shipped file is listed in SOURCES.md with the sha256 of its content and row count."""
    sources = (_local.PACKAGE_DATA_DIR / "SOURCES.md").read_text()
    rows = re.findall(r"^\| `([^`]+\.gz)` \| (\w+) \(\w+\) \| ([\d,]+) \| ([\d,]+) \| `([0-9a-f]{64})` \| `([0-9a-f]{64})` \|$",
                      sources, re.M)
    assert sorted(r[1] for r in rows) == OFFLINE
    for rel, task, nrows, nbytes, sha_raw, sha_gz in rows:
        path = _local.PACKAGE_DATA_DIR / rel
        gz = path.read_bytes()
        raw = gzip.decompress(gz)
        assert hashlib.sha256(gz).hexdigest() == sha_gz, rel
        assert hashlib.sha256(raw).hexdigest() == sha_raw, rel
        assert len(raw) == int(nbytes.replace(",", "")), rel
        assert raw.count(b"\n") == int(nrows.replace(",", "")), rel
        assert _local.find_data_file(task) == path
    total = sum(p.stat().st_size for p in _local.PACKAGE_DATA_DIR.rglob("*"))
    assert total < 15e6


# --------------------------------------------------------------------------- prompts


EXPECTED_FIRST_DOC = {
    # hand-checked against the first line of each data file and lm-eval's YAML templates
    "piqa": (
        "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:",
        0,
        ["Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper "
         "strips, you will also need to supply it with a water bottle and a food dish.",
         "Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans "
         "material, you will also need to supply it with a water bottle and a food dish."],
    ),
    "arc_easy": (
        "Question: Which statement best explains why photosynthesis is the foundation of most food "
        "webs?\nAnswer:",
        0,
        ["Sunlight is the source of energy for nearly all ecosystems.",
         "Most ecosystems are found on land instead of in water.",
         "Carbon dioxide is more available than other gases.",
         "The producers in all ecosystems are plants."],
    ),
    "hellaswag": (
        "Roof shingle removal: A man is sitting on a roof. he",
        3,
        ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
         "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
    ),
    "boolq": (None, 0, ["no", "yes"]),
    "lambada_openai": (None, " signs", None),
}


@pytest.fixture(scope="module")
def offline_tasks():
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(_local.TASKS_DIR), include_defaults=False)
    with lmeval._quiet_lm_eval(False):
        return tm.load(OFFLINE)["tasks"]


def _docs(task):
    return task.test_docs() if task.has_test_docs() else task.validation_docs()


@pytest.mark.parametrize("name", sorted(EXPECTED_FIRST_DOC))
def test_first_doc_prompt_target_choices(offline_tasks, name):
    task = offline_tasks[name]
    doc = _docs(task)[0]
    text, target, choices = EXPECTED_FIRST_DOC[name]
    if name == "boolq":
        assert task.doc_to_text(doc).startswith("All biomass goes through at least some of these steps")
        assert task.doc_to_text(doc).endswith(
            "\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    elif name == "lambada_openai":
        assert task.doc_to_text(doc).endswith("I look at him, feeling stunned. Like this is some sort "
                                              "of sign. But as I stare at Harlin, his mouth curved in "
                                              "a confident grin, I don't care about")
    else:
        assert task.doc_to_text(doc) == text
    assert task.doc_to_target(doc) == target
    if choices is not None:
        assert task.doc_to_choice(doc) == choices


def test_configs_mirror_lm_eval(offline_tasks):
    """Same output type, metrics, version and split as lm-eval's own YAML, for every task."""
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    root = Path(lm_eval.__file__).parent / "tasks"
    own = {
        "hellaswag": "hellaswag/hellaswag.yaml", "piqa": "piqa/piqa.yaml",
        "arc_easy": "arc/arc_easy.yaml", "boolq": "super_glue/boolq/default.yaml",
        "lambada_openai": "lambada/lambada_openai.yaml", "wikitext": "wikitext/wikitext.yaml",
    }
    for name, rel in own.items():
        theirs = load_yaml(root / rel, resolve_func=False)
        ours = offline_tasks[name].config
        assert ours.output_type == theirs["output_type"], name
        assert [m["metric"] for m in ours.metric_list] == [m["metric"] for m in theirs["metric_list"]], name
        assert ours.metadata["version"] == theirs["metadata"]["version"], name
        for key in ("doc_to_text", "doc_to_target", "doc_to_choice", "process_results"):
            mine = getattr(ours, key)
            if callable(mine):  # a !function: must be lm-eval's own function
                assert mine.__code__.co_filename == theirs[key].rsplit(".", 1)[0] + ".py", (name, key)
                assert theirs[key].endswith("." + mine.__name__), (name, key)
            else:
                assert mine == theirs.get(key), (name, key)
        split = _local.LOCAL_TASKS[name].split
        evaluated = theirs.get("test_split") or theirs.get("validation_split")
        assert evaluated == split, name
        assert len(_docs(offline_tasks[name])) > 0


def test_hellaswag_original_data_via_data_dir(tmp_path):
    """With the original rowanz file (ctx_a/ctx_b), our process_docs IS lm-eval's."""
    pytest.importorskip("lm_eval")
    import datasets
    from lm_eval.tasks.hellaswag import utils as lm_utils

    doc = {"activity_label": "Clean and jerk", "ctx_a": "A lady walks to a barbell. She bends down and grabs the pole.",
           "ctx_b": "the lady", "endings": ["swings and lands in her arms.", "pulls the barbell forward.",
                                            "pulls a rope attached to the barbell.", "stands and lifts the weight over her head."],
           "label": "3"}
    (tmp_path / "hellaswag").mkdir()
    (tmp_path / "hellaswag" / "hellaswag_val.jsonl").write_text(json.dumps(doc) + "\n")
    path = _local.find_data_file("hellaswag", tmp_path)
    assert path == tmp_path / "hellaswag" / "hellaswag_val.jsonl"
    ds = _local.load_local("hellaswag", str(tmp_path))["validation"]
    ours = _local.hellaswag_process_docs(ds)[0]
    theirs = lm_utils.process_docs(datasets.Dataset.from_list([doc]))[0]
    assert ours["query"] == theirs["query"] == (
        "Clean and jerk: A lady walks to a barbell. She bends down and grabs the pole. The lady")
    assert ours["gold"] == 3
    # the shipped dump keeps the lower case (the documented deviation)
    shipped = _local.load_local("hellaswag")["validation"].select([1])
    assert _local.hellaswag_process_docs(shipped)[0]["query"].endswith("grabs the pole. the lady")


def test_data_dir_takes_precedence_and_accepts_plain_jsonl(tmp_path):
    (tmp_path / "piqa").mkdir()
    row = {"goal": "g", "sol1": "a", "sol2": "b", "label": 1}
    (tmp_path / "piqa" / "piqa_validation.jsonl").write_text(json.dumps(row) + "\n")
    assert _local.find_data_file("piqa", tmp_path) == tmp_path / "piqa" / "piqa_validation.jsonl"
    # not there -> the package's file
    assert _local.find_data_file("boolq", tmp_path).is_relative_to(_local.PACKAGE_DATA_DIR)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("limit", [0, -5, 2.5, True, "10"])
def test_bad_limit(limit):
    with pytest.raises(UserError, match=r"--limit"):
        lmeval.run_tasks(None, None, ["piqa"], limit=limit)


def test_limit_zero_message():
    with pytest.raises(UserError) as e:
        lmeval.run_tasks(None, None, ["piqa"], limit=0)
    assert "at least 1" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("bs", [0, -1, 1.5])
def test_bad_batch_size(bs):
    with pytest.raises(UserError, match=r"--batch-size"):
        lmeval.run_tasks(None, None, ["piqa"], batch_size=bs)


@pytest.mark.parametrize("tasks", ["", [], " , ", [" "]])
def test_no_tasks(tasks):
    with pytest.raises(UserError, match="no task given") as e:
        lmeval.run_tasks(None, None, tasks)
    assert "piqa" in str(e.value)


def test_unknown_task_offline_lists_offline_tasks(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        lmeval.run_tasks(None, None, "piqa,hellaswagg")
    msg = str(e.value)
    assert "hellaswagg" in msg and "unknown" in msg
    for name in OFFLINE:
        assert name in msg
    assert "\n" not in msg


def test_unknown_task_hub_unreachable(monkeypatch):
    """No env flag, but no network either: still a clear one-line UserError."""
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(lmeval, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(UserError, match="not reachable"):
        lmeval.run_tasks(None, None, ["winogrande"])


def test_missing_data_file_says_which_and_how(monkeypatch, tmp_path):
    empty = tmp_path / "empty_pkg"
    empty.mkdir()
    monkeypatch.setattr(_local, "PACKAGE_DATA_DIR", empty)
    monkeypatch.setattr(lmeval, "PACKAGE_DATA_DIR", empty)
    with pytest.raises(UserError) as e:
        lmeval.run_tasks(None, None, ["arc_easy"], data_dir=str(tmp_path))
    msg = str(e.value)
    assert "arc_easy/ARC-Easy-Test.jsonl" in msg
    assert "--data-dir" in msg and str(tmp_path) in msg
    assert "\n" not in msg


def test_data_dir_not_a_directory(tmp_path):
    with pytest.raises(UserError, match="--data-dir"):
        lmeval.run_tasks(None, None, ["piqa"], data_dir=str(tmp_path / "nope"))


def test_lm_eval_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    monkeypatch.setitem(sys.modules, "lm_eval.models.huggingface", None)
    with pytest.raises(UserError, match=re.escape("pip install llmsparse[eval]")):
        lmeval.run_tasks(None, None, ["piqa"], limit=2)


# --------------------------------------------------------------------------- results & table


def _fake_lm_eval_output(acc, acc_se, ppl):
    return {
        "results": {
            "piqa": {"alias": "piqa", "name": "piqa", "sample_len": 200, "acc,none": acc,
                     "acc_stderr,none": acc_se, "acc_norm,none": acc + 0.01, "acc_norm_stderr,none": "N/A"},
            "lambada_openai": {"alias": "lambada_openai", "perplexity,none": ppl,
                               "perplexity_stderr,none": 1.5, "acc,none": 0.4, "acc_stderr,none": 0.03},
        },
        "versions": {"piqa": 1.0, "lambada_openai": 1.0},
        "n-shot": {"piqa": 0, "lambada_openai": 0},
        "higher_is_better": {"piqa": {"acc": True, "acc_norm": True},
                             "lambada_openai": {"perplexity": False, "acc": True}},
        "n-samples": {"piqa": {"original": 1838, "effective": 200},
                      "lambada_openai": {"original": 5153, "effective": 200}},
    }


def _fake_result(acc, acc_se, ppl):
    out = _fake_lm_eval_output(acc, acc_se, ppl)
    return {"tasks": {t: lmeval._task_result(out, t, 200, None) for t in ("piqa", "lambada_openai")},
            "limit": 200, "lm_eval_version": "0.4.13"}


def test_task_result_extraction_is_json_clean():
    r = _fake_result(0.645, 0.0338, float("inf"))
    piqa = r["tasks"]["piqa"]
    assert set(piqa["metrics"]) == {"acc", "acc_norm"}  # no alias/name/sample_len
    assert piqa["metrics"]["acc"] == {"value": 0.645, "stderr": 0.0338, "higher_is_better": True}
    assert piqa["metrics"]["acc_norm"]["stderr"] is None  # "N/A"
    assert r["tasks"]["lambada_openai"]["metrics"]["perplexity"]["value"] is None  # inf
    assert (piqa["version"], piqa["n_shot"], piqa["n_samples"], piqa["n_total"], piqa["limit"]) == (1.0, 0, 200, 1838, 200)
    json.dumps(r, allow_nan=False)


def test_render_table_columns_values_and_deltas():
    from rich.console import Console

    res = {"dense": _fake_result(0.645, 0.0338, 20.0), "OUT": _fake_result(0.62, 0.0343, 31.5)}
    con = Console(record=True, width=250)
    con.print(lmeval.render_table(res))
    text = con.export_text(clear=False)
    assert "dense" in text and "OUT" in text and "Δ" in text
    assert "64.50 ± 3.38" in text and "62.00 ± 3.43" in text
    assert "-2.50" in text  # acc delta in points
    assert "+11.50" in text and "20.00 ± 1.50" in text  # perplexity: same decimals for value, ±, Δ
    assert "--limit 200" in text and "1.0" in text and "0.4.13" in text
    assert "acc ↑" in text and "perplexity ↓" in text
    # colours: accuracy went down (red), perplexity went up (red)
    html = con.export_html(inline_styles=True)
    assert html.count("color: #800000") >= 2


def test_render_table_three_models_and_missing_task():
    from rich.console import Console

    a, b, c = _fake_result(0.6, 0.03, 20.0), _fake_result(0.61, 0.03, 21.0), _fake_result(0.5, 0.03, 40.0)
    del c["tasks"]["lambada_openai"]
    con = Console(record=True, width=250)
    con.print(lmeval.render_table({"a": a, "b": b, "c": c}))
    text = con.export_text(clear=False)
    assert "Δ b" in text and "Δ c" in text and "+1.00" in text and "-10.00" in text and "—" in text


def test_finite():
    assert lmeval._finite(1) == 1.0 and lmeval._finite(float("nan")) is None
    assert lmeval._finite("N/A") is None and math.isclose(lmeval._finite(0.25), 0.25)


def test_check_tasks_before_loading_a_model(tmp_path):
    pytest.importorskip("lm_eval")
    assert lmeval.check_tasks("piqa, arc_easy,piqa", limit=5, batch_size=2) == ["piqa", "arc_easy"]
    assert lmeval.check_tasks(["wikitext"], data_dir=str(tmp_path)) == ["wikitext"]  # falls back to the package
    with pytest.raises(UserError, match="--limit"):
        lmeval.check_tasks("piqa", limit=0)
