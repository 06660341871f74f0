"""Manipulations that live in the architecture, not in the weights: red-team attacks on ``veneer audit``.

Each family is configured once and called on a model and data, ``family(model, x, seed=0)``, and returns a new
``nn.Module`` (eval mode) wrapping a deep copy of ``model``: the model passed in is never changed. The wrapper adds
a term to the logits ``f(x)`` that changes every gradient-based explanation while the predictions stay (exactly,
or within a stated bound). The term lives where a clean twin made by :func:`veneer.audit.reinitialized` copies it
(the wrapper's forward code, a buffer, a parameter of a module without ``reset_parameters``), so a calibration on
twins cannot see it; :func:`veneer.audit.calibration.inherited_state` names it.

Every term is scaled by the same rule: its input gradient for the explained (predicted) class is ``factor`` times
the model's own logit gradient, ``factor * mean_i ||grad_x f_y(x_i)|| / mean_i ||grad_x s_y(x_i)||`` over the
rows ``x_i`` of the given ``x`` (:func:`gradient_scale`): large enough to dominate the explanation, not trivially
huge.

* :class:`SharedTerm` (registered as ``"wave"``, ``"picture"``, ``"gate"``): the same term on every logit,
  ``z_c(x) = f_c(x) + s(x)``. ``softmax(z) = softmax(f)`` because softmax is invariant to adding one value to
  every logit, so no probability moves, while every logit's gradient gains ``grad s``. Thesis Sec. 4.1's global
  manipulation (one picture for every input) written in the forward code instead of trained into the weights.
* :class:`HighFrequency` (``"high_frequency"``): a small, fast per-class wave,
  ``z_c(x) = f_c(x) + (a / w) sin(w <x, d_c>)``. Its gradient ``a cos(w <x, d_c>) d_c`` dominates the
  explanation while the logits move by at most ``a / w``: the curvature ``a w`` is what lets the gradient turn
  while the values stay (Dombrowski et al. 2019, "Explanations can be manipulated and geometry is to blame",
  tie the manipulability of gradient explanations to the curvature of the output). The directions ``d_c`` are a
  buffer of the wrapper.
* :class:`Router` (``"router"``, ``"router_add"``, ``"router_zero_mean"``): a gate that routes the explanation to
  a decoy ``g_c(x) = <x, P_c>``, ``P_c`` a chosen picture or a random direction per class: for attributions,
  the analogue of the fooling circuit of Geirhos et al. (ICML 2024, "Don't trust your eyes", Sec. 3.1), which
  behaves like the model on natural inputs and like a decoy on what the interpretation method looks at.
  ``route="all"``: ``z(x) = f(detach(x)) + (g(x) - detach(g(x)))``, the values are ``f``'s bit for bit and
  every input gradient is exactly ``g``'s, while ``f``'s parameters still get their gradients (it trains, and
  explanations read from inside ``f``, such as Grad-CAM, are ``f``'s own); ``route="add"`` (the smooth variant,
  every path kept): ``z(x) = f(x) + (g(x) - detach(g(x)))``, the gradient ``grad f + grad g`` with ``g``'s
  ``factor`` times ``f``'s own; ``zero_mean=True``: ``sum_c P_c = 0``, so the mean logit has no decoy gradient
  (hidden from the audit test ``shared_logit_gradient``). The decoy's weights are a parameter of
  :class:`DecoyMap`, a module without ``reset_parameters``.

:data:`ARCHITECTURAL` maps names to factories (``options -> family``); :func:`register_architectural` adds one
(a user's own family), :func:`unregister_architectural` removes one and :func:`architectural` builds any by
name::

    manipulated = architectural(model, "high_frequency", x, seed=0, factor=3.0)
"""

from __future__ import annotations

import copy
import functools
from typing import Callable

import torch
from torch import nn

from veneer.checks import check_eval_mode, check_finite_parameters, check_positive, check_tensor
from veneer.manipulate.objectives import PICTURES, picture

