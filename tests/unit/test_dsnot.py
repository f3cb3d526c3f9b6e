"""DSnoT refinement (llmsparse.prune.dsnot) and its streaming statistic (dsnot_stats)."""
from __future__ import annotations

import pytest
import torch

from llmsparse.masks import is_nm, nm_mask, per_row_mask
from llmsparse.prune.dsnot import DSnoTOptions, expected_sq_error, layer_kind, refine, skip_layer
from llmsparse.prune.dsnot_stats import MeanVarSq
from llmsparse.spec import SparsitySpec

ACCEPTS = ("mse", "sign", "authors")


def _opts(**kw):
    kw.setdefault("seqlen", 1)
    kw.setdefault("skip", "none")
    return DSnoTOptions(**kw)


# ---------------------------------------------------------------- hand-built rows

def _hand_row(var0: float = 1.0):
    #            0     1     2     3     4     5
    W = torch.tensor([[1.0, 0.5, -0.2, 0.3, 2.0, -1.0]])
    keep = torch.tensor([[False, False, True, True, True, True]])
    mean = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.1, 1.0])
    var = torch.tensor([var0, 1.0, 1.0, 1.0, 1.0, 1.0])
    sq = torch.ones(6)
    return W, keep, mean, var, sq


@pytest.mark.parametrize("accept", ACCEPTS)
def test_hand_row_one_swap(accept):
    # e = c0 + c1 = 1.0 + 0.5 = 1.5 > 0. Grow: pruned with c > 0, largest c/var -> col 0 (1.0 > 0.5).
    # Prune: kept with c < 0 -> cols 2 (c=-0.2, wanda 0.2) and 5 (c=-1, wanda 1); lowest wanda -> col 2.
    # After: e = 1.5 - 1.0 - 0.2 = 0.3, |e| 1.5 -> 0.3; expected sq. error 2.25+1.25 -> 0.09+0.29.
    W, keep, mean, var, sq = _hand_row()
    new, info = refine(W, keep, mean, var, sq, SparsitySpec.parse("0.5"), _opts(max_cycles=1, update_threshold=0.0, accept=accept))
    assert new.tolist() == [[True, False, False, True, True, True]]
    assert info["swaps"] == 1
    assert info["shift_before"] == pytest.approx(1.5)
    assert info["shift_after"] == pytest.approx(0.3)
    assert info["err_before"] == pytest.approx(1.5**2 + 1.0 + 0.25)
    assert info["err_after"] == pytest.approx(0.3**2 + 0.25 + 0.04)
    # mirrored signs: e = -1.5, the same two columns swap
    new2, info2 = refine(-W, keep, mean, var, sq, "0.5", _opts(max_cycles=1, update_threshold=0.0, accept=accept))
    assert torch.equal(new2, new) and info2["shift_after"] == pytest.approx(0.3)


def test_hand_row_variance_power_decides_growth():
    # Var(x0) = 4: c/var ranks col 1 (0.5/1) over col 0 (1.0/4) with p=1; with p=0 col 0 wins.
    W, keep, mean, var, sq = _hand_row(var0=4.0)
    new, _ = refine(W, keep, mean, var, sq, "0.5", _opts(max_cycles=1, update_threshold=0.0))
    assert new.tolist() == [[False, True, False, True, True, True]]
    new0, _ = refine(W, keep, mean, var, sq, "0.5", _opts(max_cycles=1, update_threshold=0.0, pow_var_grow=0.0))
    assert new0.tolist() == [[True, False, False, True, True, True]]


def test_hand_row_stops_when_no_improvement():
    # After the first swap e = 0.3; the next grow candidate (col 1, c=0.5) with the next prune
    # (col 5, c=-1) gives e = -1.2: worse, refused by "mse" and "sign"; "authors" (unstructured:
    # threshold only) takes it.
    W, keep, mean, var, sq = _hand_row()
    for accept, swaps in (("mse", 1), ("sign", 1), ("authors", 2)):
        _, info = refine(W, keep, mean, var, sq, "0.5", _opts(max_cycles=5, update_threshold=0.0, accept=accept))
        assert info["swaps"] == swaps, accept


