"""veneer.audit.influence: the influence-fragility test (Ghorbani et al. 2019, Sec. 3 / Fig. 4) alone and in an
audit, against the attack it wraps."""

from __future__ import annotations

import copy

import pytest
import torch

from agreement import generator
from veneer.attacks import InfluenceAttack, influence_change
from veneer.audit import Audit, influence_fragility
from veneer.explain import Influence

EPS = 0.05


@pytest.fixture
def case(small_cnn):
    """The small float64 CNN, 60 training images with random labels, 8 test images labelled with the model's
    predictions except the first two (misclassified on purpose)."""
    x = torch.rand(68, 1, 28, 28, generator=generator(0), dtype=torch.float64)
    y_train = torch.randint(0, 10, (60,), generator=generator(1))
    with torch.no_grad():
        y_test = small_cnn(x[60:]).argmax(1)
    y_test[:2] = (y_test[:2] + 1) % 10
    return small_cnn, (x[:60], y_train), x[60:], y_test


def test_reports_the_documented_fields_on_correctly_classified_images(case):
    model, train, x, y = case
    before = copy.deepcopy(model.state_dict())
    result = influence_fragility(model, x, y, train, eps=EPS)
    assert result.name == "influence_fragility" and set(result.components) == {"spearman", "topk"}
    evidence = result.evidence
    assert set(evidence) >= {"eps", "steps", "top", "k", "damping", "params", "images", "train_samples", "spearman",
                             "topk_intersection", "spearman_gap", "topk_gap", "label_kept"}
    assert evidence["images"] == 6 and evidence["train_samples"] == 60 and evidence["params"] == ["9"]
    assert evidence["label_kept"] == {"attack": 1.0, "random": 1.0}
    # the statistic is the wrapped attack's, on the correctly classified images only
    correct = slice(2, None)
    influence = Influence(model, train, params=["9"], damping=0.01)
    x_adv = InfluenceAttack(model, influence, eps=EPS)(x[correct], y[correct])
    change = influence_change(influence, x[correct], x_adv, y[correct], 5)
    assert result.components["spearman"] == pytest.approx(1 - change["spearman"].mean().item(), abs=1e-9)
    assert result.components["topk"] == pytest.approx(1 - change["topk_intersection"].mean().item(), abs=1e-9)
    assert result.statistic == max(result.components.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_attack_moves_influence_more_than_random_sign(case):
    model, train, x, y = case
    evidence = influence_fragility(model, x, y, train, eps=EPS).evidence
    assert evidence["spearman"]["attack"] < evidence["spearman"]["random"] and evidence["spearman_gap"] > 0
    assert evidence["topk_intersection"]["attack"] < evidence["topk_intersection"]["random"]


def test_bad_input(case, small_mlp, mlp_inputs):
    model, train, x, y = case
    with pytest.raises(ValueError, match="x must"):
        influence_fragility(small_mlp, mlp_inputs, torch.zeros(4, dtype=torch.long), train)
    with pytest.raises(ValueError, match="y must be a \\(8,\\) integer tensor"):
        influence_fragility(model, x, y[:3], train)
    with pytest.raises(ValueError, match="y must"):
        influence_fragility(model, x, y.double(), train)
    with pytest.raises(ValueError, match="classifies none"):
        influence_fragility(model, x[:2], y[:2], train)
    with pytest.raises(ValueError, match="k must be at most"):
        influence_fragility(model, x, y, train, k=61)
    with pytest.raises(ValueError, match="eps"):
        influence_fragility(model, x, y, train, eps=2.0)
    with pytest.raises(ValueError, match="training mode"):
        influence_fragility(copy.deepcopy(model).train(), x, y, train)


def test_the_audit_runs_it_on_images_and_skips_it_on_rows_with_a_reason(case, small_mlp):
    model, (x, _), _, _ = case
    with torch.no_grad():
        y = model(x).argmax(1)
    result = Audit(model, reference=copy.deepcopy(model), tests=["influence_fragility"],
                   options={"samples": 8, "influence_train": 40})((x, y))
    test = result.tests["influence_fragility"]
    assert test["evidence"]["train_samples"] == 40 and test["z"] == 0  # the reference is the model itself
    rows = torch.randn(50, 12, generator=generator(2), dtype=torch.float64)
    tabular = Audit(small_mlp, reference=copy.deepcopy(small_mlp), tests=["influence_fragility", "noise_inputs"])(
        (rows, torch.randint(0, 3, (50,), generator=generator(3))))
    assert list(tabular.tests) == ["noise_inputs"]
    assert "images" in tabular.config["skipped"]["influence_fragility"]
