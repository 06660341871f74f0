"""The audit's run directory: audit.json, a markdown summary (audit.md) and figures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from veneer.audit import AuditResult
from veneer.report.figures import explanation_grid, save_figure
from veneer.runs import write_json

MEANING = {
    "fragility": "a small targeted input change moves the explanation more than it does for clean models",
    "influence_fragility": "a small targeted input change reshuffles the most influential training samples more "
                           "than on clean models",
    "hessian": "the class score bends more sharply per unit slope than clean models' (Dombrowski Thm. 2)",
    "noise_inputs": "explanations of pure noise look alike: the model draws one picture for every input",
    "weight_noise": "small weight noise that keeps the predictions breaks the explanation",
    "parameter_randomization": "explanations survive randomising the weights, so they do not reflect learning",
    "faithfulness": "deleting the top-ranked features hurts the prediction less than for clean models",
    "cross_method_agreement": "one method disagrees with the others more than on clean models",
    "beta_smoothing": "the explanation disappears when ReLU is smoothed into Softplus",
    "tangent_space": "the explanation points off the data manifold more than clean models' do",
    "neuron_visualization": "channels' top-k images and synthetic visualisations no longer match",
    "neuron_balance": "some channels shrank against what the next layers make of them (rescaled by a neuron attack)",
    "neuron_group_fairness": "neurons look fairer across groups than the decisions they produce",
    "reference_comparison": "predictions agree with the reference but some methods' explanations moved",
}


def score_figure(tests: dict[str, dict[str, Any]], z_flag: float, path: str | os.PathLike) -> Path:
    """Horizontal bars: each test's z against the reference models, flagged tests in red, the threshold dashed."""
    names = list(tests)
    z = [tests[n]["z"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1))
    ax.barh(names, z, color=["tab:red" if tests[n]["flag"] else "tab:blue" for n in names])
    ax.axvline(z_flag, color="black", linestyle="--", linewidth=1, label=f"flag at z = {z_flag:g}")
    ax.invert_yaxis()
    ax.set_xlabel("z against reference models (larger = more suspicious)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def markdown_summary(report: dict[str, Any]) -> str:
    """audit.md: verdict, calibration and its cost, and one table row per test."""
    config, calibration = report["config"], report["calibration"]
    fpr = config["false_positive_rate"]
    cost = config.get("calibration_cost", {})
    if config["calibration"] == "twins":
        twins = cost.get("twins", {})
        source = (f"{twins.get('count')} clean twins trained here (same architecture, re-initialised, "
                  f"{twins.get('steps')} steps each; accuracy {[round(a, 3) for a in twins.get('accuracy', [])]}; "
                  f"{cost.get('seconds', 0):.0f} s for training and testing them)")
    else:
        source = (f"{cost.get('references', '?')} given reference model(s) "
                  f"({cost.get('seconds', 0):.0f} s to test them)")
    lines = [f"# Audit: {report['verdict']}", "",
             f"Score {report['score']:.3f} (largest test score; 0.5 = at the flag threshold z = {config['z_flag']:g}). "
             f"Budget `{config['budget']}`, {config['samples']} inputs, methods {', '.join(config['methods'])}, "
             f"seed {config['seed']}, {report['seconds']:.0f} s in all.", "",
             f"Calibration: {source}. Verdict rule: manipulated when two tests flag, one has z > "
             f"{2 * config['z_flag']:g} or the mean of the three largest test z (here {config['combined_z']:.2f}) "
             f"exceeds 3; suspicious when one flags or that mean exceeds 2. False-positive rate measured on "
             f"{fpr['measured_on']}: {fpr['measured']:.2f}; under an independent Gaussian null with no tolerance "
             f"(a pessimistic bound): {fpr['gaussian_null']:.2f}.", "",
             "| test | statistic | z | score | flag | worst component | seconds | a flag means |",
             "|---|---|---|---|---|---|---|---|"]
    for name, test in report["tests"].items():
        evidence = test["evidence"]
        lines.append(f"| {name} | {test['statistic']:.4g} | {test['z']:.2f} | {test['score']:.3f} | "
                     f"{'**yes**' if test['flag'] else 'no'} | {evidence['worst']} | {evidence['seconds']:.1f} | "
                     f"{MEANING.get(name, '')} |")
    skipped = config.get("skipped") or {}
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"{name} ({why})" for name, why in skipped.items()) + "."]
    lines += ["", "Figures: `scores.png` (z per test), `explanations.png` (example explanations, image data).",
              f"Reference kind: {calibration['kind']}.", ""]
    return "\n".join(lines)


def write_audit(result: AuditResult, directory: str | os.PathLike) -> dict[str, Path]:
    """Write ``audit.json``, ``audit.md``, ``scores.png`` and, for images, ``explanations.png``."""
    directory = Path(directory)
    report = result.to_json()
    paths = {"json": directory / "audit.json", "markdown": directory / "audit.md"}
    write_json(paths["json"], report)
    paths["markdown"].write_text(markdown_summary(report))
    paths["scores"] = score_figure(result.tests, result.config["z_flag"], directory / "scores.png")
    examples = result.extras.get("examples")
    if examples:
        paths["explanations"] = explanation_grid(examples["images"], examples["heatmaps"],
                                                 directory / "explanations.png")
    return paths
