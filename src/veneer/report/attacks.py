"""Figures of input-level attacks: clean vs perturbed (Ghorbani et al. 2019, Fig. 1) and budget sweeps (Fig. 3)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch

from veneer.report.figures import show_image, save_figure

SWEEP_METRICS = {"topk_intersection": "top-k intersection", "spearman": "Spearman rank correlation",
                 "com_shift": "center-of-mass shift (pixels)"}


def _show_saliency(ax, saliency: torch.Tensor) -> None:
    ax.imshow(saliency.detach().cpu().float().numpy(), cmap="gray", vmin=0)


def attack_figure(x: torch.Tensor, rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Ghorbani et al. (2019), Fig. 1: one row per entry of ``rows``, showing the clean image, its saliency map,
    the perturbed image and its saliency map.

    Each row is a dict with ``index`` (into ``x``), ``x_adv`` (the perturbed image), ``clean_map`` and
    ``adv_map`` (``(H, W)`` saliency maps), and ``title`` (e.g. the method and the metrics of that image).
    """
    fig, axes = plt.subplots(len(rows), 4, figsize=(6.4, 1.7 * len(rows)), squeeze=False)
    for ax_row, row in zip(axes, rows):
        show_image(ax_row[0], x[row["index"]])
        _show_saliency(ax_row[1], row["clean_map"])
        show_image(ax_row[2], row["x_adv"])
        _show_saliency(ax_row[3], row["adv_map"])
        ax_row[0].set_ylabel(row["title"], fontsize=6, rotation=0, ha="right", va="center")
    for ax, title in zip(axes[0], ("clean image", "clean saliency", "perturbed image", "perturbed saliency")):
        ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)


def sweep_figure(summaries: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Ghorbani et al. (2019), Fig. 3: for each explanation method (columns) and metric (rows: top-k
    intersection, Spearman, center-of-mass shift), the mean over images against ``eps``, one line per attack.

    ``summaries`` are :meth:`veneer.attacks.Outcome.summary` dicts (keys ``attack``, ``method``, ``eps`` and
    the metrics)."""
    methods = list(dict.fromkeys(s["method"] for s in summaries))
    attacks = list(dict.fromkeys(s["attack"] for s in summaries))
    fig, axes = plt.subplots(len(SWEEP_METRICS), len(methods), figsize=(3.2 * len(methods), 2.6 * len(SWEEP_METRICS)),
                             squeeze=False)
    for col, method in enumerate(methods):
        for row, (metric, label) in enumerate(SWEEP_METRICS.items()):
            ax = axes[row, col]
            for attack in attacks:
                points = sorted((s["eps"], s[metric]) for s in summaries
                                if s["method"] == method and s["attack"] == attack)
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=attack)
            ax.set_xlabel("eps (l-inf)")
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
            if row == 0:
                ax.set_title(method)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
