"""Curvature of a class score in the input (Ghorbani et al. 2019, "Interpretation of Neural Networks is Fragile",
Sec. 5, Fig. 6; Dombrowski et al. 2019, "Explanations can be manipulated and geometry is to blame", Thm. 2): the
explanation ``g(x) = d f_t / dx`` changes along ``H v``, so the largest eigenvalue of the input Hessian ``H``
bounds how fast it can move. One home for the audit's ``hessian`` test and its evasion surrogate."""

from __future__ import annotations

import torch
from torch import nn

from veneer.checks import check_positive
from veneer.explain.base import target_logits

__all__ = ["class_score_gradient", "per_sample_dot", "per_sample_normalize", "top_hessian_eigen",
           "rayleigh_quotient"]


def class_score_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``d f_t / dx`` with the graph kept (for Hessian-vector products); samples are independent, so the
    gradient of the summed scores is each sample's own gradient."""
    (grad,) = torch.autograd.grad(target_logits(model, x, target).sum(), x, create_graph=True)
    return grad


def per_sample_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def per_sample_normalize(v: torch.Tensor) -> torch.Tensor:
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view((-1,) + (1,) * (v.ndim - 1))


def top_hessian_eigen(model: nn.Module, x: torch.Tensor, target: torch.Tensor, iterations: int = 20,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Power iteration on Hessian-vector products (Pearlmutter 1994) for every sample at once.

    The class scores of different samples do not interact, so the Hessian of their sum is block diagonal and
    one double-backward gives every sample's ``H_i v_i``. Returns ``(eigenvalue (B,), eigenvector like x,
    gradient like x)``: the eigenvalue of largest magnitude of each sample's input Hessian of
    ``model(x)[target]`` (Rayleigh quotient of the last iterate), its unit eigenvector and ``d f_t / dx``.
    ``model`` must be twice differentiable (e.g. a Softplus surrogate); a ReLU network has ``H = 0``.
    """
    check_positive("iterations", iterations, integer=True)
    x = x.detach().requires_grad_(True)
    grad = class_score_gradient(model, x, target)
    generator = torch.Generator().manual_seed(seed)
    v = per_sample_normalize(torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device))
    eigenvalue = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    if not grad.requires_grad:  # the gradient does not depend on x (a linear model): H = 0
        return eigenvalue, v, grad.detach()
    for _ in range(iterations):
        (hv,) = torch.autograd.grad(grad, x, grad_outputs=v, retain_graph=True, allow_unused=True)
        if hv is None:  # the gradient depends on the weights only: H = 0
            return eigenvalue, v, grad.detach()
        eigenvalue = per_sample_dot(v, hv)
        v = per_sample_normalize(hv)
    return eigenvalue.detach(), v.detach(), grad.detach()


def rayleigh_quotient(model: nn.Module, x: torch.Tensor, target: torch.Tensor, v: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v^T H v (B,), ||d f_t / dx|| (B,))`` for unit directions ``v`` like ``x``, both in the graph of the
    model's parameters (third-order autograd: a Hessian-vector product kept with ``create_graph``). At an
    eigenvector ``v`` the quotient is its eigenvalue, and its derivative in a parameter is ``v^T (dH) v``
    (Hellmann-Feynman), so holding it holds the eigenvalue :func:`top_hessian_eigen` finds."""
    x = x.detach().requires_grad_(True)
    grad = class_score_gradient(model, x, target)
    (hv,) = torch.autograd.grad(grad, x, grad_outputs=v, create_graph=True)
    return per_sample_dot(v, hv), grad.flatten(1).norm(dim=1)