@pytest.mark.parametrize("accept", ACCEPTS)
def test_row_under_threshold_untouched(accept):
    W, keep, mean, var, sq = _hand_row()
    small = W.clone()
    small[0, :3] = torch.tensor([0.03, 0.02, -0.005])  # e = 0.05 < 0.1; a swap would give 0.015
    W2 = torch.cat([small, W])
    keep2 = torch.cat([keep, keep])
    new, info = refine(W2, keep2, mean, var, sq, "0.5", _opts(update_threshold=0.1, accept=accept))
    assert torch.equal(new[0], keep2[0])  # under the threshold: untouched
    assert not torch.equal(new[1], keep2[1])  # the other row is refined in the same call
    # the threshold is in the authors' unit (seqlen * e): with seqlen 2048, e = 0.05 is over it
    new3, _ = refine(small, keep, mean, var, sq, "0.5", _opts(update_threshold=0.1, seqlen=2048, accept=accept))
    assert not torch.equal(new3, keep)


def test_max_cycles_zero_is_identity():
    W, keep, mean, var, sq = _hand_row()
    new, info = refine(W, keep, mean, var, sq, "0.5", _opts(max_cycles=0))
    assert torch.equal(new, keep) and info["swaps"] == 0


# ---------------------------------------------------------------- random layers

def _layer(out=96, inn=64, n_tok=4096, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(out, inn, generator=g) * 0.05).to(dtype)
    mu = torch.randn(inn, generator=g)  # non-zero channel means
    sd = torch.rand(inn, generator=g) * 1.5 + 0.1
    X = mu + sd * torch.randn(n_tok, inn, generator=g)
    st = MeanVarSq()
    st.update(X.view(8, -1, inn))
    return W, X, st


def _init_mask(W, st, spec):
    score = W.float().abs() * st.sq_norm.sqrt()
    return nm_mask(score, spec.n, spec.m) if spec.is_nm else per_row_mask(score, spec.ratio)


_COMBOS = [(a, torch.float32) for a in ACCEPTS] + [("mse", torch.float16), ("mse", torch.bfloat16)]


@pytest.mark.parametrize("s", ["0.6", "2:4", "4:8"])
@pytest.mark.parametrize("accept,dtype", _COMBOS)
def test_count_and_pattern_preserved(s, accept, dtype):
    spec = SparsitySpec.parse(s)
    W, X, st = _layer(seed=1, dtype=dtype)
    mask = _init_mask(W, st, spec)
    new, info = refine(W, mask, st.mean, st.var, st.sq_norm, spec, _opts(seqlen=1024, accept=accept))
    assert new.dtype == torch.bool and new.shape == mask.shape
    assert info["swaps"] > 0  # something actually happened
    assert torch.equal(new.sum(1), mask.sum(1))  # exact per-row count, hence exact sparsity
    if spec.is_nm:
        assert is_nm(new, spec.n, spec.m)
        g = lambda t: t.reshape(t.shape[0], -1, spec.m).sum(-1)  # noqa: E731
        assert torch.equal(g(new), g(mask))  # every group keeps exactly its N
    assert (new != mask).sum() == 2 * info["swaps"]


@pytest.mark.parametrize("s", ["0.6", "2:4", "4:8"])
def test_error_never_increases(s):
    spec = SparsitySpec.parse(s)
    for seed in range(3):
        W, X, st = _layer(seed=seed)
        mask = _init_mask(W, st, spec)
        new, info = refine(W, mask, st.mean, st.var, st.sq_norm, spec, _opts(seqlen=1024))
        # our measure, per row: e^2 + sum_pruned W^2 Var
        def per_row(k):
            pr = ~k
            e = torch.where(pr, W * st.mean, 0.0).sum(1)
            return e.square() + torch.where(pr, W.square() * st.var, 0.0).sum(1)
        assert (per_row(new) <= per_row(mask) + 1e-7).all()
        assert info["err_after"] < info["err_before"]
        assert info["err_before"] == pytest.approx(expected_sq_error(W, mask, st.mean, st.var), rel=1e-5)
        assert info["err_after"] == pytest.approx(expected_sq_error(W, new, st.mean, st.var), rel=1e-5)
        # the actual expected squared output error on the data, E[(W x - W' x)^2]
        Y = X @ W.T
        emp = lambda k: ((X @ (W * k).T - Y).square().mean()).item()  # noqa: E731
        assert emp(new) < emp(mask)
        assert info["shift_after"] < info["shift_before"]


