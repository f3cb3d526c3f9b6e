"""SliceGPT: norm fusion, computational invariance, slicing, save/reload, bad input."""

from __future__ import annotations

import pytest
import torch

import llmsparse.slicing as S
from llmsparse.errors import UserError
from llmsparse.slicing.fusion import center_output_rows, centering_matrix, fuse_scale_into_inputs
from llmsparse.slicing.pca import accumulate_covariance, pca_basis, sliced_dim
from llmsparse.slicing.slicegpt import capture_layer0_inputs

transformers = pytest.importorskip("transformers")

V, D = 96, 64


def _perturb(model):
    """Non-trivial norm weights/biases so fusion is really exercised."""
    g = torch.Generator().manual_seed(1)
    for n, p in model.named_parameters():
        if "norm" in n:
            base = 0.0 if n.endswith("bias") else 1.0
            p.data = base + 0.3 * torch.randn(p.shape, generator=g)
        elif n.endswith("bias"):
            p.data = 0.1 * torch.randn(p.shape, generator=g)
    return model.eval()


def tiny_llama(tie=True):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=V, hidden_size=D, intermediate_size=80, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=24, tie_word_embeddings=tie, rms_norm_eps=1e-5,
        max_position_embeddings=64,
    )
    return _perturb(LlamaForCausalLM(cfg))


def tiny_opt():
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    cfg = OPTConfig(
        vocab_size=V, hidden_size=D, ffn_dim=80, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=64, word_embed_proj_dim=D,
    )
    return _perturb(OPTForCausalLM(cfg))


def tiny_qwen3():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=V, hidden_size=D, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, tie_word_embeddings=False, max_position_embeddings=64,
    )
    return _perturb(Qwen3ForCausalLM(cfg))


def tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=V, hidden_size=D, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=64,
    )
    return _perturb(Qwen2ForCausalLM(cfg))


def ids(n=6, s=16, seed=0):
    return torch.randint(0, V, (n, s), generator=torch.Generator().manual_seed(seed))


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@torch.no_grad()
def logits(m, x):
    return m(x, use_cache=False).logits


# ----------------------------------------------------------------------------- pure functions


def test_fuse_scale_hand_computed():
    W = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    g = torch.tensor([2.0, 0.5])
    b = torch.tensor([1.0, -1.0])
    w2, b2 = fuse_scale_into_inputs(W, None, g, b)
    assert torch.allclose(w2, torch.tensor([[2.0, 1.0], [6.0, 2.0]]))
    assert torch.allclose(b2, torch.tensor([-1.0, -1.0]))  # W @ b
    x = torch.randn(5, 2)
    assert torch.allclose((x * g + b) @ W.T, x @ w2.T + b2, atol=1e-6)


def test_center_output_rows_gives_zero_mean_outputs():
    W, b = torch.randn(7, 3), torch.randn(7)
    w2, b2 = center_output_rows(W, b)
    y = torch.randn(4, 3) @ w2.T + b2
    assert y.mean(dim=-1).abs().max() < 1e-5
    C = centering_matrix(7)
    assert torch.allclose(C @ W.double(), w2.double(), atol=1e-6)


def test_pca_basis_descending_and_dampened():
    x = torch.randn(200, 4) * torch.tensor([1.0, 5.0, 0.1, 2.0])
    H = accumulate_covariance(accumulate_covariance(None, x[:100]), x[100:])
    assert torch.allclose(H, x.double().T @ x.double())  # streamed == one shot
    vals, vecs = pca_basis(H)
    assert torch.all(vals[:-1] >= vals[1:])
    ref = torch.linalg.eigvalsh(H).flip(0) + 0.01 * torch.diagonal(H).mean()
    assert torch.allclose(vals, ref)
    assert torch.allclose(vecs.T @ vecs, torch.eye(4, dtype=torch.float64), atol=1e-10)
    assert vecs[:, 0].abs().argmax() == 1  # largest variance axis first


def test_sliced_dim_rounding():
    assert sliced_dim(576, 0.25, 8) == 432
    assert sliced_dim(4096, 0.3, 8) == 2864  # int(2867.2) -> 2864
    assert sliced_dim(64, 0.0, 8) == 64
    assert sliced_dim(100, 0.25, 1) == 75


# ----------------------------------------------------------------------------- invariance


@pytest.mark.parametrize("make", [tiny_llama, tiny_opt, tiny_qwen3, tiny_qwen2])
def test_fusion_and_rotation_are_exact(make):
    m = make()
    x = ids()
    ref = logits(m, x)
    S.fuse_norms(m)
    assert rel_err(logits(m, x), ref) < 1e-4
    inps = capture_layer0_inputs(m, x, 4, torch.device("cpu"), torch.device("cpu"))
    S.rotate_and_slice(m, inps, D)  # full rank: rotate only
    layer1 = m.model.decoder.layers[1] if hasattr(m.model, "decoder") else m.model.layers[1]
    assert layer1.attn_shortcut is not None and layer1.mlp_shortcut is not None  # rotations really differ
    assert rel_err(logits(m, ids(3, 16, seed=5)), logits(make(), ids(3, 16, seed=5))) < 1e-4


