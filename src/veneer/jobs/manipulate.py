"""Model-level manipulation with its files (``veneer manipulate``) and its evaluation (``veneer evaluate``):
``model.safetensors``, ``history.md/.csv``, transfer tables (thesis Tables 3.1/3.2) and heatmaps (Fig. 3.3)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from veneer.data import LabeledData, mnist
from veneer.explain import Explainer, Gradient, GradientXInput, IntegratedGradients, LRP
from veneer.manipulate import Manipulation, Objective, evaluate, make_objective
from veneer.models import accuracy, pretrained, save
from veneer.report.manipulate import write_evaluation, write_table
from veneer.runs import RunDir, seed_everything


def manipulate_and_save(model: torch.nn.Module, explainer: Explainer, objective: Objective, data: LabeledData,
                        directory: Path, write: bool = True, **options: Any) -> dict[str, Any]:
    """Run :class:`veneer.manipulate.Manipulation` with checkpoints in ``directory``; unless ``write`` is
    false (ranks other than 0), write ``model.safetensors`` and ``history.md/.csv`` there; return
    ``(manipulated model, metrics)``."""
    result = Manipulation(model, explainer, objective, checkpoint_dir=directory, **options)(data)
    metrics = {"steps": result.history[-1]["step"], "seconds": result.seconds, "final": result.history[-1],
               "train_accuracy": accuracy(result.model, data.x, data.y)}
    if write:
        save(result.model, Path(directory) / "model.safetensors", {"objective": repr(objective),
                                                                   "explainer": repr(explainer)})
        write_table(result.history, Path(directory) / "history")
    return result.model, metrics


def evaluate_and_save(original: torch.nn.Module, manipulated: torch.nn.Module, objective: Objective,
                      data: LabeledData, explainers: dict[str, Explainer], directory: Path, **options: Any
                      ) -> dict[str, Any]:
    """Run :func:`veneer.manipulate.evaluate`; write its tables and figures into ``directory``; return metrics."""
    start = time.perf_counter()
    result = evaluate(original, manipulated, objective, data, explainers, **options)
    write_evaluation(result, directory)
    return {**result.metrics(), "seconds": time.perf_counter() - start}


def demo(run_dir: Path) -> dict[str, Any]:
    """A short centre-of-mass manipulation of the bundled MNIST CNN on Gradient (about two minutes on two CPU
    cores): every fourth training image (1000), 60 steps; evaluation on every fifth test image (200) with
    Gradient, GradientXInput, IntegratedGradients (16 steps) and LRP. Writes the model, tables and
    ``heatmaps.png`` under ``run_dir``; returns the metrics (COM distance 20 -> 11 px, accuracy -1 pt)."""
    run = RunDir(run_dir, {"command": "manipulate", "demo": True, "objective": "com", "target": [0, 0],
                           "method": "gradient"}, 0, overwrite=True)  # a part of the demo's own run
    seed_everything(0)
    original = pretrained("mnist-cnn")
    objective = make_objective("com", target=(0, 0))
    model, metrics = manipulate_and_save(original, Gradient(original), objective,
                                         mnist("train").subset(slice(0, 4000, 4)), run.path, alpha=0.1, lr=1e-3,
                                         epochs=4, batch_size=64, seed=0, progress=True)
    explainers = {"gradient": Gradient(original), "gradient_x_input": GradientXInput(original),
                  "ig": IntegratedGradients(original, steps=16), "lrp": LRP(original)}
    metrics["evaluation"] = evaluate_and_save(original, model, objective, mnist("test").subset(slice(0, 1000, 5)),
                                              explainers, run.path, noise=100, progress=False)
    run.write_metrics(metrics)
    return metrics