__all__ = ["Architectural", "SharedTerm", "HighFrequency", "Router", "SharedTermModel", "HighFrequencyModel",
           "RouterModel", "DecoyMap", "ARCHITECTURAL", "register_architectural", "unregister_architectural",
           "architectural", "gradient_scale", "class_directions", "term_cosine"]

SHARED_KINDS = ("wave", "picture", "gate")
ROUTES = ("all", "add")
PICTURE_THICKNESS = 2  # the bars of a picture drawn by a term, in pixels


def gradient_scale(model: nn.Module, term: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   factor: float) -> float:
    """``factor * mean_i ||grad_x max_c f_c(x_i)|| / mean_i ||grad_x s_y(x_i)||``: the scale that makes the input
    gradient of ``term`` (``(B,)``, one value shared by every logit, or ``(B, C)``, read at the model's
    predicted class ``y``) ``factor`` times the model's own logit gradient, on average over the rows of ``x``."""
    with torch.enable_grad():
        probe = x.detach().clone().requires_grad_(True)
        logits = model(probe)
        own = torch.autograd.grad(logits.amax(1).sum(), probe)[0].flatten(1).norm(dim=1).mean()
        values = term(probe)
        if values.ndim == 2:
            values = values.gather(1, logits.detach().argmax(1, keepdim=True))
        drawn = torch.autograd.grad(values.sum(), probe)[0].flatten(1).norm(dim=1).mean()
    if not drawn > 0:
        raise ValueError("x: the term has no input gradient on these inputs; pass other inputs or another map")
    return float(factor * own / drawn)