def test_sign_rule_keeps_sign():
    W, X, st = _layer(seed=4)
    for s in ("0.6", "2:4"):
        spec = SparsitySpec.parse(s)
        mask = _init_mask(W, st, spec)
        new, _ = refine(W, mask, st.mean, st.var, st.sq_norm, spec, _opts(seqlen=1024, accept="sign"))
        e0 = torch.where(~mask, W * st.mean, 0.0).sum(1)
        e1 = torch.where(~new, W * st.mean, 0.0).sum(1)
        assert (torch.sign(e1) == torch.sign(e0)).all()
        if not spec.is_nm:  # unstructured: grow and prune both move e toward zero
            assert (e1.abs() <= e0.abs() + 1e-6).all()


def test_device_dtype_and_validation():
    W, X, st = _layer(seed=5)
    mask = _init_mask(W, st, SparsitySpec.parse("0.6"))
    with pytest.raises(ValueError):
        refine(W, mask[:, :10], st.mean, st.var, st.sq_norm, "0.6")
    with pytest.raises(ValueError):
        refine(W, mask, st.mean[:10], st.var, st.sq_norm, "0.6")
    with pytest.raises(ValueError):
        DSnoTOptions(skip="every thing")
    with pytest.raises(ValueError):
        DSnoTOptions(accept="maybe")
    assert DSnoTOptions(skip="self_attn").skip == "attn" and DSnoTOptions(skip="no_skip").skip == "none"
    # inputs in half precision give the same decisions as the fp32 copy of the same numbers
    Wh = W.half()
    a, _ = refine(Wh, mask, st.mean, st.var, st.sq_norm, "0.6", _opts(seqlen=1024))
    b, _ = refine(Wh.float(), mask, st.mean, st.var, st.sq_norm, "0.6", _opts(seqlen=1024))
    assert torch.equal(a, b)


def test_options_defaults_and_dict():
    o = DSnoTOptions()
    assert (o.max_cycles, o.update_threshold, o.pow_var_grow, o.skip, o.accept) == (10, 0.1, 1.0, "mlp", "mse")
    assert o.to_dict()["max_cycles"] == 10


# ---------------------------------------------------------------- skip_layer

def test_skip_layer_names():
    attn = ["model.layers.0.self_attn.q_proj", "self_attn.k_proj", "v_proj", "o_proj",
            "model.decoder.layers.3.self_attn.out_proj", "gpt_neox.layers.1.attention.query_key_value",
            "gpt_neox.layers.1.attention.dense"]
    mlp = ["model.layers.0.mlp.gate_proj", "mlp.up_proj", "down_proj", "model.decoder.layers.3.fc1", "fc2",
           "gpt_neox.layers.1.mlp.dense_h_to_4h", "mlp.dense_4h_to_h"]
    for n in attn:
        assert layer_kind(n) == "attn", n
    for n in mlp:
        assert layer_kind(n) == "mlp", n
    skip_mlp = DSnoTOptions()  # the authors' default: refine only the attention projections
    assert all(skip_layer(n, skip_mlp) for n in mlp) and not any(skip_layer(n, skip_mlp) for n in attn)
    skip_attn = DSnoTOptions(skip="attn")
    assert all(skip_layer(n, skip_attn) for n in attn) and not any(skip_layer(n, skip_attn) for n in mlp)
    assert not any(skip_layer(n, DSnoTOptions(skip="none")) for n in attn + mlp + ["lm_head"])
    assert not skip_layer("lm_head", skip_mlp)
    both = DSnoTOptions(skip="mlp, V_proj")  # a kind plus projection names (authors' --skip_sub_layer)
    assert both.skip == "mlp,v_proj"
    assert skip_layer("model.layers.3.self_attn.v_proj", both) and skip_layer("mlp.up_proj", both)
    assert not skip_layer("model.layers.3.self_attn.q_proj", both)
    assert DSnoTOptions(skip="none,none").skip == "none"
    with pytest.raises(ValueError):
        DSnoTOptions(skip="mlp,not a name")


# ---------------------------------------------------------------- MeanVarSq

