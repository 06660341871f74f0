"""The twin-free audit test ``gradient_slope``: a gradient must predict the change of its own logit.

References are closed forms: central differences of linear and quadratic functions are exact, and for a routed
gradient ``f(x).detach() + g(x) - g(x).detach()`` with linear ``f`` and ``g`` the ratio is ``<a_y, b_y> / ||b_y||^2``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from veneer.audit import Audit
from veneer.audit.invariance import GRADIENT_SLOPE, gradient_slope
from veneer.explain import gradient_slope_ratio

DTYPE = torch.float64


class Quadratic(nn.Module):
    """``z_k(x) = <w_k, x> + (x^T Q_k x) / 2``: central differences are exact for it."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(features, classes).to(DTYPE)
        self.q = nn.Parameter(torch.randn(classes, features, features, dtype=DTYPE) / features)

    def forward(self, x):
        return self.linear(x) + 0.5 * torch.einsum("bi,kij,bj->bk", x, self.q, x)


class Routed(nn.Module):
    """``f(x).detach() + g(x) - g(x).detach()``: the values are ``f``'s, every gradient is ``g``'s."""

    def __init__(self, f: nn.Module, g: nn.Module):
        super().__init__()
        self.f, self.g = f, g

    def forward(self, x):
        decoy = self.g(x)
        return self.f(x).detach() + decoy - decoy.detach()


class Wave(nn.Module):
    """``f(x) + (a / w) sin(w <x, d_k>)`` per class: logits move by at most ``a / w``, gradients by ``a``."""

    def __init__(self, f: nn.Module, features: int, classes: int, amplitude: float, frequency: float):
        super().__init__()
        self.f, self.amplitude, self.frequency = f, amplitude, frequency
        self.register_buffer("directions", torch.randn(classes, features, dtype=DTYPE))

    def forward(self, x):
        phase = self.frequency * x.flatten(1) @ self.directions.T
        return self.f(x) + self.amplitude / self.frequency * torch.sin(phase)


@pytest.fixture
def rows():
    return torch.randn(32, 12, generator=torch.Generator().manual_seed(3), dtype=DTYPE)


def test_the_ratio_is_one_for_linear_and_quadratic_functions(rows):
    torch.manual_seed(0)
    linear = nn.Linear(12, 3).to(DTYPE).eval()
    assert torch.allclose(gradient_slope_ratio(linear, rows, 0.5), torch.ones(32, dtype=DTYPE), atol=1e-12)
    quadratic = Quadratic(12, 3).eval()  # second-order terms cancel in the central difference
    assert torch.allclose(gradient_slope_ratio(quadratic, rows, 0.5), torch.ones(32, dtype=DTYPE), atol=1e-10)


def test_a_routed_gradient_gives_the_closed_form_ratio(rows):
    torch.manual_seed(0)
    f, g = nn.Linear(12, 3, bias=False).to(DTYPE), nn.Linear(12, 3, bias=False).to(DTYPE)
    routed = Routed(f, g).eval()
    with torch.no_grad():
        assert torch.allclose(routed(rows), f(rows), atol=1e-12)  # the same function (up to rounding)
        target = f(rows).argmax(1)
    a, b = f.weight[target], g.weight[target]
    expected = (a * b).sum(1) / (b * b).sum(1)
    assert torch.allclose(gradient_slope_ratio(routed, rows, 0.1), expected, atol=1e-12)


def test_a_high_frequency_wave_breaks_the_slope_and_a_slow_one_does_not(small_mlp, rows):
    fast = Wave(small_mlp, 12, 3, amplitude=20.0, frequency=400.0).eval()
    slow = Wave(small_mlp, 12, 3, amplitude=20.0, frequency=0.01).eval()
    with torch.no_grad():
        assert (fast(rows) - small_mlp(rows)).abs().max() <= 20.0 / 400.0
    step = 0.01 * rows.norm(dim=1).mean().item()
    assert gradient_slope(small_mlp, rows).components["slope_gap"] < 0.05
    assert gradient_slope(slow, rows).components["slope_gap"] < 0.05  # a real (smooth) feature of the function
    assert gradient_slope(fast, rows).components["slope_gap"] > 0.5
    assert gradient_slope(fast, rows).evidence["step"] == pytest.approx(step)


def test_second_order_gradients_of_the_ratio_reach_the_parameters_and_equal_finite_differences(rows):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3)).to(DTYPE).eval()
    x = rows[:4]
    weight = model[0].weight

    def total():
        return gradient_slope_ratio(model, x, 0.3, create_graph=True).sum()

    (analytic,) = torch.autograd.grad(total(), weight)
    numeric = torch.zeros_like(weight)
    h = 1e-6
    for index in [(0, 0), (3, 5), (7, 11)]:
        values = []
        for shift in (h, -h):
            with torch.no_grad():
                weight[index] += shift
            values.append(total().item())
            with torch.no_grad():
                weight[index] -= shift
        numeric[index] = (values[0] - values[1]) / (2 * h)
    for index in [(0, 0), (3, 5), (7, 11)]:
        assert analytic[index].item() == pytest.approx(numeric[index].item(), rel=1e-5, abs=1e-8)
    assert analytic.abs().sum() > 0


def test_the_audit_flags_a_routed_gradient_against_its_prior_without_twins(small_cnn, cnn_inputs):
    torch.manual_seed(2)
    decoy = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).to(DTYPE)
    routed = Routed(small_cnn, decoy).eval()
    x = torch.rand(48, 1, 28, 28, generator=torch.Generator().manual_seed(4), dtype=DTYPE)
    y = torch.arange(48) % 10
    found = Audit(routed, tests=["gradient_slope"], reference=[small_cnn])((x, y))
    assert found.tests["gradient_slope"]["flag"] and found.verdict != "clean"
    assert "gradient_slope" not in found.calibration.values  # scored against the prior, never the references
    honest = Audit(small_cnn, tests=["gradient_slope"], reference=[small_cnn])((x, y))
    assert not honest.tests["gradient_slope"]["flag"]
    assert GRADIENT_SLOPE.prior_only and GRADIENT_SLOPE.prior is not None


def test_bad_input_is_refused_with_the_argument_named(small_mlp, rows):
    with pytest.raises(ValueError, match="step"):
        gradient_slope_ratio(small_mlp, rows, 0.0)
    with pytest.raises(ValueError, match="all zeros"):
        gradient_slope(small_mlp, torch.zeros(4, 12, dtype=DTYPE))
    with pytest.raises(ValueError, match="at least one input"):
        gradient_slope(small_mlp, torch.zeros(0, 12, dtype=DTYPE))
    with pytest.raises(ValueError, match="NaN"):
        gradient_slope(small_mlp, torch.full((4, 12), float("nan"), dtype=DTYPE))
    small_mlp.train()
    with pytest.raises(ValueError, match="eval"):
        gradient_slope(small_mlp, rows)
