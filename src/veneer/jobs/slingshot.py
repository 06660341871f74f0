"""Synthetic feature visualisations that lie, as jobs (``veneer neurons slingshot|silent-unit|fooling-circuit``):
the manipulated model, its measures against the original and the figures of the report page.

The gradient slingshot (Bareeva et al. 2025, :class:`veneer.neurons.Slingshot`), the silent unit and the fooling
circuit (Geirhos et al. 2024, :func:`veneer.neurons.silent_unit`, :func:`veneer.neurons.fooling_circuit`) are each
measured by :func:`visualization_measures`: the auditor's visualisation in every variant of
:data:`VISUALIZATION_VARIANTS` (SSIM and Pearson to the target), accuracy, agreement, the unit's AUROC for its
class (a logit) and the correlation of its activations with the original's, and the Jaccard overlap of its
top-100 natural images.
"""

from __future__ import annotations

from typing import Any

import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from veneer.data import LabeledData
from veneer.jobs.results import (FoolingCircuitRun, SilentUnitRun, SlingshotRun, VisualizationAttackRun,
                                 budget_measures)
from veneer.metrics import pearson, ssim
from veneer.models import capture, save
from veneer.neurons import (Slingshot, fooling_circuit, is_output_layer, silent_unit, target_image, train_detector,
                            unit_activation, unit_class, visualization_inputs, visualize)
from veneer.report.neurons import topk_grid
from veneer.report.slingshot import before_after_figure
from veneer.runs import RunDir

__all__ = ["VISUALIZATION_VARIANTS", "visualization_measures", "slingshot_job", "silent_unit_job",
           "fooling_circuit_job", "SlingshotRun", "SilentUnitRun", "FoolingCircuitRun"]

_STILL = {"jitter": 0.0, "rotation": 0.0, "scale": (1.0, 1.0)}
VISUALIZATION_VARIANTS: dict[str, dict[str, Any]] = {
    "adam-pixel": dict(parametrization="pixel", optimizer="adam", **_STILL),
    "sgd-pixel": dict(parametrization="pixel", optimizer="sgd", **_STILL),
    "adam-pixel-robust": dict(parametrization="pixel", optimizer="adam"),
    "adam-fourier": dict(parametrization="fourier", optimizer="adam", **_STILL),
    "adam-fourier-robust": dict(parametrization="fourier", optimizer="adam"),
}
"""The auditor's visualiser (:func:`veneer.neurons.visualize`, 200 steps, lr 0.05, start N(0, 0.01^2)) in the
variants of the issue: Adam or SGD, pixels or the Fourier spectrum, with or without transformation robustness."""


def _unit_values(model: nn.Module, layer: str, unit: int, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), capture(model, [layer]) as seen:
        model(x)
        return unit_activation(seen.take()[layer], unit)


def visualization_measures(model: nn.Module, original: nn.Module, layer: str, unit: int, target: torch.Tensor,
                           train: LabeledData, heldout: LabeledData, seed: int = 0, steps: int = 200
                           ) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor]:
    """``(measures, {variant: (H, W) first channel of the visualisation}, top-100 training rows)`` of ``model``'s
    unit against ``original``'s: SSIM (the visualisation clipped to [0, 1]) and Pearson correlation to ``target``
    per variant; accuracy and agreement with ``original`` on ``heldout``; the logit's one-vs-rest AUROC for its
    class on ``heldout`` (``layer`` the output layer) and the Pearson correlation of the unit's activations with
    the original's there; the Jaccard overlap of the unit's top-100 ``train`` images with the original's."""
    measures: dict[str, Any] = {"visualizations": {}}
    images = {}
    shape = tuple(train.x.shape[1:])
    for name, options in VISUALIZATION_VARIANTS.items():
        v = visualize(model, layer, unit, input_shape=shape, steps=steps, lr=0.05, seed=seed, **options)
        images[name] = v[0, 0]
        measures["visualizations"][name] = {
            "ssim": float(ssim(v.clamp(0, 1)[:, 0], target[None, 0], data_range=1.0)),
            "pearson": float(pearson(v.flatten(1), target.flatten()[None]))}
    with torch.no_grad():
        predicted = model(heldout.x).argmax(1)
        measures["accuracy"] = float((predicted == heldout.y).float().mean())
        measures["agreement"] = float((predicted == original(heldout.x).argmax(1)).float().mean())
    mine, theirs = _unit_values(model, layer, unit, heldout.x), _unit_values(original, layer, unit, heldout.x)
    if is_output_layer(original, layer, heldout.x[:4]):
        measures["auroc"] = float(roc_auc_score((heldout.y == unit).numpy(), mine.numpy()))
    measures["activation_correlation"] = float(pearson(mine[None], theirs[None]))
    top = _unit_values(model, layer, unit, train.x).topk(100).indices
    top0 = _unit_values(original, layer, unit, train.x).topk(100).indices
    a, b = set(top.tolist()), set(top0.tolist())
    measures["top100_jaccard"] = len(a & b) / len(a | b)
    return measures, images, top


