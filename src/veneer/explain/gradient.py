"""Gradient-based attributions, batched over samples, integration steps and noise draws."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from veneer.checks import check_positive
from veneer.explain.base import Explainer, check_baseline, gradient_and_output, input_gradient, per_input_baselines


class Gradient(Explainer):
    """Vanilla gradient d f_target / d x (Simonyan et al. 2014, Eq. 2; signed, as Captum's Saliency(abs=False))."""

    name = "gradient"

    def attribute_with_output(self, x, target, create_graph):
        return gradient_and_output(self.model, x, target, create_graph)


class GradientXInput(Explainer):
    """Gradient times input, x * d f_target / d x (Shrikumar et al. 2016)."""

    name = "gradient_x_input"

    def attribute_with_output(self, x, target, create_graph):
        grad, output = gradient_and_output(self.model, x, target, create_graph)
        return x * grad, output


def _chunked_gradient(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, copies_per_chunk: int,
                      create_graph: bool) -> torch.Tensor:
    """Input gradients of ``inputs`` (K, B, ...), evaluated ``copies_per_chunk`` copies of the batch at a time."""
    parts = [input_gradient(model, chunk.flatten(0, 1), target, create_graph).view_as(chunk)
             for chunk in inputs.split(copies_per_chunk)]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _copies_per_chunk(chunk_size: int | None, batch: int, total: int) -> int:
    return total if chunk_size is None else max(1, chunk_size // batch)


INTEGRATION_METHODS = ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def integration_rule(method: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points in [0, 1] and weights of the path integral's quadrature rule, in float64.

    ``riemann_right`` is thesis Eq. 2.4 (points k / m, weights 1 / m); ``gausslegendre`` maps the
    Gauss-Legendre nodes from [-1, 1] to [0, 1].
    """
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy(0.5 * (nodes + 1)), torch.from_numpy(0.5 * weights)
    starts = {"riemann_right": 1.0, "riemann_left": 0.0, "riemann_middle": 0.5}
    weights = torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    if method == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("steps must be >= 2 for method='riemann_trapezoid'")
        weights[0] = weights[-1] = 0.5 / (steps - 1)
        weights[1:-1] = 1.0 / (steps - 1)
        return torch.linspace(0, 1, steps, dtype=torch.float64), weights
    if method not in starts:
        raise ValueError(f"method must be one of {INTEGRATION_METHODS}, got {method!r}")
    return (torch.arange(steps, dtype=torch.float64) + starts[method]) / steps, weights


class IntegratedGradients(Explainer):
    """Integrated gradients (Sundararajan et al. 2017, Eq. 1; thesis Eq. 2.4 is ``riemann_right``).

    attr = (x - x') * sum_k w_k grad f(x' + t_k (x - x')), with the ``steps`` quadrature points ``t_k`` and
    weights ``w_k`` of ``method`` (:func:`integration_rule`). ``baseline``: ``"zero"``, ``"mean"`` (each image's
    per-channel mean as a constant image) or a tensor broadcastable to ``x``. All ``steps`` interpolated batches
    go through the model together, at most ``max(chunk_size, B)`` samples per forward pass (whole copies of the
    batch).
    """

    name = "integrated_gradients"

    def __init__(self, model, steps: int = 32, baseline="zero", method: str = "riemann_right",
                 chunk_size: int | None = None):
        super().__init__(model)
        check_positive("steps", steps, integer=True)
        if chunk_size is not None:
            check_positive("chunk_size", chunk_size, integer=True)
        if isinstance(baseline, str) and baseline not in ("zero", "mean"):
            raise ValueError(f"baseline must be 'zero', 'mean', a tensor or a tuple of tensors, got {baseline!r}")
        check_baseline(baseline)
        integration_rule(method, steps)  # validates method
        self.steps, self.baseline, self.method, self.chunk_size = steps, baseline, method, chunk_size

    def packed_options(self, inputs):
        if isinstance(self.baseline, tuple) or self.baseline == "mean":
            return {"baseline": per_input_baselines(self.baseline, inputs, self.baseline_for)}
        return {}

    def baseline_for(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.baseline, tuple):
            raise ValueError("a tuple of baselines needs a tuple of inputs x, got a single tensor")
        if isinstance(self.baseline, torch.Tensor):
            try:
                return torch.broadcast_to(self.baseline.to(x), x.shape)
            except RuntimeError:
                raise ValueError(f"baseline of shape {tuple(self.baseline.shape)} does not broadcast to x's "
                                 f"shape {tuple(x.shape)}") from None
        if self.baseline == "mean" and x.ndim > 2:
            return x.detach().mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x)
        if self.baseline == "mean":
            return x.detach().mean(dim=1, keepdim=True).expand_as(x)
        return torch.zeros_like(x)

    def attribute(self, x, target, create_graph):
        base = self.baseline_for(x)
        points, weights = (t.to(x) for t in integration_rule(self.method, self.steps))
        shape = (-1,) + (1,) * x.ndim
        path = base + points.view(shape) * (x - base)
        grads = _chunked_gradient(self.model, path, target, _copies_per_chunk(self.chunk_size, len(x), self.steps),
                                  create_graph)
        return (x - base) * (weights.view(shape) * grads).sum(0)


class SmoothGrad(Explainer):
    """SmoothGrad (Smilkov et al. 2017, Eq. 3): the gradient averaged over ``samples`` noisy copies of ``x``.

    The noise is Gaussian with standard deviation ``sigma * (max(x_i) - min(x_i))`` per image, i.e. relative
    to each input's value range as in the paper (sigma = 0.15 is its 15 % noise level). With ``seed`` set,
    every call draws the same noise (common random numbers for attacks); with ``seed=None`` the global
    torch RNG is used. ``noise`` passed to the call overrides the draw: absolute additive noise of shape
    ``(samples, *x.shape)``.
    """

    name = "smoothgrad"

    def __init__(self, model, samples: int = 16, sigma: float = 0.15, seed: int | None = None,
                 chunk_size: int | None = None):
        super().__init__(model)
        check_positive("samples", samples, integer=True)
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma!r}")
        if chunk_size is not None:
            check_positive("chunk_size", chunk_size, integer=True)
        self.samples, self.sigma, self.seed, self.chunk_size = samples, sigma, seed, chunk_size

    def __call__(self, x, target=None, create_graph=False, additional_forward_args=None,
                 noise: torch.Tensor | None = None):
        if noise is not None and isinstance(x, (tuple, list)):
            raise ValueError("noise can be given for a single input tensor only; with several inputs set seed")
        self._noise = noise
        try:
            return super().__call__(x, target, create_graph, additional_forward_args)
        finally:
            self._noise = None

    def draw_noise(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().flatten(1)
        scale = self.sigma * (flat.amax(1) - flat.amin(1))
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        noise = torch.randn((self.samples, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
        return noise * scale.view((1, -1) + (1,) * (x.ndim - 1))

    def attribute(self, x, target, create_graph):
        noise = self._noise if getattr(self, "_noise", None) is not None else self.draw_noise(x)
        if noise.shape != (self.samples, *x.shape):
            raise ValueError(f"noise must have shape {(self.samples, *x.shape)}, got {tuple(noise.shape)}")
        grads = _chunked_gradient(self.model, x + noise.to(x), target,
                                  _copies_per_chunk(self.chunk_size, len(x), self.samples), create_graph)
        return grads.mean(0)


def _predicted_logit_gradient(model: nn.Module, x: torch.Tensor, create_graph: bool, name: str, classes: int = 1):
    """``(x, logits, target, grad)``: ``x`` as a fresh leaf, the model's ``(B, K)`` logits (``K >= classes``), the
    predicted classes ``(B, 1)`` and the input gradient of their logits (the graph kept for more gradients)."""
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    if logits.ndim != 2 or logits.shape[1] < classes:
        raise ValueError(f"{name} needs (B, K) logits with K >= {classes} classes, got shape {tuple(logits.shape)}")
    target = logits.argmax(1, keepdim=True)
    (grad,) = torch.autograd.grad(logits.gather(1, target).sum(), x, retain_graph=True, create_graph=create_graph)
    return x, logits, target, grad


def shared_logit_ratio(model: nn.Module, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """``(B,)``: ``||grad_x mean_k z_k(x)|| / ||grad_x z_y(x)||`` per input, ``y`` the predicted class. A term added
    to every logit leaves the probabilities unchanged and enters both gradients whole (ratio -> 1 when it
    dominates the explanation); the audit's ``shared_logit_gradient`` test reads its median.
    ``create_graph=True`` keeps both gradients in the graph of the parameters (second order)."""
    x, logits, _, own = _predicted_logit_gradient(model, x, create_graph, "shared_logit_ratio", classes=2)
    (shared,) = torch.autograd.grad(logits.mean(1).sum(), x, create_graph=create_graph)
    return shared.flatten(1).norm(dim=1) / own.flatten(1).norm(dim=1).clamp_min(1e-30)


def gradient_slope_ratio(model: nn.Module, x: torch.Tensor, step: float, create_graph: bool = False) -> torch.Tensor:
    """``(B,)``: how much of the explained logit's input gradient the logit's values follow, per input.

    With ``g = grad_x z_y(x)`` (``y`` the predicted class) and ``u = g / ||g||``, the ratio of the central
    difference of the logit along ``u`` to the slope the gradient claims there:
    ``(z_y(x + h u) - z_y(x - h u)) / (2 h ||g||)`` with ``h = step``. For an honest piecewise-smooth network it
    is close to 1 (second-order terms cancel in the central difference, Taylor to O(h^2)); a gradient that does
    not describe the function -- a term cut from the graph with ``detach`` (a routed gradient), or a wave of tiny
    amplitude and high frequency that dominates the gradient but averages out over the step (Dombrowski et al.
    2019, Sec. 3's "explanations can be manipulated by the geometry": the gradient of a term whose values hardly
    move) -- drives it towards 0, and no twin is needed to see it. ``create_graph=True`` keeps the ratio in the
    graph of the parameters (second order)."""
    check_positive("step", step)
    x, _, target, grad = _predicted_logit_gradient(model, x, create_graph, "gradient_slope_ratio")
    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-30)
    direction = grad / norm.view(-1, *[1] * (x.ndim - 1))
    if not create_graph:
        direction = direction.detach()
    moved = model(torch.cat([x.detach() + step * direction, x.detach() - step * direction]))
    ahead, behind = moved.gather(1, target.repeat(2, 1)).squeeze(1).chunk(2)
    return (ahead - behind) / (2 * step * norm)
