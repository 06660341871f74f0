"""Scaffolding detection in the audit (veneer.audit.scaffolding) and on-manifold KernelSHAP
(veneer.explain.model_agnostic.ConditionalShap), on a small synthetic table."""

import numpy as np
import pytest
import torch
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from torch import nn

from veneer.audit import EFFORTS, AuditContext, registered_tests, run_tests
from veneer.audit.scaffolding import (knn_cad_scores, on_manifold_disagreement, one_hot_runs, protected_columns,
                                      surrogate_detection)
from veneer.data import LabeledData
from veneer.explain.model_agnostic import ConditionalShap, constrained_shapley_fit
from veneer.manipulate.scaffolding import Scaffolding, add_random_features, feature_rule
from veneer.models import BlackBox

N = 800


@pytest.fixture(scope="module")
def data():
    """Column 0 "group" is binary (the sensitive feature), 1-3 Gaussian, the label depends on group and a; plus
    one random coin column."""
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randint(0, 2, (N, 1), generator=gen).float(), torch.randn(N, 3, generator=gen)], 1)
    y = ((x[:, 0] + x[:, 1] + 0.5 * torch.randn(N, generator=gen)) > 0.5).long()
    return add_random_features(LabeledData(x, y, "toy", ["no", "yes"], ["group", "a", "b", "c"]), 1, seed=1)


@pytest.fixture(scope="module")
def models(data):
    biased = feature_rule(data, ["group"])
    scaffold = Scaffolding(biased, feature_rule(data, ["random_1"]), "both", samples_per_row=5)(data).model
    fitted = {"logistic": LogisticRegression().fit(data.x.numpy(), data.y.numpy()),
              "boosting": GradientBoostingClassifier(n_estimators=30, random_state=0).fit(data.x.numpy(),
                                                                                          data.y.numpy())}
    clean = {name: BlackBox(m.predict_proba, 2, 5) for name, m in fitted.items()}
    return {"rule": biased, **clean}, scaffold


def test_surrogate_detection_separates_scaffold_from_clean_models(data, models):
    clean, scaffold = models
    x = data.x[:24]
    found = surrogate_detection(scaffold, x, data.x)
    assert found["real"] <= 0.05
    assert max(found["lime"], found["kernel-shap"]) >= 0.3
    for name, model in clean.items():
        other = surrogate_detection(model, x, data.x)
        assert max(other["lime"], other["kernel-shap"]) <= 0.15, name


def test_knn_cad_scores_match_the_definition():
    reference = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    queries = torch.tensor([[1.5], [1.5], [10.5]])
    scores = knn_cad_scores(reference, labels, queries, torch.tensor([0, 1, 1]), k=4)
    # standardised distances share one scale, which cancels in d_other / (d_same + d_other); neighbours of 1.5:
    # 1, 2, 0 (class 0, median distance 0.5) and 10 (class 1, distance 8.5); of 10.5: 10, 11 (class 1, 0.5) and
    # 2, 1 (class 0: distances 8.5 and 9.5, median 9.0, the mean of the two middle values as numpy's median)
    np.testing.assert_allclose(scores.numpy(), [8.5 / 9.0, 0.5 / 9.0, 9.0 / 9.5], rtol=1e-5)
    with pytest.raises(ValueError, match="k must be below"):
        knn_cad_scores(reference, labels, queries, labels[:3], k=5)


def test_the_registered_test_runs_on_a_black_box_and_flags_the_scaffold(data, models):
    clean, scaffold = models
    assert "scaffolding" in registered_tests()
    options = {**EFFORTS["fast"], "scaffold_samples": 16, "cad_k": 20, "cad_epsilon": 0.05, "defence_rows": 8}
    ctx = AuditContext(data.x[:24], data.y[:24], data.x, data.y, data.x[:, 0].long(), ("lime", "kernel-shap"),
                       options, 0)
    results = {name: run_tests(model, ctx, ["scaffolding"])["scaffolding"]
               for name, model in {**clean, "scaffold": scaffold}.items()}
    test = registered_tests()["scaffolding"]
    mean, sd = test.prior
    z = {n: (r.statistic - mean) / (sd ** 2 + test.tolerance ** 2) ** 0.5 for n, r in results.items()}
    assert z["scaffold"] > 3 and all(z[n] < 3 for n in clean)
    evidence = results["scaffold"].evidence
    assert evidence["on_manifold"]["protected_columns"] == [0]
    shares = evidence["on_manifold"]["protected_top1"]
    # KernelSHAP is partly fooled on this small table (6 features: many coalitions look real), on-manifold
    # KernelSHAP puts the sensitive column first again
    assert shares["conditional-shap"] >= 0.9 and shares["kernel-shap"] < shares["conditional-shap"]
    assert set(evidence["knn_cad"]) == {"real", "lime", "kernel-shap"}
    images = AuditContext(torch.zeros(2, 1, 8, 8), data.y[:2], data.x, data.y, None, ("gradient",), options, 0)
    assert "perturb feature rows" in test.applies(scaffold, images)


