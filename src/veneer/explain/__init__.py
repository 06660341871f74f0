"""Differentiable, batched explanation methods sharing one call: ``Method(model, **options)(x, target)``."""

import warnings

import torch

from veneer.explain.base import Explainer
from veneer.explain.deeplift import DeepLift
from veneer.explain.gradcam import GradCAM
from veneer.explain.gradient import (Gradient, GradientXInput, IntegratedGradients, SmoothGrad, gradient_slope_ratio,
                                     shared_logit_ratio)
from veneer.explain.heatmap import flat_maps, heatmap
from veneer.explain.influence import Influence, TopInfluence
from veneer.explain.graph import GraphError, register_function, register_layer, unregister_function, unregister_layer
from veneer.explain.lrp import (COMPOSITES, LRP, AlphaBeta, Composite, Epsilon, Flat, Pass, Rule, Transpose, ZBox,
                                ZPlus, register_composite, unregister_composite)
from veneer.explain.model_agnostic import KernelShap, Lime
from veneer.explain.multi import MultiExplainer
from veneer.explain.occlusion import Occlusion
from veneer.explain.transformer import LayerNormRule, SoftmaxRule, UniformProduct
from veneer.models import has_gradients

METHODS: dict[str, type[Explainer]] = {
    "gradient": Gradient,
    "gradient_x_input": GradientXInput,
    "ig": IntegratedGradients,
    "smoothgrad": SmoothGrad,
    "gradcam": GradCAM,
    "occlusion": Occlusion,
    "lrp": LRP,
    "deeplift": DeepLift,
    "lime": Lime,
    "kernel-shap": KernelShap,
}

# methods that need background (training) data, ``make_explainer(name, model, background=...)``; tabular only
BACKGROUND_METHODS = ("lime", "kernel-shap")


