"""Figures and tables of the neuron-level attacks (Nanfack et al. 2024, AAAI).

* :func:`topk_grid`: each channel's top-k images before and after an attack (the paper's Fig. 2/3);
* :func:`visualization_grid`: synthetic visualisations before and after (Fig. 9);
* :func:`ks_plot`: per-neuron KS distance between groups before and after fairwashing, neurons sorted by
  their initial KS (Fig. 10);
* :func:`balance_histogram`: histogram of the top-k group balance before and after (Fig. 11);
* :func:`write_table`: the paper's Table 1 (per layer and attack: embedding-delta, Kendall-tau,
  embedding-W, Kendall-tau-W, accuracy) as Markdown and CSV;

and the report sections of ``veneer neurons`` runs (kinds ``neurons topk``, ``neurons visualize``,
``neurons push-down``, ``neurons push-up``, ``neurons fairwash``).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from veneer.report.figures import save_figure
from veneer.report.page import (Card, Run, Section, Table, arrow, budget_cards, fmt, history_chart, pct,
                                register_section, tone)
from veneer.runs import atomic_write_bytes

__all__ = ["topk_grid", "visualization_grid", "ks_plot", "balance_histogram", "write_table", "TABLE_COLUMNS"]

TABLE_COLUMNS = ("layer", "attack", "embedding_delta", "tau", "embedding_w", "tau_w", "accuracy")


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"images must be an (N, C, H, W) tensor to draw, got {shape}")


def _rgb(images: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) images in [0, 1] as (..., H, W, 3) for display (grayscale repeated)."""
    images = images.detach().cpu().float().clamp(0, 1)
    if images.shape[-3] == 1:
        images = images.expand(*images.shape[:-3], 3, *images.shape[-2:])
    return images[..., :3, :, :].movedim(-3, -1)


