"""From attributions (B, C, H, W) to heatmaps (B, H, W)."""

from __future__ import annotations

import torch

from veneer.checks import check_tensor

REDUCTIONS = ("sum", "abs_sum", "l2")
NORMALIZATIONS = (None, "sum", "abs_sum", "max")


def flat_maps(attr: torch.Tensor) -> torch.Tensor:
    """Attributions as non-negative importance vectors ``(B, D)``: ``|attr|`` summed over channels for images
    (Ghorbani et al. 2019's saliency map; Grad-CAM's one-channel maps included), ``|attr|`` for tabular rows;
    differentiable (what the audit's tests compare, and what an attacker who evades them differentiates)."""
    if attr.ndim == 2:
        return attr.abs()
    return heatmap(attr, reduce="abs_sum").flatten(1)


def heatmap(attr: torch.Tensor, reduce: str = "sum", normalize: str | None = None,
            eps: float = 1e-12) -> torch.Tensor:
    """Reduce the channel axis and optionally normalize each map; differentiable.

    ``reduce``: ``"sum"`` (signed relevance, LRP's convention), ``"abs_sum"`` (Ghorbani et al.'s saliency
    map), ``"l2"`` (channel-wise Euclidean norm). ``normalize``: ``None``, ``"sum"`` (maps sum to 1, as the
    thesis' normalized heatmaps), ``"abs_sum"`` (absolute values sum to 1) or ``"max"`` (max |h| is 1).
    """
    check_tensor("attr", attr, ndim=(3, 4), finite=False)
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if attr.ndim == 4:
        if reduce == "sum":
            h = attr.sum(1)
        elif reduce == "abs_sum":
            h = attr.abs().sum(1)
        else:
            h = attr.pow(2).sum(1).clamp_min(eps).sqrt()
    else:
        h = attr.abs() if reduce in ("abs_sum", "l2") else attr
    if normalize is None:
        return h
    if normalize == "sum":
        denom = h.sum(dim=(1, 2), keepdim=True)
        denom = torch.where(denom.abs() < eps, torch.full_like(denom, eps), denom)
    elif normalize == "abs_sum":
        denom = h.abs().sum(dim=(1, 2), keepdim=True).clamp_min(eps)
    else:
        denom = h.abs().amax(dim=(1, 2), keepdim=True).clamp_min(eps)
    return h / denom
