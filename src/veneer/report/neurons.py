"""Figures and tables of the neuron-level attacks (Nanfack et al. 2024, AAAI).

* :func:`topk_grid`: each channel's top-k images before and after an attack (the paper's Fig. 2/3);
* :func:`visualization_grid`: synthetic visualisations before and after (Fig. 9);
* :func:`ks_plot`: per-neuron KS distance between groups before and after fairwashing, neurons sorted by
  their initial KS (Fig. 10);
* :func:`balance_histogram`: histogram of the top-k group balance before and after (Fig. 11);
* :func:`write_table`: the paper's Table 1 (per layer and attack: embedding-delta, Kendall-tau,
  embedding-W, Kendall-tau-W, accuracy) as Markdown and CSV.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from veneer.report.figures import _show_image, save_figure
from veneer.runs import atomic_write_bytes

__all__ = ["topk_grid", "visualization_grid", "ks_plot", "balance_histogram", "write_table", "TABLE_COLUMNS"]

TABLE_COLUMNS = ("layer", "attack", "embedding_delta", "tau", "embedding_w", "tau_w", "accuracy")


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"images must be an (N, C, H, W) tensor to draw, got {shape}")


def _paired_rows(left: torch.Tensor, right: torch.Tensor, path: str | os.PathLike, row_labels: list[str],
                 titles: tuple[str, str], subtitles: tuple[list[str], list[str]] | None = None) -> Path:
    """Rows of images: ``left`` (R, a, C, H, W) | a gap | ``right`` (R, b, C, H, W)."""
    rows, a, b = left.shape[0], left.shape[1], right.shape[1]
    cols = a + 1 + b
    fig, axes = plt.subplots(rows, cols, figsize=(0.9 * cols, 0.95 * rows + 0.4), squeeze=False)
    for r in range(rows):
        for j in range(a):
            _show_image(axes[r, j], left[r, j])
        for j in range(b):
            _show_image(axes[r, a + 1 + j], right[r, j])
        axes[r, 0].set_ylabel(row_labels[r], fontsize=7)
        if subtitles is not None:
            for j in range(a):
                axes[r, j].set_title(subtitles[0][r * a + j], fontsize=5, pad=1)
            for j in range(b):
                axes[r, a + 1 + j].set_title(subtitles[1][r * b + j], fontsize=5, pad=1)
    for ax in axes.flat:
        _blank(ax)
    fig.text(0.5 * a / cols, 1.0, titles[0], ha="center", va="bottom", fontsize=9)
    fig.text((a + 1 + 0.5 * b) / cols, 1.0, titles[1], ha="center", va="bottom", fontsize=9)
    return save_figure(fig, path)


def topk_grid(images: torch.Tensor, top_before: torch.Tensor, top_after: torch.Tensor,
              path: str | os.PathLike, channels: list[int] | None = None,
              labels: torch.Tensor | None = None, max_channels: int = 16) -> Path:
    """One row per channel: its top-k images before the attack, then after (Nanfack et al. 2024, Fig. 2/3).

    ``images`` (N, C, H, W); ``top_before``/``top_after`` (channels, k) indices into ``images``;
    ``channels`` names the rows (default 0..); ``labels`` (N,) prints each image's class above it.
    At most ``max_channels`` rows are drawn (the first ones)."""
    _check_images(images)
    rows = min(top_before.shape[0], max_channels)
    names = channels if channels is not None else list(range(top_before.shape[0]))
    subtitles = None
    if labels is not None:
        subtitles = ([str(int(labels[i])) for i in top_before[:rows].flatten()],
                     [str(int(labels[i])) for i in top_after[:rows].flatten()])
    return _paired_rows(images[top_before[:rows]], images[top_after[:rows]], path,
                        [f"ch {names[r]}" for r in range(rows)], ("top-k before", "top-k after"), subtitles)


def visualization_grid(before: torch.Tensor, after: torch.Tensor, path: str | os.PathLike,
                       channels: list[int] | None = None) -> Path:
    """Synthetic visualisations (n, C, H, W) of the same channels before and after the attack, one row
    per channel (Nanfack et al. 2024, Fig. 9)."""
    _check_images(before)
    _check_images(after)
    names = channels if channels is not None else list(range(len(before)))
    return _paired_rows(before[:, None], after[:, None], path, [f"ch {c}" for c in names], ("before", "after"))


def ks_plot(ks_before: torch.Tensor, ks_after: torch.Tensor, path: str | os.PathLike,
            attacked: torch.Tensor | None = None) -> Path:
    """KS distance between the groups' activation distributions of every neuron, before and after the
    attack, neurons sorted by their initial KS (Nanfack et al. 2024, Fig. 10); attacked neurons (bool
    mask) are marked."""
    order = ks_before.argsort(descending=True)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.14 * len(order)), 3.0))
    positions = torch.arange(len(order))
    ax.plot(positions, ks_before[order], "o-", ms=3, label="before")
    ax.plot(positions, ks_after[order], "s-", ms=3, label="after")
    if attacked is not None:
        marked = positions[attacked[order]]
        ax.plot(marked, ks_after[order][attacked[order]], "x", color="black", ms=6, label="attacked")
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
