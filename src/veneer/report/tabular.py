"""Figures of the attacks on tabular explanations: the rank chart of Slack et al. 2020 (Fig. 2) and the
sensitive share per method of a multi-explainer fairwashing (Dimanov et al. 2020)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from veneer.report.figures import save_figure


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
