"""veneer.audit.geometry: power iteration against an explicit Hessian, the geometry test, fragility profile."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from veneer.audit import fragility_profile, hessian_geometry, top_hessian_eigen
from veneer.explain import Gradient
from veneer.models import with_softplus
from veneer.models.architectures import mnist_cnn, tabular_mlp


def _explicit_top_eigen(model: nn.Module, x: torch.Tensor, target: int) -> tuple[float, torch.Tensor, float]:
    """Largest-magnitude eigenvalue and eigenvector of the Hessian of model(x)[target] w.r.t. x (one sample), and
    the ratio of the second-largest magnitude to the largest (power iteration converges like its powers)."""
    hessian = torch.autograd.functional.hessian(lambda v: model(v.view(1, *x.shape))[0, target], x.flatten(),
                                               vectorize=True)
    values, vectors = torch.linalg.eigh(hessian)
    i = values.abs().argmax()
    magnitudes = values.abs().sort(descending=True).values
    return values[i].item(), vectors[:, i], (magnitudes[1] / magnitudes[0]).item()


def test_power_iteration_equals_explicit_hessian_on_mlp_and_cnn():
    torch.manual_seed(0)
    mlp = with_softplus(tabular_mlp(6, (12, 8), 3).double().eval(), beta=2.0)
    cnn = with_softplus(mnist_cnn(channels=(2, 3), hidden=6).double().eval(), beta=2.0)
    cases = [(mlp, torch.randn(3, 6, dtype=torch.float64)),
             (cnn, torch.rand(2, 1, 28, 28, dtype=torch.float64))]
    for model, x in cases:
        target = torch.arange(len(x)) % 3
        eigenvalue, vector, grad = top_hessian_eigen(model, x, target, iterations=500)
        for i in range(len(x)):
            exact, exact_vector, gap = _explicit_top_eigen(model, x[i], int(target[i]))
            assert abs(eigenvalue[i].item() - exact) <= 1e-2 * abs(exact)
            if gap < 0.9:  # 0.9^500 ~ 1e-23: converged to machine precision
                assert abs(eigenvalue[i].item() - exact) <= 1e-8 * abs(exact)
                assert abs(torch.dot(vector[i].flatten(), exact_vector).abs().item() - 1) < 1e-8
        x = x.clone().requires_grad_(True)
        (reference_grad,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
        assert torch.allclose(grad, reference_grad)


def test_hessian_geometry_reports_angle_and_leaves_model_unchanged(small_cnn, cnn_inputs):
    before = copy.deepcopy(small_cnn.state_dict())
    result = hessian_geometry(small_cnn, cnn_inputs, iterations=10)
    assert 0 <= result.evidence["angle_degrees_min"] <= result.evidence["angle_degrees_mean"] <= 90
    assert result.evidence["lambda_max_median"] > 0
    assert all(torch.equal(before[k], v) for k, v in small_cnn.state_dict().items())
    assert all(isinstance(m, nn.ReLU) for m in small_cnn if not isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.Flatten,
                                                                                nn.Linear)))
    # scaling the logits scales gradient and Hessian alike: curvature per slope is unchanged
    scaled = copy.deepcopy(small_cnn)
    with torch.no_grad():
        scaled[-1].weight.mul_(10)
        scaled[-1].bias.mul_(10)
    other = hessian_geometry(scaled, cnn_inputs, iterations=10)
    assert abs(other.statistic - result.statistic) < 1e-6


def test_fragility_profile_vanishes_for_a_tiny_budget_and_grows_with_it(small_cnn, cnn_inputs):
    tiny = fragility_profile(small_cnn, cnn_inputs, Gradient(small_cnn), eps_values=(1e-9,), steps=2)
    assert tiny.statistic < 0.05
    assert tiny.evidence["random"][0] > 0.95
    large = fragility_profile(small_cnn, cnn_inputs, Gradient(small_cnn), eps_values=(0.2,), steps=4)
    assert large.statistic > tiny.statistic + 0.1
    assert large.evidence["label_kept"][0] == 1.0
    with pytest.raises(ValueError, match="eps_values must hold at least one budget"):
        fragility_profile(small_cnn, cnn_inputs, Gradient(small_cnn), eps_values=())


def test_fragility_profile_takes_the_deprecated_eps_grid(small_cnn, cnn_inputs):
    with pytest.warns(DeprecationWarning, match="eps_values"):
        old = fragility_profile(small_cnn, cnn_inputs, Gradient(small_cnn), eps_grid=(0.2,), steps=2)
    new = fragility_profile(small_cnn, cnn_inputs, Gradient(small_cnn), eps_values=(0.2,), steps=2)
    assert old.components == new.components and old.evidence["eps"] == [0.2]
