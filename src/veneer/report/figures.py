"""Matplotlib figures (Agg backend, no display needed)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from veneer.runs import atomic_write_bytes  # noqa: E402

# The colours of the report page (templates/style.css), for figures drawn for it.
TONES = {"good": "#1f7a3a", "warn": "#a86400", "bad": "#b3261e", "accent": "#2b5fad"}


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG, atomically, and close it."""
    path = Path(path)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def show_image(ax, image: torch.Tensor) -> None:
    """Draw a (C, H, W) image in [0, 1] (grayscale when C == 1)."""
    image = image.detach().cpu().float()
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())


def show_heatmap(ax, heat: torch.Tensor) -> None:
    """Draw an (H, W) heatmap with a symmetric red (positive) / blue (negative) scale."""
    heat = heat.detach().cpu().float()
    bound = heat.abs().max().item() or 1.0
    ax.imshow(heat.numpy(), cmap="bwr", vmin=-bound, vmax=bound)


def explanation_grid(images: torch.Tensor, heatmaps: dict[str, torch.Tensor], path: str | os.PathLike,
                     row_titles: list[str] | None = None) -> Path:
    """One row per image: the image, then each method's (B, H, W) heatmap (red positive, blue negative)."""
    n, cols = len(images), 1 + len(heatmaps)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n), squeeze=False)
    for i in range(n):
        show_image(axes[i, 0], images[i])
        if row_titles:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=7)
        for j, (name, maps) in enumerate(heatmaps.items(), start=1):
            show_heatmap(axes[i, j], maps[i])
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
    axes[0, 0].set_title("input", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)