def test_meanvarsq_streamed_equals_one_shot():
    g = torch.Generator().manual_seed(0)
    inn = 16
    # large offset: a naive E[x^2] - E[x]^2 in fp32 would lose the variance entirely
    batches = [1000.0 + torch.randn(*shape, inn, generator=g) * torch.linspace(0.1, 3, inn)
               for shape in [(2, 7), (5,), (1, 1), (3, 33), (64,)]]
    st = MeanVarSq()
    for b in batches:
        st.update(b)
    ref = torch.cat([b.reshape(-1, inn) for b in batches]).double()
    assert st.count == ref.shape[0]
    torch.testing.assert_close(st.mean.double(), ref.mean(0), rtol=1e-6, atol=0)
    torch.testing.assert_close(st.var.double(), ref.var(0, unbiased=False), rtol=2e-3, atol=0)
    torch.testing.assert_close(st.sq_norm.double(), ref.square().sum(0), rtol=1e-5, atol=0)
    # float64 accumulation matches tightly; merging two halves equals streaming everything
    a, b = MeanVarSq(torch.float64), MeanVarSq(torch.float64)
    for i, x in enumerate(batches):
        (a if i % 2 else b).update(x)
    a.merge(b)
    torch.testing.assert_close(a.var, ref.var(0, unbiased=False), rtol=1e-10, atol=0)
    torch.testing.assert_close(a.mean, ref.mean(0), rtol=1e-12, atol=0)
    assert a.count == ref.shape[0]
    with pytest.raises(RuntimeError):
        MeanVarSq().mean


# ---------------------------------------------------------------- tiny model

def test_tiny_model_integration():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 64, (4, 32))
    linears = {n: m for n, m in model.model.layers.named_modules() if isinstance(m, torch.nn.Linear)}
    stats = {n: MeanVarSq() for n in linears}
    xs = {n: [] for n in linears}

    def hook(name):
        def f(mod, inp, out):
            stats[name].update(inp[0])
            xs[name].append(inp[0].reshape(-1, inp[0].shape[-1]))
        return f

    hs = [m.register_forward_hook(hook(n)) for n, m in linears.items()]
    with torch.no_grad():
        model(ids)
    for h in hs:
        h.remove()
    for s in ("0.6", "2:4"):
        spec = SparsitySpec.parse(s)
        opts = DSnoTOptions(seqlen=32)  # authors' default skip: mlp
        tot_before = tot_after = 0.0
        refined = 0
        for n, lin in linears.items():
            st, W = stats[n], lin.weight.detach()
            mask = _init_mask(W, st, spec)
            if skip_layer(n, opts):
                assert layer_kind(n) == "mlp"
                continue
            new, info = refine(W, mask, st.mean, st.var, st.sq_norm, spec, opts)
            refined += 1
            assert torch.equal(new.sum(1), mask.sum(1))
            if spec.is_nm:
                assert is_nm(W * new, spec.n, spec.m)
            assert info["err_after"] <= info["err_before"]
            X = torch.cat(xs[n])
            tot_before += (X @ (W * ~mask).T).square().sum().item()
            tot_after += (X @ (W * ~new).T).square().sum().item()
        assert refined == 8  # q, k, v, o of two layers
        assert tot_after < tot_before


def test_every_option_reaches_the_method():
    """Options given to the registered method (what the CLI, recipes and bench scripts use) all
    arrive in DSnoTOptions; an unknown accept rule is a user error. (accept used to be dropped.)"""
    from llmsparse.api import _method_options
    from llmsparse.errors import UserError
    from llmsparse.prune.registry import get_method

    given = dict(init="magnitude", max_cycles=7, update_threshold=0.5, pow_var_grow=2.0, pow_var_prune=1.0,
                 skip="attn,down_proj", accept="authors")
    m = get_method("dsnot", **_method_options("dsnot", given))
    assert m.options() == {"init": "magnitude", "max_cycles": 7, "update_threshold": 0.5, "pow_var_grow": 2.0,
                           "pow_var_prune": 1.0, "skip": "attn,down_proj", "seqlen": 2048, "accept": "authors"}
    with pytest.raises(UserError, match="accept"):
        get_method("dsnot", accept="maybe")
    assert "accept" not in _method_options("wanda", given)


def test_cli_accept_option(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import llmsparse.api as api
    from llmsparse.cli.main import app

    seen = {}
    monkeypatch.setattr(api, "prune_to_dir", lambda *a, **kw: seen.update(kw))
    r = CliRunner().invoke(app, ["prune", "m", "-o", str(tmp_path / "o"), "-m", "dsnot", "--accept", "sign"])
    assert r.exit_code == 0, r.output
    assert seen["method_options"]["accept"] == "sign"
