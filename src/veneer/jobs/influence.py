"""Influence functions with their files (``veneer influence``) and the influence attack's Fig.-4 sweep
(``veneer attack-input --attack influence``; Koh & Liang 2017, Ghorbani et al. 2019)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch

from veneer.attacks import influence_sweep
from veneer.data import LabeledData
from veneer.explain import Influence
from veneer.explain.influence import TopInfluence, last_layer
from veneer.jobs.results import InfluenceAttackRun, InfluenceRun
from veneer.report.influence import influence_figure, influence_sweep_figure
from veneer.runs import atomic_write_bytes, save_tensors


def influence_on(model: torch.nn.Module, train: LabeledData, *, train_n: int | None = None,
                 params: list[str] | None = None, method: str = "exact", damping: float = 0.0,
                 seed: int = 0) -> tuple[Influence, LabeledData]:
    """``(Influence, training samples)``: :class:`veneer.explain.Influence` of ``model`` over ``train_n``
    training samples (a random subset drawn with ``seed``, in their order; ``None``: all) and the parameters
    under the module prefixes ``params`` (``None``: the last layer)."""
    if train_n is not None and train_n < 1:
        raise ValueError(f"train_n must be >= 1, got {train_n}")
    if train_n is not None and train_n < len(train):
        generator = torch.Generator().manual_seed(seed)
        train = train.subset(torch.randperm(len(train), generator=generator)[:train_n].sort().values)
    params = params or [last_layer(model)]
    return Influence(model.eval(), train, params=params, method=method, damping=damping), train


def influence_report(influence, x: torch.Tensor, y: torch.Tensor, train_x: torch.Tensor, folder: str | os.PathLike,
                     k: int = 5, show: int = 4, index: torch.Tensor | None = None,
                     train_y: torch.Tensor | None = None) -> InfluenceRun:
    """Influence of every training sample on each test sample ``x`` (labels ``y``, data indices ``index``,
    default ``0 .. B-1``):
    writes ``scores.safetensors`` (``scores`` ``(B, N_train)`` = ``I_up,loss``, ``helpful``/``harmful``
    ``(B, k)`` training indices), ``top.csv`` (one row per test sample, helpful and harmful indices with their
    scores) and ``influence.png`` (the first ``show`` test samples, each with its ``k`` most helpful and ``k``
    most harmful training images); returns the run's result."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = torch.arange(len(x)) if index is None else index
    scores = influence(x, y)
    top = TopInfluence.of(scores, k)
    save_tensors(folder / "scores.safetensors",
                 {"scores": scores, "helpful": top.helpful, "harmful": top.harmful, "index": index})
    frame = pd.DataFrame({"index": index.tolist(), "label": y.tolist()})
    for kind, chosen in (("helpful", top.helpful), ("harmful", top.harmful)):
        frame[kind] = [" ".join(map(str, row)) for row in chosen.tolist()]
        frame[f"{kind}_scores"] = [" ".join(f"{v:.4g}" for v in row) for row in scores.gather(1, chosen).tolist()]
    atomic_write_bytes(folder / "top.csv", frame.to_csv(index=False).encode())
    if x.ndim == 4:
        rows = [row for i in range(min(show, len(x))) for row in (
            {"image": x[i], "title": f"test #{int(index[i])}\nhelpful", "index": top.helpful[i], "scores": scores[i]},
            {"image": x[i], "title": f"test #{int(index[i])}\nharmful", "index": top.harmful[i], "scores": scores[i]})]
        influence_figure(rows, train_x, folder / "influence.png", train_y)
    return InfluenceRun({"n_test": len(x), "n_train": scores.shape[1], "k": k, "method": influence.method,
                            "damping": influence.damping, "params": influence.params,
                            "mean_abs_score": scores.abs().mean().item()})



def influence_attack_report(model, influence, x: torch.Tensor, y: torch.Tensor, train_x: torch.Tensor,
                            folder: str | os.PathLike, eps_values: list[float], *, train_y: torch.Tensor | None = None,
                            top: int = 3, k: int = 5,
                            steps: int = 1, step_size: float | None = None, input_range=(0.0, 1.0), seed: int = 0,
                            batch_size: int = 100, show: int = 2, index: torch.Tensor | None = None
                            ) -> InfluenceAttackRun:
    """Ghorbani et al. (2019), Fig. 4 on ``x`` (labels ``y`` kept): :func:`veneer.attacks.influence_sweep` at
    every eps; writes ``sweep.csv``, ``sweep.png``, ``adversarial.safetensors`` (clean and perturbed inputs) and,
    for the largest eps, ``example_<i>.png`` for the first ``show`` images (top-``k`` training images before
    and after the attack); returns the summary rows (and the data ``index`` of ``x``, when given) as the result."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows, images = influence_sweep(model, influence, x, y, eps_values, top=top, k=k, steps=steps,
                                   step_size=step_size, input_range=input_range, seed=seed, batch_size=batch_size)
    atomic_write_bytes(folder / "sweep.csv", pd.DataFrame(rows).to_csv(index=False).encode())
    save_tensors(folder / "adversarial.safetensors",
                 {"clean": x, "labels": y, **{f"{name}/eps={eps:g}": t for (name, eps), t in images.items()}})
    influence_sweep_figure(rows, folder / "sweep.png", k=k)
    eps = max(eps_values)
    x_adv = images[("influence", float(eps))]
    if x.ndim == 4 and show > 0:
        shown = min(show, len(x))
        clean, perturbed = -influence(x[:shown], y[:shown]), -influence(x_adv[:shown], y[:shown])
        for i in range(shown):
            influence_figure([{"image": x[i], "title": "test image", "index": clean[i].topk(k).indices,
                               "scores": clean[i]},
                              {"image": x_adv[i], "title": f"perturbed\neps={eps:g}",
                               "index": perturbed[i].topk(k).indices, "scores": perturbed[i]}],
                             train_x, folder / f"example_{i}.png", train_y)
    found = {"n_attacked": len(x), "top": top, "k": k, "steps": steps, "results": rows}
    return InfluenceAttackRun(found if index is None else {**found, "index": index})
