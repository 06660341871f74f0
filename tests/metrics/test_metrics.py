"""veneer.metrics against scipy / scikit-image references, gradients, and argument errors."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import torch
from skimage.metrics import structural_similarity

import veneer.metrics as vm
from veneer.metrics import (
    balance,
    center_of_mass,
    com_distance,
    com_distance_to,
    cosine,
    ddi,
    deo,
    kendall,
    ks_distance,
    mse,
    pearson,
    rank,
    spearman,
    ssim,
    topk_intersection,
)

RTOL = 1e-5


def close(actual: torch.Tensor, expected, rtol: float = RTOL, atol: float = 1e-12) -> None:
    got = actual.detach().cpu().double().numpy()
    np.testing.assert_allclose(got, np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def pairs_with_ties(gen: torch.Generator, batch: int = 6, shape=(5, 7)) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated float64 pairs; some samples rounded coarsely so that many values tie."""
    a = torch.randn(batch, *shape, generator=gen, dtype=torch.float64)
    b = 0.6 * a + torch.randn(batch, *shape, generator=gen, dtype=torch.float64)
    a[::2] = (a[::2] * 2).round()
    b[1::3] = b[1::3].round()
    b[0, 0] = 0.0  # ties in both a and b in sample 0
    b[0, 1] = 0.0
    return a, b


# --------------------------------------------------------------------------- package hygiene


def test_exports_and_torch_only_imports():
    assert set(vm.__all__) == {
        "mse", "pearson", "mean_pairwise_pearson", "cosine", "ssim", "rank", "spearman", "kendall", "topk_intersection",
        "center_of_mass", "com_distance", "com_distance_to", "ks_distance", "balance", "ddi", "deo",
    }
    pkg = pathlib.Path(vm.__file__).parent
    for path in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                root = name.split(".")[0]
                assert root in {"torch", "veneer", "__future__", "collections", "math", "typing"}, (path.name, name)


# --------------------------------------------------------------------------- similarity


def test_mse_pearson_cosine_match_references(gen):
    a, b = pairs_with_ties(gen)
    fa, fb = a.flatten(1).numpy(), b.flatten(1).numpy()
    close(mse(a, b), ((fa - fb) ** 2).mean(axis=1))
    close(pearson(a, b), [scipy.stats.pearsonr(x, y).statistic for x, y in zip(fa, fb)])
    close(cosine(a, b), [x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(fa, fb)])
    assert mse(a, b).shape == pearson(a, b).shape == cosine(a, b).shape == (6,)


def test_pearson_constant_sample_is_zero_with_finite_gradient():
    a = torch.zeros(2, 10, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 10, dtype=torch.float64)
    r = pearson(a, b)
    assert torch.equal(r, torch.zeros(2, dtype=torch.float64))
    r.sum().backward()
    assert torch.isfinite(a.grad).all()
    # 0.1 is not exact in binary, so the centred values of this constant row are not all 0.
    c = torch.full((1, 7), 0.1, dtype=torch.float64)
    assert pearson(c, torch.rand(1, 7, dtype=torch.float64)).item() == 0.0


def test_similarity_float32_and_mixed_dtype(gen):
    a, b = pairs_with_ties(gen)
    close(pearson(a.float(), b.float()), pearson(a, b), rtol=1e-4, atol=1e-6)
    assert pearson(a.float(), b.float()).dtype == torch.float32
    assert pearson(a.float(), b).dtype == torch.float64