# ----------------------------------------------------------------------------- slicing


@pytest.mark.parametrize("make", [tiny_llama, tiny_opt])
def test_slice_dims_params_and_reload(make, tmp_path):
    m = make()
    dense_params = S.count_params(m)
    info = S.slice_model(m, ids(8, 16), 0.25, round_to=8, batch_size=4)
    assert info["sliced_hidden_size"] == 48 and info["hidden_size"] == D
    assert info["params_before"] == dense_params
    assert info["params_after"] == S.count_params(m) < dense_params
    assert info["tied_embeddings"] is True  # tied input/output embeddings stay tied
    fam = "opt" if hasattr(m.model, "decoder") else "llama"
    layers = m.model.decoder.layers if fam == "opt" else m.model.layers
    # default: Llama slices the vocabulary side (every width 48); OPT keeps embeddings and head (width D at both ends)
    edge = D if fam == "opt" else 48
    for i, layer in enumerate(layers):
        a = layer.self_attn
        o = a.out_proj if fam == "opt" else a.o_proj
        down = layer.fc2 if fam == "opt" else layer.mlp.down_proj
        assert a.q_proj.weight.shape[1] == (edge if i == 0 else 48)
        assert o.weight.shape[0] == 48
        assert down.weight.shape[0] == (edge if i == len(layers) - 1 else 48)
    emb = m.get_input_embeddings().weight
    assert emb.shape == (V, edge) and m.get_output_embeddings().weight is emb
    assert m.config.model_type == f"llmsparse_sliced_{fam}"
    assert m.config.slicing["sliced_dim"] == 48

    x = ids(2, 12, seed=3)
    out = logits(m, x)
    assert torch.isfinite(out).all()
    S.save_sliced(m, None, tmp_path, info)
    from transformers import AutoModelForCausalLM

    re = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # no trust_remote_code
    assert type(re).__name__.startswith("Sliced")
    assert torch.equal(logits(re, x), out)
    assert S.count_params(re) == info["params_after"]
    re2 = S.load_sliced(tmp_path)
    assert torch.equal(logits(re2, x), out)


def test_slice_ratio_zero_keeps_function():
    m = tiny_llama(tie=False)
    x = ids(2, 12, seed=7)
    ref = logits(m, x)
    S.slice_model(m, ids(8, 16), 0.0)
    assert rel_err(logits(m, x), ref) < 1e-4


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_ratio(ratio):
    with pytest.raises(UserError, match="ratio"):
        S.slice_model(tiny_llama(), ids(2, 8), ratio)


def test_unsupported_architecture_names_families():
    from transformers import GPT2Config, GPT2LMHeadModel

    m = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=1, n_head=2, n_positions=32))
    with pytest.raises(UserError, match="Llama.*OPT"):
        S.slice_model(m, ids(2, 8), 0.25)


def test_already_sliced_model_is_refused():
    m = tiny_llama()
    S.slice_model(m, ids(4, 8), 0.25)
    with pytest.raises(UserError, match="already sliced"):
        S.slice_model(m, ids(4, 8), 0.25)


def test_load_sliced_refuses_dense_checkpoint(tmp_path):
    tiny_llama().save_pretrained(tmp_path)
    with pytest.raises(UserError, match="not a sliced checkpoint"):
        S.load_sliced(tmp_path)


# ----------------------------------------------------------------------------- layout variants


def test_one_shortcut_variant_exact_and_smaller(tmp_path):
    m = tiny_llama()
    x = ids(2, 12, seed=3)
    ref = logits(m, x)
    S.slice_model(m, ids(8, 16), 0.0, one_shortcut=True)
    assert rel_err(logits(m, x), ref) < 1e-4
    a, b = tiny_llama(), tiny_llama()
    ia = S.slice_model(a, ids(8, 16), 0.25)
    ib = S.slice_model(b, ids(8, 16), 0.25, one_shortcut=True)
    assert ib["params_after"] < ia["params_after"]
    assert all(layer.mlp_shortcut is None for layer in b.model.layers[:-1])
    S.save_sliced(b, None, tmp_path, ib)
    assert torch.equal(logits(S.load_sliced(tmp_path), x), logits(b, x))


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("group", [0, 1, 2])
def test_sliced_vocab_exact_at_full_width(tie, group):
    """Embeddings/head rotated (shared basis, head map B) and grouped bases change nothing before slicing."""
    m = tiny_llama(tie=tie)
    x = ids(2, 12, seed=3)
    ref = logits(m, x)
    S.slice_model(m, ids(8, 16), 0.0, vocab="slice", group=group)
    assert rel_err(logits(m, x), ref) < 1e-4
    assert m.config.slicing["final"]["proj"] is tie


@pytest.mark.parametrize("group", [0, 2])
def test_opt_keep_vocab_grouped_exact_at_full_width(group):
    m = tiny_opt()
    x = ids(2, 12, seed=3)
    ref = logits(m, x)
    S.slice_model(m, ids(8, 16), 0.0, group=group)
    assert rel_err(logits(m, x), ref) < 1e-4


