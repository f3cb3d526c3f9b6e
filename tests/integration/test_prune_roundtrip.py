"""prune -> save -> reload with transformers -> same logits as the in-memory pruned model."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from llmsparse.masks import is_nm
from llmsparse.models.adapters import get_adapter
from llmsparse.output import atomic_dir, make_record, save_model_dir
from llmsparse.prune.engine import PruneConfig, prune_model
from llmsparse.spec import SparsitySpec
from tests.conftest import ToyTokenizer, tiny_model

CASES = [
    ("llama", "wanda", "2:4"),
    ("llama", "sparsegpt", "0.5"),
    ("qwen2", "sparsegpt", "4:8"),
    ("mistral", "magnitude", "0.5"),
    ("opt", "wanda", "0.5"),
    ("opt", "sparsegpt", "2:4"),
    ("gpt_neox", "wanda", "4:8"),
    ("qwen3", "wanda", "0.6"),
]


@pytest.mark.parametrize("family,method,sp", CASES)
def test_prune_save_reload(tmp_path, family, method, sp):
    model = tiny_model(family)
    ids = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        dense_logits = model(ids).logits
    cfg = PruneConfig(method=method, sparsity=SparsitySpec.parse(sp), calib="c4:8x32", seed=0, batch_size=4,
                      device="cpu")
    report = prune_model(model, ToyTokenizer(), cfg)
    spec = SparsitySpec.parse(sp)
    ad = get_adapter(model)
    for layer in ad.layers(model):
        for name, lin in ad.linears(layer).items():
            w = lin.weight
            if spec.is_nm:
                assert is_nm(w, spec.n, spec.m), name
            assert abs(float((w == 0).float().mean()) - spec.target) < 0.02, name
    assert abs(report["sparsity_overall"] - spec.target) < 0.01
    with torch.no_grad():
        pruned_logits = model(ids).logits
    assert not torch.allclose(pruned_logits, dense_logits, atol=1e-3)  # pruning did something
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        save_model_dir(model, None, tmp, make_record("prune", layers=report["layers"]))
    rec = json.loads((out / "llmsparse.json").read_text())
    assert rec["kind"] == "prune" and len(rec["layers"]) == report["pruned_linears"]
    re = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        re_logits = re(ids).logits
    assert torch.equal(re_logits, pruned_logits)


def test_sequential_grouping_differs_and_keeps_pattern():
    a, b = tiny_model("llama"), tiny_model("llama")
    for m, g in ((a, "layer"), (b, "sequential")):
        prune_model(m, ToyTokenizer(), PruneConfig(method="wanda", sparsity=SparsitySpec.parse("2:4"),
                                                  calib="c4:4x32", grouping=g, device="cpu"))
    la, lb = get_adapter(a).layers(a), get_adapter(b).layers(b)
    # the first group (attention inputs) sees the same input either way; later groups do not
    assert torch.equal(la[0].self_attn.q_proj.weight, lb[0].self_attn.q_proj.weight)
    assert not torch.equal(la[1].mlp.down_proj.weight, lb[1].mlp.down_proj.weight)
    assert is_nm(lb[1].mlp.down_proj.weight, 2, 4)


def test_ignore_patterns_leave_layers_dense():
    m = tiny_model("llama")
    prune_model(m, ToyTokenizer(), PruneConfig(method="magnitude", sparsity=SparsitySpec.parse("0.5"),
                                               ignore=("*.down_proj", "model.layers.0.*"), device="cpu"))
    layers = get_adapter(m).layers(m)
    assert float((layers[0].self_attn.q_proj.weight == 0).float().mean()) == 0.0
    assert float((layers[1].mlp.down_proj.weight == 0).float().mean()) == 0.0
    assert float((layers[1].mlp.up_proj.weight == 0).float().mean()) == 0.5
    assert float((m.lm_head.weight == 0).float().mean()) == 0.0
