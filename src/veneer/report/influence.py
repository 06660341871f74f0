"""Figures of influence functions and of their fragility (Ghorbani et al. 2019, Fig. 4), and the report section
of ``veneer influence`` runs (kind ``influence``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch

from veneer.report.figures import save_figure, show_image
from veneer.report.page import Card, Run, Section, fmt, register_section


def _image_row(axes, query: torch.Tensor, query_title: str, train_x: torch.Tensor, index: torch.Tensor,
               scores: torch.Tensor, train_y: torch.Tensor | None) -> None:
    show_image(axes[0], query)
    axes[0].set_title(query_title, fontsize=8)
    for ax, i in zip(axes[1:], index.tolist()):
        show_image(ax, train_x[i])
        label = "" if train_y is None else f" (label {int(train_y[i])})"
        ax.set_title(f"#{i}{label}\n{scores[i].item():.3g}", fontsize=7)
    for ax in axes:
        ax.axis("off")


def influence_figure(rows: list[dict[str, Any]], train_x: torch.Tensor, path: str | os.PathLike,
                     train_y: torch.Tensor | None = None) -> Path:
    """One row per entry of ``rows``: a query image and its most influential training images, each titled with
    its training index (and label, given ``train_y``) and score. A row is a dict with ``image`` ``(C, H, W)``, ``title``, ``index`` ``(k,)``
    (training indices) and ``scores`` ``(N_train,)``. For Ghorbani et al.'s Fig. 4 pass the clean test image
    with its top-k and the perturbed image with its new top-k as two rows."""
    k = max(len(row["index"]) for row in rows)
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(1.3 * (k + 1), 1.6 * len(rows)), squeeze=False)
    for ax_row, row in zip(axes, rows):
        _image_row(ax_row, row["image"], row["title"], train_x, row["index"], row["scores"], train_y)
    return save_figure(fig, path)


def influence_sweep_figure(rows: list[dict[str, Any]], path: str | os.PathLike, k: int = 5,
                           label: str = "attack") -> Path:
    """Ghorbani et al. (2019), Fig. 4 (right): Spearman correlation and top-``k`` intersection of the influence
    scores against ``eps``, one line per distinct ``rows[i][label]`` (e.g. sign attack vs random sign)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, metric, title in zip(axes, ("spearman", f"top{k}_intersection"),
                                 ("Spearman rank correlation", f"top-{k} intersection")):
        for name in dict.fromkeys(row[label] for row in rows):
            chosen = [row for row in rows if row[label] == name]
            ax.plot([row["eps"] for row in chosen], [row[metric] for row in chosen], marker="o", label=str(name))
        ax.set_xlabel("eps (l-inf)")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


__all__ = ["influence_figure", "influence_sweep_figure"]


# ----------------------------------------------------------------------------------------- report section
def influence_section(run: Run) -> Section:
    """``veneer influence`` (Koh & Liang 2017): the training samples that most helped and most harmed each test
    prediction."""
    m = run.metrics
    section = Section("Influence of training samples (Koh & Liang 2017)", cards=[
        Card("test samples", fmt(m["n_test"])), Card("training samples scored", fmt(m["n_train"])),
        Card("shown per test sample", f"{fmt(m['k'])} helpful, {fmt(m['k'])} harmful"),
        Card("inverse-Hessian solver", fmt(m["method"]), f"damping {fmt(m['damping'])} · parameters "
                                                        f"{fmt(m['params'])}"),
        Card("mean |influence|", fmt(m["mean_abs_score"]))])
    section.text.append("The influence of a training sample on a test prediction is the change of the test loss "
                        "when that sample is up-weighted (I_up,loss): negative values help the prediction, positive "
                        "ones harm it.")
    section.figures += run.figure("influence.png", "Test samples, each with its most helpful and most harmful "
                                  "training samples (index, label and score).")
    section.tables += run.table("top", "Per test sample: the most helpful and harmful training indices and scores.")
    return section


register_section("influence", influence_section, title="Influence")
