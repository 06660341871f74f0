"""Figures and tables of a model manipulation (thesis Fig. 3.3, Figs. 3.14/3.15, Tables 3.1/3.2), and the
report sections of ``veneer manipulate`` and ``veneer evaluate`` runs (kinds ``manipulate`` and ``evaluate``)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np

from veneer.report.figures import explanation_grid, save_figure
from veneer.report.page import (Card, Run, Section, arrow, budget_cards, fmt, history_chart, key_values, pct,
                                register_section, tone)
from veneer.runs import atomic_write_bytes

if TYPE_CHECKING:  # the report reads run directories; it needs veneer.manipulate only to draw an Evaluation
    from veneer.manipulate import Evaluation


def manipulation_figure(evaluation: Evaluation, path: str | os.PathLike) -> Path:
    """Original vs manipulated normalized heatmaps per method (thesis Fig. 3.3): one row per example input,
    then two columns per method (original, manipulated)."""
    if "inputs" not in evaluation.examples:
        raise ValueError("the evaluation holds no example heatmaps (tabular data, or examples=0)")
    maps = {}
    for method, pair in evaluation.examples.items():
        if method != "inputs":
            maps[f"{method}\noriginal"], maps[f"{method}\nmanipulated"] = pair
    return explanation_grid(evaluation.examples["inputs"], maps, path)


def feature_attribution_chart(evaluation: Evaluation, path: str | os.PathLike) -> Path:
    """Mean |attribution| per feature before and after the manipulation, one panel per method
    (thesis Figs. 3.14/3.15)."""
    if not evaluation.features:
        raise ValueError("the evaluation holds no per-feature attributions (image data)")
    names = evaluation.features["names"]
    methods = [m for m in evaluation.features if m != "names"]
    fig, axes = plt.subplots(len(methods), 1, figsize=(max(6.0, 0.45 * len(names)), 2.6 * len(methods)),
                             squeeze=False)
    positions = np.arange(len(names))
    for ax, method in zip(axes[:, 0], methods):
        for shift, model in ((-0.2, "original"), (0.2, "manipulated")):
            ax.bar(positions + shift, evaluation.features[method][model], width=0.4, label=model)
        ax.set_title(method, fontsize=9)
        ax.set_ylabel("mean |attribution|", fontsize=8)
        ax.set_xticks(positions, names, rotation=45, ha="right", fontsize=8)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of the rows, in order of first appearance."""
    return list(dict.fromkeys(key for row in rows for key in row))


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A GitHub markdown table of the rows' keys (a missing value is left empty; floats to 4 significant digits)."""
    if not rows:
        return ""
    columns = _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict[str, Any]], stem: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``rows`` as ``stem.md`` (markdown) and ``stem.csv``, atomically; return both paths."""
    stem = Path(stem)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=_columns(rows))
        writer.writeheader()
        writer.writerows(rows)
    md, csv_path = stem.with_suffix(".md"), stem.with_suffix(".csv")
    atomic_write_bytes(md, markdown_table(rows).encode())
    atomic_write_bytes(csv_path, buffer.getvalue().encode())
    return md, csv_path


def write_evaluation(evaluation: Evaluation, directory: str | os.PathLike) -> dict[str, Path]:
    """Every table and figure of ``evaluation`` into ``directory``: ``transfer.md/.csv`` (data),
    ``transfer_noise.md/.csv`` (Gaussian noise, when measured), ``heatmaps.png`` (images) or
    ``feature_attribution.png`` and ``fairness.md/.csv`` (tabular)."""
    directory = Path(directory)
    written = {"transfer": write_table(evaluation.table("data"), directory / "transfer")[0]}
    if evaluation.noise:
        written["transfer_noise"] = write_table(evaluation.table("noise"), directory / "transfer_noise")[0]
    if "inputs" in evaluation.examples:
        written["heatmaps"] = manipulation_figure(evaluation, directory / "heatmaps.png")
    if evaluation.features:
        written["feature_attribution"] = feature_attribution_chart(evaluation, directory / "feature_attribution.png")
    if evaluation.fairness:
        rows = [{"attribute": attribute, **values} for attribute, values in evaluation.fairness.items()]
        written["fairness"] = write_table(rows, directory / "fairness")[0]
    return written


# ----------------------------------------------------------------------------------------- report sections
MANIPULATE_SETTINGS = ("method", "objective", "target", "map", "region", "k", "classes", "features", "keep", "alpha",
                       "lr", "epochs", "batch_size", "softplus_beta")


def manipulate_section(run: Run) -> Section:
    """``veneer manipulate``: accuracy after, the final attack and keep losses, the behaviour budget, the
    training curves of ``history.csv`` and, when the run holds one, its evaluation (:func:`evaluate_section`)."""
    m, c = run.metrics, run.config
    final = m["final"]
    section = Section("Model manipulation (fine-tuning against an explanation objective)", cards=[
        Card("training accuracy after", pct(m["train_accuracy"])),
        Card("final attack loss", fmt(final["attack"]), f"objective {fmt(c.get('objective'))}"),
        Card("final keep loss", fmt(final["keep"]), f"keep {fmt(c.get('keep', 'ce'))}"),
        Card("steps", fmt(m["steps"]), f"{fmt(m['seconds'])} s"), *budget_cards(m)])
    settings = [(k, c[k]) for k in MANIPULATE_SETTINGS if c.get(k) is not None]
    if settings:
        section.tables.append(key_values("settings", settings))
    history = run.path / "history.csv"
    if history.is_file():
        with history.open(newline="") as handle:
            section.figures += history_chart(list(csv.DictReader(handle)), "history.csv",
                                             "Training curves: the attack term, the keep term and their sum.",
                                             href=run.href(history))
        run.used.update({"history.csv", "history.md"})
    if "evaluation" in m:  # the demo's manipulation evaluates its model in the same run
        evaluation = evaluate_section(run, m["evaluation"])
        section.sections.append(evaluation)
        section.key = evaluation.key
    return section


def evaluate_section(run: Run, m: dict[str, Any] | None = None) -> Section:
    """``veneer evaluate`` (thesis Sec. 3.5): accuracy and label agreement of the original and the manipulated
    model, the objective's measure per method, Fig. 3.3 and the transfer tables (Tables 3.1/3.2)."""
    m = run.metrics if m is None else m
    p, measure = m["predictions"], m["measure"]
    section = Section("Evaluation: original against manipulated model", cards=[
        Card("accuracy original → manipulated", arrow(p["accuracy_original"], p["accuracy_manipulated"], pct),
             f"drop {fmt(p['accuracy_drop_points'])} points", tone(p["accuracy_drop_points"], 5, 1, low_is_bad=False)),
        Card("label agreement", pct(p["label_agreement"]))])
    for method, by_model in list(m["methods"].items())[:4]:
        original, manipulated = by_model["original"], by_model["manipulated"]
        section.cards.append(Card(f"{method}: {measure}", arrow(original[measure], manipulated[measure]),
                                  f"success {arrow(original['success_rate'], manipulated['success_rate'], pct)}"))
        if section.key is None or method == run.config.get("method"):
            section.key = section.cards[-1]
    if m["criterion"]:
        section.text.append(f"Objective {m['objective']}; an input counts as a success when its {measure} "
                            f"meets: {m['criterion']}.")
    section.figures += run.figure("heatmaps.png", "Thesis Fig. 3.3: normalized heatmaps of the original and "
                                  "the manipulated model, per method.")
    section.figures += run.figure("feature_attribution.png", "Mean |attribution| per feature, original and "
                                  "manipulated (thesis Figs. 3.14/3.15).")
    section.tables += run.table("transfer", "Transfer to other methods on the data (thesis Tables 3.1/3.2).")
    section.tables += run.table("transfer_noise", "The same on Gaussian-noise inputs (thesis Sec. 4.1).")
    section.tables += run.table("fairness", "Demographic disparity (DDI) and equal opportunity (DEO).")
    return section


register_section("manipulate", manipulate_section, title="Model manipulation")
register_section("evaluate", evaluate_section, title="Manipulation evaluation")