def _image_rows(panels: list[tuple[str, torch.Tensor, list[str] | None]], path: str | os.PathLike,
                row_labels: list[str]) -> Path:
    """Rows of images made of side-by-side panels separated by a gap; each panel is (title, (R, n, C, H, W)
    images, optional per-image captions).  Drawn as one montage (fast for hundreds of tiles)."""
    rows = len(row_labels)
    height, width = panels[0][1].shape[-2:]
    pad = max(1, height // 7)
    cell_h, cell_w = height + 3 * pad, width + pad
    cols = sum(images.shape[1] for _, images, _ in panels) + len(panels) - 1
    canvas = torch.ones(rows * cell_h, cols * cell_w, 3)
    fig, ax = plt.subplots(figsize=(0.45 * cols + 0.6, 0.55 * rows + 0.4))
    column = 0
    for title, images, captions in panels:
        tiles = _rgb(images)
        count = images.shape[1]
        for r in range(rows):
            for j in range(count):
                top, left = r * cell_h + 2 * pad, (column + j) * cell_w
                canvas[top:top + height, left:left + width] = tiles[r, j]
                if captions is not None:
                    ax.text(left + width / 2, top - 0.3 * pad, captions[r * count + j], ha="center",
                            va="bottom", fontsize=5)
        ax.text((column + count / 2) * cell_w, -pad, title, ha="center", va="bottom", fontsize=9)
        column += count + 1
    ax.imshow(canvas.numpy(), interpolation="nearest")
    for r, label in enumerate(row_labels):
        ax.text(-pad, r * cell_h + 2 * pad + height / 2, label, ha="right", va="center", fontsize=7)
    ax.set_axis_off()
    return save_figure(fig, path)


def topk_grid(images: torch.Tensor, top_before: torch.Tensor, path: str | os.PathLike,
              top_after: torch.Tensor | None = None, channels: list[int] | None = None,
              labels: torch.Tensor | None = None, max_channels: int = 16) -> Path:
    """One row per channel: its top-k images, and with ``top_after`` those after the attack next to them
    (Nanfack et al. 2024, Fig. 2/3).

    ``images`` (N, C, H, W); ``top_before``/``top_after`` (channels, k) indices into ``images``;
    ``channels`` names the rows (default 0..); ``labels`` (N,) prints each image's class above it.
    At most ``max_channels`` rows are drawn (the first ones)."""
    _check_images(images)
    rows = min(top_before.shape[0], max_channels)
    names = channels if channels is not None else list(range(top_before.shape[0]))
    sets = [("top-k" if top_after is None else "top-k before", top_before)]
    if top_after is not None:
        sets.append(("top-k after", top_after))
    panels = [(title, images[top[:rows]],
               None if labels is None else [str(int(labels[i])) for i in top[:rows].flatten()])
              for title, top in sets]
    return _image_rows(panels, path, [f"ch {names[r]}" for r in range(rows)])


def visualization_grid(before: torch.Tensor, path: str | os.PathLike, after: torch.Tensor | None = None,
                       channels: list[int] | None = None) -> Path:
    """Synthetic visualisations (n, C, H, W) of channels, one row per channel; with ``after``, those of
    the same channels after the attack next to them (Nanfack et al. 2024, Fig. 9)."""
    _check_images(before)
    panels = [("before" if after is not None else "synthetic", before[:, None], None)]
    if after is not None:
        _check_images(after)
        panels.append(("after", after[:, None], None))
    names = channels if channels is not None else list(range(len(before)))
    return _image_rows(panels, path, [f"ch {c}" for c in names])


def ks_plot(ks_before: torch.Tensor, ks_after: torch.Tensor, path: str | os.PathLike,
            attacked: torch.Tensor | None = None) -> Path:
    """KS distance between the groups' activation distributions of every neuron, before and after the
    attack, neurons sorted by their initial KS (Nanfack et al. 2024, Fig. 10); attacked neurons (bool
    mask) are marked."""
    order = ks_before.argsort(descending=True)
    before, after = ks_before[order].float().numpy(), ks_after[order].float().numpy()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.14 * len(order)), 3.0))
    positions = range(len(order))
    ax.plot(positions, before, "o-", ms=3, label="before")
    ax.plot(positions, after, "s-", ms=3, label="after")
    if attacked is not None:
        marked = attacked[order].nonzero().flatten().numpy()
        ax.plot(marked, after[marked], "x", color="black", ms=6, label="attacked")
    ax.set_xlabel("neurons, sorted by initial KS")
    ax.set_ylabel("KS distance between groups")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def balance_histogram(balance_before: torch.Tensor, balance_after: torch.Tensor,
                      path: str | os.PathLike, bins: int = 10) -> Path:
    """Histograms of the top-k group balance (minority/majority, 0..1) of the neurons before and after the
    attack (Nanfack et al. 2024, Fig. 11)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.0))
    edges = torch.linspace(0, 1, bins + 1).tolist()
    ax.hist([balance_before.tolist(), balance_after.tolist()], bins=edges, label=["before", "after"])
    ax.set_xlabel("top-k balance (minority / majority)")
    ax.set_ylabel("neurons")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def write_table(rows: list[dict], path: str | os.PathLike, columns: tuple[str, ...] = TABLE_COLUMNS
                ) -> tuple[Path, Path]:
    """Write ``rows`` (dicts keyed by ``columns``; a missing entry is left blank) as ``path``.md and
    ``path``.csv, like Table 1 of Nanfack et al. (2024).  Returns both paths."""
    base = Path(path).with_suffix("")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_format(row.get(c)) for c in columns) + " |" for row in rows]
    markdown = base.with_suffix(".md")
    atomic_write_bytes(markdown, ("\n".join(lines) + "\n").encode())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    table = base.with_suffix(".csv")
    atomic_write_bytes(table, buffer.getvalue().encode())
    return markdown, table


# ----------------------------------------------------------------------------------------- report sections
def attack_section(run: Run) -> Section:
    """``veneer neurons push-down`` (Nanfack et al. 2024, Eq. 2): top-k overlap, Kendall tau and accuracy
    before and after, the behaviour budget, the summary of all and of live channels, Table 1, the top-k grids and
    the fine-tuning curves."""
    m = run.metrics
    train, heldout = m["train"]["summary"], m["heldout"]["summary"]
    section = Section(f"Neuron {m['attack']} on layer {m['layer']} (Nanfack et al. 2024)", cards=[
        Card(f"top-{fmt(m['k'])} overlap (train)", fmt(train["topk_overlap"]),
             "share of each channel's top-k images kept", tone(train["topk_overlap"], 0.2, 0.6)),
        Card("Kendall tau (held-out)", fmt(heldout["tau"]), "rank agreement of activations"),
        Card("accuracy before → after", arrow(m["accuracy_before"], m["accuracy_after"], pct),
             f"drop {fmt(m['accuracy_drop_points'])} points", tone(m["accuracy_drop_points"], 5, 1, low_is_bad=False)),
        *budget_cards(m)])
    columns = [(split, key) for split in ("train", "heldout") for key in ("summary", "summary_live")]
    names = list(dict.fromkeys(name for split, key in columns for name in m[split][key]))
    section.tables.append(Table("summary", ["measure", "train", "train (live channels)", "held-out",
                                            "held-out (live channels)"],
                                [[name] + [fmt(m[split][key].get(name)) for split, key in columns] for name in names],
                                "Means over the attacked channels (live: whose activation varies over the training "
                                "data)."))
    section.tables += run.table("table1", "Nanfack et al. Table 1.")
    section.figures += run.figure("topk_train.png", "Each channel's top-k training images before (left) and "
                                  "after (right) the attack (Nanfack et al. Figs. 2/3).", "half")
    section.figures += run.figure("topk_heldout.png", "The same on the held-out images.", "half")
    section.figures += history_chart(m["fine_tune"]["history"], "fine-tuning", "Attack loss L_A, model loss L_M "
                                     "and their weighted sum (Eq. 2) during the fine-tuning.")
    section.figures += run.figure("visualizations.png", "Synthetic visualisations before and after (Fig. 9).")
    return section


def push_up_section(run: Run) -> Section:
    """``veneer neurons push-up`` (Nanfack et al. 2024, Eq. 3): :func:`attack_section` led by the share of decoy
    images in the attacked channels' top-k."""
    share = run.metrics["decoy_share_train"]
    section = attack_section(run)
    section.cards.insert(0, Card("decoy share in top-k (train)", arrow(share["before"]["mean_share"],
                                                                       share["after"]["mean_share"], pct),
                                 f"channels at least half decoys: {pct(share['after']['channels_at_least_half'])}"))
    return section


