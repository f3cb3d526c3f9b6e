import pytest
import torch

from llmsparse.errors import UserError
from llmsparse.masks import is_nm, nm_mask, per_matrix_mask, per_row_mask, select_mask, sparsity
from llmsparse.spec import CalibSpec, SparsitySpec


def test_sparsity_spec_parse():
    s = SparsitySpec.parse("2:4")
    assert (s.n, s.m, s.is_nm, s.target) == (2, 4, True, 0.5)
    assert SparsitySpec.parse("4:8").target == 0.5
    r = SparsitySpec.parse("0.6")
    assert r.ratio == 0.6 and not r.is_nm and str(r) == "0.6"


@pytest.mark.parametrize("bad", ["0", "1", "1.5", "-0.1", "4:4", "5:4", "0:4", "2:", "a:b", "abc", "2:4:8"])
def test_sparsity_spec_rejects(bad):
    with pytest.raises(UserError):
        SparsitySpec.parse(bad)


def test_width_check():
    with pytest.raises(UserError, match="not divisible"):
        SparsitySpec.parse("2:4").check_width(10, "x")
    SparsitySpec.parse("2:4").check_width(12)
    SparsitySpec.parse("0.5").check_width(10)


def test_calib_spec():
    c = CalibSpec.parse("c4:128x2048")
    assert (c.source, c.nsamples, c.seqlen) == ("c4", 128, 2048)
    assert CalibSpec.parse("/tmp/a:b.jsonl:4x16").source == "/tmp/a:b.jsonl"
    assert CalibSpec.parse("wikitext2").nsamples == 128
    for bad in ["c4:0x512", "c4:4x0", "c4:-1x5", "c4:12"]:
        with pytest.raises(UserError):
            CalibSpec.parse(bad)


def test_per_row_mask_hand_case():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0], [0.5, 0.7, 0.1, 0.9]])
    m = per_row_mask(score, 0.5)
    assert m.tolist() == [[True, False, True, False], [False, True, False, True]]


def test_per_matrix_mask_hand_case():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0], [0.5, 0.7, 0.1, 0.9]])
    m = per_matrix_mask(score, 0.5)  # the 4 smallest of the matrix go: 0.1 0.5 0.7 0.9
    assert m.tolist() == [[True, True, True, True], [False, False, False, False]]


def test_nm_mask_hand_case():
    score = torch.tensor([[1.0, 5.0, 3.0, 2.0, 9.0, 8.0, 7.0, 0.0]])
    assert nm_mask(score, 2, 4).tolist() == [[False, True, True, False, True, True, False, False]]
    assert nm_mask(score, 1, 4).tolist() == [[False, True, False, False, True, False, False, False]]
    m48 = nm_mask(score, 4, 8)
    assert m48.tolist() == [[False, True, False, False, True, True, True, False]]


def test_nm_mask_random_pattern_and_count():
    s = torch.rand(16, 64)
    for n, m in [(2, 4), (4, 8), (1, 4), (3, 8)]:
        mask = nm_mask(s, n, m)
        assert is_nm(mask, n, m)
        assert int(mask.sum()) == 16 * 64 * n // m
        # kept entries are the n largest of each group
        g = (s * mask).reshape(16, -1, m)
        kept_min = torch.where(mask.reshape(16, -1, m), s.reshape(16, -1, m), torch.inf).amin(-1)
        dropped_max = torch.where(~mask.reshape(16, -1, m), s.reshape(16, -1, m), -torch.inf).amax(-1)
        assert bool((kept_min >= dropped_max).all())
        assert g.shape[-1] == m


def test_is_nm_detects_violation():
    w = torch.tensor([[1.0, 2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]])
    assert not is_nm(w, 2, 4)
    assert is_nm(w, 3, 4)
    assert not is_nm(torch.ones(1, 6), 2, 4)  # width not divisible


def test_select_mask_ratio_exact_count():
    s = torch.rand(7, 33)
    m = select_mask(s, SparsitySpec.parse("0.6"))
    assert (m.sum(1) == 33 - int(33 * 0.6)).all()
    assert abs(sparsity(torch.where(m, 1.0, 0.0)) - int(33 * 0.6) / 33) < 1e-9
