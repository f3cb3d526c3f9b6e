"""Each method's math on hand-computed tiny cases and against reference formulas."""
import math

import pytest
import torch

from llmsparse.masks import is_nm
from llmsparse.prune import magnitude, sparsegpt, wanda
from llmsparse.spec import SparsitySpec
from llmsparse.stats import Hessian, RowNorm


def test_wanda_hand_case():
    # 2x8 weight, input norms chosen so that Wanda and magnitude disagree
    W = torch.tensor([[1.0, -2.0, 3.0, -4.0, 5.0, -6.0, 7.0, -8.0],
                      [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    xnorm = torch.tensor([8.0, 4.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # ||X_j||_2
    # scores |W| * ||X_j||: row0 = [8, 8, 6, 4, 5, 6, 7, 8]; row1 = [64, 28, 12, 5, 4, 3, 2, 1]
    mask = wanda.prune(W, xnorm**2, SparsitySpec.parse("0.5"))
    # row0: prune the 4 lowest: 4 (col3), 5 (col4), 6 (col2, first of the tie 6/6), 6 (col5)
    assert mask[0].tolist() == [True, True, False, False, False, False, True, True]
    assert mask[1].tolist() == [True, True, True, True, False, False, False, False]
    m24 = wanda.prune(W, xnorm**2, SparsitySpec.parse("2:4"))
    assert m24[0].tolist() == [True, True, False, False, False, False, True, True]
    assert m24[1].tolist() == [True, True, False, False, True, True, False, False]


def test_wanda_scores_scale_free():
    W = torch.randn(8, 16)
    sq = torch.rand(16)
    a = wanda.prune(W, sq, SparsitySpec.parse("0.5"))
    b = wanda.prune(W, sq * 37.0, SparsitySpec.parse("0.5"))
    assert torch.equal(a, b)


def test_magnitude_per_matrix_and_nm():
    W = torch.tensor([[0.1, -0.9, 0.2, 0.8], [0.3, 0.4, -0.5, 0.6]])
    m = magnitude.prune(W, SparsitySpec.parse("0.5"))
    assert m.tolist() == [[False, True, False, True], [False, False, True, True]]
    m24 = magnitude.prune(W, SparsitySpec.parse("2:4"))
    assert m24.tolist() == [[False, True, False, True], [False, False, True, True]]


def test_rownorm_streamed_equals_oneshot():
    x = torch.randn(5, 7, 12, dtype=torch.float64)
    st = RowNorm(12)
    for part in x.split(2):
        st.update(part.float())
    ref = (x.reshape(-1, 12) ** 2).sum(0)
    assert torch.allclose(st.sq.double(), ref, rtol=1e-5)
    assert st.tokens == 35


def test_hessian_streamed_equals_oneshot():
    x = torch.randn(6, 9, 10, dtype=torch.float64)
    st = Hessian(10)
    for part in x.split([1, 3, 2]):
        st.update(part.float())
    X = x.reshape(-1, 10)
    ref = 2.0 / 6 * X.t() @ X  # 2/nsamples * sum over sequences of X X^T
    assert torch.allclose(st.H.double(), ref, rtol=1e-5, atol=1e-5)


def _obs_reference(W, H, spec, blocksize, percdamp=0.01):
    """float64 SparseGPT by explicit sequential OBS: eliminate columns one at a time from the
    inverse Hessian; a pruned weight's error is spread over the not-yet-eliminated columns."""
    W = W.double().clone()
    H = H.double().clone()
    rows, cols = W.shape
    H += percdamp * torch.diag(H).mean() * torch.eye(cols, dtype=torch.float64)
    Hinv = torch.linalg.inv(H)
    # d_j^2 = [H^-1 restricted to columns >= j]^-1... computed by sequential elimination
    d2 = torch.zeros(cols, dtype=torch.float64)
    Hs = Hinv.clone()
    for j in range(cols):
        d2[j] = Hs[j, j]
        Hs = Hs - torch.outer(Hs[:, j], Hs[j, :]) / Hs[j, j]
    keep = torch.ones(rows, cols, dtype=torch.bool)
    Hs = Hinv.clone()
    for i in range(cols):
        if i % blocksize == 0 and not spec.is_nm:
            i2 = min(i + blocksize, cols)
            metric = W[:, i:i2] ** 2 / d2[i:i2]
            k = int(metric.numel() * spec.ratio)
            idx = torch.sort(metric.flatten(), stable=True)[1][:k]
            blk = torch.ones(metric.numel(), dtype=torch.bool)
            blk[idx] = False
            keep[:, i:i2] = blk.view_as(metric)
        if spec.is_nm and i % spec.m == 0:
            metric = W[:, i:i + spec.m] ** 2 / d2[i:i + spec.m]
            sel = torch.topk(metric, spec.m - spec.n, dim=1, largest=False)[1]
            keep[:, i:i + spec.m].scatter_(1, sel, False)
        pr = ~keep[:, i]
        err = torch.where(pr, W[:, i], torch.zeros_like(W[:, i])) / Hs[i, i]
        W -= torch.outer(err, Hs[i, :])  # OBS update on the remaining columns (and sets w_i -> 0)
        W[:, i] = torch.where(pr, torch.zeros_like(W[:, i]), W[:, i])
        Hs = Hs - torch.outer(Hs[:, i], Hs[i, :]) / Hs[i, i]
        W[:, :i + 1] = torch.where(keep[:, :i + 1], W[:, :i + 1], torch.zeros_like(W[:, :i + 1]))
    return W, keep


@pytest.mark.parametrize("sp,bs", [("0.5", 4), ("0.5", 16), ("2:4", 8), ("4:8", 8), ("0.7", 5)])
def test_sparsegpt_matches_float64_obs(sp, bs):
    torch.manual_seed(1)
    rows, cols = 6, 16
    X = torch.randn(200, cols, dtype=torch.float64) @ torch.randn(cols, cols, dtype=torch.float64) * 0.5
    H = 2 * X.t() @ X / 200
    W = torch.randn(rows, cols, dtype=torch.float64)
    spec = SparsitySpec.parse(sp)
    ref_w, ref_keep = _obs_reference(W, H, spec, bs)
    w, keep = sparsegpt.prune(W.float(), H.float(), spec, blocksize=bs)
    assert torch.equal(keep, ref_keep)
    assert torch.allclose(w.double(), ref_w, atol=2e-4, rtol=1e-3), (w.double() - ref_w).abs().max()
    if spec.is_nm:
        assert is_nm(w, spec.n, spec.m)
    else:
        assert int((~keep).sum()) == sum(int(min(bs, cols - i) * rows * spec.ratio) for i in range(0, cols, bs))


def test_sparsegpt_reduces_reconstruction_error_vs_plain_masking():
    torch.manual_seed(2)
    X = torch.randn(512, 32) @ torch.randn(32, 32)
    H = 2 * X.t() @ X / 512
    W = torch.randn(16, 32)
    w, keep = sparsegpt.prune(W, H, SparsitySpec.parse("0.5"))
    err_sgpt = ((X @ (W - w).t()) ** 2).mean()
    err_mask = ((X @ (W - W * keep).t()) ** 2).mean()
    assert err_sgpt < 0.8 * err_mask
    assert math.isfinite(float(err_sgpt))


def test_sparsegpt_dead_inputs():
    H = torch.eye(8)
    H[3, 3] = 0
    W = torch.randn(4, 8)
    w, keep = sparsegpt.prune(W, H, SparsitySpec.parse("2:4"))
    assert (w[:, 3] == 0).all() and is_nm(w, 2, 4)