def fairwash_section(run: Run) -> Section:
    """``veneer neurons fairwash`` (Nanfack et al. 2024, Eq. 5): the attacked neurons' KS distance between groups
    and top-k balance before and after, while the decisions (accuracy, DDI, DEO) stay; Figs. 10 and 11."""
    m = run.metrics
    b, a = m["before"], m["after"]
    section = Section(f"Fairwashing of layer {m['layer']} on {m['attribute']} (Nanfack et al. 2024, Eq. 5)", cards=[
        Card("mean KS of attacked neurons", arrow(b["ks_attacked_mean"], a["ks_attacked_mean"]),
             f"relative drop {pct(m['ks_relative_drop'])}"),
        Card("top-k group balance", arrow(b["balance_attacked_mean"], a["balance_attacked_mean"])),
        Card("accuracy before → after", arrow(b["accuracy"], a["accuracy"], pct),
             f"drop {fmt(m['accuracy_drop_points'])} points"),
        Card("DDI / DEO of predictions", f"{arrow(b['ddi'], a['ddi'])} / {arrow(b['deo'], a['deo'])}"),
        *budget_cards(m)])
    section.text.append("A neuron looks fair when its activations are distributed alike for both groups (small "
                        "KS distance) and its top-k holds both groups; the model's decisions (DDI, DEO) should "
                        "not change while the neurons are made to look fair.")
    section.figures += run.figure("ks.png", "KS distance per neuron before and after, neurons sorted by their "
                                  "initial KS (Fig. 10).")
    section.figures += run.figure("balance.png", "Top-k group balance of the attacked neurons (Fig. 11).")
    return section


def topk_section(run: Run) -> Section:
    """``veneer neurons topk``: each channel's k most activating samples (dataset-based visualisation)."""
    m = run.metrics
    channels = m["channels"]
    section = Section(f"Top-{fmt(m['k'])} images of layer {m['layer']}", cards=[
        Card("layer", fmt(m["layer"])), Card("channels", fmt(channels if isinstance(channels, int) else len(channels))),
        Card("k", fmt(m["k"])), Card("samples per second", fmt(m["samples_per_second"]))])
    section.figures += run.figure("topk.png", "Each channel's k most activating samples (dataset-based "
                                  "visualisation).")
    return section


def visualize_section(run: Run) -> Section:
    """``veneer neurons visualize``: activation maximisation per channel."""
    m = run.metrics
    channels, response = m["channels"], m["activation_of_own_channel"]
    section = Section(f"Synthetic visualisation of layer {m['layer']}", cards=[
        Card("layer", fmt(m["layer"])), Card("channels", fmt(len(channels)))])
    section.figures += run.figure("visualizations.png", "Activation maximisation: the input each channel "
                                  "responds to most.")
    if channels:
        section.tables.append(Table("activation of each channel on its own image", ["channel", "activation"],
                                    [[fmt(c), fmt(v)] for c, v in zip(channels, response)]))
    return section


register_section("neurons topk", topk_section, title="Neuron top-k images")
register_section("neurons visualize", visualize_section, title="Neuron visualisation")
register_section("neurons push-down", attack_section, title="Neuron push-down attack")
register_section("neurons push-up", push_up_section, title="Neuron push-up attack")
register_section("neurons fairwash", fairwash_section, title="Neuron fairwashing")
