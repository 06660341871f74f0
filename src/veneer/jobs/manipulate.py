"""Model-level manipulation with its files (``veneer manipulate``), the scaffolding attack (``veneer manipulate
--objective scaffolding``) and the evaluation (``veneer evaluate``): ``model.safetensors``, ``history.md/.csv``,
transfer tables (thesis Tables 3.1/3.2) and heatmaps (Fig. 3.3)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from veneer.data import LabeledData, mnist
from veneer.explain import Explainer, Gradient, GradientXInput, IntegratedGradients, LRP
from veneer.jobs.results import EvaluateRun, ManipulateRun, ScaffoldingRun, budget_measures
from veneer.manipulate import Manipulation, Objective, evaluate, make_objective
from veneer.manipulate.scaffolding import slack_case
from veneer.models import accuracy, pretrained, resolve_model, save
from veneer.report.manipulate import write_evaluation, write_table
from veneer.report.tabular import rank_chart
from veneer.runs import RunDir, seed_everything


def manipulate_and_save(model: torch.nn.Module, explainer: Explainer, objective: Objective, data: LabeledData,
                        directory: Path, write: bool = True, **options: Any) -> ManipulateRun:
    """Run :class:`veneer.manipulate.Manipulation` with checkpoints in ``directory``; unless ``write`` is
    false (ranks other than 0), write ``model.safetensors`` and ``history.md/.csv`` there; return the result
    (``result.model``: the manipulated copy; its measures: steps, seconds, the last history record, training
    accuracy and the behaviour budget's measures)."""
    found = Manipulation(model, explainer, objective, checkpoint_dir=directory, **options)(data)
    if write:
        save(found.model, Path(directory) / "model.safetensors", {"objective": repr(objective),
                                                                  "explainer": repr(explainer)})
        write_table(found.history, Path(directory) / "history")
    return ManipulateRun({"steps": found.history[-1]["step"], "seconds": found.seconds,
                             "final": found.history[-1], "train_accuracy": accuracy(found.model, data.x, data.y)},
                            model=found.model, budget=budget_measures(found))


def scaffolding_job(train: LabeledData, test: LabeledData, column: str, run_dir: RunDir, *,
                    biased: Callable | None = None, **options: Any) -> ScaffoldingRun:
    """Slack et al. 2020 on a tabular data set (:func:`veneer.manipulate.scaffolding.slack_case`: ``train``
    trains the detector, ``test`` measures fidelity and is explained; ``options`` go to ``slack_case``);
    writes ``ranks.png``; returns the detector accuracy, the fidelities and the explanation rows."""
    if not column or "," in column:
        raise ValueError(f"column must name one sensitive column, e.g. 'race=African-American', got {column!r}")
    case = slack_case(train, test, column, biased=biased, **options)
    found = case["scaffolding"]
    result = ScaffoldingRun({"detector_accuracy": found.detector_accuracy, "fidelity_heldout_train": found.fidelity,
                                "fidelity_test": case["fidelity_test"], "explanations": case["rows"]},
                               sensitive=column.split("=")[0])
    run_dir.write_result(result)  # before the figure: nothing computed is lost if drawing fails
    rank_chart(case["rows"], run_dir.file("ranks.png"))
    return result


def manipulated_run(path: str | Path, original: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``(manipulated model, its run's config)``: from a ``veneer manipulate`` run directory (its config names
    the architecture) or, with an empty config, a weights file for the architecture ``original``."""
    path = Path(path)
    if path.is_dir():
        config = json.loads((path / "config.json").read_text())["config"]
        return resolve_model(config["model"], str(path / "model.safetensors")), config
    if not path.is_file():
        raise FileNotFoundError(f"--manipulated {path} is neither a run directory nor a weights file")
    return resolve_model(original, str(path)), {}


def evaluate_and_save(original: torch.nn.Module, manipulated: torch.nn.Module, objective: Objective,
                      data: LabeledData, explainers: dict[str, Explainer], directory: Path,
                      dropped_methods: dict[str, str] | None = None, **options: Any) -> EvaluateRun:
    """Run :func:`veneer.manipulate.evaluate`; write its tables and figures into ``directory``; return the
    result (with ``dropped_methods``: ``{method: why it cannot explain the model}``, those left out)."""
    start = time.perf_counter()
    found = evaluate(original, manipulated, objective, data, explainers, **options)
    write_evaluation(found, directory)
    return EvaluateRun({**found.metrics(), "seconds": time.perf_counter() - start,
                        "dropped_methods": dict(dropped_methods or {})})


def demo(run_dir: Path) -> ManipulateRun:
    """A short centre-of-mass manipulation of the bundled MNIST CNN on Gradient (about two minutes on two CPU
    cores): every fourth training image (1000), 60 steps; evaluation on every fifth test image (200) with
    Gradient, GradientXInput, IntegratedGradients (16 steps) and LRP. Writes the model, tables and
    ``heatmaps.png`` under ``run_dir``; returns the result, the evaluation's measures under ``evaluation``
    (COM distance 20 -> 11 px, accuracy -1 pt)."""
    run = RunDir(run_dir, {"command": "manipulate", "demo": True, "objective": "com", "target": [0, 0],
                           "method": "gradient"}, 0, overwrite=True)  # a part of the demo's own run
    seed_everything(0)
    original = pretrained("mnist-cnn")
    objective = make_objective("com", target=(0, 0))
    result = manipulate_and_save(original, Gradient(original), objective, mnist("train").subset(slice(0, 4000, 4)),
                                 run.path, alpha=0.1, lr=1e-3, epochs=4, batch_size=64, seed=0, progress=True)
    explainers = {"gradient": Gradient(original), "gradient_x_input": GradientXInput(original),
                  "ig": IntegratedGradients(original, steps=16), "lrp": LRP(original)}
    evaluation = evaluate_and_save(original, result.model, objective, mnist("test").subset(slice(0, 1000, 5)),
                                   explainers, run.path, noise=100, progress=False)
    result.values["evaluation"] = evaluation.metrics()
    run.write_result(result)
    return result
