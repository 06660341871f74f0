"""Figures of influence functions and of their fragility (Ghorbani et al. 2019, Fig. 4)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch
from safetensors.torch import save_file

from veneer.attacks import influence_sweep

from veneer.report.figures import save_figure, show_image


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


def influence_report(influence, x: torch.Tensor, y: torch.Tensor, train_x: torch.Tensor, folder: str | os.PathLike,
                     k: int = 5, show: int = 4, index: torch.Tensor | None = None,
                     train_y: torch.Tensor | None = None) -> dict[str, Any]:
    """Influence of every training sample on each test sample ``x`` (labels ``y``, data indices ``index``,
    default ``0 .. B-1``):
    writes ``scores.safetensors`` (``scores`` ``(B, N_train)`` = ``I_up,loss``, ``helpful``/``harmful``
    ``(B, k)`` training indices), ``top.csv`` (one row per test sample, helpful and harmful indices with their
    scores) and ``influence.png`` (the first ``show`` test samples, each with its ``k`` most helpful and ``k``
    most harmful training images); returns the run's metrics."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = torch.arange(len(x)) if index is None else index
    scores = influence(x, y)
    top = influence.top(x, y, k)
    save_file({"scores": scores.contiguous(), "helpful": top.helpful.contiguous(), "harmful": top.harmful.contiguous(),
               "index": index.contiguous()}, str(folder / "scores.safetensors"))
    frame = pd.DataFrame({"index": index.tolist(), "label": y.tolist()})
    for kind, chosen in (("helpful", top.helpful), ("harmful", top.harmful)):
        frame[kind] = [" ".join(map(str, row)) for row in chosen.tolist()]
        frame[f"{kind}_scores"] = [" ".join(f"{v:.4g}" for v in row) for row in scores.gather(1, chosen).tolist()]
    frame.to_csv(folder / "top.csv", index=False)
    if x.ndim == 4:
        rows = [row for i in range(min(show, len(x))) for row in (
            {"image": x[i], "title": f"test #{int(index[i])}\nhelpful", "index": top.helpful[i], "scores": scores[i]},
            {"image": x[i], "title": f"test #{int(index[i])}\nharmful", "index": top.harmful[i], "scores": scores[i]})]
        influence_figure(rows, train_x, folder / "influence.png", train_y)
    return {"n_test": len(x), "n_train": scores.shape[1], "k": k, "method": influence.method,
            "damping": influence.damping, "params": influence.params,
            "mean_abs_score": scores.abs().mean().item()}



def influence_attack_report(model, influence, x: torch.Tensor, y: torch.Tensor, train_x: torch.Tensor,
                            folder: str | os.PathLike, eps_values: list[float], *, train_y: torch.Tensor | None = None,
                            top: int = 3, k: int = 5,
                            steps: int = 1, step_size: float | None = None, input_range=(0.0, 1.0), seed: int = 0,
                            batch_size: int = 100, show: int = 2) -> dict[str, Any]:
    """Ghorbani et al. (2019), Fig. 4 on ``x`` (labels ``y`` kept): :func:`veneer.attacks.influence_sweep` at
    every eps; writes ``sweep.csv``, ``sweep.png``, ``adversarial.safetensors`` (clean and perturbed inputs) and,
    for the largest eps, ``example_<i>.png`` for the first ``show`` images (top-``k`` training images before
    and after the attack); returns the summary rows as metrics."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows, images = influence_sweep(model, influence, x, y, eps_values, top=top, k=k, steps=steps,
                                   step_size=step_size, input_range=input_range, seed=seed, batch_size=batch_size)
    pd.DataFrame(rows).to_csv(folder / "sweep.csv", index=False)
    influence_sweep_figure(rows, folder / "sweep.png", k=k)
    save_file({"clean": x.contiguous(), "labels": y.contiguous(),
               **{f"{name}/eps={eps:g}": t.contiguous() for (name, eps), t in images.items()}},
              str(folder / "adversarial.safetensors"))
    eps = max(eps_values)
    x_adv = images[("influence", float(eps))]
    if x.ndim == 4:
        for i in range(min(show, len(x))):
            clean, perturbed = -influence(x[i:i + 1], y[i:i + 1])[0], -influence(x_adv[i:i + 1], y[i:i + 1])[0]
            influence_figure([{"image": x[i], "title": "test image", "index": clean.topk(k).indices, "scores": clean},
                              {"image": x_adv[i], "title": f"perturbed\neps={eps:g}",
                               "index": perturbed.topk(k).indices, "scores": perturbed}],
                             train_x, folder / f"example_{i}.png", train_y)
    return {"n_attacked": len(x), "top": top, "k": k, "steps": steps, "results": rows}


__all__ = ["influence_figure", "influence_sweep_figure", "influence_report", "influence_attack_report"]
