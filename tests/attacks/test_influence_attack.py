"""Ghorbani et al. (2019)'s attack on influence functions: labels kept, budget respected, better than random
sign, model untouched."""

from __future__ import annotations

import pytest
import torch

from agreement import generator
from veneer.attacks import InfluenceAttack, RandomSign, influence_change, influence_sweep
from veneer.explain import Gradient, Influence
from veneer.models.architectures import mnist_cnn

EPS = 0.05


@pytest.fixture
def case():
    """Small float64 CNN with seeded weights, 60 training and 6 test images, the test labels its predictions."""
    torch.manual_seed(0)
    model = mnist_cnn(channels=(4, 8), hidden=16).double().eval()
    x = torch.rand(66, 1, 28, 28, generator=generator(0), dtype=torch.float64)
    y = torch.randint(0, 10, (60,), generator=generator(1))
    with torch.no_grad():
        y_test = model(x[60:]).argmax(1)
    return model, Influence(model, (x[:60], y), params=["9"]), x[60:], y_test


@pytest.mark.parametrize("normalize", [True, False])
def test_single_step_keeps_labels_and_beats_random_sign(case, normalize):
    model, influence, x, y = case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attack = InfluenceAttack(model, influence, eps=EPS, normalize=normalize)
    x_adv = attack(x, y)
    assert attack.result.label_kept.all()
    assert torch.equal(model(x_adv).argmax(1), y)
    assert (x_adv - x).abs().max() <= EPS and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (attack.result.dissimilarity > 0).all()  # the top-3 training samples lost influence
    x_random = RandomSign(model, influence, eps=EPS)(x, y)
    ours, baseline = influence_change(influence, x, x_adv, y, 5), influence_change(influence, x, x_random, y, 5)
    assert ours["spearman"].mean() < baseline["spearman"].mean()
    assert ours["topk_intersection"].mean() < baseline["topk_intersection"].mean()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_iterated_attack_is_projected_and_lowers_the_top_influence_more(case):
    model, influence, x, y = case
    one = InfluenceAttack(model, influence, eps=EPS)
    one(x, y)
    several = InfluenceAttack(model, influence, eps=EPS, steps=4)
    x_adv = several(x, y)
    assert several.result.label_kept.all()
    assert (x_adv - x).abs().max() <= EPS and x_adv.min() >= 0 and x_adv.max() <= 1
    assert several.result.dissimilarity.mean() > one.result.dissimilarity.mean()


def test_sweep_reports_both_attacks_at_every_eps(case):
    model, influence, x, y = case
    rows, images = influence_sweep(model, influence, x, y, [0.02, EPS], batch_size=4)
    assert [(r["attack"], r["eps"]) for r in rows] == [("influence", 0.02), ("random", 0.02),
                                                       ("influence", EPS), ("random", EPS)]
    assert all(r["label_kept_rate"] == 1.0 for r in rows)
    assert images[("influence", EPS)].shape == x.shape


def test_bad_arguments(case):
    model, influence, x, y = case
    with pytest.raises(TypeError, match="influence must be a veneer.explain.Influence"):
        InfluenceAttack(model, Gradient(model))
    with pytest.raises(ValueError, match="top must be at most"):
        InfluenceAttack(model, influence, top=61)(x, y)
    with pytest.raises(ValueError, match="eps must be > 0"):
        InfluenceAttack(model, influence, eps=0.0)
    with pytest.raises(ValueError, match="explainer was built for another model"):
        InfluenceAttack(mnist_cnn(channels=(4, 8), hidden=16).double().eval(), influence)
