"""Occlusion (Zeiler & Fergus 2014; thesis 3.6), batched over patch positions."""

from __future__ import annotations

import torch

from veneer.checks import check_positive
from veneer.explain.base import Explainer, target_logits


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return pair


class Occlusion(Explainer):
    """f_target(x) - f_target(x with a window set to ``baseline``), averaged over the windows covering each pixel.

    Windows of size ``window`` slide with ``stride`` over (H, W) and cover all channels (as Captum, a last
    window cut at the border is added where the stride does not tile the image). ``batch_size`` bounds
    the number of occluded images per forward pass; many windows of the whole batch share one pass.
    A finite-difference method: not differentiable through ``create_graph``.
    """

    name = "occlusion"
    differentiable = False

    def __init__(self, model, window=(5, 5), stride=1, baseline: float = 0.0, batch_size: int = 2048):
        super().__init__(model)
        self.window, self.stride = _pair(window, "window"), _pair(stride, "stride")
        check_positive("batch_size", batch_size, integer=True)
        self.baseline, self.batch_size = float(baseline), batch_size

    def masks(self, height: int, width: int, device) -> torch.Tensor:
        """(P, H, W) 0/1 masks, one per window position, in row-major order."""
        (wh, ww), (sh, sw) = self.window, self.stride
        if wh > height or ww > width:
            raise ValueError(f"window {self.window} is larger than the image ({height}, {width})")
        # ceil((H - h) / s) + 1 positions: the last window is cut at the border so every pixel is covered
        rows = torch.arange(0, height - wh + sh, sh, device=device)
        cols = torch.arange(0, width - ww + sw, sw, device=device)
        r = torch.arange(height, device=device)
        c = torch.arange(width, device=device)
        in_rows = (r[None, :] >= rows[:, None]) & (r[None, :] < rows[:, None] + wh)  # (Pr, H)
        in_cols = (c[None, :] >= cols[:, None]) & (c[None, :] < cols[:, None] + ww)  # (Pc, W)
        return (in_rows[:, None, :, None] & in_cols[None, :, None, :]).flatten(0, 1)

    @torch.no_grad()
    def attribute(self, x, target, create_graph):
        if x.ndim != 4:
            raise ValueError(f"x must be an image batch (B, C, H, W) for Occlusion, got shape {tuple(x.shape)}")
        batch = len(x)
        masks = self.masks(x.shape[2], x.shape[3], x.device).to(x.dtype)  # (P, H, W)
        clean = target_logits(self.model, x, target)
        per_pass = max(1, self.batch_size // batch)
        drops = []
        for chunk in masks.split(per_pass):
            m = chunk[:, None, None]  # (p, 1, 1, H, W)
            occluded = x[None] * (1 - m) + self.baseline * m
            drops.append(clean[None] - target_logits(self.model, occluded.flatten(0, 1), target).view(-1, batch))
        drop = torch.cat(drops)  # (P, B)
        total = drop.T @ masks.flatten(1)  # (B, H*W)
        counts = masks.sum(0).flatten()
        attr = torch.where(counts > 0, total / counts.clamp_min(1), torch.zeros_like(total))
        return attr.view(batch, 1, *x.shape[2:]).expand_as(x).contiguous()