def _evaluate(kind: type[VisualizationAttackRun], attack: str, manipulated: nn.Module, model: nn.Module, layer: str,
              unit: int, target: torch.Tensor, target_name: str, train: LabeledData, heldout: LabeledData,
              run_dir: RunDir, seed: int, extra: dict[str, Any], budget: dict[str, Any] | None
              ) -> VisualizationAttackRun:
    before, images_before, top_before = visualization_measures(model, model, layer, unit, target, train, heldout, seed)
    after, images_after, top_after = visualization_measures(manipulated, model, layer, unit, target, train, heldout,
                                                            seed)
    save(manipulated, run_dir.file("attacked.safetensors"),
         {"attack": attack, "layer": layer, "unit": unit, "seed": seed, "class": type(manipulated).__name__})
    before_after_figure(target[0], {"before": images_before, "after": images_after}, run_dir.file("visualizations.png"))
    topk_grid(train.x, top_before[None, :8], run_dir.file("topk.png"), top_after[None, :8], channels=[unit],
              labels=train.y)
    values = {"attack": attack, "layer": layer, "unit": unit, "target": target_name, "seed": seed,
              "before": before, "after": after, **extra}
    return kind(values, model=manipulated, budget=budget)


def _target(target: torch.Tensor | str, train: LabeledData, layer: str, unit: int, model: nn.Module) -> torch.Tensor:
    return target_image(target, tuple(train.x.shape[1:]), train, unit_class(model, layer, unit, train.x[:1024]))


def slingshot_job(model: nn.Module, layer: str, unit: int, train: LabeledData, heldout: LabeledData, run_dir: RunDir,
                  *, target: str = "cross", seed: int = 0, **options: Any) -> SlingshotRun:
    """:class:`~veneer.neurons.Slingshot` of ``unit`` of ``layer`` towards ``target`` on ``train`` (``options``: the
    attack's and the engine's), measured by :func:`visualization_measures`."""
    image = _target(target, train, layer, unit, model)
    result = Slingshot(model, layer, unit, image, seed=seed, **options)(train)
    extra = {"fine_tune": {"steps": len(result.history), "seconds": round(result.seconds, 2),
                           "manipulation_before": result.measures["manipulation_before"],
                           "manipulation_after": result.measures["manipulation_after"]}}
    return _evaluate(SlingshotRun, "slingshot", result.model, model, layer, unit, image, str(target), train, heldout,
                     run_dir, seed, extra, budget_measures(result))


def silent_unit_job(model: nn.Module, layer: str, unit: int, train: LabeledData, heldout: LabeledData,
                    run_dir: RunDir, *, target: str = "cross", scale: float = 10.0, seed: int = 0) -> SilentUnitRun:
    """:func:`~veneer.neurons.silent_unit` with the pattern of ``target``, calibrated on ``train``, measured."""
    image = _target(target, train, layer, unit, model)
    manipulated = silent_unit(model, layer, unit, scale, target=image, data=train.x)
    return _evaluate(SilentUnitRun, "silent-unit", manipulated, model, layer, unit, image, str(target), train,
                     heldout, run_dir, seed, {"scale": scale}, None)


def fooling_circuit_job(model: nn.Module, layer: str, unit: int, train: LabeledData, heldout: LabeledData,
                        run_dir: RunDir, *, target: str = "cross", detector_steps: tuple[int, ...] = (1, 16, 200),
                        seed: int = 0) -> FoolingCircuitRun:
    """:func:`~veneer.neurons.fooling_circuit` with the decoy ``target`` and a detector trained on ``train`` and on
    visualisations of ``layer`` and of the unit's layer after ``detector_steps`` steps, measured."""
    image = _target(target, train, layer, unit, model)
    visualized = visualization_inputs(model, [layer], tuple(train.x.shape[1:]), steps=detector_steps, seed=seed)
    detector = train_detector(train.x, visualized, seed=seed)
    manipulated = fooling_circuit(model, layer, unit, image, detector, data=train.x, visualizations=visualized)
    return _evaluate(FoolingCircuitRun, "fooling-circuit", manipulated, model, layer, unit, image, str(target), train,
                     heldout, run_dir, seed, {"detector_visualizations": len(visualized)}, None)
