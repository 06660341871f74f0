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

Which rule each operation gets is data, not code: a :class:`Composite` maps module names, the first layer,
layer types (or predicates, or kinds) to :class:`Rule` objects, as Zennit's ``NameMapComposite`` and
``LayerMapComposite``; named composites (``"epsilon"``, ``"epsilon_plus"``, ...) are factories registered with
:func:`register_composite`. Layer types the graph does not know are declared with
:func:`veneer.explain.graph.register_layer`. docs/explain_graphs.md, "Extending LRP".
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from veneer.explain.base import Explainer, Packed
from veneer.explain.graph import (BATCH_NORMS, CONVOLUTIONS, KINDS, ROUTE_MODULES, WEIGHTED_MODULES, GraphError,
                                  LinearCall, Op, Record, Step, batch_norm_scale, describe, differentiable, live_ops,
                                  one_hot_like, record, stabilize, sweep, trace_graph, transpose, vjp, z_rule)

LRP_KINDS = KINDS  # softmax and bilinear ops have no default rule: a composite must give one ("attn_lrp")
STABILIZER = 1e-9  # default denominator stabiliser of the rules other than Epsilon (Captum's PropagationRule)


class FoldedBatchNorm:
    """A Conv/Linear ``layer`` and the eval-mode batch norm ``norm`` that follows it, as one weighted layer (the
    batch-norm canonizer: Montavon et al. 2019, Sec. 10.3, and Zennit's ``MergeBatchNorm``):
    ``w' = w * gamma / sqrt(var + eps)`` and ``b' = (b - mean) * gamma / sqrt(var + eps) + beta`` per output
    channel. Computed from the live parameters, so LRP through it stays differentiable with respect to both
    modules' parameters. ``layer_name`` is the layer's module name (what a composite's ``name_map`` matches)."""

    def __init__(self, layer: nn.Module, norm: nn.Module, layer_name: str | None = None):
        scale = batch_norm_scale(norm)
        self.layer, self.layer_name = layer, layer_name
        self.weight = layer.weight * scale.view(-1, *([1] * (layer.weight.ndim - 1)))
        bias = -norm.running_mean * scale if layer.bias is None else (layer.bias - norm.running_mean) * scale
        self.bias = bias if norm.bias is None else bias + norm.bias


def foldable(ops: dict) -> dict[fx.Node, fx.Node]:
    """Batch-norm node -> Conv/Linear node for every batch norm whose input is the output of a Conv/Linear op
    that nothing else uses (what :func:`fold_batchnorm` merges)."""
    users = Counter(source for op in ops.values() for source in op.sources)
    pairs = {}
    for node, op in ops.items():
        layer_op = ops.get(op.sources[0]) if isinstance(op.module, BATCH_NORMS) else None
        if (layer_op is not None and layer_op.kind == "weighted" and isinstance(layer_op.module, WEIGHTED_MODULES)
                and users[layer_op.node] == 1
                # a batch norm normalizes dim 1: a Linear's output features only when its output is (B, F)
                and not (isinstance(layer_op.module, nn.Linear) and layer_op.output.ndim != 2)):
            pairs[node] = layer_op.node
    return pairs


def fold_batchnorm(ops: dict) -> dict:
    """``ops`` with every batch norm whose input is a Conv/Linear output used by nothing else merged into that
    layer (one weighted :class:`FoldedBatchNorm` op in the batch norm's place); other batch norms are kept."""
    pairs = foldable(ops)
    folded = {}
    for node, op in ops.items():
        if node not in pairs:
            folded[node] = op
            continue
        layer_op = ops[pairs[node]]
        del folded[layer_op.node]
        folded[node] = Op(node, "weighted", FoldedBatchNorm(layer_op.module, op.module, layer_op.node.target),
                          layer_op.sources, layer_op.inputs, op.output)
    return folded


def _layer(module) -> nn.Module:
    return module.layer if isinstance(module, FoldedBatchNorm) else module


