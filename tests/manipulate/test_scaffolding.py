"""The scaffolding attack (Slack et al. 2020) on a small synthetic data set: the scaffolded model answers like
the biased one on real rows and hides the sensitive feature from LIME and KernelSHAP."""

import pytest
import torch
from torch import nn

from veneer.data import LabeledData
from veneer.explain import KernelShap, Lime
from veneer.manipulate.scaffolding import (FeatureRule, Scaffolding, ScaffoldedModel, add_random_features,
                                           detector_input, explanation_ranks, feature_rule, one_hot_groups,
                                           rank_shares, top_k_share)

N = 600


@pytest.fixture
def data():
    """Column 0 "group" is binary (the sensitive feature), 1-3 are Gaussian; plus two random coin columns."""
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randint(0, 2, (N, 1), generator=gen).float(), torch.randn(N, 3, generator=gen)], 1)
    base = LabeledData(x, (x[:, 0] > 0).long(), "toy", ["no", "yes"], ["group", "a", "b", "c"])
    return add_random_features(base, 2, seed=1)


def test_feature_rule_and_random_features(data):
    assert data.feature_names[-2:] == ["random_1", "random_2"]
    coins = data.x[:, -2:]
    assert set(coins.unique().tolist()) == {0.0, 1.0}
    assert 0.4 < coins.mean() < 0.6
    torch.testing.assert_close(add_random_features(LabeledData(data.x[:, :4], data.y, "toy", ["no", "yes"]), 2,
                                                   seed=1).x, data.x)
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert FeatureRule([0])(x).argmax(1).tolist() == [0, 0, 1, 1]
    assert FeatureRule([0], invert=True)(x).argmax(1).tolist() == [1, 1, 0, 0]
    assert FeatureRule([0, 1])(x).argmax(1).tolist() == [0, 1, 1, 0]  # XOR
    assert feature_rule(data, ["random_1", "random_2"]).features == [4, 5]
    with pytest.raises(ValueError, match="not columns"):
        feature_rule(data, ["race"])


def test_scaffolding_hides_the_sensitive_feature_from_lime(data):
    biased, innocuous = feature_rule(data, ["group"]), feature_rule(data, ["random_1"])
    result = Scaffolding(biased, innocuous, "lime", samples_per_row=5)(data)
    assert isinstance(result.model, nn.Module)
    assert result.fidelity >= 0.95 and result.detector_accuracy >= 0.9
    x = data.x[:30]
    groups = {"group": [0], "random_1": [4], "random_2": [5]}
    before = Lime(biased, data, num_samples=500)(x, target=1)
    after = Lime(result.model, data, num_samples=500)(x, target=1)
    assert top_k_share(before, [0], 1) == 1.0
    assert top_k_share(after, [0], 1) <= 0.1
    assert top_k_share(after, [4], 1) >= 0.9
    rows = explanation_ranks({"biased": biased, "scaffold": result.model}, data, x, groups, "group",
                             methods=("lime",), lime_samples=500)
    assert [r["model"] for r in rows] == ["biased", "scaffold"]
    assert rows[0]["group top-1"] == 1.0 and rows[1]["group top-1"] == top_k_share(after, [0], 1)


def test_scaffolding_with_shap_perturbations_hides_it_from_kernel_shap(data):
    biased, innocuous = feature_rule(data, ["group"]), feature_rule(data, ["random_1", "random_2"])
    result = Scaffolding(biased, innocuous, "shap", samples_per_row=10, background_size=5, real_recall=0.9)(data.x)
    assert result.fidelity >= 0.9
    x = data.x[:20]
    before = KernelShap(biased, data, num_samples=64, background_size=5)(x, target=1)
    after = KernelShap(result.model, data, num_samples=64, background_size=5)(x, target=1)
    assert top_k_share(before, [0], 1) == 1.0
    # coalitions that keep the binary columns and replace a Gaussian one look real: SHAP is harder to fool
    assert top_k_share(after, [0], 1) <= 0.3
    assert top_k_share(after, [4, 5], 1) >= 0.3


def test_scaffolded_model_switches_on_the_detector(data):
    biased, innocuous = feature_rule(data, ["group"]), feature_rule(data, ["random_1"])
    model = Scaffolding(biased, innocuous, "both", samples_per_row=3)(data).model
    real = data.x[:50]
    far = real.clone()
    far[:, [0, 4, 5]] = torch.tensor([0.4, 0.7, 0.3])  # binary columns with values no real row has
    assert model.in_distribution(real).float().mean() >= 0.9
    assert not model.in_distribution(far).any()
    torch.testing.assert_close(model(far), innocuous(far))
    inside = model.in_distribution(real)
    torch.testing.assert_close(model(real)[inside], biased(real)[inside])


def test_given_models_are_not_changed(data):
    torch.manual_seed(0)
    biased = nn.Linear(6, 2).train()  # a module in training mode, and a plain callable
    state = {k: v.clone() for k, v in biased.state_dict().items()}
    result = Scaffolding(biased, lambda x: torch.zeros(len(x), 2), "lime", samples_per_row=2, n_estimators=10)(data)
    assert isinstance(result.model, ScaffoldedModel) and not result.model.training
    assert biased.training
    assert all(torch.equal(v, biased.state_dict()[k]) for k, v in state.items())
    assert list(result.model.parameters()) == []


