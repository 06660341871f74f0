"""veneer.audit.defences: tangent-space projection and beta-smoothing."""

from __future__ import annotations

import torch
from torch import nn

from veneer.audit import beta_smoothing, project_tangent, tangent_basis, tangent_space_projection
from veneer.explain import Gradient, GradientXInput


def _plane_data(n: int = 200, dim: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Points of a 2-D linear subspace of R^dim and an orthonormal basis of it."""
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(dim, 2, generator=g, dtype=torch.float64))
    return torch.randn(n, 2, generator=g, dtype=torch.float64) @ basis.T, basis.T


def test_projection_of_a_vector_in_the_span_is_itself():
    data, plane = _plane_data()
    basis = tangent_basis(data[:5], data, k=20, dim=2)
    assert torch.allclose(basis @ basis.transpose(1, 2), torch.eye(2, dtype=torch.float64).expand(5, 2, 2),
                          atol=1e-10)
    inside = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) @ plane
    assert torch.allclose(project_tangent(inside, basis), inside, atol=1e-10)
    outside = torch.randn(5, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    projected = project_tangent(outside, basis)
    assert torch.allclose(project_tangent(projected, basis), projected, atol=1e-10)  # idempotent
    assert torch.allclose(((outside - projected) @ plane.T), torch.zeros(5, 2, dtype=torch.float64), atol=1e-10)


def test_tangent_basis_skips_the_point_itself_and_checks_sizes():
    data, _ = _plane_data(30)
    try:
        tangent_basis(data[:2], data, k=40, dim=2)
    except ValueError as error:
        assert "k" in str(error)
    else:
        raise AssertionError("k larger than the reference must raise")
    assert tangent_basis(data[:3], data, k=5, dim=2).shape == (3, 2, 10)


def test_tangent_space_projection_keeps_an_on_manifold_explanation():
    data, plane = _plane_data()
    # a linear model whose weights lie in the plane: its gradient is on the manifold, so it all survives
    model = nn.Linear(10, 2, bias=False).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) @ plane)
    result = tangent_space_projection(model, data[:8], {"gradient": Gradient(model)}, data, k=20, dim=2)
    assert result.components["gradient"] < 1e-8
    off = nn.Linear(10, 2, bias=False).double().eval()
    with torch.no_grad():
        off.weight.copy_(torch.randn(2, 10, generator=torch.Generator().manual_seed(4), dtype=torch.float64))
    assert tangent_space_projection(off, data[:8], {"gradient": Gradient(off)}, data, k=20, dim=2).statistic > 0.3


def test_beta_smoothing_is_zero_without_relu_and_small_for_a_sharp_softplus(small_mlp, mlp_inputs):
    linear = nn.Sequential(nn.Linear(12, 3)).double().eval()
    assert beta_smoothing(linear, mlp_inputs, {"gradient": Gradient(linear)}).statistic < 1e-12
    sharp = beta_smoothing(small_mlp, mlp_inputs, {"gradient": Gradient(small_mlp)}, softplus_beta=1e4)
    smooth = beta_smoothing(small_mlp, mlp_inputs, {"gradient": Gradient(small_mlp),
                                                    "gradient_x_input": GradientXInput(small_mlp)}, softplus_beta=0.5)
    assert sharp.statistic < 0.05
    assert smooth.components["gradient"] > sharp.statistic
    assert all(isinstance(m, (nn.Linear, nn.ReLU)) for m in small_mlp)  # the model keeps its ReLUs