def test_protected_columns_finds_the_column_and_its_complement():
    group = torch.tensor([0, 1, 1, 0])
    reference = torch.stack([group.float(), 1 - group.float(), torch.tensor([0.0, 1, 0, 0])], 1)
    assert protected_columns(reference, group) == [0, 1]
    assert protected_columns(reference, None) == []


def test_conditional_shap_interventional_form_matches_closed_form_and_shap():
    """With donors drawn uniformly, the values of a linear logit are ``w_i (x_i - E x_i)`` (KernelSHAP's
    closed form for a linear model with independent features)."""
    torch.manual_seed(0)
    background = torch.randn(400, 4)
    model = nn.Linear(4, 2).eval()
    x = torch.randn(3, 4)
    phi = ConditionalShap(model, background, num_samples=4000, neighbours=None, output="logit")(x, target=1)
    expected = model.weight[1].detach() * (x - background.mean(0))
    torch.testing.assert_close(phi, expected, atol=0.01, rtol=0.05)


def test_conditional_shap_shares_credit_between_dependent_features():
    """A model reading feature 0 where feature 1 is a copy of it: the conditional (on-manifold) values split the
    credit between the two copies (Aas et al. 2021, Sec. 2.3); interventional ones give it all to feature 0."""
    torch.manual_seed(0)
    background = torch.randn(400, 3)
    background[:, 1] = background[:, 0]
    model = nn.Linear(3, 2).eval()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[1, 0] = 1.0
    x = background[:4]
    conditional = ConditionalShap(model, background, num_samples=2000, neighbours=3, output="logit")(x, target=1)
    interventional = ConditionalShap(model, background, num_samples=2000, neighbours=None, output="logit")(
        x, target=1)
    share = conditional[:, 1] / conditional[:, :2].sum(1)
    assert ((share > 0.3) & (share < 0.7)).all()
    assert (interventional[:, 1].abs() < 0.1 * interventional[:, 0].abs()).all()


def test_constrained_fit_is_efficient_and_exact_for_additive_outputs():
    gen = torch.Generator().manual_seed(0)
    coalitions = torch.rand(2, 64, 5, generator=gen) > 0.5
    phi_true = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    base = torch.tensor([0.3, -1.0], dtype=torch.float64)
    outputs = base[:, None] + (coalitions.double() * phi_true[:, None]).sum(2)
    phi = constrained_shapley_fit(coalitions, outputs, base, base + phi_true.sum(1))
    torch.testing.assert_close(phi, phi_true)


def test_on_manifold_disagreement_without_protected_columns(data, models):
    clean, _ = models
    found = on_manifold_disagreement(clean["logistic"], data.x[:4], data.x, samples=128)
    assert found["rows"] == 4 and 0 <= found["top1_differs"] <= 1 and "protected_top1" not in found


def test_one_hot_runs_and_grouped_conditional_shap():
    gen = torch.Generator().manual_seed(0)
    category = torch.randint(0, 3, (300,), generator=gen)
    binary = torch.randint(0, 2, (300, 1), generator=gen).float()
    x = torch.cat([torch.randn(300, 1, generator=gen), nn.functional.one_hot(category, 3).float(), binary,
                   nn.functional.one_hot(1 - binary[:, 0].long(), 2).float()], 1)
    # column 4 is a lone binary column equal to column 5 (both ones in a row): not a one-hot run with it
    assert one_hot_runs(x) == [[1, 2, 3], [5, 6]]
    model = nn.Linear(7, 2).eval()
    phi = ConditionalShap(model, x, num_samples=256, groups=[[1, 2, 3]], output="logit")(x[:3], target=1)
    # the group's value on each of its columns; the values add up to f(x) - E f over the background (efficiency)
    assert torch.equal(phi[:, 1], phi[:, 2]) and torch.equal(phi[:, 1], phi[:, 3])
    logits = model(x).detach()[:, 1]
    torch.testing.assert_close(phi[:, [0, 1, 4, 5, 6]].sum(1), logits[:3] - logits.mean(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="disjoint lists of column indices"):
        ConditionalShap(model, x, groups=[[1, 2], [2, 3]])
