"""The on-disk cache of measured kernel choices (llmsparse.kernels.dispatch / kernel_cache), on CPU:
round trip, merging, stale files ignored, nothing touched without CUDA."""
import json

import pytest
import torch

from llmsparse.kernels import dispatch
from llmsparse.kernels.linear import kernel_cache

KEY_A = ("NVIDIA H200", "float16", 4096, 4096, False)
KEY_B = ("NVIDIA H200", "bfloat16", 11008, 4096, True)


@pytest.fixture(autouse=True)
def _own_table():
    saved = {k: dict(v) for k, v in dispatch._TABLE.items()}
    dispatch._TABLE.clear()
    yield
    dispatch._TABLE.clear()
    dispatch._TABLE.update(saved)


def _fill(key, bucket, path, cfg, ms=0.01):
    dispatch.table_for(key)[bucket] = dispatch.Choice(path, cfg, ms, 2 * ms, 1e-5)


def test_round_trip_and_merge(tmp_path):
    f = str(tmp_path / "c.json")
    _fill(KEY_A, 1, "gemvg", (1, 4, 8, 2, 2))
    _fill(KEY_A, 4096, "cslt", (1, 1))
    assert dispatch.save_cache(f) == 1
    dispatch._TABLE.clear()
    _fill(KEY_B, 16, "dense", ())
    assert dispatch.save_cache(f) == 2  # merged with the file's KEY_A, not replacing it
    dispatch._TABLE.clear()
    assert dispatch.load_cache(f) == 3
    a = dispatch.table_for(KEY_A)
    assert a[1].path == "gemvg" and a[1].cfg == (1, 4, 8, 2, 2) and a[4096].cfg == (1, 1)
    assert dispatch.table_for(KEY_B)[16].path == "dense"
    # a bucket measured in this process wins over the file
    _fill(KEY_A, 8, "gemv", (4, 1024, 4, 2))
    dispatch.table_for(KEY_A)[1] = dispatch.Choice("dense", (), 1.0, 1.0, 0.0)
    assert dispatch.load_cache(f) == 0
    assert dispatch.table_for(KEY_A)[1].path == "dense"


def test_foreign_or_broken_files_are_ignored(tmp_path):
    f = tmp_path / "c.json"
    _fill(KEY_A, 1, "gemvg", (1, 4, 8, 2, 2))
    dispatch.save_cache(str(f))
    data = json.loads(f.read_text())
    data["signature"]["kernels"] = "0" * 16  # written by other kernel code
    f.write_text(json.dumps(data))
    dispatch._TABLE.clear()
    assert dispatch.load_cache(str(f)) == 0 and dispatch.table_size() == 0
    f.write_text("{not json")
    assert dispatch.load_cache(str(f)) == 0
    assert dispatch.load_cache(str(tmp_path / "missing.json")) == 0
    _fill(KEY_B, 1, "dense", ())
    assert dispatch.save_cache(str(f)) == 1  # a broken file is replaced
    assert json.loads(f.read_text())["signature"] == dispatch.cache_signature()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_default_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("LLMSPARSE_KERNEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert dispatch.default_cache_path() == str(tmp_path / "llmsparse" / "kernel-choices.json")
    monkeypatch.setenv("LLMSPARSE_KERNEL_CACHE", str(tmp_path / "x.json"))
    assert dispatch.default_cache_path() == str(tmp_path / "x.json")
    for off in ("", "off", "0"):
        monkeypatch.setenv("LLMSPARSE_KERNEL_CACHE", off)
        assert dispatch.default_cache_path() is None


def test_kernel_cache_loads_and_writes_back_only_with_cuda(monkeypatch, tmp_path):
    f = tmp_path / "k.json"
    with kernel_cache(str(f)) as path:  # this machine has no CUDA: no file I/O at all
        assert path is None
        _fill(KEY_A, 1, "gemvg", (1, 4, 8, 2, 2))
    assert not f.exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with kernel_cache(str(f)) as path:
        assert path == str(f)
    assert not f.exists()  # nothing measured inside the block: nothing written
    with kernel_cache(str(f)):
        _fill(KEY_B, 16, "dense", ())  # measured inside: the file gets every choice of the process
    assert {tuple(e["key"]) for e in json.loads(f.read_text())["entries"]} == {KEY_A, KEY_B}
    dispatch._TABLE.clear()
    with kernel_cache(str(f)):
        assert dispatch.table_for(KEY_A)[1].path == "gemvg"  # loaded on entry
        assert dispatch.table_for(KEY_B)[16].path == "dense"
    mtime = f.stat().st_mtime_ns
    with kernel_cache(None) as path:
        assert path is None
    with kernel_cache(str(f)):
        pass  # nothing new measured: the file is not rewritten
    assert f.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("module,attr,key,a,b", [
    ("gluon_sp24", "PDL", "pdl", 0, 2),  # programmatic dependent launch off / mode 2
    ("gluon_mmsp", "META", "meta", 0, 1),  # mmsp's metadata build: shifts and masks / byte permutes
    ("gluon_mmsp", "EARLY", "early", 0, 1),  # mmsp's weights requested before griddepcontrol.wait
    ("gluon_mmsp", "EVICT", "evict", 0, 2),  # mmsp's weight loads: plain / .cg
    ("gluon_mmsp", "MO_TUNING", "mo", 0, 1),  # the MMA-order configurations among the candidates
    ("gluon_mmsp", "MO_WIDE", "wide", 0, 1),  # the MO configurations for M = 17-64 among them
])
def test_cache_signature_separates_each_kernel_setting(monkeypatch, module, attr, key, a, b):
    """Choices timed (or chosen among candidates) under one setting of a kernel switch are not reused under
    another: the signature records the switch under its own key, and only that key changes."""
    import importlib

    mod = importlib.import_module(f"llmsparse.kernels.{module}")
    monkeypatch.setattr(mod, attr, a)
    off = dispatch.cache_signature()
    monkeypatch.setattr(mod, attr, b)
    on = dispatch.cache_signature()
    assert off != on and off[key] == a and on[key] == b
    assert {k: v for k, v in off.items() if k != key} == {k: v for k, v in on.items() if k != key}