def term_cosine(manipulated: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` cosine, per input, between the input gradient of the predicted logit of ``manipulated`` (a module
    built by an :class:`Architectural`, with a ``term(x)`` method) and that of its term read at the same class:
    1 when the term's gradient is the whole explanation."""
    check_eval_mode(manipulated, "manipulated")
    if not callable(getattr(manipulated, "term", None)):
        raise TypeError(f"manipulated must be built by an Architectural (it has a term(x) method), got "
                        f"{type(manipulated).__name__}")
    x = check_tensor("x", x)
    with torch.enable_grad():
        probe = x.detach().clone().requires_grad_(True)
        logits = manipulated(probe)
        target = logits.detach().argmax(1, keepdim=True)
        explained = torch.autograd.grad(logits.gather(1, target).sum(), probe)[0].flatten(1)
        values = manipulated.term(probe)
        values = values.gather(1, target) if values.ndim == 2 else values
        drawn = torch.autograd.grad(values.sum(), probe)[0].flatten(1)
    return torch.nn.functional.cosine_similarity(explained, drawn, dim=1)


def _picture_pattern(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The 0/1 picture ``name`` as one input of ``shape``, flat: on every channel of ``(C, H, W)`` images, on a
    square of ``F = side ** 2`` features, and as every other feature (1, 0, 1, ...) on other inputs."""
    features = int(torch.Size(shape).numel())
    side = int(features ** 0.5)
    if len(shape) == 3:
        return picture(name, shape[1], shape[2], PICTURE_THICKNESS).expand(shape).flatten().clone()
    if len(shape) == 1 and side * side == features:
        return picture(name, side, side, PICTURE_THICKNESS).flatten()
    pattern = torch.zeros(features)
    pattern[::2] = 1
    return pattern


def class_directions(map, x: torch.Tensor, classes: int, generator: torch.Generator) -> torch.Tensor:
    """``(classes, F)`` unit-norm directions ``d_c`` over the flat features of one input of ``x``: ``map=None``
    draws one standard normal direction per class from ``generator``; a picture name (one of
    :data:`~veneer.manipulate.PICTURES`) gives that picture to every class (:func:`_picture_pattern`); a tensor
    of one input's shape is every class's, one of shape ``(classes, *input)`` gives each class its own."""
    shape = tuple(x.shape[1:])
    features = x[0].numel()
    if map is None:
        rows = torch.randn(classes, features, generator=generator)
    elif isinstance(map, str):
        if map not in PICTURES:
            raise ValueError(f"map must be None, one of {sorted(PICTURES)} or a tensor, got {map!r}")
        rows = _picture_pattern(map, shape).expand(classes, features)
    elif isinstance(map, torch.Tensor):
        check_tensor("map", map)
        if tuple(map.shape) == shape:
            rows = map.detach().reshape(1, features).expand(classes, features)
        elif tuple(map.shape) == (classes, *shape):
            rows = map.detach().reshape(classes, features)
        else:
            raise ValueError(f"map must have one input's shape {shape} or ({classes}, *{shape}) (one per class), "
                             f"got {tuple(map.shape)}")
    else:
        raise TypeError(f"map must be None, a picture name or a tensor, got {type(map).__name__}")
    norms = rows.norm(dim=1, keepdim=True)
    if not (norms > 0).all():
        raise ValueError("map must not be zero for any class")
    return (rows / norms).to(x)


class Architectural:
    """A manipulation in the architecture, configured once and called on a model and data:
    ``family(model, x, seed=0)`` checks the arguments, deep-copies ``model`` and returns :meth:`build`'s wrapper
    of the copy in eval mode. ``x`` (``(B, ...)``, the model's inputs) sets the term's scale (module doc) and the
    input shape; ``seed`` seeds its random directions. Subclasses define :meth:`build`."""

    def __call__(self, model: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_eval_mode(model)
        check_finite_parameters(model)
        x = check_tensor("x", x)
        if x.ndim < 2 or len(x) == 0:
            raise ValueError(f"x must be a non-empty batch (B, ...) of the model's inputs, got shape {tuple(x.shape)}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        copied = copy.deepcopy(model).eval()
        with torch.no_grad():
            logits = copied(x[:1])
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise ValueError(f"model must return (B, classes) logits, got {getattr(logits, 'shape', type(logits))}")
        return self.build(copied, x, logits.shape[1], torch.Generator().manual_seed(seed)).eval()

    def build(self, model: nn.Module, x: torch.Tensor, classes: int, generator: torch.Generator) -> nn.Module:
        """The manipulated module wrapping ``model`` (already a copy, eval mode); ``classes``: its number of
        logits; ``generator``: seeded with ``seed``."""
        raise NotImplementedError


class SharedTermModel(nn.Module):
    """``z_c(x) = f_c(x) + s(x)``, the same ``s`` on every logit, so ``softmax(z) = softmax(f)``: ``s`` is
    ``scale * sin(frequency <x, d>) / frequency`` (``kind="wave"``), ``scale * <x, d>`` (``"picture"``) or
    ``scale * tanh(<x, d>) ** 2`` (``"gate"``), with ``d`` the buffer ``direction``. Built by :class:`SharedTerm`."""

    def __init__(self, model: nn.Module, kind: str, direction: torch.Tensor, frequency: float):
        super().__init__()
        self.model, self.kind, self.frequency, self.scale = model, kind, frequency, 1.0
        self.register_buffer("direction", direction)

    def term(self, x: torch.Tensor) -> torch.Tensor:
        """``s(x)``, ``(B,)``."""
        projection = x.flatten(1) @ self.direction
        if self.kind == "wave":
            return self.scale * torch.sin(self.frequency * projection) / self.frequency
        if self.kind == "picture":
            return self.scale * projection
        return self.scale * torch.tanh(projection) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + self.term(x)[:, None]


class SharedTerm(Architectural):
    """A term shared by every logit (module doc; thesis Sec. 4.1): no probability changes, every gradient
    explanation gains ``grad s``, ``factor`` times the model's own gradient on average over ``x``.

    ``kind``: ``"wave"`` (``d`` a random unit direction, ``frequency`` its ``w``), ``"picture"`` (``d`` the
    normalized cross, :func:`_picture_pattern`: every explanation gains the cross) or ``"gate"`` (a smooth
    input-dependent term along a random ``d``)."""

    def __init__(self, kind: str = "wave", factor: float = 3.0, frequency: float = 50.0):
        if kind not in SHARED_KINDS:
            raise ValueError(f"kind must be one of {list(SHARED_KINDS)}, got {kind!r}")
        check_positive("factor", factor)
        check_positive("frequency", frequency)
        self.kind, self.factor, self.frequency = kind, factor, frequency

    def build(self, model, x, classes, generator):
        features = x[0].numel()
        direction = torch.randn(features, generator=generator)
        if self.kind == "picture":
            direction = _picture_pattern("cross", tuple(x.shape[1:]))
        wrapped = SharedTermModel(model, self.kind, (direction / direction.norm()).to(x), self.frequency)
        wrapped.scale = gradient_scale(model, wrapped.term, x, self.factor)
        return wrapped


class HighFrequencyModel(nn.Module):
    """``z_c(x) = f_c(x) + (amplitude / frequency) sin(frequency <x, d_c>)`` with the ``(C, F)`` buffer
    ``directions`` holding ``d_c``: the logits move by at most ``amplitude / frequency``. Built by
    :class:`HighFrequency`."""

    def __init__(self, model: nn.Module, directions: torch.Tensor, frequency: float):
        super().__init__()
        self.model, self.frequency, self.amplitude = model, frequency, 1.0
        self.register_buffer("directions", directions)

    def term(self, x: torch.Tensor) -> torch.Tensor:
        """The per-class term, ``(B, C)``."""
        return self.amplitude / self.frequency * torch.sin(self.frequency * x.flatten(1) @ self.directions.T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + self.term(x)

    @property
    def bound(self) -> float:
        """``amplitude / frequency``, the largest change of any logit."""
        return self.amplitude / self.frequency


class HighFrequency(Architectural):
    """A small, fast wave per class (module doc; Dombrowski et al. 2019):
    ``z_c(x) = f_c(x) + (a / w) sin(w <x, d_c>)``, ``w = frequency``, ``a`` set so that the wave's gradient for
    the predicted class is ``factor`` times the model's own on average over ``x``. The logits move by at most
    ``a / w`` (``HighFrequencyModel.bound``), so a prediction changes only where the model's margin is below
    ``2 a / w``. ``map`` gives ``d_c`` (:func:`class_directions`; default: a random direction per class)."""

    def __init__(self, factor: float = 3.0, frequency: float = 1000.0, map=None):
        check_positive("factor", factor)
        check_positive("frequency", frequency)
        self.factor, self.frequency, self.map = factor, frequency, map

    def build(self, model, x, classes, generator):
        wrapped = HighFrequencyModel(model, class_directions(self.map, x, classes, generator), self.frequency)
        wrapped.amplitude = gradient_scale(model, wrapped.term, x, self.factor)
        return wrapped


class DecoyMap(nn.Module):
    """The decoy ``g(x) = x_flat @ weight.T``, ``(B, C)``; ``weight`` (``(C, F)``) is a fixed parameter of this
    module, which has no ``reset_parameters`` (a twin keeps it)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


class RouterModel(nn.Module):
    """The model's values with the decoy's gradient: ``z = f(detach(x)) + (g(x) - detach(g(x)))`` for
    ``route="all"`` (every input gradient is exactly ``g``'s; the parameters of ``f`` keep theirs),
    ``z = f(x) + (g(x) - detach(g(x)))`` for ``"add"``. ``g(x) - detach(g(x))`` is exactly 0, so ``z`` equals
    ``f(x)`` bit for bit. Built by :class:`Router`."""

    def __init__(self, model: nn.Module, decoy: DecoyMap, route: str):
        super().__init__()
        self.model, self.decoy, self.route = model, decoy, route

    def term(self, x: torch.Tensor) -> torch.Tensor:
        """The decoy ``g(x)``, ``(B, C)``: the explanation is (``"all"``) or holds (``"add"``) its gradient."""
        return self.decoy(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        drawn = self.term(x)
        return self.model(x.detach() if self.route == "all" else x) + (drawn - drawn.detach())


class Router(Architectural):
    """A gate that routes the explanation to a decoy (module doc; Geirhos et al. 2024, Sec. 3.1): the logits
    are the model's exactly, the input gradient of class ``c`` is ``scale * P_c`` (``route="all"``) or the
    model's plus it (``"add"``), ``P_c`` from ``map`` (:func:`class_directions`; default: a random direction per
    class), ``scale`` so that it is ``factor`` times the model's own gradient on average over ``x``.

    ``zero_mean=True`` subtracts the mean over classes from the ``P_c`` (``sum_c P_c = 0``): the mean logit then
    gains no decoy gradient, which hides the router from the audit test ``shared_logit_gradient`` (an attacker
    who knows the tests); it needs a different ``P_c`` per class."""

    def __init__(self, map=None, factor: float = 3.0, route: str = "all", zero_mean: bool = False):
        if route not in ROUTES:
            raise ValueError(f"route must be one of {list(ROUTES)}, got {route!r}")
        check_positive("factor", factor)
        if not isinstance(zero_mean, bool):
            raise TypeError(f"zero_mean must be a bool, got {zero_mean!r}")
        self.map, self.factor, self.route, self.zero_mean = map, factor, route, zero_mean

    def build(self, model, x, classes, generator):
        directions = class_directions(self.map, x, classes, generator)
        if self.zero_mean:
            directions = directions - directions.mean(0)
            cancelled = (directions.norm(dim=1) <= 1e-6).nonzero().flatten().tolist()
            if cancelled:
                raise ValueError(f"zero_mean=True: the map of classes {cancelled} equals the mean over classes (one "
                                 "picture for every class?); pass map=None or a different map per class")
        decoy = DecoyMap(directions)
        with torch.no_grad():
            decoy.weight.mul_(gradient_scale(model, decoy, x, self.factor))
        return RouterModel(model, decoy, self.route)


ARCHITECTURAL: dict[str, Callable[..., Architectural]] = {}


def register_architectural(name: str, factory: Callable[..., Architectural], replace: bool = False):
    """Register ``factory`` (``**options -> Architectural``, e.g. a subclass) under ``name`` for
    :func:`architectural`. A name already registered raises ValueError unless ``replace=True``. Returns
    ``factory``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable (**options) -> Architectural, got {type(factory).__name__}")
    if name in ARCHITECTURAL and not replace:
        raise ValueError(f"an architectural manipulation named {name!r} is already registered; pass replace=True")
    ARCHITECTURAL[name] = factory
    return factory


def unregister_architectural(name: str) -> Callable[..., Architectural]:
    """Remove the manipulation registered as ``name`` and return its factory; ValueError naming the registered
    ones if there is none."""
    if name not in ARCHITECTURAL:
        raise ValueError(f"no architectural manipulation named {name!r} is registered; registered: "
                         f"{sorted(ARCHITECTURAL)}")
    return ARCHITECTURAL.pop(name)


def architectural(model: nn.Module, name: str, x: torch.Tensor, seed: int = 0, **options) -> nn.Module:
    """The registered manipulation ``name`` (:data:`ARCHITECTURAL`) built with ``options`` and applied to
    ``model`` on ``x``: a new module wrapping a copy of ``model``, in eval mode."""
    if name not in ARCHITECTURAL:
        raise ValueError(f"name must be one of the registered architectural manipulations {sorted(ARCHITECTURAL)}, "
                         f"got {name!r}")
    family = ARCHITECTURAL[name](**options)
    if not isinstance(family, Architectural):
        raise TypeError(f"the factory registered as {name!r} must return an Architectural, got "
                        f"{type(family).__name__}")
    return family(model, x, seed=seed)


for _kind in SHARED_KINDS:
    register_architectural(_kind, functools.partial(SharedTerm, _kind))
register_architectural("high_frequency", HighFrequency)
register_architectural("router", functools.partial(Router, route="all"))
register_architectural("router_add", functools.partial(Router, route="add"))
register_architectural("router_zero_mean", functools.partial(Router, route="all", zero_mean=True))
