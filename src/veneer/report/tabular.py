"""Figures of tabular explanations (``veneer explain`` on ``(B, F)`` rows: signed feature bars per row, the top
features across rows, the methods' agreement) and of the attacks on them: the rank chart of Slack et al. 2020
(Fig. 2) and the sensitive share per method of a multi-explainer fairwashing (Dimanov et al. 2020); the report
section of ``veneer manipulate --objective scaffolding`` (kind ``scaffolding``)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from veneer.report.figures import TONES, save_figure
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


# ----------------------------------------------------------------------------------------- tabular explanations
def _names(names: list[str] | None, count: int) -> list[str]:
    return list(names) if names is not None else [f"feature {i}" for i in range(count)]


def feature_bars(attributions: dict[str, torch.Tensor], path: str | os.PathLike, names: list[str] | None = None,
                 row_titles: list[str] | None = None, top: int = 8) -> Path:
    """One panel per row and method: the row's ``top`` features by |attribution|, as signed horizontal bars
    (red: pushes towards the explained class, blue: away) with their names; ``attributions[method]`` is
    ``(B, F)``, every row of it drawn."""
    methods = list(attributions)
    rows, features = next(iter(attributions.values())).shape
    names, top = _names(names, features), min(top, features)
    fig, axes = plt.subplots(rows, len(methods), figsize=(3.4 * len(methods), 0.28 * top * rows + 0.6),
                             squeeze=False)
    for j, method in enumerate(methods):
        values = attributions[method].detach().cpu().double()
        order = values.abs().argsort(dim=1, descending=True)[:, :top]
        for i in range(rows):
            ax, chosen = axes[i, j], order[i].tolist()
            shown = values[i, chosen].numpy()
            ax.barh(np.arange(top), shown, color=[TONES["bad"] if v > 0 else TONES["accent"] for v in shown])
            ax.set_yticks(np.arange(top), [names[k] for k in chosen], fontsize=6)
            ax.invert_yaxis()
            ax.axvline(0, color="black", linewidth=0.6)
            ax.tick_params(axis="x", labelsize=6)
            if i == 0:
                ax.set_title(method, fontsize=8)
            if j == 0 and row_titles:
                ax.set_ylabel(row_titles[i], fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def top_features_chart(attributions: dict[str, torch.Tensor], path: str | os.PathLike,
                       names: list[str] | None = None, top: int = 12) -> Path:
    """The features that matter most across rows: per method, each feature's mean share of the row's total
    |attribution| (``|a_f| / sum_g |a_g|``, so methods on different scales compare); the ``top`` features by
    that share averaged over methods, as grouped horizontal bars."""
    shares = {method: (a.abs() / a.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)).mean(0).cpu().double()
              for method, a in attributions.items()}
    features = next(iter(shares.values())).numel()
    names, top = _names(names, features), min(top, features)
    order = torch.stack(list(shares.values())).mean(0).argsort(descending=True)[:top].tolist()
    fig, ax = plt.subplots(figsize=(6.5, 0.1 * top * len(shares) + 1.2))
    width = 0.8 / len(shares)
    for i, (method, share) in enumerate(shares.items()):
        ax.barh(np.arange(top) + (i - (len(shares) - 1) / 2) * width, share[order].numpy(), height=width,
                label=method)
    ax.set_yticks(np.arange(top), [names[k] for k in order], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("mean share of the row's |attribution|", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def agreement_chart(agreement: dict[str, dict[str, float]], path: str | os.PathLike) -> Path:
    """The methods' agreement as a matrix: mean Spearman rank correlation of two methods' attributions of the
    same row (1 on the diagonal), with the values written in the cells."""
    methods = list(agreement)
    values = np.array([[agreement[a][b] for b in methods] for a in methods])
    fig, ax = plt.subplots(figsize=(1.0 * len(methods) + 2.0, 0.8 * len(methods) + 1.2))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1)
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                color="white" if abs(value) > 0.6 else "black")
    ax.set_xticks(np.arange(len(methods)), methods, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(np.arange(len(methods)), methods, fontsize=7)
    fig.colorbar(image, ax=ax, label="mean Spearman", shrink=0.8)
    fig.tight_layout()
    return save_figure(fig, path)
