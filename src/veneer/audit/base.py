"""What every audit test shares: its result record, explanation maps as flat vectors, and the explainers.

Each test in :mod:`veneer.audit` is a plain function that returns a :class:`TestResult`. Its ``statistic`` is
oriented so that *larger is more suspicious*; ``components`` holds the per-method (or per-part) values the
statistic aggregates (their maximum), which the calibration (:mod:`veneer.audit.calibration`) scores one by one
against reference models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from veneer.checks import check_eval_mode
from veneer.explain import (BACKGROUND_METHODS, METHODS, Explainer, applicable_methods, describe_dropped, flat_maps,
                            make_explainer, make_explainers)
from veneer.metrics import spearman
from veneer.models import has_gradients

IMAGE_METHODS = ("gradient", "gradient_x_input", "ig", "lrp", "gradcam", "occlusion")
TABULAR_METHODS = ("gradient", "gradient_x_input", "ig", "lrp")


@dataclass
class TestResult:
    """One audit test's outcome: ``statistic`` (larger = more suspicious; the maximum of ``components``),
    ``components`` (``{part: value}``, e.g. one value per explanation method), ``evidence`` (small JSON-able
    details) and the wall time in ``seconds``."""

    __test__ = False  # not a pytest class

    name: str
    components: dict[str, float]
    evidence: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def statistic(self) -> float:
        return max(self.components.values())


def explain_maps(explainer: Explainer, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` importance vectors of ``explainer`` for ``x`` and classes ``target`` (no graph)."""
    return flat_maps(explainer(x, target=target).detach())


def rank_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(B,)`` Spearman rank correlation of two batches of importance vectors (Adebayo et al. 2018's measure);
    0 where a map is constant (no ranking)."""
    return torch.nan_to_num(spearman(a, b), nan=0.0)


def predictions(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``(N,)`` predicted classes."""
    with torch.no_grad():
        return torch.cat([model(chunk).argmax(1) for chunk in x.split(batch_size)])


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def default_methods(model: nn.Module, x: torch.Tensor) -> tuple[str, ...]:
    """The methods compared by default: Gradient, GxI, IG, LRP, and for image CNNs Grad-CAM and Occlusion."""
    if not has_gradients(model):
        return ("lime", "kernel-shap") if x.ndim == 2 else ("occlusion",)
    return IMAGE_METHODS if x.ndim == 4 and has_conv(model) else TABULAR_METHODS


def usable_methods(models: list[nn.Module], x: torch.Tensor, methods) -> tuple[tuple[str, ...], dict[str, str]]:
    """``(methods that explain every one of models, {dropped method: why})``: each method (LIME and KernelSHAP
    only query the model and always apply) is tried on ``x[:1]`` (:func:`veneer.explain.applicable_methods`);
    one that fails on a model is dropped with its error's first line (for LRP/DeepLift: the operation and module
    it stopped at), prefixed by the model (``reference[i]: ...``) when it is not the first. A ``ValueError``
    (one line, every reason) when no method is left, or no differentiable one (the sanity and defence tests
    differentiate the explanation)."""
    dropped: dict[str, str] = {}
    for i, model in enumerate(models):
        names = [m for m in methods if m not in BACKGROUND_METHODS and m not in dropped]
        if names:
            _, reasons = applicable_methods(model, x[:1], names=names)
            dropped.update({m: why if i == 0 else f"reference[{i - 1}]: {why}" for m, why in reasons.items()})
    kept = tuple(m for m in methods if m not in dropped)
    if not kept or (has_gradients(models[0]) and not any(METHODS[m].differentiable for m in kept)):
        raise ValueError(f"no {'differentiable ' if kept else ''}explanation method can be used on this model: "
                         f"{describe_dropped(dropped)}")
    return kept, dropped


def unseen_by(dropped: dict[str, str], kept) -> str | None:
    """What dropping methods leaves unseen (for ``audit.json``'s ``config.unseen``), or None if none was."""
    if not dropped:
        return None
    return (f"the tests compare the explanations of {', '.join(kept)} only: a manipulation aimed at "
            f"{', '.join(dropped)} alone (e.g. a fine-tune against that method's maps) is not measured")


def build_explainers(model: nn.Module, methods, ig_steps: int = 16, occlusion_window: int = 5,
                     occlusion_stride: int = 2, background: torch.Tensor | None = None, lime_samples: int = 5000,
                     shap_samples: int | None = None) -> dict[str, Explainer]:
    """Explainers by name (``veneer.explain.METHODS``) bound to ``model``: IG with ``ig_steps`` steps, Grad-CAM on
    the last Conv2d, Occlusion with square windows of ``occlusion_window`` pixels moved by ``occlusion_stride``,
    LIME with ``lime_samples`` samples per row and KernelSHAP with ``shap_samples`` coalitions per row (None:
    shap's ``2 F + 2048``) over ``background`` rows (tabular data; KernelSHAP summarises them to 10 k-means
    centroids)."""
    check_eval_mode(model)
    special = {"occlusion": {"window": occlusion_window, "stride": occlusion_stride, "batch_size": 1024},
               "lime": {"background": background, "num_samples": lime_samples},
               "kernel-shap": {"background": background, "num_samples": shap_samples}}
    built = make_explainers(model, [m for m in methods if m not in special], ig_steps=ig_steps)
    for name in methods:
        if name in BACKGROUND_METHODS and background is None:
            raise ValueError(f"method {name} needs background rows (background=)")
        if name in special:
            built[name] = make_explainer(name, model, **special[name])
    return {name: built[name] for name in methods}


def rebind(explainers: dict[str, Explainer], model: nn.Module) -> dict[str, Explainer]:
    """The same explainers bound to ``model`` (a reference model, a noisy or randomised copy)."""
    return {name: e.with_model(model) for name, e in explainers.items()}


def differentiable(explainers: dict[str, Explainer]) -> dict[str, Explainer]:
    """The explainers whose attributions are gradients of the model (all but Occlusion)."""
    return {name: e for name, e in explainers.items() if e.differentiable}
