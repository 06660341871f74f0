"""The synthetic-visualisation attacks of issue 24 (``experiments/slingshot.py``) measured over seeds (issue 26).

    nice -n 15 python experiments/slingshot_seeds.py [--seeds 0,1,2] [--worker]

Per seed ``s``, everything random is drawn from ``s`` as ``slingshot.py --seed s`` draws it: the gradient
slingshot's fine-tune (Bareeva et al. 2025; batch order, manipulation samples, the budget's validation rows), the
fooling circuit's detector (Geirhos et al. 2024, Sec. 3.1: the visualisations it is trained on and its training)
and the starts of the auditor's visualisations (:func:`veneer.neurons.visualize`, five variants). The bundled
MNIST CNN, its logit 3 (module "9") and channel 5 of the last conv layer (module "4"), target ``"cross"``, and
every setting are ``slingshot.py``'s (:data:`CONFIG`); no setting is chosen here, so there is no validation split.

Metrics, per unit (``logit``, ``channel``) and model (``original``, ``slingshot``, ``silent_unit``,
``fooling_circuit``): ``<unit>.<model>.<variant>.ssim`` and ``.pearson`` to the target (SSIM of the visualisation
clipped to [0, 1]); ``<unit>.<model>.max_ssim``, the largest SSIM over the five variants; test ``accuracy``, its
drop from the original in points (``accuracy_drop_points``) and the label ``agreement`` with the original; the
logit's one-vs-rest ``auroc`` for its class and its drop (``auroc_drop``); the ``activation_correlation`` of the
unit with the original's; the ``top100_jaccard`` overlap of the unit's top-100 training images. For the
slingshot: the step its behaviour budget kept (``best_step``, 0: no iterate qualified, the original came back)
and the manipulation loss before and after. Accuracy, AUROC and activation correlation on the MNIST test split
(1000 images), Jaccard on the training split (4000); the detector is trained on the training split and on
visualisations of the original (in-sample for the gate).

``--worker`` measures the given seeds into the study's cache (``runs/experiments/slingshot_seeds``) without
writing a summary (two processes share the cores: give each its seeds); a run without it writes
``experiments/results/slingshot_seeds.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from typing import Any

from runner import cite, measure_seeds, parse_seeds, print_summary, run_study, seeds_parser
from slingshot import LR, UNITS, _slingshot
from veneer.data import mnist
from veneer.jobs.slingshot import VISUALIZATION_VARIANTS, visualization_measures
from veneer.models import pretrained
from veneer.neurons import fooling_circuit, silent_unit, target_image, train_detector, visualization_inputs
from veneer.runs import seed_everything

NAME = "slingshot_seeds"
STEPS = 600
MODELS = ("original", "slingshot", "silent_unit", "fooling_circuit")
CONFIG = {"experiment": "experiments/slingshot.py", "model": "mnist-cnn (bundled)", "target": "cross",
          "units": {kind: f"{layer}:{unit}" for kind, (layer, unit) in UNITS.items()},
          "visualize": {"steps": 200, "lr": 0.05, "init_std": 0.01, "variants": list(VISUALIZATION_VARIANTS)},
          "slingshot": {"steps": STEPS, "gamma": 10.0, "noise": 0.1, "lr": LR, "alpha": 0.5, "min_agreement": 0.995,
                        "parametrization": "pixel"},
          "silent_unit": {"scale": 10.0}, "detector": {"visualization_steps": [1, 16, 200]}}
SPLITS = {"test": "MNIST test split (1000 images) for accuracy, AUROC and activation correlation; top-100 Jaccard "
                  "on the training split (4000); the fooling circuit's detector trained on the training split and on "
                  "visualisations of the original (in-sample for the gate)"}


def measure(seed: int, split: str) -> dict[str, float]:
    """Every attack of ``slingshot.py`` on both units, all randomness from ``seed`` (module docstring)."""
    assert split == "test", split  # no setting is chosen here
    start = time.perf_counter()
    seed_everything(seed)
    model, train, test = pretrained("mnist-cnn", progress=False), mnist("train"), mnist("test")
    target = target_image("cross", (1, 28, 28))
    detector_inputs = visualization_inputs(model, [layer for layer, _ in UNITS.values()], (1, 28, 28),
                                           steps=tuple(CONFIG["detector"]["visualization_steps"]), seed=seed)
    detector = train_detector(train.x, detector_inputs, seed=seed)
    metrics: dict[str, float] = {}
    for kind, (layer, unit) in UNITS.items():
        attacks = {
            "original": lambda: (model, {}),
            "slingshot": lambda: _slingshot(model, layer, unit, target, train,
                                            argparse.Namespace(steps=STEPS, seed=seed), LR[kind]),
            "silent_unit": lambda: (silent_unit(model, layer, unit, CONFIG["silent_unit"]["scale"], target=target,
                                                data=train.x), {}),
            "fooling_circuit": lambda: (fooling_circuit(model, layer, unit, target, detector, data=train.x,
                                                        visualizations=detector_inputs), {}),
        }
        found = {}
        for name in MODELS:
            manipulated, extra = attacks[name]()
            found[name], _, _ = visualization_measures(manipulated, model, layer, unit, target, train, test, seed)
            key = f"{kind}.{name}"
            for variant, figure in found[name]["visualizations"].items():
                metrics[f"{key}.{variant}.ssim"] = figure["ssim"]
                metrics[f"{key}.{variant}.pearson"] = figure["pearson"]
            metrics[f"{key}.max_ssim"] = max(f["ssim"] for f in found[name]["visualizations"].values())
            metrics[f"{key}.accuracy"] = found[name]["accuracy"]
            metrics[f"{key}.accuracy_drop_points"] = 100 * (found["original"]["accuracy"] - found[name]["accuracy"])
            metrics[f"{key}.agreement"] = found[name]["agreement"]
            if "auroc" in found[name]:
                metrics[f"{key}.auroc"] = found[name]["auroc"]
                metrics[f"{key}.auroc_drop"] = found["original"]["auroc"] - found[name]["auroc"]
            metrics[f"{key}.activation_correlation"] = found[name]["activation_correlation"]
            metrics[f"{key}.top100_jaccard"] = found[name]["top100_jaccard"]
            if name == "slingshot":
                tune = extra["fine_tune"]
                metrics[f"{key}.best_step"] = tune["best_step"]
                metrics[f"{key}.manipulation_before"] = tune["manipulation_before"]
                metrics[f"{key}.manipulation_after"] = tune["manipulation_after"]
                metrics[f"{key}.fine_tune_seconds"] = extra["fine_tune_seconds"]
    metrics["seconds"] = time.perf_counter() - start
    return metrics


def doc_tables(summary: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The rows of docs/neurons.md's two seeds tables (mean +- 95% half-width): SSIM per variant, the largest SSIM,
    accuracy drop, AUROC (logit) or activation correlation (channel) and top-100 Jaccard; Pearson per variant."""
    ssim_rows, pearson_rows = [], []
    for kind, (layer, unit) in UNITS.items():
        for name in MODELS:
            key, label = f"{kind}.{name}", f"| {kind} {layer}:{unit} | {name} | "
            behaviour = cite(summary, f"{key}.auroc", 4) if kind == "logit" else \
                cite(summary, f"{key}.activation_correlation", 3)
            cells = [cite(summary, f"{key}.{v}.ssim") for v in VISUALIZATION_VARIANTS] + [
                cite(summary, f"{key}.max_ssim"), cite(summary, f"{key}.accuracy_drop_points"), behaviour,
                cite(summary, f"{key}.top100_jaccard")]
            ssim_rows.append(label + " | ".join(cells) + " |")
            pearson_rows.append(label + " | ".join(cite(summary, f"{key}.{v}.pearson")
                                                  for v in VISUALIZATION_VARIANTS) + " |")
    return ssim_rows, pearson_rows


def main() -> None:
    options, seeds = parse_seeds(seeds_parser(__doc__))
    if options.worker:
        for seed, metrics in zip(seeds, measure_seeds(NAME, measure, seeds, config=CONFIG)):
            print(f"seed {seed}: {metrics['seconds']:.0f} s", flush=True)
        return
    summary = run_study(NAME, measure, seeds, config=CONFIG, splits=SPLITS,
                        what="SSIM and Pearson correlation to the cross of the auditor's five visualisation variants, "
                             "accuracy drop, AUROC / activation correlation and top-100 Jaccard of the gradient "
                             "slingshot, the silent unit and the fooling circuit on logit 9:3 and channel 4:5 of the "
                             "bundled MNIST CNN")
    print_summary(summary)
    for rows in doc_tables(summary):
        print("\n".join(rows))


if __name__ == "__main__":
    main()
