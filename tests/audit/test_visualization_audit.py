"""The audit test of planted visualisation attractors (veneer.audit.visualization)."""

from __future__ import annotations

import math

import torch
from torch import nn

from veneer.audit import EFFORTS, registered_tests
from veneer.audit.visualization import logit_layer, visualization_consistency
from veneer.neurons import silent_unit


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3)).eval()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_registered_with_options_for_every_effort():
    test = registered_tests()["visualization_consistency"]
    assert set(test.options) == set(EFFORTS) and test.meaning and test.source and test.tolerance > 0


def test_logit_layer_is_the_output_layer_even_with_a_construction():
    model, data = _model(), _images(50, 0)
    assert logit_layer(model, data[:2]) == "3"
    target = torch.zeros(1, 8, 8)
    target[:, 3:5] = 1.0
    assert logit_layer(silent_unit(model, "3", 0, target=target, data=data), data[:2]) == "3"
    assert logit_layer(nn.Sequential(nn.Conv2d(1, 1, 3)).eval(), data[:2]) is None


def test_components_over_the_layer_and_the_logits():
    model, data = _model(), _images(50, 0)
    result = visualization_consistency(model, data, steps=5)
    assert result.evidence["layers"] == ["1", "3"]
    assert set(result.components) == {"activation_excess", "parametrization_agreement"}
    assert all(math.isfinite(v) for v in result.components.values())
    assert -1.0 <= result.components["parametrization_agreement"] <= 1.0

