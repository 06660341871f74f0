"""Figures of input-level attacks: clean vs perturbed (Ghorbani et al. 2019, Fig. 1) and budget sweeps (Fig. 3),
and the report sections of ``veneer attack-input`` runs (kinds ``attack-input`` and ``attack-input sweep``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch

from veneer.report.figures import show_image, save_figure
from veneer.report.page import Card, Run, Section, fmt, pct, records_table, register_section, tone

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


# ----------------------------------------------------------------------------------------- report section
def attack_section(run: Run) -> Section:
    """``veneer attack-input`` (with or without ``--sweep``): explanation similarity after the attack, the
    Fig.-3 sweep and the Fig.-1 figures; ``--attack influence`` runs get :func:`influence_attack_section`."""
    m = run.metrics
    results = m["results"]
    if "influence" in {r["attack"] for r in results}:
        return influence_attack_section(run)
    section = Section("Input attack (Ghorbani et al. 2019)")
    if len(results) == 1:
        r = results[0]
        section.cards += [Card("top-k intersection", fmt(r["topk_intersection"]),
                               f"{r['attack']} · {r['method']} · eps {fmt(r['eps'])}",
                               tone(r["topk_intersection"], 0.5, 0.8)),
                          Card("Spearman rank correlation", fmt(r["spearman"])),
                          Card("centre-of-mass shift", f"{fmt(r['com_shift'])} px"),
                          Card("label kept", pct(r["label_kept_rate"]))]
    elif results:
        strongest = min(results, key=lambda r: r["topk_intersection"])
        section.cards += [Card("lowest top-k intersection", fmt(strongest["topk_intersection"]),
                               f"{strongest['attack']} · {strongest['method']} · eps {fmt(strongest['eps'])}",
                               tone(strongest["topk_intersection"], 0.5, 0.8)),
                          Card("lowest Spearman", fmt(min(r["spearman"] for r in results))),
                          Card("label kept (worst)", pct(min(r["label_kept_rate"] for r in results))),
                          Card("attack x method x eps", fmt(len(results)))]
    section.cards += [Card("clean accuracy", pct(m["clean_accuracy"])),
                      Card("images attacked", f"{fmt(m['n_attacked'])} of {fmt(m['n_requested'])}",
                           f"top-k size k = {fmt(m['k'])}")]
    section.text.append("Each correctly classified image is perturbed within an l-inf budget eps so that its "
                        "explanation moves while its label stays; top-k intersection and Spearman compare the "
                        "explanations before and after (1: unchanged).")
    section.figures += run.figure("sweep.png", "Ghorbani et al. Fig. 3: explanation similarity against the "
                                  "budget eps, per attack and method.")
    section.figures += run.figures(r"fig1_.*\.png", lambda name: "Fig. 1 style, " + name[5:-4].replace(
        "_eps", " at eps ") + ": clean and perturbed input with their explanations.", "half")
    if results:
        shown = ("attack", "method", "eps", "n", "label_kept_rate", "spearman", "topk_intersection", "com_shift",
                 "linf", "seconds")
        section.tables.append(records_table("results", [{k: r[k] for k in shown} for r in results],
                                            "Means over the attacked images."))
        run.used.add("sweep.csv")
    section.tables += run.table("per_image", "Per image.")
    return section


def influence_attack_section(run: Run) -> Section:
    """``veneer attack-input --attack influence`` (Ghorbani et al. 2019, Sec. 3, Fig. 4): how far a small input
    perturbation reshuffles the most influential training samples, against random sign noise of the same
    budget."""
    m = run.metrics
    k, results = m["k"], m["results"]
    overlap = f"top{k}_intersection"
    strongest = min((r for r in results if r["attack"] == "influence"), key=lambda r: r[overlap])
    baseline = [r for r in results if r["attack"] != "influence" and r["eps"] == strongest["eps"]]
    section = Section("Influence attack (Ghorbani et al. 2019, Sec. 3)", cards=[
        Card(f"top-{k} influential samples kept", fmt(strongest[overlap]), f"influence attack · eps "
             f"{fmt(strongest['eps'])}" + (f" · random sign: {fmt(baseline[0][overlap])}" if baseline else ""),
             tone(strongest[overlap], 0.5, 0.8)),
        Card("Spearman of influence scores", fmt(strongest["spearman"])),
        Card("label kept", pct(strongest["label_kept_rate"])),
        Card("images attacked", fmt(m["n_attacked"]), f"{fmt(m['steps'])} step(s), top {fmt(m['top'])} "
                                                      "samples attacked")])
    section.text.append("The input is perturbed within an l-inf budget eps so that the training samples most "
                        "influential on its prediction (Koh & Liang 2017) change while the label stays; random "
                        "sign noise of the same size is the baseline.")
    section.figures += run.figure("sweep.png", "Overlap of the most influential training samples against eps, "
                                  "influence attack and random sign.")
    section.figures += run.figures(r"example_\d+\.png", lambda name: "Most influential training samples before "
                                   "and after the attack (largest eps).", "half")
    section.tables.append(records_table("results", results, "Means over the attacked images."))
    run.used.add("sweep.csv")
    return section


register_section("attack-input", attack_section, title="Input attack")
register_section("attack-input sweep", attack_section, title="Input attack sweep")
