"""Figures of the attacks on tabular explanations: the rank chart of Slack et al. 2020 (Fig. 2) and the
sensitive share per method of a multi-explainer fairwashing (Dimanov et al. 2020); the report section of
``veneer manipulate --objective scaffolding`` (kind ``scaffolding``)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from veneer.report.figures import save_figure
from veneer.report.page import Card, Run, Section, Table, key_values, pct, register_section, tone


def rank_chart(rows: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Slack et al. 2020, Fig. 2: one panel per (method, model) row of
    :func:`veneer.manipulate.scaffolding.explanation_ranks`; at each rank 1..3 the share of rows whose feature
    at that rank is in each group (stacked bars)."""
    fig, axes = plt.subplots(1, len(rows), figsize=(2.1 * len(rows), 2.8), sharey=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, row in zip(axes[0], rows):
        bottom = np.zeros(len(next(iter(row["ranks"].values()))))
        for i, (group, shares) in enumerate(row["ranks"].items()):
            color = "0.8" if group == "other" else colors[i % len(colors)]
            ax.bar(np.arange(1, len(shares) + 1), 100 * np.asarray(shares), bottom=bottom, color=color, label=group)
            bottom += 100 * np.asarray(shares)
        ax.set_title(f"{row['method']}\n{row['model']}", fontsize=8)
        ax.set_xlabel("rank", fontsize=8)
        ax.set_xticks(np.arange(1, len(bottom) + 1))
    axes[0, 0].set_ylabel("% of explained rows", fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def share_chart(shares: dict[str, dict[str, float]], path: str | os.PathLike, title: str = "",
                ylabel: str = "sensitive share of |attribution|") -> Path:
    """Grouped bars: ``shares[method][model]`` (e.g. ``"original"`` / ``"manipulated"``) per method."""
    methods = list(shares)
    models = list(dict.fromkeys(m for s in shares.values() for m in s))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(methods)), 2.8))
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        ax.bar(np.arange(len(methods)) + (i - (len(models) - 1) / 2) * width,
               [shares[m].get(model, np.nan) for m in methods], width=width, label=model)
    ax.set_xticks(np.arange(len(methods)), methods, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------- report section
SCAFFOLDING_SETTINGS = ("objective", "data", "split", "n", "features", "invert", "perturbation", "innocuous",
                        "biased", "explain_n", "seed")


def scaffolding_section(run: Run) -> Section:
    """``veneer manipulate --objective scaffolding`` (Slack et al. 2020): how well the scaffold tells the
    explainer's perturbations from real rows, how faithfully it passes the biased model's decisions on, and how
    often LIME / KernelSHAP rank the sensitive feature first on the biased and on the scaffolded model (Fig. 2)."""
    m, c = run.metrics, run.config
    sensitive = c["features"].split("=", 1)[0]
    rows = m["explanations"]
    settings = SCAFFOLDING_SETTINGS + (("model", "weights") if c["biased"] == "model" else ())
    run.applies = {*settings, "out"}
    section = Section("Scaffolding: a biased model hidden from LIME / KernelSHAP (Slack et al. 2020)", cards=[
        Card("detector accuracy", pct(m["detector_accuracy"]), "real rows told from the explainer's perturbations "
             "(balanced, held-out)", tone(m["detector_accuracy"], 0.6, 0.8)),
        Card("fidelity to the biased model", pct(m["fidelity_test"]), "test rows on which the scaffold predicts "
             f"the biased model's class; held-out training rows: {pct(m['fidelity_heldout_train'])}")])
    for row in rows:
        section.cards.append(Card(f"{row['method']} on {row['model']}: {sensitive} ranked first",
                                  pct(row[f"{sensitive} top-1"]), f"in the top 3: {pct(row[f'{sensitive} top-3'])}"))
    section.key = section.cards[-1] if rows else section.cards[0]
    section.text.append(f"The scaffold answers real rows with the biased model (its decision rests on {sensitive}) "
                        "and the explainer's off-manifold perturbations with an innocuous model that uses random "
                        "features, so the explanations of the scaffold stop naming the sensitive feature while its "
                        "decisions stay biased.")
    section.figures += run.figure("ranks.png", "Slack et al. Fig. 2: at each rank 1-3, the share of explained rows "
                                  "whose feature at that rank is the sensitive one, a random one, or another.")
    shares = [key for key in rows[0] if key not in ("model", "method", "ranks")] if rows else []
    section.tables.append(Table("explanations", ["model", "method", *shares],
                                [[row["model"], row["method"], *(pct(row[key]) for key in shares)] for row in rows],
                                "Share of explained test rows whose top-1 (top-3) feature is in each group."))
    section.tables.append(key_values("settings", [(k, c[k]) for k in settings if c.get(k) is not None]))
    return section


register_section("scaffolding", scaffolding_section, title="Scaffolding attack")
