"""veneer.audit.fidelity: deletion/insertion curves and cross-method agreement."""

from __future__ import annotations

import torch
from torch import nn

from veneer.audit import agreement_matrix, cross_method_agreement, deletion_insertion, faithfulness
from veneer.explain import Gradient, GradientXInput


def _linear_model(features: int = 20, positive: bool = False) -> tuple[nn.Module, torch.Tensor]:
    """Two-class linear model with logits (0, w.x): p(class 1) = sigmoid(w.x)."""
    w = torch.randn(features, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = w.abs() if positive else w
    model = nn.Linear(features, 2, bias=False).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.zeros_like(w), w]))
    return model, w


def test_deletion_curve_of_a_perfect_attribution_beats_a_random_one():
    model, w = _linear_model()
    x = torch.rand(16, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5
    target = torch.ones(16, dtype=torch.long)
    perfect = deletion_insertion(model, x, w * x, target, steps=20)
    random = deletion_insertion(model, x, torch.rand(16, 20, generator=torch.Generator().manual_seed(2),
                                                     dtype=torch.float64), target, steps=20)
    assert (perfect["deletion_auc"] < random["deletion_auc"]).float().mean() > 0.9
    assert (perfect["insertion_auc"] > random["insertion_auc"]).float().mean() > 0.9
    # endpoints: the clean input and the all-baseline input
    p = model(x).softmax(1)[:, 1]
    assert torch.allclose(perfect["deletion"][:, 0], p) and torch.allclose(perfect["insertion"][:, -1], p)
    assert torch.allclose(perfect["deletion"][:, -1], torch.full((16,), 0.5, dtype=torch.float64))
    # the curve bottoms out once every positive contribution is gone, before the random order's does
    assert (perfect["deletion"].amin(1) <= random["deletion"].amin(1) + 1e-12).all()


def test_deletion_masks_all_channels_of_a_pixel(small_cnn, cnn_inputs):
    importance = torch.zeros(4, 28 * 28, dtype=torch.float64)
    curves = deletion_insertion(small_cnn, cnn_inputs, importance, torch.zeros(4, dtype=torch.long), steps=2)
    with torch.no_grad():
        black = small_cnn(torch.zeros_like(cnn_inputs)).softmax(1)[:, 0]
    assert torch.allclose(curves["deletion"][:, -1], black)


def test_faithfulness_prefers_the_gradient_x_input_on_a_linear_model():
    model, _ = _linear_model(positive=True)  # |w x| then orders the contributions exactly
    x = torch.rand(16, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5
    result = faithfulness(model, x, {"gradient_x_input": GradientXInput(model)}, target=torch.ones(16, dtype=torch.long))
    auc = result.evidence["auc"]
    assert auc["gradient_x_input"]["deletion_auc"] < auc["random"]["deletion_auc"]
    assert result.components["gradient_x_input"] < auc["random"]["deletion_auc"] - auc["random"]["insertion_auc"]


def test_cross_method_agreement_is_zero_for_identical_methods(small_cnn, cnn_inputs):
    same = cross_method_agreement(small_cnn, cnn_inputs, {"a": Gradient(small_cnn), "b": Gradient(small_cnn)})
    assert max(abs(v) for v in same.components.values()) < 1e-9
    mixed = cross_method_agreement(small_cnn, cnn_inputs, {"a": Gradient(small_cnn), "b": Gradient(small_cnn),
                                                           "gxi": GradientXInput(small_cnn)})
    assert mixed.components["gxi"] > mixed.components["a"] > 0
    matrix = mixed.evidence["spearman"]
    assert abs(matrix["a"]["gxi"] - matrix["gxi"]["a"]) < 1e-12


def test_agreement_matrix_matches_scipy():
    import scipy.stats

    g = torch.Generator().manual_seed(4)
    maps = {"u": torch.rand(3, 50, generator=g, dtype=torch.float64), "v": torch.rand(3, 50, generator=g,
                                                                                     dtype=torch.float64)}
    expected = sum(scipy.stats.spearmanr(maps["u"][i], maps["v"][i]).statistic for i in range(3)) / 3
    assert abs(agreement_matrix(maps)["u"]["v"] - expected) < 1e-10
