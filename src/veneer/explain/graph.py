"""The mechanism LRP and DeepLift share: trace the model's forward with ``torch.fx`` once, record one run of the
graph, then sweep a signal (relevance for LRP, multipliers for DeepLift) from the output back to the inputs.

:func:`trace_graph` traces ``model.forward`` symbolically (``torch.fx``; modules of ``torch.nn`` and registered
layer types are leaves, user modules are traced through) and caches the graph per model. :func:`record` runs
that graph on concrete inputs, calling the model's *live* submodules, and keeps every node's value in the
autograd graph, so everything computed from it later is differentiable with respect to the inputs and to the
parameters. In-place operations (``nn.ReLU(inplace=True)``, ``F.relu(..., inplace=True)``, ``x.relu_()``,
``out += x``) are run out of place, since they would overwrite recorded values.

Every node whose value depends on an attributed input (a *live* node) is classified into one of eight kinds
(:data:`KINDS`); each method has one rule per kind:

``weighted``  Conv1d/2d/3d and Linear modules: a layer with a ``weight`` (and optional ``bias``) whose output
              is linear in its input up to the bias; and linear functions with one live operand and one other
              tensor, its weight (``x @ W``, ``torch.matmul``/``mm``/``bmm``, ``F.linear``, ``torch.einsum``:
              :class:`LinearCall`). LRP applies its composite's rule (z+, alpha-beta, ...), which re-runs the
              layer's forward with modified weights; DeepLift uses the transposed Jacobian.
``affine``    maps that are affine in their live input(s): batch norm (eval), average and adaptive average
              pooling (modules and functions), ``+``/``-`` between tensors or with constants (residual sums),
              multiplication/division by a constant, ``neg``, ``mean``/``sum`` over dimensions. LRP applies the
              z-rule to them (Montavon et al. 2019, Eq. 10.3, with ``epsilon``): a sum's relevance is split in
              proportion to each summand's contribution ``a_i / z``; a constant term acts as a bias.
``route``     maps that only move, select or copy entries: flatten/view/reshape/permute/transpose/squeeze/
              unsqueeze/contiguous, ``cat``, ``chunk``/``split`` and indexing, Flatten/Identity/Dropout (eval).
              The signal is moved with them (their transposed Jacobian).
``maxpool``   max pooling (modules and ``F.max_pool*d``): winner-take-all for LRP, Captum's rule for DeepLift.
``pointwise`` element-wise activations (ReLU, Softplus, Sigmoid, Tanh, GELU; modules, functions and methods): LRP
              passes the relevance through unchanged, DeepLift applies the Rescale rule.
``softmax``   ``nn.Softmax``, ``F.softmax``/``torch.softmax`` and ``.softmax()`` with an explicit ``dim``: DeepLift's
              softmax rule; LRP has no default rule (a map that couples its inputs): a composite gives one
              (``"attn_lrp"``, :mod:`veneer.explain.transformer`), else it is refused with its name.
``bilinear``  the linear functions above with two live operands (``q @ k.transpose(-2, -1)``, ``attention @ v``):
              DeepLift splits the product between its factors (:func:`veneer.explain.deeplift.bilinear`); LRP as
              for ``softmax``.
``normalization`` ``nn.LayerNorm``: DeepLift's :func:`veneer.explain.deeplift.layer_norm`; LRP as for ``softmax``.

Other layer types and functions are declared with :func:`register_layer` (``register_layer(nn.LeakyReLU,
"pointwise")``) and :func:`register_function` (``register_function(F.leaky_relu, "pointwise")``), for any kind
but ``softmax``, ``bilinear`` and ``normalization`` (:data:`REGISTERABLE_KINDS`); registrations are looked up
before the built-in lists and hold for LRP and DeepLift alike (:func:`unregister_layer` /
:func:`unregister_function` undo them). A registered ``weighted`` type must have a ``weight`` tensor and compute
``f(x; weight, bias)``, linear in ``x`` up to the bias, with ``weight``'s first dimension indexing the output
channels or features.

Anything else that depends on an input (an element-wise product or a quotient of two input-dependent tensors,
an unknown module or function) raises a :class:`GraphError` (a ``ValueError``) that names the operation and the
module it is called in, and how to declare it, before any relevance is propagated; a model that ``torch.fx``
cannot trace (data-dependent control flow) raises one that names the module being traced.
"""

from __future__ import annotations

import contextvars
import inspect
import operator
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from veneer.checks import check_not_torchscript


CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
WEIGHTED_MODULES = CONVOLUTIONS + (nn.Linear,)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
AFFINE_MODULES = BATCH_NORMS + (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                                 nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
ROUTE_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
MAXPOOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                   nn.AdaptiveMaxPool3d)
POINTWISE_MODULES = (nn.ReLU, nn.Softplus, nn.Sigmoid, nn.Tanh, nn.GELU)
SOFTMAX_MODULES = (nn.Softmax,)
NORMALIZATION_MODULES = (nn.LayerNorm,)

SUM_FUNCTIONS = {operator.add, operator.sub, operator.neg, torch.add, torch.sub, torch.neg, torch.mean,
                 torch.sum}
SCALE_FUNCTIONS = {operator.mul, torch.mul, operator.truediv, torch.div}
AFFINE_FUNCTIONS = SUM_FUNCTIONS | SCALE_FUNCTIONS | {
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d}
ROUTE_FUNCTIONS = {torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
                   torch.cat, torch.concat, torch.chunk, torch.split, torch.unbind, operator.getitem, F.dropout,
                   F.dropout2d}
MAXPOOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
                     F.adaptive_max_pool3d}
POINTWISE_FUNCTIONS = {F.relu, torch.relu, F.softplus, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.gelu}
SOFTMAX_FUNCTIONS = {F.softmax, torch.softmax}
TRANSPOSE_ATTRIBUTES = {"T", "mT"}  # x.T, x.mT: traced as getattr(x, "T")
AFFINE_METHODS = {"add", "sub", "neg", "mul", "div", "mean", "sum"}
ROUTE_METHODS = {"flatten", "view", "view_as", "reshape", "reshape_as", "permute", "transpose", "squeeze",
                 "unsqueeze", "contiguous", "chunk", "split", "unbind", "clone"}
POINTWISE_METHODS = {"relu", "sigmoid", "tanh"}
SOFTMAX_METHODS = {"softmax"}
# in-place operations and their out-of-place equivalents (the recorded values must not be overwritten)
OUT_OF_PLACE = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                operator.itruediv: operator.truediv, torch.relu_: torch.relu, F.relu_: F.relu}
TWO_OPERAND = {operator.mul, torch.mul, operator.truediv, torch.div, "mul", "div"}

# linear in each tensor operand: with one live operand a weighted op (the other operand is its weight), with two
# a bilinear one
MATMUL_FUNCTIONS = {operator.matmul, torch.matmul, torch.mm, torch.bmm, torch.einsum, F.linear}
MATMUL_METHODS = {"matmul", "mm", "bmm", "__matmul__"}

KINDS = ("weighted", "affine", "route", "maxpool", "pointwise", "softmax", "bilinear", "normalization")
# softmax needs its dim, bilinear its two operands, normalization is LayerNorm's own: not generic
REGISTERABLE_KINDS = ("weighted", "affine", "route", "maxpool", "pointwise")


# ====================================================================== user-declared layer types and functions

_LAYER_KINDS: dict[type, str] = {}  # registered module types -> kind, looked up before the built-in lists
_FUNCTION_KINDS: dict[object, str] = {}  # registered functions (call_function targets) -> kind


def _check_kind(kind: object) -> str:
    if kind not in REGISTERABLE_KINDS:
        raise ValueError(f"kind must be one of {REGISTERABLE_KINDS}, got {kind!r}")
    return kind


def _register(table: dict, key, kind: str, what: str) -> None:
    known = table.get(key)
    if known is not None and known != kind:
        raise ValueError(f"{what} is already registered as {known!r}; unregister it first to declare it {kind!r}")
    table[key] = kind
    _GRAPHS.clear()  # graphs traced before may have traced through a newly registered module type