def weighted_forward(module, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A weighted layer's map (same stride/padding/...) on ``a`` with the given weight and bias (``None``: no
    bias): Conv1d/2d/3d and Linear call their functional form, a registered weighted layer type its own forward
    with ``weight`` and ``bias`` substituted (``torch.func.functional_call``; ``None`` as a zero bias)."""
    module = _layer(module)
    if isinstance(module, LinearCall):
        return module.forward(a, weight, bias)
    if isinstance(module, CONVOLUTIONS):
        return module._conv_forward(a, weight, bias)
    if isinstance(module, nn.Linear):
        return F.linear(a, weight, bias)
    parameters = {"weight": weight}
    if isinstance(getattr(module, "bias", None), torch.Tensor):
        parameters["bias"] = torch.zeros_like(module.bias) if bias is None else bias
    return functional_call(module, parameters, (a,))


def __getattr__(name: str):
    if name == "affine":  # renamed: "affine" is a kind of op in veneer.explain.graph
        warnings.warn("veneer.explain.lrp.affine is deprecated, use veneer.explain.lrp.weighted_forward",
                      DeprecationWarning, stacklevel=2)
        return weighted_forward
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ====================================================================== rules


def _check_stabilizer(stabilizer: float) -> float:
    if not (isinstance(stabilizer, (int, float)) and stabilizer > 0):
        raise ValueError(f"stabilizer must be a number > 0, got {stabilizer!r}")
    return stabilizer


class Rule:
    """A relevance rule: maps the relevance at an operation's output to the relevance at its input(s).

    The interface a user rule implements (``class Mine(Rule)``):

    * ``__call__(step, relevance) -> Tensor``: for an op with one live input; ``step`` is a
      :class:`~veneer.explain.graph.Step` with the ``module`` (``None`` for a function), its recorded ``input``
      and ``output`` (in the autograd graph) and ``relevance`` has ``step.output``'s shape; return the input's
      relevance (``step.input``'s shape). Compute it from the live tensors and parameters with differentiable
      torch operations; to differentiate a modified forward, build it under ``torch.enable_grad()`` and take the
      vector-Jacobian product with :func:`veneer.explain.graph.vjp` (it keeps the graph exactly when the caller
      asked for ``create_graph=True``). :func:`weighted_forward` runs a weighted layer with modified weights.
    * ``propagate(op, relevance) -> tuple``, optional: for ops with several live inputs (sums, ``cat``) or
      outputs (``chunk``: ``relevance`` is then a list, one entry per output, ``None`` where none arrived);
      returns one relevance per ``op.inputs``. The default calls ``__call__`` on ``op.step()``.
    * ``kinds``: the graph kinds (:data:`veneer.explain.graph.KINDS`) the rule applies to, ``None`` for any; a
      composite that maps an op of another kind to the rule is refused.
    """

    kinds: tuple[str, ...] | None = None

    def __call__(self, step: Step, relevance: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(step, relevance)")

    def propagate(self, op: Op, relevance) -> tuple[torch.Tensor, ...]:
        """One relevance per live input of ``op``; the default applies :meth:`__call__` to the op's one input."""
        if len(op.inputs) != 1:
            raise GraphError(f"{self!r} maps one input, but node '{op.node.name}' has {len(op.inputs)} live inputs; "
                             f"a rule for such ops overrides Rule.propagate")
        return (self(op.step(), relevance),)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class Epsilon(Rule):
    """LRP-epsilon (Montavon et al. 2019, Eq. 10.3; Bach et al. 2015, Eq. 58):
    ``R_j = sum_k a_j w_jk / (z_k + eps sign(z_k)) R_k`` with ``z_k = sum_j a_j w_jk + b_k`` the module's
    actual output; ``epsilon > 0`` is required (LRP-0, Eq. 10.1, divides 0 by 0 wherever an output is exactly
    0, e.g. after ReLU and pooling: use a tiny epsilon instead). Applies to any map that is affine in its live
    inputs: Conv, Linear, average pooling, batch norm in eval mode (as Captum's EpsilonRule), and sums, where the
    relevance is split in proportion to each summand's contribution (the z-rule,
    :func:`veneer.explain.graph.z_rule`)."""

    def __init__(self, epsilon: float = 1e-6):
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0 (use a tiny value for LRP-0), got {epsilon!r}")
        self.epsilon = epsilon

    def __call__(self, step, relevance):
        return z_rule(step, relevance, self.epsilon)[0]

    def propagate(self, op, relevance):
        return z_rule(op, relevance, self.epsilon)


class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015, Eq. 60; Montavon et al. 2019, Sec. 10.2.3):
    ``R_j = sum_k (alpha (a_j w_jk)^+ / sum_{0,j} (a_j w_jk)^+ - beta (a_j w_jk)^- / sum_{0,j} (a_j w_jk)^-) R_k``.

    Positive contributions are ``a+ w+`` and ``a- w-`` plus the positive part of the bias (the ``j = 0`` term),
    negative ones ``a+ w-`` and ``a- w+`` plus the negative part of the bias (as Zennit's AlphaBeta).
    Requires ``alpha - beta = 1`` (conservation) and ``beta >= 0``; ``stabilizer`` is added (times the sign) to
    both denominators.
    """

    kinds = ("weighted",)

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = STABILIZER):
        if not beta >= 0 or abs(alpha - beta - 1) > 1e-12:
            raise ValueError(f"alpha and beta must satisfy alpha - beta = 1 with beta >= 0, got alpha={alpha!r}, "
                             f"beta={beta!r}")
        self.alpha, self.beta, self.stabilizer = alpha, beta, _check_stabilizer(stabilizer)

    def __call__(self, step, relevance):
        module, a = step.module, step.input
        with torch.enable_grad():  # the modified forward is differentiated below
            a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
            w_pos, w_neg = module.weight.clamp(min=0), module.weight.clamp(max=0)
            b = module.bias
            b_pos, b_neg = (None, None) if b is None else (b.clamp(min=0), b.clamp(max=0))
            outputs = [weighted_forward(module, a_pos, w_pos, b_pos) + weighted_forward(module, a_neg, w_neg, None)]
            if self.beta:
                outputs.append(weighted_forward(module, a_pos, w_neg, b_neg)
                               + weighted_forward(module, a_neg, w_pos, None))
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


def _check_bound(name: str, value) -> None:
    if not isinstance(value, (int, float, torch.Tensor)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")


class ZBox(Rule):
    """LRP-z^B for the first layer on bounded inputs ``low <= x <= high`` (Montavon et al. 2017 / 2019,
    Table 10.1): ``R_i = sum_j (x_i w_ij - l_i w_ij^+ - h_i w_ij^-) / sum_i (...) R_j``. Biases cancel
    (as in Zennit's ZBox). ``low``/``high`` are floats or tensors broadcastable to the layer's input; as a
    composite's ``first`` rule they bound the explained input ``x`` instead (broadcastable to ``x``, reshaped
    with it to the layer's input, see :class:`LRP`)."""

    kinds = ("weighted",)

    def __init__(self, low, high, stabilizer: float = STABILIZER):
        _check_bound("low", low)
        _check_bound("high", high)
        self.low, self.high, self.stabilizer = low, high, _check_stabilizer(stabilizer)

    def bound(self, value, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(value).to(like).broadcast_to(like.shape).detach().requires_grad_(True)

    def __call__(self, step, relevance):
        module, x = step.module, step.input
        low, high = self.bound(self.low, x), self.bound(self.high, x)
        weight = module.weight
        with torch.enable_grad():  # the modified forward is differentiated below
            z = (weighted_forward(module, x, weight, None) - weighted_forward(module, low, weight.clamp(min=0), None)
                 - weighted_forward(module, high, weight.clamp(max=0), None))
        c_x, c_low, c_high = vjp(z, [x, low, high], relevance / stabilize(z, self.stabilizer))
        return x * c_x + low * c_low + high * c_high


class Flat(Rule):
    """LRP-flat: all weights 1, no bias, all inputs 1 -- a layer's relevance is spread uniformly over each
    output's receptive field (Lapuschkin et al. 2019; Zennit's Flat). Independent of the layer's parameters."""

    kinds = ("weighted",)

    def __init__(self, stabilizer: float = STABILIZER):
        self.stabilizer = _check_stabilizer(stabilizer)

    def __call__(self, step, relevance):
        ones = torch.ones_like(step.input).requires_grad_(True)
        with torch.enable_grad():  # the modified forward is differentiated below
            z = weighted_forward(step.module, ones, torch.ones_like(step.module.weight), None)
        return vjp(z, ones, relevance / stabilize(z, self.stabilizer))


class Pass(Rule):
    """The relevance passes through unchanged (``R_in = R_out``): the LRP rule of element-wise activations
    (Montavon et al. 2019, Sec. 10.2: a ReLU neuron's relevance is that of its input; Zennit's ``Pass``)."""

    def __call__(self, step, relevance):
        return relevance


class Transpose(Rule):
    """The relevance is moved with the entries, ``R_in = J^T R_out``: for maps that only move, select or copy
    entries (reshapes, ``cat``, ``chunk``, indexing) and for max pooling, where it is winner-take-all (each
    window's relevance goes to its maximum)."""

    def __call__(self, step, relevance):
        return transpose(step, relevance)[0]

    def propagate(self, op, relevance):
        return transpose(op, relevance)


def default_rules(epsilon: float) -> dict[str, Rule]:
    """The rule of each kind of op that a composite does not map: Epsilon (the z-rule) on weighted and affine
    ops, Pass on element-wise activations, Transpose on routing ops and max pooling."""
    return {"weighted": Epsilon(epsilon), "affine": Epsilon(epsilon), "pointwise": Pass(), "route": Transpose(),
            "maxpool": Transpose()}


# the kinds default_rules leaves out, and why
NO_DEFAULT = {"softmax": "a map coupling its inputs",
              "bilinear": "a product of two tensors that both depend on the input",
              "normalization": "a map coupling its inputs through their mean and variance"}

# ====================================================================== composites

LayerKey = type | tuple | str | Callable[[nn.Module], bool]


def _check_rule(where: str, rule) -> Rule:
    if not isinstance(rule, Rule):
        raise TypeError(f"{where} must be a veneer.explain.Rule (e.g. Epsilon(1e-6), ZPlus()), got {rule!r}")
    return rule


def _check_key(where: str, key) -> None:
    if isinstance(key, str):
        if key not in LRP_KINDS:
            raise ValueError(f"{where}: a kind must be one of {LRP_KINDS}, got {key!r}")
    elif isinstance(key, type) or (isinstance(key, tuple) and key):
        for cls in key if isinstance(key, tuple) else (key,):
            if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
                raise TypeError(f"{where}: a key must be an nn.Module subclass or a tuple of them, got {cls!r}")
    elif not callable(key):
        raise TypeError(f"{where}: a key must be an nn.Module subclass, a tuple of them, a kind name or a "
                        f"predicate callable(module) -> bool, got {key!r}")


def _matches(key, kind: str, module: nn.Module | None) -> bool:
    if isinstance(key, str):
        return key == kind
    if module is None:
        return False
    if isinstance(key, (type, tuple)):
        return isinstance(module, key)
    return bool(key(module))


class Composite:
    """Which LRP rule each operation gets (Zennit's ``NameMapComposite`` + ``LayerMapComposite`` with a special
    first layer). For an op, the first of these that applies decides:

    1. ``name_map``: ``{module name: rule}``, the module's name in ``model.named_modules()`` (a Conv/Linear
       merged with its batch norm by ``fold_batchnorm`` keeps the layer's name);
    2. ``first``: the rule of the first weighted layer(s), those no other weighted layer precedes;
    3. ``layer_map``: ``[(key, rule), ...]`` in order, the first matching entry; a key is an ``nn.Module``
       subclass or a tuple of them (``isinstance``; a folded layer is matched as its Conv/Linear), a predicate
       ``callable(module) -> bool``, or a kind name of :data:`veneer.explain.graph.KINDS` (``"pointwise"``:
       every op of that kind, functions such as ``F.relu`` included);
    4. ``preset``: the name of a registered composite (:data:`COMPOSITES`) built from the LRP options, whose
       name_map, first and layer_map come after this composite's (its ``first`` applies where this one has none);
    5. the default rule of the op's kind (:func:`default_rules`): Epsilon with LRP's ``epsilon`` on weighted
       and affine ops, Pass on activations, Transpose on routing ops and max pooling.

    ``Composite(layer_map=[((nn.Conv1d, nn.Conv2d, nn.Conv3d), ZPlus())], first=Flat())`` is the
    ``"epsilon_plus_flat"`` preset.
    """

    def __init__(self, layer_map: Sequence[tuple[LayerKey, Rule]] = (), first: Rule | None = None,
                 name_map: Mapping[str, Rule] | None = None, preset: str | None = None):
        entries = []
        for i, entry in enumerate(layer_map):
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise TypeError(f"layer_map[{i}] must be a (key, rule) pair, got {entry!r}")
            _check_key(f"layer_map[{i}]", entry[0])
            entries.append((entry[0], _check_rule(f"layer_map[{i}]'s rule", entry[1])))
        if name_map is not None and not isinstance(name_map, Mapping):
            raise TypeError(f"name_map must be a dict {{module name: rule}}, got {type(name_map).__name__}")
        names = {}
        for name, rule in (name_map or {}).items():
            if not isinstance(name, str):
                raise TypeError(f"name_map keys must be module names (str), got {name!r}")
            names[name] = _check_rule(f"name_map[{name!r}]", rule)
        if preset is not None and (not isinstance(preset, str) or preset not in _COMPOSITES):
            raise ValueError(f"preset must be None or a registered composite, one of {sorted(_COMPOSITES)}, "
                             f"got {preset!r}")
        self.layer_map = tuple(entries)
        self.first = None if first is None else _check_rule("first", first)
        self.name_map = MappingProxyType(names)
        self.preset = preset

    def over(self, base: "Composite") -> "Composite":
        """This composite's rules before ``base``'s: name maps merged (this one wins), this ``first`` or else
        ``base``'s, this layer map then ``base``'s; ``base``'s preset is kept."""
        return Composite([*self.layer_map, *base.layer_map], self.first if self.first is not None else base.first,
                         {**base.name_map, **self.name_map}, base.preset)

    def resolve(self, **options) -> "Composite":
        """The composite with its preset (recursively) expanded from the LRP ``options``: no preset left."""
        return self if self.preset is None else self.over(build_composite(self.preset, **options))

    def rule_for(self, kind: str, module: nn.Module | None, name: str | None, first: bool) -> tuple[Rule, str] | None:
        """``(rule, where it comes from)`` for an op of ``kind`` calling ``module`` named ``name``, ``first`` if it
        is a first weighted layer; None where nothing applies (the kind's default then)."""
        if name is not None and name in self.name_map:
            return self.name_map[name], f"name_map[{name!r}]"
        if first and self.first is not None:
            return self.first, "first"
        for i, (key, rule) in enumerate(self.layer_map):
            if _matches(key, kind, module):
                return rule, f"layer_map[{i}]"
        return None

    def __repr__(self) -> str:
        parts = [f"layer_map={list(self.layer_map)!r}"] if self.layer_map else []
        parts += [f"first={self.first!r}"] if self.first is not None else []
        parts += [f"name_map={dict(self.name_map)!r}"] if self.name_map else []
        parts += [f"preset={self.preset!r}"] if self.preset is not None else []
        return f"Composite({', '.join(parts)})"


CompositeFactory = Callable[..., Composite]
_COMPOSITES: dict[str, CompositeFactory] = {}
# the registered composites by name (read-only; register_composite adds to it)
COMPOSITES: Mapping[str, CompositeFactory] = MappingProxyType(_COMPOSITES)


def register_composite(name: str, factory: CompositeFactory) -> None:
    """Make ``LRP(model, composite=name)`` (and ``make_explainer("lrp", model, composite=name)``) build its
    composite with ``factory(epsilon=..., alpha=..., beta=..., stabilizer=...)`` from LRP's options, returning a
    :class:`Composite` (accept ``**options`` to ignore the ones not used). A registered name is refused
    (:func:`unregister_composite` first)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable(**options) -> Composite, got {factory!r}")
    if name in _COMPOSITES:
        raise ValueError(f"composite {name!r} is already registered; unregister_composite({name!r}) first")
    _COMPOSITES[name] = factory


def unregister_composite(name: str) -> None:
    """Undo :func:`register_composite`; the built-in presets cannot be removed."""
    if name in BUILT_IN_COMPOSITES:
        raise ValueError(f"the built-in composite {name!r} cannot be unregistered")
    if name not in _COMPOSITES:
        raise KeyError(f"composite {name!r} is not registered")
    del _COMPOSITES[name]


def build_composite(name, **options) -> Composite:
    """The registered composite ``name`` built from LRP's ``options`` (its preset expanded)."""
    if name not in _COMPOSITES:
        raise ValueError(f"composite must be one of the registered names {sorted(_COMPOSITES)} or a Composite, "
                         f"got {name!r}")
    composite = _COMPOSITES[name](**options)
    if not isinstance(composite, Composite):
        raise TypeError(f"the factory of composite {name!r} must return a Composite, got "
                        f"{type(composite).__name__}")
    return composite.resolve(**options)


def _epsilon(*, epsilon, alpha, beta, stabilizer) -> Composite:
    return Composite()  # Epsilon everywhere: the kinds' defaults


def _epsilon_plus(*, epsilon, alpha, beta, stabilizer) -> Composite:
    return Composite([(CONVOLUTIONS, ZPlus(stabilizer))])


def _epsilon_plus_flat(*, epsilon, alpha, beta, stabilizer) -> Composite:
    return Composite([(CONVOLUTIONS, ZPlus(stabilizer))], first=Flat(stabilizer))


def _alpha_beta(*, epsilon, alpha, beta, stabilizer) -> Composite:
    return Composite([(CONVOLUTIONS, AlphaBeta(alpha, beta, stabilizer))])


BUILT_IN_COMPOSITES = MappingProxyType({"epsilon": _epsilon, "epsilon_plus": _epsilon_plus,
                                        "epsilon_plus_flat": _epsilon_plus_flat, "alpha_beta": _alpha_beta})
_COMPOSITES.update(BUILT_IN_COMPOSITES)


# ====================================================================== the explainer

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


# rules whose maps on an unfolded batch-norm network are far from canonical LRP (the BN keeps the z-rule)
FOLD_ADVISED = (AlphaBeta, Flat)


class LRP(Explainer):
    """Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019) on any traceable model.

    The model's forward is traced with ``torch.fx`` (:mod:`veneer.explain.graph`), so residual connections,
    functional activations, pooling and reshapes, concatenation and splits are followed. The relevance starts
    as the target logit (one-hot times the output) and is propagated back, node by node, to the input; the
    result has ``x``'s shape. ``composite`` says which rule each op gets: a :class:`Composite`, or the name of a
    registered one (:data:`COMPOSITES`, :func:`register_composite`); the presets' rules for the weighted layers
    (Conv1d/2d/3d, Linear):

    ======================= ====================== ======= ====================
    composite               Conv                   Linear  first Conv/Linear
    ======================= ====================== ======= ====================
    ``"epsilon"``           Epsilon                Epsilon (as the others)
    ``"epsilon_plus"``      ZPlus                  Epsilon (as the others)
    ``"epsilon_plus_flat"`` ZPlus                  Epsilon Flat
    ``"alpha_beta"``        AlphaBeta(alpha, beta) Epsilon (as the others)
    ======================= ====================== ======= ====================

    With ``low`` and ``high`` (floats or tensors broadcastable to ``x``, the input's bounds) the first weighted
    layer uses ZBox (z^beta) in any composite without a ``first`` rule (``"epsilon_plus_flat"`` has one: an
    error); that layer must receive ``x`` itself, up to flatten/view/reshape/Identity/Dropout (as for a ZBox
    given as a composite's ``first``). Unless the composite says otherwise: max pooling is winner-take-all;
    batch norm (eval, its own element-wise affine rule as in Captum, unless folded), average pooling,
    ``mean``/``sum``, sums of tensors (residual connections) and scaling by constants use the z-rule with
    ``epsilon`` (Epsilon), so a sum's relevance is split in proportion to each summand's contribution; ReLU,
    Softplus, Sigmoid, Tanh pass relevance through; reshapes, permutations, ``cat``, ``chunk``/``split``,
    indexing, Dropout and Identity move it with the entries. ``epsilon`` is Epsilon's stabiliser, ``stabilizer``
    that of the z+, alpha-beta, flat and z^beta denominators (only against 0/0; Zennit uses 1e-6);
    ``alpha - beta = 1`` with ``beta >= 0`` is enforced.

    ``fold_batchnorm=True`` merges every batch norm that directly follows a Conv/Linear layer (whose output
    nothing else uses) into that layer, :class:`FoldedBatchNorm`, and applies the layer's rule to the merged
    layer -- the canonizer Montavon et al. (2019, Sec. 10.3) and Zennit use. Its relevance then no longer divides
    by the batch norm's own outputs, which can be near zero where its inputs are not; the other batch norms
    keep the z-rule. Without it, a z+, alpha-beta or flat rule on a layer followed by a batch norm is far from
    canonical LRP: a ``UserWarning`` says so, once per explainer.

    Compared with Captum's LRP: on chains, Epsilon and (on non-negative inputs with non-negative conv biases)
    ZPlus give the same relevance; max-pooling differs by Captum's stabiliser only. Captum passes relevance
    through a functional ``+`` unsplit (each summand gets all of it), so it is not conservative on residual
    networks; here the sum is split. With ``create_graph=True`` the result is exactly differentiable with
    respect to the parameters and ``x``.
    """

    name = "lrp"

    def __init__(self, model, composite: str | Composite = "epsilon", epsilon: float = 1e-6, alpha: float = 1.0,
                 beta: float = 0.0, low=None, high=None, fold_batchnorm: bool = False,
                 stabilizer: float = STABILIZER):
        super().__init__(model)
        if (low is None) != (high is None):
            raise ValueError("low and high must be given together (the input's bounds for the z^beta rule)")
        defaults = default_rules(epsilon)  # validates epsilon
        options = {"epsilon": epsilon, "alpha": alpha, "beta": beta, "stabilizer": _check_stabilizer(stabilizer)}
        if isinstance(composite, Composite):
            rules = composite.resolve(**options)
        elif isinstance(composite, str):
            rules = build_composite(composite, **options)
        else:
            raise TypeError(f"composite must be one of the registered names {sorted(_COMPOSITES)} or a Composite, "
                            f"got {type(composite).__name__}")
        if low is not None:
            if rules.first is not None:
                raise ValueError(f"low/high (z^beta on the first layer) cannot be combined with composite="
                                 f"{composite!r}, whose first layer is {rules.first!r}")
            rules = Composite(first=ZBox(low, high, stabilizer)).over(rules)
        for name in rules.name_map:
            try:
                model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"composite's name_map names module {name!r}, which the model does not "
                                 f"have") from None
        self.composite, self.epsilon, self.alpha, self.beta, self.low, self.high = (
            composite, epsilon, alpha, beta, low, high)
        self.fold_batchnorm, self.stabilizer = bool(fold_batchnorm), stabilizer
        self._rules, self._defaults, self._warned_batchnorm = rules, defaults, False

    def _module_name(self, op: Op) -> str | None:
        """The op's module name in the user's model (None for a function)."""
        if isinstance(op.module, FoldedBatchNorm):
            name = op.module.layer_name
        elif op.node.op == "call_module":
            name = op.node.target
        else:
            return None
        return name.removeprefix("model.") if isinstance(self.model, Packed) else name

    def rules(self, rec: Record, ops: dict) -> dict:
        """The rule of each op (by node) under this composite."""
        first = set(first_weighted(ops))
        rules = {}
        for node, op in ops.items():
            if op.kind == "select":
                continue
            found = self._rules.rule_for(op.kind, _layer(op.module), self._module_name(op), node in first)
            if found is None:
                if op.kind not in self._defaults:
                    raise GraphError(f"LRP has no rule for {describe(node, self.model)}, a {op.kind!r} op ("
                                     f"{NO_DEFAULT[op.kind]}); use composite='attn_lrp' (Achtibat et al. 2024) or "
                                     f"give the composite a rule for it, e.g. Composite([({op.kind!r}, rule)])")
                rules[node] = self._defaults[op.kind]
                continue
            rule, where = found
            if rule.kinds is not None and op.kind not in rule.kinds:
                raise GraphError(f"the composite's {where} gives {describe(node, self.model)}, a {op.kind!r} op, the "
                                 f"rule {rule!r}, which applies to {rule.kinds} ops only")
            rules[node] = self._zbox(rec, ops, node, rule) if where == "first" and isinstance(rule, ZBox) else rule
        return rules

    def weighted_rules(self, rec: Record, ops: dict) -> dict:
        """Deprecated: the rules of the weighted ops only; use :meth:`rules`."""
        warnings.warn("LRP.weighted_rules is deprecated, use LRP.rules (every op's rule)", DeprecationWarning,
                      stacklevel=2)
        return {node: rule for node, rule in self.rules(rec, ops).items() if ops[node].kind == "weighted"}

    def _zbox(self, rec: Record, ops: dict, node, rule: ZBox) -> ZBox:
        """``rule`` with its bounds of ``x`` reshaped to the input of the first weighted layer ``node``."""
        if len(rec.inputs) != 1:
            raise ValueError("low/high (z^beta) bound a single input; the model takes several")
        source = ops[node].sources[0]
        while source in ops and _is_reshape(ops[source]):
            source = ops[source].sources[0]
        if source is not rec.inputs[0]:
            raise ValueError(f"low/high (z^beta) bound x, but the first weighted layer {describe(node, self.model)} "
                             f"receives the output of {describe(source, self.model)}")
        x, layer_input = rec.values[rec.inputs[0]], ops[node].inputs[0]
        bound = copy.copy(rule)
        bound.low, bound.high = self._bound(rule.low, x, layer_input), self._bound(rule.high, x, layer_input)
        return bound

    @staticmethod
    def _bound(value, x: torch.Tensor, layer_input: torch.Tensor) -> torch.Tensor:
        value = torch.as_tensor(value).to(x)
        try:
            value = torch.broadcast_to(value, x.shape)
        except RuntimeError:
            raise ValueError(f"low/high of shape {tuple(value.shape)} does not broadcast to x's shape "
                             f"{tuple(x.shape)}") from None
        return value.reshape(layer_input.shape)

    def _warn_unfolded(self, ops: dict, rules: dict) -> None:
        """Warn (once per explainer) where a z+/alpha-beta/flat layer is followed by a batch norm left unfolded."""
        advised = [(norm, layer) for norm, layer in foldable(ops).items() if isinstance(rules[layer], FOLD_ADVISED)]
        if advised:
            self._warned_batchnorm = True
            norm, layer = advised[0]
            more = f" (and {len(advised) - 1} more such layers)" if len(advised) > 1 else ""
            warnings.warn(f"LRP applies {rules[layer]!r} to {describe(layer, self.model)}, followed by batch norm "
                          f"{describe(norm, self.model)}{more}, with fold_batchnorm=False: the batch norm keeps its "
                          f"own z-rule, which makes z+/alpha-beta/flat maps far from canonical LRP; pass "
                          f"fold_batchnorm=True to merge each batch norm into the layer before it (Montavon et al. "
                          f"2019, Sec. 10.3)", UserWarning, stacklevel=6)

    def attribute(self, x, target, create_graph):
        rec = record(self.model, trace_graph(self.model, "LRP"), (x,))
        ops = live_ops(self.model, rec, "LRP", supported=LRP_KINDS)
        if self.fold_batchnorm:
            ops = fold_batchnorm(ops)
        rules = self.rules(rec, ops)
        if not self.fold_batchnorm and not self._warned_batchnorm:
            self._warn_unfolded(ops, rules)

        def propagate(op: Op, relevance):
            return rules[op.node].propagate(op, relevance)

        with differentiable(create_graph):
            (relevance,) = sweep(rec, ops, one_hot_like(rec.output, target) * rec.output, propagate)
        return relevance if create_graph else relevance.detach()
