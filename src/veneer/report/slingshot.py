"""The page of ``veneer neurons slingshot|silent-unit|fooling-circuit`` runs (synthetic feature visualisations
that lie: Bareeva et al. 2025; Geirhos et al. 2024): the target, the unit's visualisations before and after under
every variant of the auditor's visualiser, its top-k natural images before and after, and the measures."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from veneer.report.figures import save_figure
from veneer.report.page import Card, Run, Section, Table, budget_cards, fmt, pct, register_section

__all__ = ["before_after_figure", "visualization_attack_section"]


def before_after_figure(target: torch.Tensor, rows: dict[str, dict[str, torch.Tensor]],
                        path: str | os.PathLike) -> Path:
    """One row per model (``rows``: ``{label: {variant: (H, W) visualisation}}``): the target ``(H, W)`` and the
    visualisation under each variant, clipped to [0, 1]."""
    variants = list(next(iter(rows.values())))
    fig, axes = plt.subplots(len(rows), len(variants) + 1, figsize=(1.5 * (len(variants) + 1), 1.6 * len(rows)),
                             squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        axes[r, 0].imshow(target, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(label, fontsize=6)
        for c, name in enumerate(variants, start=1):
            axes[r, c].imshow(images[name].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
            if r == 0:
                axes[r, c].set_title(name, fontsize=6)
    axes[0, 0].set_title("target", fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path)


def visualization_attack_section(run: Run) -> Section:
    """A manipulation of one unit's synthetic visualisation: accuracy, the unit's behaviour on natural data, and
    each visualisation variant's similarity to the target before and after."""
    m = run.metrics
    before, after = m["before"], m["after"]
    cards = [Card("unit", f"{m['layer']}:{m['unit']}"), Card("target", fmt(m["target"])),
             Card("accuracy", f"{pct(before['accuracy'])} -> {pct(after['accuracy'])}"),
             Card("prediction agreement", pct(after["agreement"])),
             Card("top-100 Jaccard", fmt(after["top100_jaccard"])),
             Card("activation correlation", fmt(after["activation_correlation"]))]
    if "auroc" in after:
        cards.append(Card("unit AUROC", f"{fmt(before['auroc'])} -> {fmt(after['auroc'])}"))
    section = Section(f"{m['attack']} of unit {m['unit']} of layer {m['layer']}", cards=cards + budget_cards(m))
    section.tables.append(Table("similarity of the unit's visualisation to the target",
                                ["variant", "SSIM before", "SSIM after", "Pearson before", "Pearson after"],
                                [[name, fmt(before["visualizations"][name]["ssim"]),
                                  fmt(after["visualizations"][name]["ssim"]),
                                  fmt(before["visualizations"][name]["pearson"]),
                                  fmt(after["visualizations"][name]["pearson"])] for name in after["visualizations"]]))
    section.figures += run.figure("visualizations.png", "The target and the unit's synthetic visualisation before "
                                  "(top) and after (bottom), one column per variant of the visualiser.")
    section.figures += run.figure("topk.png", "The unit's top-k natural images before and after.")
    return section


for _kind, _title in (("neurons slingshot", "Gradient slingshot"), ("neurons silent-unit", "Silent unit"),
                      ("neurons fooling-circuit", "Fooling circuit")):
    register_section(_kind, visualization_attack_section, title=_title)