def register_layer(module_type: type, kind: str) -> None:
    """Declare how a layer type propagates in LRP and DeepLift: ``kind`` is one of :data:`REGISTERABLE_KINDS`
    (see the module docstring for what each kind means to each method). Instances of ``module_type`` and of
    its subclasses are classified as ``kind`` before the built-in lists are consulted, and are leaves of the
    traced graph (not traced through). Registering a type again with another kind is refused
    (:func:`unregister_layer` first)."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)) or module_type is nn.Module:
        raise TypeError(f"module_type must be a torch.nn.Module subclass, got {module_type!r}")
    _register(_LAYER_KINDS, module_type, _check_kind(kind), f"layer type {module_type.__name__}")


def unregister_layer(module_type: type) -> None:
    """Undo :func:`register_layer` (``KeyError`` if ``module_type`` was not registered)."""
    if module_type not in _LAYER_KINDS:
        raise KeyError(f"layer type {getattr(module_type, '__name__', module_type)} is not registered")
    del _LAYER_KINDS[module_type]
    _GRAPHS.clear()


def register_function(function, kind: str) -> None:
    """Declare how a function called in a forward (``F.leaky_relu``, ``torch.erf``, ...) propagates, as
    :func:`register_layer` does for module types; looked up before the built-in function lists."""
    if not callable(function) or isinstance(function, type):
        raise TypeError(f"function must be a function, got {function!r}")
    _register(_FUNCTION_KINDS, function, _check_kind(kind), f"function {getattr(function, '__name__', function)}")


def unregister_function(function) -> None:
    """Undo :func:`register_function` (``KeyError`` if ``function`` was not registered)."""
    if function not in _FUNCTION_KINDS:
        raise KeyError(f"function {getattr(function, '__name__', function)} is not registered")
    del _FUNCTION_KINDS[function]


def registered_kind(module_type: type) -> str | None:
    """The kind ``module_type`` was registered as (or a base class of it, the nearest one first), else None."""
    for cls in module_type.__mro__:
        if cls in _LAYER_KINDS:
            return _LAYER_KINDS[cls]
    return None


# ====================================================================== steps and vector-Jacobian products


@dataclass(frozen=True)
class Step:
    """One call of a module (or function) as the per-layer rules see it: its ``name``, the ``module`` (None for
    a function), its ``input`` and ``output`` (recorded, in the autograd graph)."""

    name: str
    module: nn.Module | None
    input: torch.Tensor
    output: torch.Tensor

    @property
    def inputs(self) -> tuple[torch.Tensor]:
        """``(input,)``: a step read as an op with one live input (:func:`transpose`, :func:`z_rule`)."""
        return (self.input,)


_CREATE_GRAPH: contextvars.ContextVar[bool] = contextvars.ContextVar("create_graph", default=True)


@contextmanager
def differentiable(create_graph: bool) -> Iterator[None]:
    """Within the block, :func:`vjp` keeps its results in the autograd graph only if ``create_graph``, and the
    rules' element-wise steps record no graph unless ``create_graph`` (a map nobody differentiates is computed
    without building the double-backward graph: ~1.5x faster LRP). Rules that run a modified forward and
    differentiate it (z+, alpha-beta, z^B, flat) enable gradients for that forward themselves."""
    token = _CREATE_GRAPH.set(bool(create_graph))
    try:
        with torch.set_grad_enabled(bool(create_graph)):  # the rules' element-wise steps record no graph either
            yield
    finally:
        _CREATE_GRAPH.reset(token)


def vjp(outputs, inputs, grads):
    """Vector-Jacobian product(s) ``grads^T d outputs / d inputs``, kept in the graph (``create_graph=True``)
    unless inside ``differentiable(False)``: then the result stays differentiable with respect to the signal,
    the inputs and the parameters -- what makes second-order gradients (a loss on the explanation,
    back-propagated to the model) exact. The recorded forward graph is retained (several rules
    differentiate the same op).

    ``outputs``/``grads`` and ``inputs`` may be tensors or sequences of tensors; returns a tensor when
    ``inputs`` is a tensor, else a tuple.
    """
    single = isinstance(inputs, torch.Tensor)
    with torch.enable_grad():
        result = torch.autograd.grad(outputs, inputs, grads, create_graph=_CREATE_GRAPH.get(), retain_graph=True)
    return result[0] if single else result


def one_hot_like(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C) zeros with a one at each sample's target class, ``output``'s dtype and device."""
    if output.ndim != 2:
        raise ValueError(f"the model must return (B, classes) logits, got shape {tuple(output.shape)}")
    return torch.zeros_like(output).scatter_(1, target[:, None], 1.0)


# ====================================================================== tracing


class GraphError(ValueError):
    """The model cannot be propagated through: the message names the operation and the module."""


class _Tracer(fx.Tracer):
    """``torch.fx``'s tracer that remembers which user module it is tracing, to name it when tracing fails."""

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, str]] = []

    def call_module(self, m, forward, args, kwargs):
        self.stack.append((self.path_of_module(m) or "<model>", type(m).__name__))
        result = super().call_module(m, forward, args, kwargs)
        self.stack.pop()
        return result

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return registered_kind(type(m)) is not None or super().is_leaf_module(m, module_qualified_name)


_GRAPHS: "weakref.WeakKeyDictionary[nn.Module, dict[int, fx.Graph]]" = weakref.WeakKeyDictionary()


