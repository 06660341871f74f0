"""Differentiable, batched explanation methods sharing one call: ``Method(model, **options)(x, target)``."""

from veneer.explain.base import Explainer
from veneer.explain.deeplift import DeepLift
from veneer.explain.gradcam import GradCAM
from veneer.explain.gradient import Gradient, GradientXInput, IntegratedGradients, SmoothGrad
from veneer.explain.heatmap import heatmap
from veneer.explain.lrp import LRP
from veneer.explain.model_agnostic import KernelShap, Lime
from veneer.explain.multi import MultiExplainer
from veneer.explain.occlusion import Occlusion

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


__all__ = ["Explainer", "Gradient", "GradientXInput", "IntegratedGradients", "SmoothGrad", "GradCAM",
           "Occlusion", "LRP", "DeepLift", "heatmap", "METHODS", "make_explainer",
           "Lime", "KernelShap", "MultiExplainer", "BACKGROUND_METHODS"]
