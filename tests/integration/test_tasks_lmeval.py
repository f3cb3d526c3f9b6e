"""Offline lm-eval tasks end to end on a tiny random Llama, without network.

- ``run_tasks`` on all offline tasks returns finite metrics with the documented structure;
- our task definitions give exactly the same numbers as lm-eval's own task configs
  (its YAML files, dataset switched to the same local files), and the same prompts.
"""

from __future__ import annotations

import json
import math
import socket

import pytest

lm_eval = pytest.importorskip("lm_eval")
torch = pytest.importorskip("torch")

from llmsparse.eval import lmeval  # noqa: E402
from llmsparse.eval.tasks import _local  # noqa: E402

OFFLINE = lmeval.list_offline_tasks()
LIMIT = 3


def _tiny_tokenizer():
    """A byte-level BPE (vocab 400) trained in a fraction of a second on shipped task text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rows, _ = _local.read_jsonl(_local.find_data_file("piqa"))
    texts = [r["goal"] + " " + r["sol1"] for r in rows[:300]]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def _tiny_model(vocab):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return LlamaForCausalLM(cfg).eval()


def _no_network(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args!r}")


@pytest.fixture(scope="module")
def tiny():
    tok = _tiny_tokenizer()
    return _tiny_model(len(tok)), tok


@pytest.fixture(scope="module")
def ours(tiny):
    model, tok = tiny
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        return lmeval.run_tasks(model, tok, OFFLINE, limit=LIMIT, batch_size=4, bootstrap_iters=100)


@pytest.fixture(scope="module")
def own_tasks(tmp_path_factory):
    with lmeval._quiet_lm_eval(False):
        return {t.config.task: t for t in lmeval.lm_eval_own_tasks(OFFLINE, None, tmp_path_factory.mktemp("own"))}


def test_run_tasks_structure_and_finite_metrics(ours):
    expected_metrics = {
        "arc_easy": {"acc", "acc_norm"}, "boolq": {"acc"}, "hellaswag": {"acc", "acc_norm"},
        "lambada_openai": {"perplexity", "acc"}, "piqa": {"acc", "acc_norm"},
        "wikitext": {"word_perplexity", "byte_perplexity", "bits_per_byte"},
    }
    assert list(ours["tasks"]) == OFFLINE
    assert ours["limit"] == LIMIT and ours["num_fewshot"] == 0 and ours["lm_eval_version"]
    for name, r in ours["tasks"].items():
        assert set(r["metrics"]) == expected_metrics[name], name
        assert r["n_shot"] == 0 and r["limit"] == LIMIT and r["n_samples"] == LIMIT, name
        assert r["n_total"] > LIMIT and r["source"] == "llmsparse-offline"
        assert r["version"] in (1.0, 2.0)
        assert len(r["data_sha256"]) == 64
        for metric, m in r["metrics"].items():
            assert m["value"] is not None and math.isfinite(m["value"]), (name, metric)
            if metric.startswith("acc"):
                assert 0.0 <= m["value"] <= 1.0 and m["stderr"] is not None
    # the random model is bad at language: perplexities are large but finite
    assert ours["tasks"]["wikitext"]["metrics"]["byte_perplexity"]["value"] > 1.0
    assert bool(ours["tasks"]["hellaswag"]["note"])
    json.dumps(ours, allow_nan=False)


def test_same_numbers_as_lm_eval_own_configs(tiny, ours, own_tasks):
    model, tok = tiny
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4)
    with lmeval._quiet_lm_eval(False), torch.inference_mode():
        out = lm_eval.simple_evaluate(model=lm, tasks=list(own_tasks.values()), limit=LIMIT,
                                      bootstrap_iters=100, log_samples=False)
    for name in OFFLINE:
        theirs = lmeval._task_result(out, name, LIMIT, None)
        assert theirs["version"] == ours["tasks"][name]["version"]
        assert set(theirs["metrics"]) == set(ours["tasks"][name]["metrics"]), name
        for metric, m in theirs["metrics"].items():
            assert ours["tasks"][name]["metrics"][metric]["value"] == pytest.approx(m["value"], rel=1e-9, abs=1e-12), (name, metric)


@pytest.mark.parametrize("name", OFFLINE)
def test_prompts_identical_to_lm_eval_own_configs(own_tasks, name):
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(_local.TASKS_DIR), include_defaults=False)
    with lmeval._quiet_lm_eval(False):
        mine = tm.load([name])["tasks"][name]
    theirs = own_tasks[name]

    def docs(t):
        return t.test_docs() if t.has_test_docs() else t.validation_docs()

    d_mine, d_theirs = docs(mine), docs(theirs)
    assert len(d_mine) == len(d_theirs)
    for i in range(0, len(d_mine), max(1, len(d_mine) // 40)):  # ~40 docs spread over the split
        a, b = d_mine[i], d_theirs[i]
        assert mine.doc_to_text(a) == theirs.doc_to_text(b), (name, i)
        assert mine.doc_to_target(a) == theirs.doc_to_target(b), (name, i)
        if mine.OUTPUT_TYPE == "multiple_choice":
            assert mine.doc_to_choice(a) == theirs.doc_to_choice(b), (name, i)