def _defaults_after(model: nn.Module, given: int) -> dict[str, object]:
    """The forward's parameters after the first ``given`` positional ones that have defaults: traced as the
    constants they default to (``if y is not None``, ``if flag:`` in the forward then trace)."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters[given:]
            if p.default is not inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD}


def trace_graph(model: nn.Module, method: str, given: int = 1) -> fx.Graph:
    """The ``torch.fx`` graph of ``model.forward`` called with ``given`` positional arguments (cached per model
    and ``given``); ``GraphError`` if it cannot be traced."""
    check_not_torchscript(model, f"{method} traces the model's forward with torch.fx")
    graphs = _GRAPHS.setdefault(model, {})
    graph = graphs.get(given)
    if graph is None:
        tracer = _Tracer()
        try:
            graph = tracer.trace(model, concrete_args=_defaults_after(model, given) or None)
        except Exception as error:  # noqa: BLE001 -- any tracing failure is reported with its module
            where = tracer.stack[-1] if tracer.stack else ("<model>", type(model).__name__)
            raise GraphError(f"{method} cannot trace the model with torch.fx in module '{where[0]}' ({where[1]}): "
                             f"{type(error).__name__}: {error}. Make its forward traceable (no control flow "
                             f"on tensor values) or wrap the offending part in a module") from error
        graphs[given] = graph
    return graph


# ====================================================================== recording one run


@dataclass
class Record:
    """One run of the graph: ``values`` of every node, the ``aliases`` each op received its tensor inputs as
    (by op, then by input node), the attributed ``inputs`` (placeholders, in order; their values are the
    tensors that went in, requiring grad) and the ``output`` tensor.

    Each op receives its own alias (a view) of every input tensor, so that a vector-Jacobian product of the op
    with respect to its aliases is the op's *own* (partial) Jacobian, even where one input is computed from
    another (``conv(h) + h``: differentiating with respect to ``h`` itself would also follow the path through
    ``conv``)."""

    graph: fx.Graph
    values: dict[fx.Node, object]
    aliases: dict[fx.Node, dict[fx.Node, torch.Tensor]]
    inputs: tuple[fx.Node, ...]
    output: torch.Tensor


def _run_node(model: nn.Module, node: fx.Node, args, kwargs):
    if node.op == "call_module":
        module = model.get_submodule(node.target)
        if getattr(module, "inplace", False) is True:
            module.inplace = False
            try:
                return module(*args, **kwargs)
            finally:
                module.inplace = True
        return module(*args, **kwargs)
    if node.op == "call_function":
        target = OUT_OF_PLACE.get(node.target, node.target)
        if kwargs.get("inplace") is True:
            kwargs = {**kwargs, "inplace": False}
        return target(*args, **kwargs)
    # call_method: x.relu_() -> x.relu(), out.add_(y) -> out.add(y)
    name = node.target
    if name.endswith("_") and not name.endswith("__") and hasattr(args[0], name[:-1]):
        name = name[:-1]
    return getattr(args[0], name)(*args[1:], **kwargs)


def record(model: nn.Module, graph: fx.Graph, inputs: Sequence[torch.Tensor], grad: bool = True) -> Record:
    """Run ``graph`` on ``inputs`` (the attributed arguments, made to require grad), keeping every node's value;
    ``grad=False`` records values only (no autograd graph: nothing will be differentiated through them)."""
    if grad:
        inputs = tuple(x if x.requires_grad else x.detach().requires_grad_(True) for x in inputs)
    arguments = iter(tuple(inputs))
    values: dict[fx.Node, object] = {}
    aliases: dict[fx.Node, dict[fx.Node, torch.Tensor]] = {}
    placeholders: list[fx.Node] = []
    output = None
    with torch.set_grad_enabled(grad):
        for node in graph.nodes:
            if node.op == "placeholder":
                value = next(arguments, _MISSING)
                if value is _MISSING:
                    if not node.args:
                        raise ValueError(f"the model's forward needs argument '{node.target}', which was not given")
                    value = node.args[0]
                if len(placeholders) < len(inputs):
                    placeholders.append(node)
                values[node] = value
            elif node.op == "get_attr":
                values[node] = _get_attr(model, node.target)
            elif node.op == "output":
                output = fx.node.map_arg(node.args[0], values.__getitem__)
            else:
                aliases[node] = local = {}
                args = fx.node.map_arg(node.args, partial(_alias, values, local))
                kwargs = fx.node.map_arg(node.kwargs, partial(_alias, values, local))
                values[node] = _run_node(model, node, args, kwargs)
    if len(placeholders) < len(inputs):
        raise ValueError(f"the model's forward takes {len(placeholders)} input(s), got {len(inputs)}")
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"the model must return a tensor of (B, classes) logits, got {type(output).__name__}")
    return Record(graph, values, aliases, tuple(placeholders), output)


_MISSING = object()


def _alias(values: dict, local: dict, node: fx.Node):
    """``node``'s value as the op being run receives it: one view per (op, input) pair for tensors in the graph."""
    value = values[node]
    if isinstance(value, torch.Tensor) and value.requires_grad:
        if node not in local:
            local[node] = value.view_as(value)
        return local[node]
    return value


