"""``llmsparse export`` / ``info`` / ``eval`` / ``llmsparse.load`` on a real (tiny) HF directory:
packed and dense exports, identical perplexity, one-line errors with exit code 2."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import llmsparse
from llmsparse.cli.main import main
from llmsparse.formats import packed
from llmsparse.masks import nm_mask


@pytest.fixture(scope="module")
def pruned_dir(tiny_model_dir, tmp_path_factory, tiny_tokenizer):
    """The tiny Llama, 2:4-pruned (fp16), saved the usual (dense) way with a prune-like record."""
    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float16)
    with torch.no_grad():
        for layer in m.model.layers:
            for lin in [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
                        layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj]:
                lin.weight[~nm_mask(lin.weight.abs().float(), 2, 4)] = 0
    d = tmp_path_factory.mktemp("export") / "pruned"
    m.save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    (d / "llmsparse.json").write_text(json.dumps({"kind": "prune", "recipe": {"method": "magnitude", "sparsity": "2:4"}}))
    return d


def test_export_packed_info_eval_load(pruned_dir, tmp_path, capsys):
    out = tmp_path / "packed"
    rec_json = tmp_path / "export.json"
    assert main(["export", str(pruned_dir), "--format", "packed", "-o", str(out), "-q", "--json", str(rec_json)]) == 0
    rec = json.loads(rec_json.read_text())
    assert rec["format"]["layers_by_pattern"] == {"2:4": 14}
    assert rec["format"]["linear_ratio"] == pytest.approx(0.5625)
    assert packed.is_packed(out) and not (out / "model.safetensors").exists()
    assert (out / "tokenizer.json").is_file()
    # a packed directory is not a plain HF checkpoint
    with pytest.raises(Exception):
        AutoModelForCausalLM.from_pretrained(out)
    capsys.readouterr()
    assert main(["info", str(out), "--pattern", "2:4", "--json", str(tmp_path / "info.json")]) == 0
    shown = capsys.readouterr().out
    assert "llmsparse-packed" in shown and "2:4" in shown and "on disk" in shown
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["pattern_ok"] == info["pattern_checked"] == 14
    assert info["format"]["by_pattern"]["2:4"]["layers"] == 14
    # llmsparse.load gives the same weights and logits as from_pretrained of the dense directory
    m_packed, tok = llmsparse.load(str(out), tokenizer=True)
    assert tok is not None
    m_dense = AutoModelForCausalLM.from_pretrained(pruned_dir).eval()
    ids = torch.randint(0, 200, (2, 16))
    with torch.no_grad():
        assert torch.equal(m_packed(ids).logits, m_dense(ids).logits)


@pytest.mark.slow  # tokenising the whole wikitext2 test set takes ~30 s on a busy CPU
def test_eval_gives_identical_perplexity(pruned_dir, tmp_path):
    out = tmp_path / "packed"
    assert main(["export", str(pruned_dir), "-o", str(out), "-q"]) == 0
    res = tmp_path / "res.json"
    assert main(["eval", str(pruned_dir), str(out), "--ppl", "wikitext2", "--seqlen", "32", "--limit", "4",
                 "--json", str(res), "-q", "--device", "cpu"]) == 0
    r = json.loads(res.read_text())
    a, b = (r["models"][k]["ppl"]["wikitext2"] for k in (str(pruned_dir), str(out)))
    assert a == b, r


def test_export_dense_is_plain_hf_and_round_trips(pruned_dir, tmp_path):
    p = tmp_path / "packed"
    assert main(["export", str(pruned_dir), "-o", str(p), "-q"]) == 0
    d = tmp_path / "dense"
    assert main(["export", str(p), "--format", "dense", "-o", str(d), "-q"]) == 0
    assert "sparsity" not in json.loads((d / "config.json").read_text())
    rec = json.loads((d / "llmsparse.json").read_text())
    assert rec["format"]["layers_by_pattern"] == {"2:4": 14}
    a = AutoModelForCausalLM.from_pretrained(d)
    b = AutoModelForCausalLM.from_pretrained(pruned_dir)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert x.dtype == y.dtype and torch.equal(x, y), k


def test_export_of_a_dense_model_says_so(tiny_model_dir, tmp_path, capsys):
    assert main(["export", str(tiny_model_dir), "-o", str(tmp_path / "p"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "not sparse" in err
    assert json.loads((tmp_path / "p" / "llmsparse.json").read_text())["format"]["sparse_layers"] == 0


def test_cli_errors_are_one_line_exit_2(pruned_dir, tmp_path, capsys):
    p = tmp_path / "packed"
    assert main(["export", str(pruned_dir), "-o", str(p), "-q"]) == 0
    assert main(["export", str(pruned_dir), "-o", str(p), "-q"]) == 2  # exists
    assert main(["export", str(pruned_dir), "--format", "zip", "-o", str(tmp_path / "x")]) == 2
    assert main(["export", str(pruned_dir), "--pattern", "0.5", "-o", str(tmp_path / "x")]) == 2
    capsys.readouterr()
    f = p / packed.SINGLE_FILE
    f.write_bytes(f.read_bytes()[:-64])
    for cmd in (["info", str(p)], ["export", str(p), "--format", "dense", "-o", str(tmp_path / "d")]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "truncated" in err, err
    assert not (tmp_path / "d").exists()
