"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019), exactly differentiable.

Rules map the relevance at a module's output to the relevance at its input. Notation of Montavon et al.,
"Layer-wise relevance propagation: an overview" (2019, Sec. 10.2): input activations ``a_j``, weights
``w_jk``, relevance ``R_k`` of output ``k``, ``z_k`` the output the rule uses as denominator. Every rule is
"``s_k = R_k / z_k``, ``c_j = sum_k w'_jk s_k`` (a vector-Jacobian product), ``R_j = a'_j c_j``" for a
modified layer ``(a', w')``; the modified weights are computed from the *live* parameters
(``module.weight.clamp(min=0)``, never ``.data``), so a loss on the relevance back-propagates exactly to the
parameters and to the input (second order), unlike Zennit (rebuilds weights from ``param.data``) and Captum
(backward hooks, no usable graph).

Denominators are stabilised as Captum and Zennit do: ``z + eps * sign(z)`` with ``sign(0) = +1``.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from veneer.explain.base import Explainer
from veneer.explain.graph import (BATCH_NORMS, CONVOLUTIONS, KINDS, ROUTE_MODULES, Op, Record, Step, batch_norm_scale,
                                  describe, differentiable, live_ops, one_hot_like, record, stabilize, sweep, trace_graph,
                                  transpose, vjp, z_rule)

COMPOSITES = ("epsilon", "epsilon_plus", "epsilon_plus_flat", "alpha_beta")
LRP_KINDS = tuple(k for k in KINDS if k != "softmax")  # no relevance rule for a map coupling its inputs
STABILIZER = 1e-9  # denominators of the rules other than Epsilon (Captum's PropagationRule default)


class FoldedBatchNorm:
    """A Conv/Linear ``layer`` and the eval-mode batch norm ``norm`` that follows it, as one weighted layer (the
    batch-norm canonizer: Montavon et al. 2019, Sec. 10.3, and Zennit's ``MergeBatchNorm``):
    ``w' = w * gamma / sqrt(var + eps)`` and ``b' = (b - mean) * gamma / sqrt(var + eps) + beta`` per output
    channel. Computed from the live parameters, so LRP through it stays differentiable with respect to both
    modules' parameters."""

    def __init__(self, layer: nn.Module, norm: nn.Module):
        scale = batch_norm_scale(norm)
        self.layer = layer
        self.weight = layer.weight * scale.view(-1, *([1] * (layer.weight.ndim - 1)))
        bias = -norm.running_mean * scale if layer.bias is None else (layer.bias - norm.running_mean) * scale
        self.bias = bias if norm.bias is None else bias + norm.bias


def fold_batchnorm(ops: dict) -> dict:
    """``ops`` with every batch norm whose input is a Conv/Linear output used by nothing else merged into that
    layer (one weighted :class:`FoldedBatchNorm` op in the batch norm's place); other batch norms are kept."""
    users = Counter(source for op in ops.values() for source in op.sources)
    folded = {}
    for node, op in ops.items():
        layer_op = ops.get(op.sources[0]) if isinstance(op.module, BATCH_NORMS) else None
        if (layer_op is None or layer_op.kind != "weighted" or users[layer_op.node] != 1
                # a batch norm normalizes dim 1: a Linear's output features only when its output is (B, F)
                or (isinstance(layer_op.module, nn.Linear) and layer_op.output.ndim != 2)):
            folded[node] = op
            continue
        del folded[layer_op.node]
        folded[node] = Op(node, "weighted", FoldedBatchNorm(layer_op.module, op.module), layer_op.sources,
                          layer_op.inputs, op.output)
    return folded


def _layer(module) -> nn.Module:
    return module.layer if isinstance(module, FoldedBatchNorm) else module