@pytest.mark.parametrize("shape", [(7, 7), (12, 9), (28, 28), (16, 31)])
def test_ssim_matches_skimage_with_given_range(gen, shape):
    a = torch.rand(3, *shape, generator=gen, dtype=torch.float64)
    b = (a + 0.3 * torch.randn(3, *shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    ref = [structural_similarity(x, y, data_range=1.0, win_size=7) for x, y in zip(a.numpy(), b.numpy())]
    close(ssim(a, b, data_range=1.0), ref)
    close(ssim(a, b, data_range=torch.ones(3, dtype=torch.float64)), ref)


def test_ssim_default_range_and_other_window(gen):
    a = torch.randn(4, 20, 17, generator=gen, dtype=torch.float64) * 3
    b = a + torch.randn(4, 20, 17, generator=gen, dtype=torch.float64)
    rng = [max(x.max(), y.max()) - min(x.min(), y.min()) for x, y in zip(a.numpy(), b.numpy())]
    close(ssim(a, b), [structural_similarity(x, y, data_range=r) for x, y, r in zip(a.numpy(), b.numpy(), rng)])
    close(
        ssim(a, b, data_range=5.0, win_size=3),
        [structural_similarity(x, y, data_range=5.0, win_size=3) for x, y in zip(a.numpy(), b.numpy())],
    )
    # Per-sample range tensor.
    per = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)
    ref = [structural_similarity(x, y, data_range=r) for x, y, r in zip(a.numpy(), b.numpy(), per.tolist())]
    close(ssim(a, b, data_range=per), ref)


def test_ssim_identical_and_constant_images():
    a = torch.rand(2, 9, 9, dtype=torch.float64)
    close(ssim(a, a), [1.0, 1.0])
    c = torch.full((1, 8, 8), 0.5, dtype=torch.float64)
    close(ssim(c, c), [1.0])


def test_ssim_errors():
    a = torch.rand(2, 6, 10)
    with pytest.raises(ValueError, match="win_size"):
        ssim(a, a)
    with pytest.raises(ValueError, match="win_size"):
        ssim(torch.rand(2, 9, 9), torch.rand(2, 9, 9), win_size=4)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        ssim(torch.rand(2, 1, 9, 9), torch.rand(2, 1, 9, 9))
    with pytest.raises(ValueError, match="data_range"):
        ssim(torch.rand(2, 9, 9), torch.rand(2, 9, 9), data_range=0.0)
    with pytest.raises(ValueError, match="data_range"):
        ssim(torch.rand(2, 9, 9), torch.rand(2, 9, 9), data_range=torch.ones(3))
    with pytest.raises(TypeError, match="data_range"):
        ssim(torch.rand(2, 9, 9), torch.rand(2, 9, 9), data_range="1")


def test_similarity_gradcheck(gen):
    a = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    for fn in (mse, pearson, cosine):
        assert torch.autograd.gradcheck(fn, (a, b))
    # ssim: small maps and gradcheck's fast mode (a random projection of the Jacobian) keep this quick.
    x = torch.rand(2, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, q: ssim(p, q, data_range=1.0, win_size=5), (x, y), fast_mode=True)
    assert torch.autograd.gradcheck(lambda p, q: ssim(p, q, win_size=3), (x, y), fast_mode=True)
    small = x.detach()[:1, :4, :5].requires_grad_()
    assert torch.autograd.gradcheck(lambda p: ssim(p, y.detach()[:1, :4, :5], data_range=2.0, win_size=3), (small,))


def test_similarity_argument_errors():
    a = torch.rand(2, 5)
    with pytest.raises(ValueError, match="same shape"):
        mse(a, torch.rand(2, 6))
    with pytest.raises(TypeError, match="b must be a torch.Tensor"):
        pearson(a, [1.0, 2.0])
    with pytest.raises(ValueError, match="a must be batched"):
        cosine(torch.rand(5), torch.rand(5))
    with pytest.raises(ValueError, match="a contains NaN"):
        mse(torch.tensor([[float("nan"), 1.0]]), torch.rand(1, 2))
    with pytest.raises(TypeError, match="a must be a floating-point"):
        pearson(torch.ones(2, 3, dtype=torch.long), torch.rand(2, 3))
    with pytest.raises(ValueError, match="at least 2 features"):
        pearson(torch.rand(3, 1), torch.rand(3, 1))


# --------------------------------------------------------------------------- ranking


def test_rank_matches_rankdata(gen):
    a, _ = pairs_with_ties(gen)
    r = rank(a)
    assert r.shape == a.shape
    close(r.flatten(1), np.stack([scipy.stats.rankdata(x, method="average") for x in a.flatten(1).numpy()]))
    ints = torch.tensor([[3, 1, 3, 2, 3], [0, 0, 0, 0, 0]])
    close(rank(ints), [[4, 1, 4, 2, 4], [3, 3, 3, 3, 3]])
    # Large tie groups in float32: sums of ~1e8 positions would round, the ranks must not.
    big = torch.randint(0, 3, (2, 20_000), generator=gen).float()
    np.testing.assert_array_equal(rank(big).numpy(), np.stack([scipy.stats.rankdata(x) for x in big.numpy()]))


def test_spearman_and_kendall_match_scipy_with_ties(gen):
    a, b = pairs_with_ties(gen)
    fa, fb = a.flatten(1).numpy(), b.flatten(1).numpy()
    close(spearman(a, b), [scipy.stats.spearmanr(x, y).statistic for x, y in zip(fa, fb)])
    ref = [scipy.stats.kendalltau(x, y).statistic for x, y in zip(fa, fb)]
    close(kendall(a, b), ref)
    for chunk in (1, 3, 10_000):
        close(kendall(a, b, chunk=chunk), ref)
    # float32 inputs with many ties; n not a multiple of the chunk.
    x = torch.randint(0, 5, (4, 53), generator=gen).float()
    y = torch.randint(0, 7, (4, 53), generator=gen).float()
    ref = [scipy.stats.kendalltau(p, q).statistic for p, q in zip(x.numpy(), y.numpy())]
    close(kendall(x, y, chunk=8), ref, rtol=1e-6)
    close(spearman(x, y), [scipy.stats.spearmanr(p, q).statistic for p, q in zip(x.numpy(), y.numpy())], rtol=1e-5)


def test_rank_correlations_extremes():
    a = torch.arange(10, dtype=torch.float64).repeat(2, 1)
    b = torch.stack([a[0] ** 3, -a[1]])
    close(spearman(a, b), [1.0, -1.0])
    close(kendall(a, b), [1.0, -1.0])
    const = torch.ones(1, 10)
    assert spearman(const, torch.rand(1, 10)).item() == 0.0
    assert kendall(const, torch.rand(1, 10)).item() == 0.0


def test_kendall_large_batch_is_correct():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(256, 784, generator=g)
    b = a + torch.randn(256, 784, generator=g)
    a = a.round(decimals=1)
    tau = kendall(a, b)
    assert tau.shape == (256,)
    idx = [0, 101, 255]
    close(tau[idx], [scipy.stats.kendalltau(a[i].numpy(), b[i].numpy()).statistic for i in idx], rtol=1e-5)


def test_topk_intersection_known_case():
    a = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    b = torch.tensor([[5.0, 0.0, 4.0, 3.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    # Sample 0: top-3 of a = {0, 1, 2}, top-3 of b = {0, 2, 3} -> 2 / 3.  Sample 1: identical.
    close(topk_intersection(a, b, 3), [2 / 3, 1.0])
    close(topk_intersection(a, b, 1), [1.0, 1.0])
    close(topk_intersection(a, b, 6), [1.0, 1.0])
    close(topk_intersection(a, -a, 3), [0.0, 0.0])
    # Trailing dims are flattened.
    close(topk_intersection(a.view(2, 2, 3), b.view(2, 2, 3), 3), [2 / 3, 1.0])


def test_ranking_argument_errors():
    a = torch.rand(2, 5)
    with pytest.raises(ValueError, match="k must lie in"):
        topk_intersection(a, a, 0)
    with pytest.raises(ValueError, match="k must lie in"):
        topk_intersection(a, a, 6)
    with pytest.raises(TypeError, match="k must be an int"):
        topk_intersection(a, a, 2.0)
    with pytest.raises(ValueError, match="chunk"):
        kendall(a, a, chunk=0)
    with pytest.raises(ValueError, match="same shape"):
        spearman(a, torch.rand(3, 5))
    with pytest.raises(ValueError, match="x must be batched"):
        rank(torch.rand(5))


# --------------------------------------------------------------------------- localization


def test_center_of_mass_matches_scipy(gen):
    h = torch.rand(4, 9, 13, generator=gen, dtype=torch.float64) ** 3
    h[1, :, :6] = 0
    com = center_of_mass(h)
    assert com.shape == (4, 2)
    close(com, np.array([scipy.ndimage.center_of_mass(x) for x in h.numpy()]))
    close(center_of_mass(torch.zeros(1, 4, 7)), [[1.5, 3.0]])
    point = torch.zeros(1, 5, 5)
    point[0, 1, 3] = 2.0
    close(center_of_mass(point), [[1.0, 3.0]])


def test_com_distances(gen):
    h1 = torch.rand(3, 8, 8, generator=gen, dtype=torch.float64)
    h2 = torch.rand(3, 8, 8, generator=gen, dtype=torch.float64)
    c1 = np.array([scipy.ndimage.center_of_mass(x) for x in h1.numpy()])
    c2 = np.array([scipy.ndimage.center_of_mass(x) for x in h2.numpy()])
    close(com_distance(h1, h2), np.linalg.norm(c1 - c2, axis=1))
    close(com_distance_to(h1, (0, 7)), np.linalg.norm(c1 - [0, 7], axis=1))
    per = torch.tensor([[0.0, 0.0], [1.0, 2.0], [7.0, 7.0]], dtype=torch.float64)
    close(com_distance_to(h1, per), np.linalg.norm(c1 - per.numpy(), axis=1))
    close(com_distance_to(h1, torch.tensor([3.0, 4.0])), np.linalg.norm(c1 - [3, 4], axis=1))


def test_localization_gradients(gen):
    h = (torch.rand(2, 5, 6, generator=gen, dtype=torch.float64) + 0.1).requires_grad_()
    h2 = (torch.rand(2, 5, 6, generator=gen, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(center_of_mass, (h,))
    assert torch.autograd.gradcheck(com_distance, (h, h2))
    assert torch.autograd.gradcheck(lambda x: com_distance_to(x, (1.0, 2.0)), (h,))
    # Zero maps and zero distances keep finite gradients.
    z = torch.zeros(1, 4, 4, dtype=torch.float64, requires_grad=True)
    com_distance(z, z.detach().clone()).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_localization_errors():
    with pytest.raises(ValueError, match="non-negative heatmap"):
        center_of_mass(torch.randn(2, 4, 4) - 5)
    with pytest.raises(ValueError, match="h must have 3 dimensions"):
        center_of_mass(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        com_distance(torch.rand(2, 4, 4), torch.rand(2, 4, 5))
    with pytest.raises(ValueError, match="h2 has negative"):
        com_distance(torch.rand(2, 4, 4), -torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="point"):
        com_distance_to(torch.rand(2, 4, 4), (1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="point"):
        com_distance_to(torch.rand(2, 4, 4), torch.zeros(3, 2))


# --------------------------------------------------------------------------- fairness


def test_ks_distance_matches_scipy(gen):
    values = torch.randn(60, 5, generator=gen, dtype=torch.float64)
    values[:, 1] = values[:, 1].round()  # heavy ties
    values[:, 2] = 0.0  # all equal
    group = torch.zeros(60, dtype=torch.long)
    group[torch.randperm(60, generator=gen)[:23]] = 1
    values[group == 1, 3] += 1.0
    vn, gn = values.numpy(), group.numpy()
    ref = [scipy.stats.ks_2samp(vn[gn == 0, c], vn[gn == 1, c]).statistic for c in range(5)]
    close(ks_distance(values, group), ref)
    one = ks_distance(values[:, 1], group.bool())
    assert one.ndim == 0
    close(one, ref[1])
    close(ks_distance(values[:, 4].float(), group), ref[4], rtol=1e-6)


def test_ks_distance_separated_groups():
    values = torch.tensor([0.0, 1.0, 2.0, 10.0, 11.0])
    close(ks_distance(values, torch.tensor([0, 0, 0, 1, 1])), 1.0)


def test_balance_by_hand():
    group = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
    top = torch.tensor([[0, 1, 3, 4], [0, 1, 2, 7], [3, 4, 5, 2]])
    # counts (n0, n1): (2, 2) -> 1, (4, 0) -> 0, (1, 3) -> 1/3
    close(balance(top, group), [1.0, 0.0, 1 / 3])
    close(balance(torch.tensor([0, 3, 4]), group.bool()), 0.5)


def test_ddi_deo_by_hand():
    group = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    y = torch.tensor([1, 1, 0, 0, 1, 1, 1, 0])
    pred = torch.tensor([1, 0, 1, 1, 1, 1, 1, 0])
    # P(pred=1 | g=0) = 3/4, P(pred=1 | g=1) = 3/4 -> 0
    # TPR g=0: pred at y=1 -> [1, 0] = 1/2; g=1: [1, 1, 1] = 1 -> 1/2
    close(ddi(pred, group), 0.0)
    close(deo(pred, y, group), 0.5)
    pred2 = torch.tensor([1, 1, 1, 0, 0, 0, 0, 1]).bool()
    close(ddi(pred2, group), 0.5)  # 3/4 vs 1/4
    close(deo(pred2, y, group), 1.0)  # TPR 2/2 vs 0/3
    # Several classifiers as columns, and probabilities (differentiable relaxation).
    both = torch.stack([pred, pred2.long()], dim=1)
    close(ddi(both, group), [0.0, 0.5])
    close(deo(both, y, group), [0.5, 1.0])
    prob = torch.tensor([0.9, 0.1, 0.5, 0.5, 0.2, 0.2, 0.2, 0.2], dtype=torch.float64, requires_grad=True)
    out = ddi(prob, group)
    close(out, 0.3)
    out.backward()
    assert torch.isfinite(prob.grad).all()


def test_fairness_errors():
    values = torch.rand(6)
    with pytest.raises(ValueError, match="group has no sample of group 1"):
        ks_distance(values, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="group has no sample of group 0"):
        ddi(torch.ones(4, dtype=torch.long), torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="group.*y == 1"):
        deo(torch.ones(4, dtype=torch.long), torch.tensor([1, 1, 0, 0]), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="group must hold binary"):
        ks_distance(values, torch.tensor([0, 1, 2, 0, 1, 0]))
    with pytest.raises(ValueError, match="group must have 6 entries"):
        ks_distance(values, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="pred must hold"):
        ddi(torch.tensor([0, 2, 1, 0]), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="pred must hold"):
        ddi(torch.tensor([0.0, 1.5, 1.0, 0.0]), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="y must hold binary"):
        deo(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 3, 1, 1]), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="top_indices must lie"):
        balance(torch.tensor([[0, 9]]), torch.tensor([0, 1, 0]))
    with pytest.raises(TypeError, match="top_indices must hold integer"):
        balance(torch.tensor([[0.0, 1.0]]), torch.tensor([0, 1, 0]))