def _get_attr(model: nn.Module, target: str):
    value = model
    for part in target.split("."):
        value = getattr(value, part)
    return value


def run_from(model: nn.Module, rec: Record, start: fx.Node, value):
    """The graph's output when node ``start`` takes ``value``: the nodes after ``start`` are recomputed, the
    values of earlier nodes are reused from ``rec`` (they must not depend on the input, or not be used later)."""
    env, after = dict(rec.values), False
    env[start] = value
    for node in rec.graph.nodes:
        if node is start:
            after = True
        elif node.op == "output":
            return fx.node.map_arg(node.args[0], env.__getitem__)
        elif after and node.op not in ("placeholder", "get_attr"):
            args = fx.node.map_arg(node.args, env.__getitem__)
            env[node] = _run_node(model, node, args, fx.node.map_arg(node.kwargs, env.__getitem__))
    raise ValueError("the graph has no output node")


def module_prefix(model: nn.Module, rec: Record) -> list[tuple[fx.Node, nn.Module]]:
    """The longest chain of module calls the graph starts with: from the (single) input, each node's only
    user is the next module call, which takes it as its only argument."""
    chain, node = [], rec.inputs[0]
    while len(node.users) == 1:
        (user,) = node.users
        if user.op != "call_module" or user.args != (node,) or user.kwargs:
            break
        chain.append((user, model.get_submodule(user.target)))
        node = user
    return chain


# ====================================================================== classifying nodes


@dataclass(frozen=True)
class Op:
    """A live node: its ``kind`` (one of :data:`KINDS`), the ``module`` it calls (or None), the recorded
    values of its live tensor ``inputs`` (their nodes in ``sources``) and of its ``output``."""

    node: fx.Node
    kind: str
    module: nn.Module | None
    sources: tuple[fx.Node, ...]
    inputs: tuple[torch.Tensor, ...]
    output: object

    def step(self) -> Step:
        """The op as a chain :class:`Step` (single input), for the per-module rules."""
        name = self.node.target if self.node.op == "call_module" else self.node.name
        return Step(name, self.module, self.inputs[0], self.output)


def describe(node: fx.Node, model: nn.Module) -> str:
    """``'layer1.0.conv1' (Conv2d)`` for a module call, ``function relu (node 'relu_1') in module 'layer1.0'
    (BasicBlock)`` for a function or method call."""
    if node.op == "call_module":
        return f"'{node.target}' ({type(model.get_submodule(node.target)).__name__})"
    what = f"method .{node.target}()" if node.op == "call_method" else \
        f"function {getattr(node.target, '__module__', '') or ''}.{getattr(node.target, '__name__', node.target)}"
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        where = f" in module '{path}' ({getattr(cls, '__name__', cls)})"
    else:
        where = " in the model's forward"
    return f"{what} (node '{node.name}'){where}"


def _kind_of_module(module: nn.Module) -> str | None:
    registered = registered_kind(type(module))
    if registered is not None:
        return registered
    for kind, classes in (("weighted", WEIGHTED_MODULES), ("affine", AFFINE_MODULES), ("route", ROUTE_MODULES),
                          ("maxpool", MAXPOOL_MODULES), ("pointwise", POINTWISE_MODULES),
                          ("softmax", SOFTMAX_MODULES), ("normalization", NORMALIZATION_MODULES)):
        if isinstance(module, classes):
            return kind
    return None


def _kind_of_call(node: fx.Node) -> str | None:
    target = node.target
    if node.op == "call_function":
        target = OUT_OF_PLACE.get(target, target)
        if target in _FUNCTION_KINDS:
            return _FUNCTION_KINDS[target]
        if target is getattr and len(node.args) == 2 and node.args[1] in TRANSPOSE_ATTRIBUTES:
            return "route"
        for kind, functions in (("weighted", MATMUL_FUNCTIONS), ("affine", AFFINE_FUNCTIONS),
                                ("route", ROUTE_FUNCTIONS), ("maxpool", MAXPOOL_FUNCTIONS),
                                ("pointwise", POINTWISE_FUNCTIONS), ("softmax", SOFTMAX_FUNCTIONS)):
            if target in functions:
                return kind
        return None
    if target.endswith("_") and not target.endswith("__"):
        target = target[:-1]
    for kind, methods in (("weighted", MATMUL_METHODS), ("affine", AFFINE_METHODS), ("route", ROUTE_METHODS),
                          ("pointwise", POINTWISE_METHODS), ("softmax", SOFTMAX_METHODS)):
        if target in methods:
            return kind
    return None