def make_explainer(name: str, model, **options) -> Explainer:
    """Build a method by its CLI name (see ``METHODS``)."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name](model, **options)


def last_conv_layer(model) -> str:
    """Name of the last ``Conv2d`` module (Grad-CAM's usual layer)."""
    names = [name for name, m in model.named_modules()  # TorchScript keeps the class name as original_name
             if isinstance(m, torch.nn.Conv2d) or getattr(m, "original_name", None) == "Conv2d"]
    if not names:
        raise ValueError("the model has no Conv2d layer for gradcam; pass a layer name")
    return names[-1]


def make_explainers(model, names: list[str], ig_steps: int = 32, background=None) -> dict[str, Explainer]:
    """Explainers by name with the defaults used in reports: IG with ``ig_steps``, SmoothGrad seeded, Grad-CAM on
    the last conv layer, LRP with the ``"attn_lrp"`` composite (the epsilon rule everywhere, as the ``"epsilon"``
    preset, plus AttnLRP's rules for softmax, attention products and LayerNorm, which a model without them never
    uses: veneer.explain.transformer), LIME and KernelSHAP with ``background`` (training data)."""
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    options = {"ig": {"steps": ig_steps}, "smoothgrad": {"seed": 0}, "lrp": {"composite": "attn_lrp"}}
    built = {}
    for name in names:
        kwargs = dict(options.get(name, {}))
        if name == "gradcam":
            kwargs["layer"] = last_conv_layer(model)
        if name in BACKGROUND_METHODS:
            if background is None:
                raise ValueError(f"method {name} needs background data (training rows)")
            kwargs["background"] = background
        built[name] = make_explainer(name, model, **kwargs)
    return built


def applicable_methods(model, x: torch.Tensor, background=None, names=None) -> tuple[list[str], dict[str, str]]:
    """``(names, reasons)``: the methods of :data:`METHODS` (or ``names``) that explain ``model`` on inputs like
    ``x`` (each is built with the report defaults and run on ``x[:1]``; LIME/KernelSHAP with ``background``) and,
    for the others, why not (their error)."""
    usable, reasons = [], {}
    for name in names or METHODS:
        try:
            make_explainers(model, [name], ig_steps=2, background=background)[name](x[:1])
            usable.append(name)
        except (ValueError, TypeError, RuntimeError, NotImplementedError) as error:
            reasons[name] = str(error).splitlines()[0] if str(error) else type(error).__name__
    return usable, reasons


class MethodSelection(list):
    """The method names :func:`select_methods` chose (a list) and ``dropped``: ``{name: why it cannot explain
    the model}`` for the methods asked for (or the defaults) that were left out, the reason naming the operation
    and module it stopped at (a :class:`GraphError`'s first line)."""

    def __init__(self, names, dropped: dict[str, str]):
        super().__init__(names)
        self.dropped = dict(dropped)


def describe_dropped(dropped: dict[str, str]) -> str:
    """``"lrp (its reason); ..."``: dropped methods and why, on one line."""
    return "; ".join(f"{name} ({why})" for name, why in dropped.items())


def select_methods(model, x: torch.Tensor, requested: list[str] | None = None,
                   default: tuple[str, ...] | None = None, differentiable: bool = False,
                   background=None) -> MethodSelection:
    """The methods to run on ``model`` for inputs like ``x``, before any work: those of ``requested`` (or, for
    ``requested=None``, of ``default``; default: every method of :data:`METHODS` but the model-agnostic ones,
    which are slow and are run when named or when the model has no gradients) that apply, as a :class:`MethodSelection` whose ``dropped`` says why
    each other one does not. A requested method that cannot explain the model is dropped with a ``UserWarning``
    (degrade, never refuse); only when none is left is it a ``ValueError`` (one line, every method's reason).
    ``differentiable`` keeps only methods an attack can back-propagate through; ``background`` is the training
    data LIME and KernelSHAP need."""
    unknown = [name for name in requested or () if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    if default is None:  # a model without gradients (a black box, ``differentiable = False``) also gets LIME/KernelSHAP
        slow = () if has_gradients(model) or background is None else BACKGROUND_METHODS
        default = tuple(m for m in METHODS if m not in BACKGROUND_METHODS or m in slow)
    usable, reasons = applicable_methods(model, x, background, requested or default)
    if differentiable:
        for name in usable:
            if not METHODS[name].differentiable:
                reasons[name] = f"{METHODS[name].__name__} is not differentiable"
        usable = [name for name in usable if name not in reasons]
    chosen = [name for name in requested or default if name in usable]
    if not chosen:
        raise ValueError(f"no explanation method {'asked for ' if requested else ''}can be used on this model and "
                         f"data: {describe_dropped(reasons)}")
    if requested is not None and reasons:
        warnings.warn(f"methods dropped (they cannot explain this model; the others run): "
                      f"{describe_dropped(reasons)}", UserWarning, stacklevel=2)
    return MethodSelection(chosen, reasons)


__all__ = ["Explainer", "Gradient", "GradientXInput", "IntegratedGradients", "SmoothGrad", "GradCAM",
           "Occlusion", "LRP", "DeepLift", "heatmap", "flat_maps", "gradient_slope_ratio", "shared_logit_ratio", "METHODS", "make_explainer", "make_explainers", "last_conv_layer",
           "applicable_methods", "select_methods", "MethodSelection", "describe_dropped", "Influence", "TopInfluence",
           "Lime", "KernelShap", "MultiExplainer", "BACKGROUND_METHODS",
           # extending LRP and DeepLift (docs/explain_graphs.md, "Extending LRP")
           "Rule", "Epsilon", "ZPlus", "AlphaBeta", "Flat", "ZBox", "Pass", "Transpose", "Composite", "COMPOSITES",
           "SoftmaxRule", "UniformProduct", "LayerNormRule",
           "register_composite", "unregister_composite", "register_layer", "unregister_layer", "register_function",
           "unregister_function", "GraphError"]
