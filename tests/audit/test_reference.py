"""veneer.audit.reference: parameter shift and the comparison with a reference model."""

from __future__ import annotations

import copy

import torch

from veneer.audit import parameter_shift, reference_comparison
from veneer.explain import Gradient, GradientXInput


def test_parameter_shift_of_a_scaled_layer(small_mlp):
    other = copy.deepcopy(small_mlp)
    with torch.no_grad():
        other[0].weight.mul_(3)
    shift = parameter_shift(other, small_mlp)
    assert abs(shift["0.weight"] - 2) < 1e-12
    assert shift["2.weight"] == 0 and 0 < shift["total"] < 2
    assert parameter_shift(small_mlp, small_mlp)["total"] == 0


def test_reference_comparison_with_itself_and_with_a_changed_copy(small_cnn, cnn_inputs):
    explainers = {"gradient": Gradient(small_cnn), "gradient_x_input": GradientXInput(small_cnn)}
    same = reference_comparison(small_cnn, small_cnn, cnn_inputs, explainers)
    assert same.evidence["label_agreement"] == 1.0 and abs(same.statistic) < 1e-12
    changed = copy.deepcopy(small_cnn)
    with torch.no_grad():
        changed[0].weight.add_(0.5 * torch.randn_like(changed[0].weight))
    result = reference_comparison(changed, small_cnn, cnn_inputs, {n: e.with_model(changed)
                                                                   for n, e in explainers.items()})
    assert max(result.evidence["divergence"].values()) > 0.01
    assert result.evidence["parameter_shift"]["0.weight"] > 0.1