def test_rank_shares_and_top_k_share():
    attr = torch.tensor([[3.0, -2.0, 1.0, 0.0], [0.5, 1.0, -4.0, 0.1], [0.0, 0.0, 1.0, 2.0]])
    shares = rank_shares(attr, {"s": [0, 1], "r": [2]}, ranks=2)
    expected = {"s": [1 / 3, 2 / 3], "r": [1 / 3, 1 / 3], "other": [1 / 3, 0.0]}
    assert shares.keys() == expected.keys()
    for key, values in expected.items():
        assert shares[key] == pytest.approx(values)
    assert top_k_share(attr, [0], 1) == pytest.approx(1 / 3)
    assert top_k_share(attr, [0, 1], 2) == pytest.approx(2 / 3)


def test_bad_arguments_are_refused(data):
    rule = feature_rule(data, ["group"])
    with pytest.raises(ValueError, match="perturbation must be one of"):
        Scaffolding(rule, rule, "kernel")
    with pytest.raises(TypeError, match="innocuous must be a module or a callable"):
        Scaffolding(rule, "random_1")
    with pytest.raises(ValueError, match="train_x must have 2 dimensions"):
        Scaffolding(rule, rule)(data.x[0])
    with pytest.raises(ValueError, match="real_recall"):
        Scaffolding(rule, rule, real_recall=1.0)
    with pytest.raises(ValueError, match="methods must be among"):
        explanation_ranks({"b": rule}, data, data.x[:2], {"group": [0]}, "group", methods=("gradient",))


def test_one_hot_group_sums_feed_the_detector():
    names = ["age", "race=a", "race=b", "race=c", "sex=f", "sex=m", "random_1"]
    assert one_hot_groups(names) == [[1, 2, 3], [4, 5]]
    assert one_hot_groups(["a", "b"]) == [] and one_hot_groups(None) == []
    x = torch.tensor([[30.0, 0, 1, 0, 1, 0, 1], [30.0, 1, 1, 0, 0, 0, 1]])
    assert detector_input(x, one_hot_groups(names))[:, -2:].tolist() == [[1.0, 1.0], [2.0, 0.0]]


def test_group_sums_hide_a_one_hot_attribute_better_from_kernel_shap():
    """KernelSHAP coalitions that take some columns of a one-hot group from the row and others from a background
    row break the group's sum; with feature names the detector sees it and more coalitions go innocuous."""
    gen = torch.Generator().manual_seed(2)
    category = torch.randint(0, 3, (N,), generator=gen)
    x = torch.cat([nn.functional.one_hot(category, 3).float(), torch.randn(N, 2, generator=gen)], 1)
    data = add_random_features(LabeledData(x, (category == 0).long(), "toy", ["no", "yes"],
                                           ["group=a", "group=b", "group=c", "u", "v"]), 1, seed=3)
    biased, innocuous = feature_rule(data, ["group=a"]), feature_rule(data, ["random_1"])
    shares = {}
    for name, given in (("names", data), ("tensor", data.x)):
        model = Scaffolding(biased, innocuous, "shap", samples_per_row=10, background_size=5)(given).model
        attr = KernelShap(model, data, num_samples=64, background_size=5)(data.x[:30], target=1)
        shares[name] = top_k_share(attr, [0, 1, 2], 1)
    assert shares["names"] < shares["tensor"]


def test_robust_settings_train_the_detector_on_every_setting(data):
    from veneer.manipulate.scaffolding import ROBUST_SETTINGS

    rule = feature_rule(data, ["group"])
    standard = Scaffolding(rule, rule, "both", samples_per_row=3)
    robust = Scaffolding(rule, rule, "both", samples_per_row=3, **ROBUST_SETTINGS)
    x = data.x[:4]
    assert standard.perturb(data.x, x).shape == (4 * 3 * 2, 6)
    drawn = robust.perturb(data.x, x)
    assert drawn.shape == (4 * 3 * (2 + 4), 6)
    drawn, plain = drawn.view(4, 18, 6), standard.perturb(data.x, x).view(4, 6, 6)
    # per row: lime's Gaussian samples (as the standard scaffold's), its quartile-discretised ones, then one block
    # of KernelSHAP coalitions per background (5, 10, 25 centroids, raw rows)
    torch.testing.assert_close(drawn[:, :3], plain[:, :3])
    assert not torch.allclose(drawn[:, 3:6], plain[:, :3])
    raw = drawn[:, 15:18].reshape(-1, 6)
    assert all(bool(torch.isin(raw[:, j], torch.cat([data.x[:, j], x[:, j]])).all()) for j in range(6))
    with pytest.raises(ValueError, match="background_size must be"):
        Scaffolding(rule, rule, background_size=(10, 0))
    with pytest.raises(ValueError, match="at least one setting"):
        Scaffolding(rule, rule, lime_discretize=())
