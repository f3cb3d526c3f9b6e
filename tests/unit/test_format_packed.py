"""Packed checkpoints on tiny models: exact round trip (weights and logits, against from_pretrained of
the dense save too), tied weights, sharding, sizes, and every kind of bad input."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from llmsparse.errors import UserError
from llmsparse.formats import packed
from llmsparse.masks import nm_mask, per_row_mask
from llmsparse.models.adapters import get_adapter
from tests.conftest import tiny_model


def pruned_tiny(family="llama", dtype=torch.float32, sp="2:4"):
    m = tiny_model(family, dtype)
    ad = get_adapter(m)
    with torch.no_grad():
        for layer in ad.layers(m):
            for lin in ad.linears(layer).values():
                w = lin.weight
                score = w.abs().float()
                if ":" in sp:
                    n, mm = map(int, sp.split(":"))
                    keep = nm_mask(score, n, mm)
                else:
                    keep = per_row_mask(score, float(sp))
                w[~keep] = 0
    return m


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k].contiguous().view(torch.uint8), sb[k].contiguous().view(torch.uint8)), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sp", ["2:4", "4:8", "0.5"])
def test_round_trip_exact_and_equal_to_from_pretrained(tmp_path, dtype, sp):
    m = pruned_tiny("llama", dtype, sp)
    ids = torch.randint(0, 128, (2, 12))
    with torch.no_grad():
        ref = m(ids).logits
    d = tmp_path / "packed"
    s = packed.save_packed(m, None, d, {"recipe": {"sparsity": sp}})
    want = {"2:4": "2:4", "4:8": "4:8", "0.5": "unstructured"}[sp]
    assert s["layers_by_pattern"] == {want: 14}
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["sparsity"]["format"] == "llmsparse-packed" and cfg["sparsity"]["version"] == 1
    assert json.loads((d / "llmsparse.json").read_text())["format"]["layers_by_pattern"] == {want: 14}
    m2, tok = packed.load_packed(d)
    assert tok is None and not hasattr(m2.config, "sparsity")
    same_state(m, m2)
    assert m2.lm_head.weight is m2.model.embed_tokens.weight  # tied stays tied
    with torch.no_grad():
        assert torch.equal(m2(ids).logits, ref)
    if dtype == torch.bfloat16:  # the same model as from_pretrained of the dense save (one dtype: time)
        dense = tmp_path / "dense"
        m.save_pretrained(dense)
        hf = AutoModelForCausalLM.from_pretrained(dense).eval()
        assert hf.dtype == m2.dtype
        with torch.no_grad():
            assert torch.equal(hf(ids).logits, m2(ids).logits)
    # streaming reader yields the same dense tensors
    sd = m.state_dict()
    got = dict(packed.iter_dense_tensors(d))
    assert set(got) == set(sd) - {"lm_head.weight"}
    for k, v in got.items():
        assert torch.equal(v.view(torch.uint8), sd[k].contiguous().view(torch.uint8)), k


@pytest.mark.parametrize("family", ["opt", "gpt_neox", "qwen2"])
def test_other_families_and_shards(tmp_path, family):
    m = pruned_tiny(family, torch.float16, "2:4")
    ids = torch.randint(0, 128, (1, 10))
    with torch.no_grad():
        ref = m(ids).logits
    d = tmp_path / "p"
    s = packed.save_packed(m, None, d, {}, max_shard_size=40_000)
    assert len(s["files"]) > 1 and (d / packed.INDEX_FILE).is_file()
    idx = json.loads((d / packed.INDEX_FILE).read_text())
    assert set(idx["weight_map"].values()) == set(s["files"])
    m2, _ = packed.load_packed(d)
    same_state(m, m2)
    with torch.no_grad():
        assert torch.equal(m2(ids).logits, ref)


def test_dtype_override_and_describe(tmp_path):
    m = pruned_tiny("llama", torch.float16, "2:4")
    d = tmp_path / "p"
    packed.save_packed(m, None, d, {"recipe": {"sparsity": "2:4"}})
    m32, _ = packed.load_packed(d, dtype=torch.float32)
    assert m32.model.layers[0].mlp.up_proj.weight.dtype == torch.float32
    assert torch.equal(m32.model.layers[0].mlp.up_proj.weight, m.model.layers[0].mlp.up_proj.weight.float())
    desc = packed.describe(d)
    assert desc["by_pattern"]["2:4"]["layers"] == 14
    assert desc["linear_ratio"] == pytest.approx(0.5625)
    assert desc["layers"]["model.layers.0.mlp.up_proj.weight"]["sparsity"] == pytest.approx(0.5)
    assert desc["file_bytes"] > desc["tensor_bytes"]  # headers


def test_not_sparse_model_is_written_dense(tmp_path):
    m = tiny_model("llama", torch.float32)
    s = packed.save_packed(m, None, tmp_path / "p", {})
    assert s["sparse_layers"] == 0 and s["layers_by_pattern"] == {"dense": 14}
    m2, _ = packed.load_packed(tmp_path / "p")
    same_state(m, m2)


# ------------------------------------------------------------------ bad input ---------------------------

@pytest.fixture
def packed_dir(tmp_path):
    m = pruned_tiny("llama", torch.float16, "2:4")
    d = tmp_path / "p"
    packed.save_packed(m, None, d, {"recipe": {"sparsity": "2:4"}})
    return d


TARGET = "model.layers.1.mlp.up_proj.weight"


def rewrite(d, edit):
    """Re-save the weight file after ``edit(tensors)``, with fresh checksums (so only ``edit`` is wrong)."""
    f = d / packed.SINGLE_FILE
    with safe_open(str(f), "pt") as h:
        meta = h.metadata()
        ts = {k: h.get_tensor(k) for k in h.keys()}
    edit(ts)
    meta[packed.CHECKSUM_KEY] = json.dumps({k: packed.checksum(v) for k, v in ts.items()})
    save_file(ts, str(f), metadata=meta)


def edit_config(d, fn):
    cfg = json.loads((d / "config.json").read_text())
    fn(cfg)
    (d / "config.json").write_text(json.dumps(cfg))


def load_fails(d, *words):
    with pytest.raises(UserError) as e:
        packed.load_packed(d)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_truncated_file(packed_dir):
    f = packed_dir / packed.SINGLE_FILE
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 100])
    load_fails(packed_dir, "truncated")
    f.write_bytes(data[:5])
    load_fails(packed_dir, "truncated")


def test_corrupted_bytes_fail_the_checksum(packed_dir):
    f = packed_dir / packed.SINGLE_FILE
    raw = bytearray(f.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8: 8 + n])
    s, _ = hdr[TARGET + ".values"]["data_offsets"]
    raw[8 + n + s + 3] ^= 0x40
    f.write_bytes(bytes(raw))
    load_fails(packed_dir, TARGET + ".values", "checksum")


def test_shape_disagrees_with_metadata(packed_dir):
    def f(cfg):
        cfg["sparsity"]["layers"][TARGET]["shape"][1] += 8
    edit_config(packed_dir, f)
    load_fails(packed_dir, TARGET, "disagrees")


def test_stored_tensor_of_wrong_shape(packed_dir):
    rewrite(packed_dir, lambda ts: ts.__setitem__(TARGET + ".values", ts[TARGET + ".values"][:, :-2].contiguous()))
    load_fails(packed_dir, TARGET + ".values", "shape")


def test_mask_breaking_the_declared_pattern(packed_dir):
    def f(ts):
        meta = ts[TARGET + ".meta"].clone()
        meta[3, 5] = 0  # both positions of two groups = 0: not a 2:4 group
        ts[TARGET + ".meta"] = meta
    rewrite(packed_dir, f)
    load_fails(packed_dir, TARGET, "2:4")


def test_unknown_version(packed_dir):
    edit_config(packed_dir, lambda cfg: cfg["sparsity"].__setitem__("version", 99))
    load_fails(packed_dir, "version 99")


def test_unknown_encoding_and_missing_tensor(packed_dir, tmp_path):
    edit_config(packed_dir, lambda cfg: cfg["sparsity"]["layers"][TARGET].__setitem__("encoding", "int4-nm"))
    load_fails(packed_dir, TARGET, "int4-nm")


def test_missing_component(packed_dir):
    rewrite(packed_dir, lambda ts: ts.pop(TARGET + ".meta"))
    load_fails(packed_dir, TARGET + ".meta", "missing")


def test_api_load_passes_device_to_packed_loader(tmp_path, monkeypatch):
    """llmsparse.load(path, device=...) hands the device to load_packed (which swaps in the 2:4
    kernels on CUDA) instead of moving a dense model afterwards; on CPU the model is dense-with-zeros."""
    import llmsparse

    m = pruned_tiny("llama", torch.float32, "2:4")
    d = tmp_path / "p"
    packed.save_packed(m, None, d, {"recipe": {"sparsity": "2:4"}})
    seen = {}
    real = packed.load_packed

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(packed, "load_packed", spy)
    m2 = llmsparse.load(str(d), device="cpu")
    assert seen["device"] == torch.device("cpu")
    same_state(m, m2)
