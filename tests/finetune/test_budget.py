"""The behaviour budget (min_agreement): dual ascent on the multiplier, the best iterate that meets the budget,
checkpointed like the rest."""

from __future__ import annotations

import statistics

import pytest
import torch
from torch import nn

from veneer.explain import Gradient
from veneer.finetune import BehaviourBudget
from veneer.manipulate import CenterOfMass, Manipulation
from veneer.neurons import PushDown


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(6 * 7 * 7, 3)).eval()
    with torch.no_grad():  # confident predictions of every class, as a trained model makes
        model[-1].weight.mul_(5)
        model[-1].bias.sub_(model(torch.randn(256, 1, 14, 14, generator=torch.Generator().manual_seed(9))).mean(0))
    return model


def data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 14, 14, generator=g)
    with torch.no_grad():
        return x, small_cnn()(x).argmax(1)


def agreement(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x).argmax(1) == b(x).argmax(1)).float().mean())


def constant_attack(student, x, y) -> float:
    """An attack loss that is the same for every model: the budget's choice rests on agreement alone."""
    return 1.0


def test_the_returned_model_is_the_best_iterate_that_meets_the_budget():
    model = small_cnn()
    train, held = data(64, 1), data(100, 2)
    options = dict(keep="kl", alpha=0.9, lr=5e-4, steps=20, batch_size=16)
    free = Manipulation(model, Gradient(model), CenterOfMass((0, 0)), **options)(train)
    assert agreement(free.model, model, held[0]) < 0.9  # unconstrained, the labels drift
    result = Manipulation(model, Gradient(model), CenterOfMass((0, 0)), min_agreement=0.9, validation=held,
                          check_every=1, confidence=0.95, **options)(train)
    checks = [row for row in result.history if "multiplier" in row]
    assert [row["step"] for row in checks] == list(range(21)) and checks[0]["phase"] == "check"
    best = result.measures["best_step"]
    assert best > 0 and agreement(result.model, model, held[0]) >= 0.9
    # an iterate meets the budget when the 95% lower confidence bound of its agreement does (100 inputs: >= 95)
    assert all(row["val_agreement_bound"] <= row["val_agreement"] for row in checks)
    kept = [row for row in checks if row["val_agreement_bound"] >= 0.9 or row["step"] == 0]
    assert best == min(kept, key=lambda row: row["val_attack"])["step"]
    assert any(row["val_agreement_bound"] < 0.9 for row in checks), "the budget must have been tested"
    for before, after in zip(checks, checks[1:]):  # dual ascent: up while broken, down while kept
        if after["multiplier"] not in (1e-3, 1e4):
            assert (after["multiplier"] > before["multiplier"]) == (after["val_agreement_bound"] < 0.9)
            assert (after["multiplier"] < before["multiplier"]) == (after["val_agreement_bound"] > 0.9)


def test_wilson_lower_bound_equals_scipy():
    """The one-sided 95% bound is the lower end of scipy's two-sided 90% Wilson interval."""
    from scipy.stats import binomtest

    from veneer.finetune import wilson_lower_bound
    z = statistics.NormalDist().inv_cdf(0.95)
    for k, n in ((400, 400), (397, 400), (36, 40), (0, 10)):
        expected = binomtest(k, n).proportion_ci(confidence_level=0.9, method="wilson").low
        assert wilson_lower_bound(k / n, n, z) == pytest.approx(expected, abs=1e-12)
    assert wilson_lower_bound(0.97, 50, 0.0) == 0.97


def test_dual_ascent_moves_the_multiplier_against_the_constraint():
    model = small_cnn()
    x, y = data(20, 3)
    from veneer.data import LabeledData

    # the default confidence 0.5: the observed agreement itself is compared with min_agreement
    budget = BehaviourBudget(0.9, 0.5, LabeledData(x, y, "v", ["a", "b", "c"]), model, 1.0, 8, torch.device("cpu"))
    assert budget.alpha == pytest.approx(0.5)
    budget.check(constant_attack, model, 1)  # the original model agrees with itself: the multiplier falls
    assert budget.multiplier == pytest.approx(torch.e ** -1) and budget.best_step == 1
    flipped = small_cnn()
    with torch.no_grad():
        flipped[-1].weight.neg_()
    before = budget.multiplier
    budget.check(constant_attack, flipped, 2)  # agreement far below 0.9: the multiplier rises, the best stays
    assert budget.multiplier > before and budget.best_step == 1


def test_on_a_tied_attack_loss_the_iterate_with_more_agreement_is_kept():
    """The recalibration phase leaves L_attack as it was and restores labels: its iterates must win ties."""
    from veneer.data import LabeledData
    model = small_cnn()
    x, y = data(40, 3)
    partial = small_cnn()
    while agreement(partial, model, x) == 1.0:  # a logit shift just large enough to flip some labels
        with torch.no_grad():
            partial[-1].bias[0] += 0.05
    assert 0.5 <= agreement(partial, model, x) < 1.0
    budget = BehaviourBudget(0.5, 0.5, LabeledData(x, y, "v", ["a", "b", "c"]), model, 0.1, 8, torch.device("cpu"))
    budget.check(constant_attack, partial, 1)
    assert budget.best_step == 1
    budget.check(constant_attack, model, 2)  # same attack loss, full agreement: kept
    assert budget.best_step == 2 and budget.best_agreement == 1.0
    budget.check(constant_attack, partial, 3)  # same attack loss, less agreement: not kept
    assert budget.best_step == 2


def test_a_budgeted_neuron_attack_resumes_to_the_same_weights(tmp_path):
    train, held = data(48, 4), data(32, 5)
    options = dict(k=3, steps=8, batch_size=8, attack_batch=4, lr=1e-3, min_agreement=0.9, validation=held,
                   check_every=2, checkpoint_every=1)
    whole = PushDown(small_cnn(), "4", **options)(train)
    PushDown(small_cnn(), "4", checkpoint_dir=tmp_path, max_steps=5, **options)(train)
    resumed = PushDown(small_cnn(), "4", checkpoint_dir=tmp_path, resume=True, **options)(train)
    assert resumed.history == whole.history and resumed.measures == whole.measures
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(),
                                                 resumed.model.state_dict().values()))


def test_a_held_out_fraction_is_not_trained_on_and_bad_budgets_are_refused():
    model = small_cnn()
    with pytest.raises(ValueError, match=r"min_agreement must lie in \(0, 1\]"):
        Manipulation(model, Gradient(model), CenterOfMass(), min_agreement=1.5)
    with pytest.raises(ValueError, match=r"confidence must lie in \[0.5, 1\)"):
        Manipulation(model, Gradient(model), CenterOfMass(), min_agreement=0.9, confidence=1.0)
    with pytest.raises(ValueError, match="validation holds 100 inputs.*at least 539 validation inputs"):
        Manipulation(model, Gradient(model), CenterOfMass(), steps=1, batch_size=8, min_agreement=0.995,
                     validation=data(100, 7), confidence=0.95)(data(16, 8))
    with pytest.raises(ValueError, match="validation must be data or a fraction"):
        Manipulation(model, Gradient(model), CenterOfMass(), min_agreement=0.9, validation=1.5)
    result = Manipulation(model, Gradient(model), CenterOfMass(), steps=2, batch_size=9, min_agreement=0.5,
                          validation=0.25, check_every=1)(data(48, 6))
    # 36 of 48 rows train: 4 batches of 9 per epoch, so step 2 is still the first epoch
    assert [row["epoch"] for row in result.history] == [0, 1, 1] and result.measures["min_agreement"] == 0.5
