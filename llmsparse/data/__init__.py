"""Calibration and evaluation text, offline first.

Built-in sources are real samples shipped in ``llmsparse/data/files`` (see SOURCES.md there):
``c4`` (C4 train shard 0, 1,041 documents), ``wikitext2`` (WikiText-2 validation split; the test
split is kept for evaluation). A local ``.txt`` (one text stream) or ``.jsonl`` (one document per
line, field ``text``) file works too, and so does a hub dataset name (``hf:NAME[/CONFIG]``) when the
hub is reachable.

Sampling follows the Wanda / SparseGPT reference code: ``random.seed(seed)``; for each sequence,
draw a random document until one has more than ``seqlen`` tokens, then a random window of
``seqlen`` tokens inside it. Streams (``.txt``, wikitext2) are tokenised once and windows drawn at
random offsets.
"""
from __future__ import annotations

import gzip
import json
import random
from functools import lru_cache
from pathlib import Path

from ..errors import UserError
from ..spec import CalibSpec

FILES = Path(__file__).parent / "files"
C4_TRAIN = "c4-train.00000-of-01024.docs0000-1040.jsonl.gz"
C4_VAL = "c4-validation.00000-of-00008.docs0000-0511.jsonl.gz"
WIKI_TEST = "wiki.test.raw.gz"
WIKI_VALID = "wiki.valid.tokens.gz"
PTB_TEST = "ptb.test.txt.gz"

CALIB_SOURCES = ("c4", "wikitext2")
EVAL_SETS = ("wikitext2", "c4", "ptb")


def _read_text(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            return f.read()
    return path.read_text(encoding="utf-8")


def _jsonl_texts(path: Path) -> list[str]:
    out = []
    for i, line in enumerate(_read_text(path).split("\n")):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}: line {i + 1} is not valid JSON; give one JSON object per line") from None
        if isinstance(obj, str):
            out.append(obj)
        elif isinstance(obj, dict) and isinstance(obj.get("text"), str):
            out.append(obj["text"])
        else:
            raise UserError(f"{path}: line {i + 1} has no string field 'text'")
    return out


@lru_cache(maxsize=4)
def c4_train_docs() -> tuple[str, ...]:
    return tuple(_jsonl_texts(FILES / C4_TRAIN))


def wikitext2_test_text() -> str:
    """WikiText-2 raw test as the reference code builds it: each line of ``wiki.test.raw`` is one
    row (a non-blank line keeps its trailing newline, a whitespace-only line becomes ""), rows
    joined with "\\n\\n" (1,294,336 characters)."""
    raw = _read_text(FILES / WIKI_TEST)
    parts = raw.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    rows = ["" if p.strip() == "" else p + "\n" for p in parts]
    return "\n\n".join(rows)


def c4_validation_text() -> str:
    """C4 validation as SparseGPT/Wanda build it (documents joined with a space). The reference
    code joins the first 1,100 documents; only 512 ship here, so all 512 are joined."""
    return " ".join(_jsonl_texts(FILES / C4_VAL))


def ptb_test_text() -> str:
    """PTB test as SparseGPT builds it from ``ptb_text_only``: sentences joined with a space."""
    lines = [ln.strip() for ln in _read_text(FILES / PTB_TEST).split("\n")]
    return " ".join(ln for ln in lines if ln)


def eval_text(name: str) -> str:
    if name == "wikitext2":
        return wikitext2_test_text()
    if name == "c4":
        return c4_validation_text()
    if name == "ptb":
        return ptb_test_text()
    p = Path(name).expanduser()
    if p.is_file():
        return "\n\n".join(_jsonl_texts(p)) if p.suffix in (".jsonl", ".gz") else _read_text(p)
    raise UserError(f"unknown perplexity dataset '{name}'; use {', '.join(EVAL_SETS)} or a local .txt/.jsonl file")


def _calib_corpus(source: str) -> tuple[str, list[str] | str]:
    """('docs', [texts]) or ('stream', text)."""
    if source == "c4":
        return "docs", list(c4_train_docs())
    if source == "wikitext2":
        lines = _read_text(FILES / WIKI_VALID).split("\n")
        return "stream", " ".join(lines)
    p = Path(source).expanduser()
    if p.is_file():
        if p.suffix == ".jsonl" or p.name.endswith(".jsonl.gz"):
            docs = _jsonl_texts(p)
            if not docs:
                raise UserError(f"{source} holds no documents")
            return "docs", docs
        return "stream", _read_text(p)
    if source.startswith("hf:"):
        name = source[3:]
        try:
            import datasets  # noqa: F401
            from datasets import load_dataset
        except ImportError:
            raise UserError("hub datasets need the datasets package: pip install datasets") from None
        ds_name, _, cfg = name.partition("/") if name.count("/") > 1 else (name, "", "")
        try:
            ds = load_dataset(ds_name, cfg or None, split="train")
        except Exception as e:  # network, missing dataset
            raise UserError(f"could not load hub dataset {name}: {str(e).splitlines()[0]}") from None
        return "docs", [t for t in ds["text"] if t]
    raise UserError(
        f"unknown calibration source '{source}'; use c4, wikitext2, a local .txt/.jsonl file or hf:NAME"
    )


def calibration_batches(tokenizer, spec: CalibSpec | str, seed: int = 0):
    """``nsamples`` token windows of ``seqlen`` tokens as a LongTensor ``[nsamples, seqlen]``."""
    import torch

    spec = CalibSpec.parse(spec)
    kind, corpus = _calib_corpus(spec.source)
    rng = random.Random(seed)
    if kind == "docs":
        # tokenise every document once (batched); the draws below only consume the RNG
        all_ids = tokenizer(list(corpus))["input_ids"] if len(corpus) <= 50000 else None

        def ids(i: int) -> list[int]:
            return all_ids[i] if all_ids is not None else tokenizer(corpus[i])["input_ids"]

        # the reference loop never ends when no document is long enough: check first
        longest = max(map(len, all_ids)) if all_ids is not None else None
        if longest is not None and longest <= spec.seqlen:
            raise UserError(
                f"seqlen {spec.seqlen} is too long for calibration source '{spec.source}': its longest document "
                f"has {longest} tokens; use a seqlen below {longest}"
            )
        rows = []
        for _ in range(spec.nsamples):
            for _attempt in range(100000):
                i = rng.randint(0, len(corpus) - 1)
                toks = ids(i)
                if len(toks) > spec.seqlen:
                    break
            else:
                raise UserError(f"no document of '{spec.source}' is longer than seqlen {spec.seqlen}")
            s = rng.randint(0, len(toks) - spec.seqlen - 1)
            rows.append(toks[s : s + spec.seqlen])
        return torch.tensor(rows, dtype=torch.long)
    toks = tokenizer(corpus)["input_ids"]
    if len(toks) <= spec.seqlen:
        raise UserError(
            f"seqlen {spec.seqlen} is too long for calibration source '{spec.source}' ({len(toks)} tokens)"
        )
    rows = []
    for _ in range(spec.nsamples):
        s = rng.randint(0, len(toks) - spec.seqlen - 1)
        rows.append(toks[s : s + spec.seqlen])
    return torch.tensor(rows, dtype=torch.long)