def _is_signal(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() or (
        isinstance(value, (tuple, list)) and len(value) > 0
        and all(isinstance(v, torch.Tensor) and v.is_floating_point() for v in value))


def live_ops(model: nn.Module, rec: Record, method: str, supported: Sequence[str] = KINDS) -> dict[fx.Node, Op]:
    """Every node whose value depends on an attributed input, classified, in forward order; ``GraphError``
    names the first one that ``method`` cannot propagate through."""
    live = set(rec.inputs)
    ops: dict[fx.Node, Op] = {}
    for node in rec.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        sources = tuple(n for n in node.all_input_nodes if n in live)
        value = rec.values[node]
        if not sources or (node.op != "call_module" and not _is_signal(value)):
            continue  # a constant, or a shape, size or comparison computed from a live tensor
        live.add(node)
        module = model.get_submodule(node.target) if node.op == "call_module" else None
        kind = _kind_of_module(module) if module is not None else _kind_of_call(node)
        if node.op == "call_module" and (kind is None or kind not in supported):
            allowed = ", ".join(sorted({cls.__name__ for kind_ in supported for cls in _modules_of(kind_)}))
            raise GraphError(f"layer '{node.target}' of type {type(module).__name__} is not supported by {method}; "
                             f"supported: {allowed}, and the functions and tensor methods listed in "
                             f"veneer.explain.graph. Declare how it propagates with veneer.explain.register_layer("
                             f"{type(module).__name__}, kind), kind one of {REGISTERABLE_KINDS}")
        if kind == "weighted" and module is None:
            module = LinearCall.of(node, rec, live, model, method)
            kind = "weighted" if module.weight_at is not None else "bilinear"
        if kind is None or kind not in supported:
            hint = (f". Declare how it propagates with veneer.explain.register_function("
                    f"{getattr(node.target, '__name__', node.target)}, "
                    f"kind), kind one of {REGISTERABLE_KINDS}") if node.op == "call_function" else ""
            raise GraphError(f"{method} cannot propagate through {describe(node, model)}: not a supported "
                             f"operation (see veneer.explain.graph for the supported ones){hint}")
        if kind == "weighted" and not isinstance(getattr(module, "weight", None), torch.Tensor):
            raise GraphError(f"{method}: {describe(node, model)} is registered as 'weighted' but has no weight tensor")
        target = node.target if node.op == "call_module" else OUT_OF_PLACE.get(node.target, node.target)
        if target in TWO_OPERAND or (isinstance(target, str) and target.rstrip("_") in TWO_OPERAND):
            _check_scaling(node, sources, model, method)
        if node.target is operator.getitem and isinstance(rec.values[node.args[0]], (tuple, list)):
            if not isinstance(node.args[1], int):
                raise GraphError(f"{method} cannot propagate through {describe(node, model)}: it indexes the "
                                 f"outputs of a multi-output op (chunk, split, unbind) with {node.args[1]!r}; "
                                 f"pick them one at a time (q, k, v = x.chunk(3))")
            kind = "select"  # picks one output of a multi-output node (chunk, split)
        if isinstance(module, BATCH_NORMS) and module.running_mean is None:
            raise GraphError(f"{method}: batch-norm layer {describe(node, model)} has no running statistics, so it "
                             f"mixes the samples of a batch; build it with track_running_stats=True")
        if kind == "softmax" and softmax_dim(node, module) is None:
            raise GraphError(f"{method} cannot propagate through {describe(node, model)}: give the softmax an "
                             f"explicit dim (the implicit one is deprecated in PyTorch)")
        if kind in ("maxpool", "pointwise", "softmax", "normalization") and (
                not isinstance(value, torch.Tensor) or len(sources) != 1):
            raise GraphError(f"{method} cannot propagate through {describe(node, model)}: it must map one tensor "
                             f"to one tensor (return_indices is not supported)")
        inputs = tuple(rec.aliases[node].get(n, rec.values[n]) for n in sources)
        ops[node] = Op(node, kind, module, sources, inputs, value)
    return ops


class LinearCall:
    """A function call that is linear in each of its tensor operands (``x @ W``, ``torch.matmul``/``mm``/``bmm``,
    ``F.linear``, ``torch.einsum``, a function registered as ``"weighted"``), as the rules of a weighted layer see
    it: with one live (input-dependent) operand, ``weight`` is the other floating tensor operand and ``bias``
    ``F.linear``'s bias (else None), and :meth:`forward` re-runs the call with the live operand, weight and bias
    replaced (what z+, alpha-beta, flat and z^B need). With two live operands (``q @ k.transpose(-1, -2)``) the
    op is ``"bilinear"`` (``weight_at`` is None): its rules need only its vector-Jacobian products. The operands
    are the call's (pytree-flattened) tensor arguments, in the order given."""

    def __init__(self, node: fx.Node, leaves: list, spec, live_at: tuple[int, ...], weight_at: int | None,
                 bias_at: int | None):
        self.node, self.leaves, self.spec = node, leaves, spec
        self.live_at, self.weight_at, self.bias_at = live_at, weight_at, bias_at
        self.weight = None if weight_at is None else leaves[weight_at]
        self.bias = None if bias_at is None else leaves[bias_at]

    @classmethod
    def of(cls, node: fx.Node, rec: "Record", live: set, model: nn.Module, method: str) -> "LinearCall":
        """The call of ``node`` on the values recorded in ``rec`` (``live``: the nodes that depend on the input);
        ``GraphError`` unless it has one live operand and one weight (or two live operands)."""
        nodes, spec = torch.utils._pytree.tree_flatten((node.args, node.kwargs))
        aliases = rec.aliases[node]
        leaves = [aliases.get(n, rec.values[n]) if isinstance(n, fx.Node) else n for n in nodes]
        tensors = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor) and v.is_floating_point()]
        bias_at = None
        target = OUT_OF_PLACE.get(node.target, node.target)
        if target is F.linear and len(tensors) == 3:  # F.linear(x, weight, bias): the bias is not an operand
            bias_at = tensors.pop()
        live_at = tuple(i for i in tensors if nodes[i] in live)
        constant = [i for i in tensors if i not in live_at]
        if bias_at is not None and nodes[bias_at] in live:
            live_at, bias_at = live_at + (bias_at,), None
        if len(live_at) == 1 and len(constant) == 1:
            return cls(node, leaves, spec, live_at, constant[0], bias_at)
        if len(live_at) == 2 and not constant and bias_at is None:
            return cls(node, leaves, spec, live_at, None, None)
        raise GraphError(f"{method} cannot propagate through {describe(node, model)}: a linear function "
                         f"needs one input-dependent operand and one weight, or two input-dependent operands "
                         f"(a bilinear product); it has {len(live_at)} input-dependent and {len(constant)} other "
                         f"tensor operands")

    def forward(self, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The call with the live operand ``a``, ``weight`` and ``bias`` (None: none) in place of the recorded
        ones."""
        replaced = {self.live_at[0]: a, self.weight_at: weight}
        if self.bias_at is not None:
            replaced[self.bias_at] = bias
        leaves = [replaced.get(i, leaf) for i, leaf in enumerate(self.leaves)]
        args, kwargs = torch.utils._pytree.tree_unflatten(leaves, self.spec)
        return _run_node(None, self.node, args, kwargs)

    def __repr__(self) -> str:
        return f"LinearCall({self.node.name!r})"


_MODULES_OF = {"weighted": WEIGHTED_MODULES, "affine": AFFINE_MODULES, "route": ROUTE_MODULES,
               "maxpool": MAXPOOL_MODULES, "pointwise": POINTWISE_MODULES, "softmax": SOFTMAX_MODULES,
               "bilinear": (), "normalization": NORMALIZATION_MODULES}


def _modules_of(kind: str) -> tuple[type, ...]:
    """The module types of ``kind``: built-in and registered."""
    return _MODULES_OF[kind] + tuple(cls for cls, k in _LAYER_KINDS.items() if k == kind)


def softmax_dim(node: fx.Node, module: nn.Module | None) -> int | None:
    """The ``dim`` of a softmax node (module attribute, argument or keyword); None where it is implicit."""
    if module is not None:
        return module.dim
    if "dim" in node.kwargs:
        return node.kwargs["dim"]
    return node.args[1] if len(node.args) > 1 else None


def _check_scaling(node: fx.Node, sources: tuple[fx.Node, ...], model: nn.Module, method: str) -> None:
    """A product must have one live factor and a quotient a live numerator only (both stay linear)."""
    first = node.args[0] if node.args else None
    divide = node.target in (operator.truediv, torch.div, "div", "div_")
    live_operands = [a for a in node.args[:2] if a in sources]  # x * x has one source but two live operands
    if len(sources) > 1 or len(live_operands) > 1 or (divide and sources[0] is not first):
        raise GraphError(f"{method} cannot propagate through {describe(node, model)}: a product or quotient of "
                         f"two tensors that both depend on the input is not linear; only multiplication or "
                         f"division by a constant is supported")


# ====================================================================== the backward sweep

# a method's backward step: (op, the signal at its output) -> one signal per live input (op.sources)
Propagate = Callable[[Op, object], Sequence[torch.Tensor | None]]


def __getattr__(name: str):
    if name == "Rule":  # renamed: veneer.explain.Rule is LRP's rule class
        warnings.warn("veneer.explain.graph.Rule is deprecated, use veneer.explain.graph.Propagate (the sweep's "
                      "per-op step; LRP's rules are veneer.explain.Rule)", DeprecationWarning, stacklevel=2)
        return Propagate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _add(a, b):
    return b if a is None else (a if b is None else a + b)


def sweep(rec: Record, ops: dict[fx.Node, Op], seed: torch.Tensor, propagate: Propagate) -> tuple[torch.Tensor, ...]:
    """Map ``seed`` (the signal at the output) back to the attributed inputs, node by node in reverse order.

    ``propagate(op, signal)`` returns one signal per live input of ``op`` (``op.sources``); the signals a node
    receives from all its users are summed (relevance is conserved across branches; multipliers follow the
    chain rule). A multi-output node (``chunk``, ``split``) collects one signal per output from the
    ``getitem`` nodes that select them. Inputs the output does not depend on get zeros.
    """
    output_node = next(n for n in reversed(rec.graph.nodes) if n.op == "output")
    (source,) = [n for n in output_node.all_input_nodes]
    signals: dict[fx.Node, object] = {source: seed}
    for node in reversed(list(ops)):
        signal = signals.pop(node, None)
        if signal is None:
            continue
        op = ops[node]
        if op.kind == "select":
            parts = signals.setdefault(op.sources[0], [None] * len(op.inputs[0]))
            parts[node.args[1]] = _add(parts[node.args[1]], signal)
            continue
        for src, part in zip(op.sources, propagate(op, signal)):
            signals[src] = _add(signals.get(src), part)
    return tuple(signals.get(x) if signals.get(x) is not None else torch.zeros_like(rec.values[x])
                 for x in rec.inputs)


def stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z + epsilon * sign(z)`` with ``sign(+0) = +1`` (Captum's ``PropagationRule`` and Zennit's ``stabilize``;
    ``copysign`` takes the sign bit, so ``-0.0`` counts as negative)."""
    return z + torch.copysign(torch.tensor(epsilon, dtype=z.dtype, device=z.device), z)


def batch_norm_scale(norm: nn.Module) -> torch.Tensor:
    """``gamma / sqrt(running_var + eps)`` per channel: an eval-mode batch norm's slope (from the live parameters)."""
    scale = (norm.running_var + norm.eps).rsqrt()
    return scale if norm.weight is None else scale * norm.weight


def transpose(op: Op | Step, signal) -> tuple[torch.Tensor, ...]:
    """``J^T signal`` for each live input (the rule of linear maps; for multi-output nodes the list of
    per-output signals, ``None`` where an output received none). An eval-mode batch norm's is its slope per
    channel, applied directly."""
    if isinstance(op.module, BATCH_NORMS):
        scale = batch_norm_scale(op.module)
        return (signal * scale.view(-1, *[1] * (signal.ndim - 2)),)
    if isinstance(signal, list):
        pairs = [(out, s) for out, s in zip(op.output, signal) if s is not None]
        outputs, grads = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        outputs, grads = op.output, signal
    return vjp(outputs, list(op.inputs), grads)


def z_rule(op: Op | Step, relevance: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, ...]:
    """The z-rule for maps affine in their live inputs (Montavon et al. 2019, Eq. 10.3 with ``epsilon``):
    ``R_i = a_i * J_i^T (R / (z + eps sign z))`` with ``z`` the op's actual output; on a sum ``z = sum_i a_i + c``
    this splits ``R`` in proportion ``a_i / z`` (the constant ``c`` takes its share, as a bias)."""
    s = relevance / stabilize(op.output, epsilon)
    return tuple(a * c for a, c in zip(op.inputs, transpose(op, s)))

