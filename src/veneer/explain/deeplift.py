"""DeepLift with the Rescale rule (Shrikumar et al. 2017), exactly differentiable.

Multipliers ``m = d_delta(f_target) / d_delta(a)`` flow from the output to the input (Sec. 3.3, the chain rule
for multipliers, Eq. 3); the attribution is ``(x - x0) * m`` at the input (summation-to-delta, Eq. 1).
Linear-type modules pass multipliers through their transposed Jacobian (Sec. 3.5.1, the Linear rule);
element-wise nonlinearities use the Rescale rule (Sec. 3.5.2), ``m_in = m_out * delta_y / delta_x``.
"""

from __future__ import annotations

import math

import torch

from veneer.explain.base import Explainer, Packed, check_baseline, per_input_baselines
from veneer.explain.graph import (Op, Step, differentiable, live_ops, one_hot_like, record, softmax_dim, sweep,
                                  trace_graph, transpose, vjp)

RESCALE_EPS = 1e-10  # below this |x - x0| the local derivative replaces delta_y / delta_x (as Captum)


def _safe_ratio(numerator: torch.Tensor, delta_in: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
    return numerator / torch.where(small, 1.0, delta_in)


def rescale(step: Step, ref: Step, multiplier: torch.Tensor) -> torch.Tensor:
    """Rescale rule (Shrikumar et al. 2017, Sec. 3.5.2): ``m_in = m_out (f(x) - f(x0)) / (x - x0)``, and the
    local derivative ``f'(x) m_out`` where ``|x - x0| < 1e-10`` (Captum's ``nonlinear``)."""
    delta_in = step.input - ref.input
    small = delta_in.abs() < RESCALE_EPS
    result = _safe_ratio(multiplier * (step.output - ref.output), delta_in, small)
    if small.any():
        result = torch.where(small, vjp(step.output, step.input, multiplier), result)
    return result


def maxpool(step: Step, ref: Step, multiplier: torch.Tensor) -> torch.Tensor:
    """Captum's DeepLift max-pooling rule. With ``m = max(y, y0)`` the cross-maximum of the pooled outputs,
    ``g (m - y0)`` is routed to the maxima of ``x`` and ``g (y - m)`` to the maxima of ``x0``; the sum divided by
    ``x - x0`` is the multiplier (so contributions per window sum to ``g (y - y0)``), and the ordinary
    gradient is used where ``|x - x0| < 1e-10``."""
    cross = torch.maximum(step.output, ref.output)
    routed = (vjp(step.output, step.input, multiplier * (cross - ref.output))
              + vjp(ref.output, ref.input, multiplier * (step.output - cross)))
    delta_in = step.input - ref.input
    small = delta_in.abs() < RESCALE_EPS
    result = _safe_ratio(routed, delta_in, small)
    if small.any():
        result = torch.where(small, vjp(step.output, step.input, multiplier), result)
    return result


def softmax(step: Step, ref: Step, multiplier: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax rule: the Rescale rule element-wise, then the mean along the softmax's ``dim`` subtracted from
    the multipliers (Shrikumar et al. 2017, Sec. 3.6: softmax ignores a constant added along ``dim``, so that
    component is removed). This is Captum's ``softmax`` rule per sample: Captum subtracts the mean over the whole
    batch, so a sample's attribution there depends on the other samples it is batched with."""
    result = rescale(step, ref, multiplier)
    return result - result.mean(dim, keepdim=True)


def bilinear(op: Op, ref: Op, multiplier: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A product of two input-dependent tensors ``f(u, v)`` (``q @ k.T``, attention times values), bilinear:
    ``f(u, v) - f(u0, v0) = J_u f(., (v + v0) / 2) (u - u0) + J_v f((u + u0) / 2, .) (v - v0)`` exactly, the
    Shapley split of a product between its two factors (each gets the change times the mean of the other; the
    symmetric choice Shrikumar et al. 2017, Sec. 3.6, leave open for multiplicative interactions). As ``J_u`` is
    linear in ``v``, each multiplier is the mean of the transposed Jacobians at the input and at the reference,
    so summation-to-delta stays exact."""
    return tuple((a + b) / 2 for a, b in zip(transpose(op, multiplier), transpose(ref, multiplier)))


def layer_norm(step: Step, ref: Step, multiplier: torch.Tensor) -> torch.Tensor:
    """LayerNorm ``y = gamma * c * r + beta`` with ``c = x - mean(x)`` (linear) and ``r = g(q) = q^(-1/2)``,
    ``q = mean(c^2) + eps``, over the normalized dims, split exactly into DeepLift's own rules: the Linear rule
    for ``c``, the Shapley split of the products ``c * r`` and ``c * c`` (:func:`bilinear`: each factor's
    change times the mean of the other) and the Rescale rule for the scalar ``g`` (Shrikumar et al. 2017,
    Sec. 3.5.2). So ``y - y0 = gamma (r_mean dc + c_mean dr)``, ``dr = rho dq``, ``dq = 2 mean(c_mean dc)`` with
    ``rho = (r - r0) / (q - q0)`` (``g'(q)`` where ``|q - q0| < 1e-10``), and summation-to-delta stays exact."""
    module = step.module
    dims = tuple(range(-len(module.normalized_shape), 0))
    count = math.prod(module.normalized_shape)

    def parts(x):
        c = x - x.mean(dims, keepdim=True)
        q = c.square().mean(dims, keepdim=True) + module.eps
        return c, q, q.rsqrt()

    (c, q, r), (c0, q0, r0) = parts(step.input), parts(ref.input)
    delta_q = q - q0
    small = delta_q.abs() < RESCALE_EPS
    rho = torch.where(small, -0.5 * q.pow(-1.5), _safe_ratio(r - r0, delta_q, small))
    scaled = multiplier if module.weight is None else multiplier * module.weight
    c_mean = (c + c0) / 2
    m_c = (r + r0) / 2 * scaled + rho * (2 / count) * c_mean * (c_mean * scaled).sum(dims, keepdim=True)
    return m_c - m_c.mean(dims, keepdim=True)  # the centring's transposed Jacobian


class DeepLift(Explainer):
    """DeepLift, Rescale rule (Shrikumar et al. 2017, Sec. 3.5.2), on any traceable model; ``(x - x0) * m``.

    ``baseline``: ``"zero"`` or a tensor broadcastable to ``x``. The model's forward is traced with
    ``torch.fx`` (:mod:`veneer.explain.graph`) and run once on ``x`` and once on the baseline; multipliers flow
    backward through every linear map -- convolutions, linear layers, batch norm (eval), average pooling,
    sums (residual connections), scaling by constants, ``mean``, reshapes, permutations, ``cat``,
    ``chunk``/``split``, indexing, Dropout, Identity -- by its transposed Jacobian (the Linear rule, Sec. 3.5.1;
    at a sum every summand receives the multiplier), through ReLU, Softplus, Sigmoid and Tanh (modules or
    functions) by the Rescale rule, through max pooling by Captum's cross-maximum rule and through softmax by
    the mean-subtracted Rescale rule (:func:`softmax`); layer types and functions declared with
    :func:`~veneer.explain.graph.register_layer` / ``register_function`` take the rule of their kind. Without a
    softmax the result sums to ``f_target(x) - f_target(x0)``. It equals Captum's DeepLift wherever Captum
    applies the Rescale rule (its hooks see activation *modules* only: it differentiates functional ``F.relu``
    plainly), and through a softmax equals Captum's run on one sample at a time (Captum's softmax rule couples
    the samples of a batch). With ``create_graph=True`` it is exactly differentiable with respect to the
    parameters and ``x``.
    """

    name = "deeplift"

    def __init__(self, model, baseline="zero"):
        super().__init__(model)
        if isinstance(baseline, str) and baseline != "zero":
            raise ValueError(f"baseline must be 'zero', a tensor or a tuple of tensors, got {baseline!r}")
        check_baseline(baseline)
        self.baseline = baseline

    def packed_options(self, inputs):
        if isinstance(self.baseline, tuple):
            return {"baseline": per_input_baselines(self.baseline, inputs, self.baseline_for)}
        return {}

    def baseline_for(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.baseline, tuple):
            raise ValueError("a tuple of baselines needs a tuple of inputs x, got a single tensor")
        if isinstance(self.baseline, str):
            return torch.zeros_like(x)
        try:
            return torch.broadcast_to(self.baseline.to(x), x.shape)
        except RuntimeError:
            raise ValueError(f"baseline of shape {tuple(self.baseline.shape)} does not broadcast to x's shape "
                             f"{tuple(x.shape)}") from None

    def reference_input(self, x: torch.Tensor, routes: bool) -> torch.Tensor:
        """The baseline for the reference pass: one row, broadcast by the rules, when every sample has the same
        baseline (``"zero"``, or a tensor without a batch of its own), no max pooling ``routes`` through it and no
        per-sample extra argument is tiled with the inputs -- the reference activations are then the same for
        every sample and are computed once instead of ``B`` times."""
        baseline = self.baseline_for(x)
        shared = isinstance(self.baseline, str) or baseline.stride(0) == 0
        tiled = isinstance(self.model, Packed) and any(self.model.tiled)
        return baseline[:1] if shared and not routes and not tiled else baseline

    def attribute(self, x, target, create_graph):
        graph = trace_graph(self.model, "DeepLift")
        rec = record(self.model, graph, (x,))
        ops = live_ops(self.model, rec, "DeepLift")
        # the baseline's activations enter the multipliers as values; they need a graph only to differentiate
        # the map (they depend on the parameters) and for the max-pooling and bilinear rules (they route
        # through the baseline)
        routes = any(op.kind in ("maxpool", "bilinear") for op in ops.values())
        graph_needed = create_graph or routes
        ref = record(self.model, graph, (self.reference_input(x, routes),), grad=graph_needed)
        ref_ops = live_ops(self.model, ref, "DeepLift")

        def propagate(op: Op, multiplier):
            if op.kind == "pointwise":
                return (rescale(op.step(), ref_ops[op.node].step(), multiplier),)
            if op.kind == "maxpool":
                return (maxpool(op.step(), ref_ops[op.node].step(), multiplier),)
            if op.kind == "softmax":
                return (softmax(op.step(), ref_ops[op.node].step(), multiplier, softmax_dim(op.node, op.module)),)
            if op.kind == "normalization":
                return (layer_norm(op.step(), ref_ops[op.node].step(), multiplier),)
            if op.kind == "bilinear":
                return bilinear(op, ref_ops[op.node], multiplier)
            return transpose(op, multiplier)  # the Linear rule

        with differentiable(create_graph):
            (multiplier,) = sweep(rec, ops, one_hot_like(rec.output, target), propagate)
        attribution = (rec.values[rec.inputs[0]] - ref.values[ref.inputs[0]]) * multiplier
        return attribution if create_graph else attribution.detach()
