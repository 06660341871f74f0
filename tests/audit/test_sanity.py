"""veneer.audit.sanity: noise inputs, weight noise and cascading parameter randomisation."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from veneer.audit import add_weight_noise, mean_pairwise_correlation, noise_inputs, parameter_randomization, weight_noise
from veneer.explain import Gradient, GradientXInput


def test_mean_pairwise_correlation_matches_numpy():
    maps = torch.randn(5, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    corr = np.corrcoef(maps.numpy())
    expected = (corr.sum() - np.trace(corr)) / 20
    assert abs(mean_pairwise_correlation(maps) - expected) < 1e-12
    assert abs(mean_pairwise_correlation(maps[:1].repeat(4, 1)) - 1) < 1e-12


def _constant_gradient_model() -> nn.Module:
    """Linear model that predicts class 0 everywhere: its gradient (hence its map) is the same for every input."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 3)).double().eval()
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([1e3, 0.0, 0.0], dtype=torch.float64))
    return model


def test_noise_inputs_separates_one_picture_models_from_input_dependent_ones(small_cnn, cnn_inputs):
    constant = _constant_gradient_model()
    same = noise_inputs(constant, cnn_inputs, {"gradient": Gradient(constant)}, n=8)
    assert abs(same.components["gradient"] - 1) < 1e-9
    varied = noise_inputs(small_cnn, cnn_inputs, {"gradient": Gradient(small_cnn)}, n=8)
    assert varied.components["gradient"] < 0.9
    assert set(varied.evidence["real_input_correlation"]) == {"gradient"}


def test_weight_noise_is_zero_for_negligible_noise_and_keeps_the_model(small_cnn, cnn_inputs):
    before = copy.deepcopy(small_cnn.state_dict())
    explainers = {"gradient": Gradient(small_cnn), "gradient_x_input": GradientXInput(small_cnn)}
    tiny = weight_noise(small_cnn, cnn_inputs, explainers, sigmas=(1e-9,))
    assert max(tiny.components.values()) < 1e-3
    assert tiny.evidence["label_kept"] == [1.0]
    large = weight_noise(small_cnn, cnn_inputs, explainers, sigmas=(1.0,), draws=2)
    assert large.statistic > 0.1
    assert all(torch.equal(before[k], v) for k, v in small_cnn.state_dict().items())


def test_add_weight_noise_scales_with_each_tensor_std(small_mlp):
    noisy = add_weight_noise(small_mlp, 0.1, torch.Generator().manual_seed(0))
    for (name, p), q in zip(small_mlp.named_parameters(), noisy.parameters()):
        relative = ((q - p).std() / p.std()).item()
        assert 0.03 < relative < 0.3, name


def test_parameter_randomization_changes_a_real_explanation(small_cnn, cnn_inputs):
    before = copy.deepcopy(small_cnn.state_dict())
    result = parameter_randomization(small_cnn, cnn_inputs, {"gradient": Gradient(small_cnn)})
    stages = result.evidence["similarity_per_stage"]["gradient"]
    assert result.evidence["layers_top_down"] == ["9", "7", "3", "0"]
    assert len(stages) == 4
    assert max(stages) < 0.9  # the explanation changes once the top layer is random
    assert all(torch.equal(before[k], v) for k, v in small_cnn.state_dict().items())