@pytest.mark.parametrize("tie", [True, False])
def test_sliced_vocab_structure_and_reload(tie, tmp_path):
    m = tiny_llama(tie=tie)
    dense = S.count_params(m)
    info = S.slice_model(m, ids(8, 16), 0.25, vocab="slice")
    emb, head, norm = m.model.embed_tokens, m.lm_head, m.model.norm
    assert emb.weight.shape == (V, 48) and head.weight.shape == (V, 48)
    assert (head.weight is emb.weight) is tie and info["tied_embeddings"] is tie
    # tied: the head reads through a 48 x 48 map fitted in least squares; untied: exact, no map
    assert (norm.proj is not None) is tie
    fit = m.config.slicing["final"]["head_fit_rel_error"]
    assert (0.0 < fit < 1.0) if tie else fit == 0.0
    assert info["params_after"] == S.count_params(m) < dense
    x = ids(2, 12, seed=3)
    S.save_sliced(m, None, tmp_path, info)
    from transformers import AutoModelForCausalLM

    re = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(logits(re, x), logits(m, x))
    assert S.count_params(re) == info["params_after"]
    assert (re.lm_head.weight is re.model.embed_tokens.weight) is tie


def test_grouped_bases_have_fewer_skip_matrices(tmp_path):
    a, b = tiny_llama(), tiny_llama()
    ia = S.slice_model(a, ids(8, 16), 0.25)
    ib = S.slice_model(b, ids(8, 16), 0.25, group=2)
    # 3 layers, groups {0, 1} and {2}: a skip matrix only where a group starts
    assert [layer.attn_shortcut is not None for layer in b.model.layers] == [True, False, True]
    assert all(layer.mlp_shortcut is None for layer in b.model.layers)
    assert ib["params_after"] < ia["params_after"]
    S.save_sliced(b, None, tmp_path, ib)
    x = ids(2, 12, seed=3)
    assert torch.equal(logits(S.load_sliced(tmp_path), x), logits(b, x))


def test_bad_vocab_and_group_options():
    with pytest.raises(UserError, match="vocab"):
        S.slice_model(tiny_llama(), ids(2, 8), 0.25, vocab="shrink")
    with pytest.raises(UserError, match="Llama family"):
        S.slice_model(tiny_opt(), ids(2, 8), 0.25, vocab="slice")
    with pytest.raises(UserError, match="group"):
        S.slice_model(tiny_llama(), ids(2, 8), 0.25, group=-1)


def test_authors_layout_unties_and_slices_embeddings(tmp_path):
    m = tiny_llama()
    info = S.slice_model(m, ids(8, 16), 0.25, slice_embeddings=True)
    assert m.model.embed_tokens.weight.shape == (V, 48) and m.lm_head.weight.shape == (V, D)
    assert info["tied_embeddings"] is False
    S.save_sliced(m, None, tmp_path, info)
    x = ids(2, 12, seed=3)
    assert torch.equal(logits(S.load_sliced(tmp_path), x), logits(m, x))


def test_uniform_variant_is_a_plain_llama(tmp_path):
    from transformers import LlamaForCausalLM

    from llmsparse.slicing.uniform import slice_model_uniform

    m = tiny_llama()
    x = ids(2, 12, seed=3)
    ref = logits(m, x)
    slice_model_uniform(m, ids(8, 16), 0.0)
    assert rel_err(logits(m, x), ref) < 1e-4
    m = tiny_llama()
    dense = S.count_params(m)
    info = slice_model_uniform(m, ids(8, 16), 0.25)
    assert info["params_after"] < dense and m.config.hidden_size == 48
    m.save_pretrained(tmp_path)
    re = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert type(re) is LlamaForCausalLM
    assert torch.equal(logits(re, x), logits(m, x))


def test_sliced_model_generates_with_kv_cache():
    """The sliced decoder layers pass the KV cache on (the name changed across transformers versions):
    at full width, greedy generation equals the dense model's token for token."""
    m = tiny_llama()
    x = ids(1, 5, seed=9)
    ref = m.generate(x, max_new_tokens=8, do_sample=False)
    S.slice_model(m, ids(8, 16), 0.0)
    assert torch.equal(m.generate(x, max_new_tokens=8, do_sample=False), ref)


def test_sliced_vocab_untied_weights_under_a_tied_config(tmp_path):
    """config says tied but the loaded head is a separate tensor: the head is sliced exactly and the
    saved config says untied, so reloading does not tie it back to the embeddings."""
    m = tiny_llama(tie=True)
    m.lm_head.weight = torch.nn.Parameter(m.lm_head.weight.detach().clone() * 1.5)
    assert m.config.tie_word_embeddings
    info = S.slice_model(m, ids(8, 16), 0.25, vocab="slice")
    assert info["tied_embeddings"] is False and m.config.tie_word_embeddings is False
    S.save_sliced(m, None, tmp_path, info)
    x = ids(2, 12, seed=3)
    re = S.load_sliced(tmp_path)
    assert re.lm_head.weight is not re.model.embed_tokens.weight
    assert torch.equal(logits(re, x), logits(m, x))