def affine(module: nn.Module, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``module``'s map (Conv1d/2d/3d or Linear, same stride/padding/...) with the given weight and bias."""
    module = _layer(module)
    if isinstance(module, CONVOLUTIONS):
        return module._conv_forward(a, weight, bias)
    if isinstance(module, nn.Linear):
        return F.linear(a, weight, bias)
    raise TypeError(f"{type(module).__name__} has no weight-modified LRP rule")


class Rule:
    """Maps the relevance at ``step.output`` to the relevance at ``step.input``."""

    def __call__(self, step: Step, relevance: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class Epsilon(Rule):
    """LRP-epsilon (Montavon et al. 2019, Eq. 10.3; Bach et al. 2015, Eq. 58):
    ``R_j = sum_k a_j w_jk / (z_k + eps sign(z_k)) R_k`` with ``z_k = sum_j a_j w_jk + b_k`` the module's
    actual output; ``epsilon > 0`` is required (LRP-0, Eq. 10.1, divides 0 by 0 wherever an output is exactly
    0, e.g. after ReLU and pooling: use a tiny epsilon instead). Applies to any map that is linear in its input up to a
    bias: Conv2d, Linear, AvgPool2d, AdaptiveAvgPool2d, BatchNorm2d in eval mode (as Captum's EpsilonRule)."""

    def __init__(self, epsilon: float = 1e-6):
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0 (use a tiny value for LRP-0), got {epsilon!r}")
        self.epsilon = epsilon

    def __call__(self, step, relevance):
        s = relevance / stabilize(step.output, self.epsilon)
        return step.input * vjp(step.output, step.input, s)


class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015, Eq. 60; Montavon et al. 2019, Sec. 10.2.3):
    ``R_j = sum_k (alpha (a_j w_jk)^+ / sum_{0,j} (a_j w_jk)^+ - beta (a_j w_jk)^- / sum_{0,j} (a_j w_jk)^-) R_k``.

    Positive contributions are ``a+ w+`` and ``a- w-`` plus the positive part of the bias (the ``j = 0`` term),
    negative ones ``a+ w-`` and ``a- w+`` plus the negative part of the bias (as Zennit's AlphaBeta).
    Requires ``alpha - beta = 1`` (conservation) and ``beta >= 0``.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = STABILIZER):
        if not beta >= 0 or abs(alpha - beta - 1) > 1e-12:
            raise ValueError(f"alpha and beta must satisfy alpha - beta = 1 with beta >= 0, got alpha={alpha!r}, "
                             f"beta={beta!r}")
        self.alpha, self.beta, self.stabilizer = alpha, beta, stabilizer

    def __call__(self, step, relevance):
        module, a = step.module, step.input
        with torch.enable_grad():  # the modified forward is differentiated below
            a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
            w_pos, w_neg = module.weight.clamp(min=0), module.weight.clamp(max=0)
            b = module.bias
            b_pos, b_neg = (None, None) if b is None else (b.clamp(min=0), b.clamp(max=0))
            outputs = [affine(module, a_pos, w_pos, b_pos) + affine(module, a_neg, w_neg, None)]
            if self.beta:
                outputs.append(affine(module, a_pos, w_neg, b_neg) + affine(module, a_neg, w_pos, None))
        grads = [self.alpha * relevance / stabilize(outputs[0], self.stabilizer)]
        if self.beta:
            grads.append(-self.beta * relevance / stabilize(outputs[1], self.stabilizer))
        c_pos, c_neg = vjp(outputs, [a_pos, a_neg], grads)
        return a_pos * c_pos + a_neg * c_neg


class ZPlus(AlphaBeta):
    """LRP-z+ = LRP-alpha1-beta0 (Montavon et al. 2019, Sec. 10.2.3; the gamma -> infinity limit of LRP-gamma,
    Eq. 10.4): only positive contributions are propagated. On non-negative inputs and non-negative biases this
    is exactly Captum's ``Alpha1_Beta0_Rule`` (which clamps the weights but keeps the inputs' sign and the raw
    bias)."""

    def __init__(self, stabilizer: float = STABILIZER):
        super().__init__(1.0, 0.0, stabilizer)


class ZBox(Rule):
    """LRP-z^B for the first layer on bounded inputs ``low <= x <= high`` (Montavon et al. 2017 / 2019,
    Table 10.1): ``R_i = sum_j (x_i w_ij - l_i w_ij^+ - h_i w_ij^-) / sum_i (...) R_j``. Biases cancel
    (as in Zennit's ZBox). ``low``/``high`` are floats or tensors broadcastable to the layer's input."""

    def __init__(self, low, high, stabilizer: float = STABILIZER):
        self.low, self.high, self.stabilizer = low, high, stabilizer

    def bound(self, value, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(value).to(like).broadcast_to(like.shape).detach().requires_grad_(True)

    def __call__(self, step, relevance):
        module, x = step.module, step.input
        low, high = self.bound(self.low, x), self.bound(self.high, x)
        weight = module.weight
        with torch.enable_grad():  # the modified forward is differentiated below
            z = (affine(module, x, weight, None) - affine(module, low, weight.clamp(min=0), None)
                 - affine(module, high, weight.clamp(max=0), None))
        c_x, c_low, c_high = vjp(z, [x, low, high], relevance / stabilize(z, self.stabilizer))
        return x * c_x + low * c_low + high * c_high


class Flat(Rule):
    """LRP-flat: all weights 1, no bias, all inputs 1 -- a layer's relevance is spread uniformly over each
    output's receptive field (Lapuschkin et al. 2019; Zennit's Flat). Independent of the layer's parameters."""

    def __init__(self, stabilizer: float = STABILIZER):
        self.stabilizer = stabilizer

    def __call__(self, step, relevance):
        ones = torch.ones_like(step.input).requires_grad_(True)
        with torch.enable_grad():  # the modified forward is differentiated below
            z = affine(step.module, ones, torch.ones_like(step.module.weight), None)
        return vjp(z, ones, relevance / stabilize(z, self.stabilizer))


# shape-only steps a z^beta first layer may receive x through (the bounds are reshaped along)
RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, F.dropout}
RESHAPE_METHODS = {"flatten", "view", "reshape", "contiguous", "view_as", "reshape_as", "clone"}


def _is_reshape(op: Op) -> bool:
    if op.module is not None:
        return isinstance(op.module, ROUTE_MODULES)
    return op.node.target in RESHAPE_FUNCTIONS or op.node.target in RESHAPE_METHODS


def first_weighted(ops: dict) -> list:
    """The weighted ops (Conv, Linear) that no other weighted op precedes: the model's first layer(s)."""
    after, first = set(), []
    for node, op in ops.items():
        upstream = any(src in after for src in op.sources)
        if op.kind == "weighted" and not upstream:
            first.append(node)
        if op.kind == "weighted" or upstream:
            after.add(node)
    return first


class LRP(Explainer):
    """Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019) on any traceable model.

    The model's forward is traced with ``torch.fx`` (:mod:`veneer.explain.graph`), so residual connections,
    functional activations, pooling and reshapes, concatenation and splits are followed. The relevance starts
    as the target logit (one-hot times the output) and is propagated back, node by node, to the input; the
    result has ``x``'s shape. Rules per ``composite`` for the weighted layers (Conv1d/2d/3d, Linear):

    ======================= ====================== ======= ====================
    composite               Conv                   Linear  first Conv/Linear
    ======================= ====================== ======= ====================
    ``"epsilon"``           Epsilon                Epsilon (as the others)
    ``"epsilon_plus"``      ZPlus                  Epsilon (as the others)
    ``"epsilon_plus_flat"`` ZPlus                  Epsilon Flat
    ``"alpha_beta"``        AlphaBeta(alpha, beta) Epsilon (as the others)
    ======================= ====================== ======= ====================

    With ``low`` and ``high`` (floats or tensors broadcastable to ``x``, the input's bounds) the first weighted
    layer uses ZBox (z^beta) in any composite except ``"epsilon_plus_flat"`` (an error); that layer must
    receive ``x`` itself, up to flatten/view/reshape/Identity/Dropout. In every composite: max pooling is
    winner-take-all; batch norm (eval, its own element-wise affine rule as in Captum, unless folded), average
    pooling, ``mean``/``sum``, sums of tensors (residual connections) and scaling by constants use the z-rule
    with ``epsilon`` (Epsilon), so a sum's relevance is split in proportion to each summand's contribution;
    ReLU, Softplus, Sigmoid, Tanh pass relevance through; reshapes, permutations, ``cat``, ``chunk``/``split``,
    indexing, Dropout and Identity move it with the entries. ``epsilon`` is Epsilon's stabiliser (other rules
    use 1e-9 only against 0/0); ``alpha - beta = 1`` with ``beta >= 0`` is enforced.

    ``fold_batchnorm=True`` merges every batch norm that directly follows a Conv/Linear layer (whose output
    nothing else uses) into that layer, :class:`FoldedBatchNorm`, and applies the layer's rule to the merged
    layer -- the canonizer Montavon et al. (2019, Sec. 10.3) and Zennit use. Its relevance then no longer divides
    by the batch norm's own outputs, which can be near zero where its inputs are not; the other batch norms
    keep the z-rule.

    Compared with Captum's LRP: on chains, Epsilon and (on non-negative inputs with non-negative conv biases)
    ZPlus give the same relevance; max-pooling differs by Captum's stabiliser only. Captum passes relevance
    through a functional ``+`` unsplit (each summand gets all of it), so it is not conservative on residual
    networks; here the sum is split. With ``create_graph=True`` the result is exactly differentiable with
    respect to the parameters and ``x``.
    """

    name = "lrp"

    def __init__(self, model, composite: str = "epsilon", epsilon: float = 1e-6, alpha: float = 1.0,
                 beta: float = 0.0, low=None, high=None, fold_batchnorm: bool = False):
        super().__init__(model)
        if composite not in COMPOSITES:
            raise ValueError(f"composite must be one of {COMPOSITES}, got {composite!r}")
        if (low is None) != (high is None):
            raise ValueError("low and high must be given together (the input's bounds for the z^beta rule)")
        if low is not None and composite == "epsilon_plus_flat":
            raise ValueError("low/high (z^beta on the first layer) cannot be combined with composite="
                             "'epsilon_plus_flat', whose first layer is flat")
        for bound_name, bound in (("low", low), ("high", high)):
            if bound is not None and not isinstance(bound, (int, float, torch.Tensor)):
                raise TypeError(f"{bound_name} must be a float or a tensor, got {type(bound).__name__}")
        if composite == "alpha_beta":
            AlphaBeta(alpha, beta)  # validates alpha - beta = 1
        Epsilon(epsilon)  # validates epsilon
        self.composite, self.epsilon, self.alpha, self.beta, self.low, self.high = (
            composite, epsilon, alpha, beta, low, high)
        self.fold_batchnorm = bool(fold_batchnorm)

    def weighted_rules(self, rec: Record, ops: dict) -> dict:
        """The rule of each weighted op (Conv, Linear) under this composite, by node."""
        epsilon = Epsilon(self.epsilon)
        if self.composite == "epsilon":
            conv_rule = epsilon
        elif self.composite == "alpha_beta":
            conv_rule = AlphaBeta(self.alpha, self.beta)
        else:
            conv_rule = ZPlus()
        rules = {node: conv_rule if isinstance(_layer(op.module), CONVOLUTIONS) else epsilon
                 for node, op in ops.items() if op.kind == "weighted"}
        for node in first_weighted(ops):
            if self.low is not None:
                rules[node] = self._zbox(rec, ops, node)
            elif self.composite == "epsilon_plus_flat":
                rules[node] = Flat()
        return rules

    def _zbox(self, rec: Record, ops: dict, node) -> "ZBox":
        if len(rec.inputs) != 1:
            raise ValueError("low/high (z^beta) bound a single input; the model takes several")
        source = ops[node].sources[0]
        while source in ops and _is_reshape(ops[source]):
            source = ops[source].sources[0]
        if source is not rec.inputs[0]:
            raise ValueError(f"low/high (z^beta) bound x, but the first weighted layer {describe(node, self.model)} "
                             f"receives the output of {describe(source, self.model)}")
        x, layer_input = rec.values[rec.inputs[0]], ops[node].inputs[0]
        return ZBox(self._bound(self.low, x, layer_input), self._bound(self.high, x, layer_input))

    @staticmethod
    def _bound(value, x: torch.Tensor, layer_input: torch.Tensor) -> torch.Tensor:
        value = torch.as_tensor(value).to(x)
        try:
            value = torch.broadcast_to(value, x.shape)
        except RuntimeError:
            raise ValueError(f"low/high of shape {tuple(value.shape)} does not broadcast to x's shape "
                             f"{tuple(x.shape)}") from None
        return value.reshape(layer_input.shape)

    def attribute(self, x, target, create_graph):
        rec = record(self.model, trace_graph(self.model, "LRP"), (x,))
        ops = live_ops(self.model, rec, "LRP", supported=LRP_KINDS)
        if self.fold_batchnorm:
            ops = fold_batchnorm(ops)
        weighted = self.weighted_rules(rec, ops)

        def rule(op: Op, relevance):
            if op.kind == "weighted":
                return (weighted[op.node](op.step(), relevance),)
            if op.kind == "affine":
                return z_rule(op, relevance, self.epsilon)
            if op.kind == "pointwise":
                return (relevance,)
            return transpose(op, relevance)  # route; maxpool: winner takes all

        with differentiable(create_graph):
            (relevance,) = sweep(rec, ops, one_hot_like(rec.output, target) * rec.output, rule)
        return relevance if create_graph else relevance.detach()
