"""Deletion and insertion curves of importance maps (Samek et al. 2017, "Evaluating the Visualization of What a
Deep Neural Network Has Learned", region perturbation; Petsiuk et al. 2018, "RISE", Sec. 4.1), hard (the audit's
``faithfulness`` test) or with soft masks from soft ranks (its evasion surrogate): one home for both."""

from __future__ import annotations

import torch

from veneer.checks import check_positive
from veneer.metrics.soft import soft_rank

__all__ = ["feature_view", "deletion_insertion"]


def feature_view(x: torch.Tensor) -> tuple[int, tuple[int, ...]]:
    """Number of features ranked (pixels for images, columns for rows) and the shape that broadcasts a
    ``(n, D)`` mask over ``x`` ``(n, ...)``."""
    if x.ndim == 4:
        return x.shape[-1] * x.shape[-2], (1, *x.shape[-2:])
    return x[0].numel(), tuple(x.shape[1:])


def _removed(importance: torch.Tensor, counts: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """``(B, S, D)``: 1 where a feature is among the ``counts[s]`` most important of its row. Hard (ties broken by
    feature order) when ``temperature`` is None; else ``sigmoid((counts[s] - 1/2 - p_i) / temperature)`` with
    ``p_i = D - r_i`` the soft 0-based position from the top (:func:`veneer.metrics.soft.soft_rank`, the same
    temperature), which tends to the hard mask as ``temperature -> 0`` (without ties)."""
    features = importance.shape[1]
    if temperature is None:
        order = importance.argsort(dim=1, descending=True, stable=True)
        position = torch.empty_like(order)
        position.scatter_(1, order, torch.arange(features, device=importance.device).expand_as(order))
        return (position[:, None, :] < counts[None, :, None]).to(importance.dtype)
    position = features - soft_rank(importance, temperature)
    return torch.sigmoid((counts[None, :, None].to(importance.dtype) - 0.5 - position[:, None, :]) / temperature)


def deletion_insertion(model, x: torch.Tensor, importance: torch.Tensor, target: torch.Tensor, steps: int = 16,
                       baseline: float | torch.Tensor = 0.0, batch_size: int = 1024,
                       temperature: float | None = None) -> dict[str, torch.Tensor]:
    """Deletion and insertion curves (Petsiuk et al. 2018, Sec. 4.1) of importance vectors ``(B, D)`` (D pixels
    of an image, shared by its channels, or D columns).

    At fraction ``s / steps`` (s = 0..steps) the ``round(s D / steps)`` most important features are set to
    ``baseline`` (deletion) or copied from ``x`` into an all-``baseline`` input (insertion); every step of every
    sample is evaluated in batched forwards. Returns ``{"deletion": (B, steps+1), "insertion": (B, steps+1)}``
    softmax probabilities of ``target`` and their areas ``"deletion_auc"``, ``"insertion_auc"`` ``(B,)``
    (trapezoid rule over fractions in [0, 1]). Ties in importance are broken by feature order. With a
    ``temperature`` the masks are soft (:func:`_removed`) and the curves differentiable in ``importance`` and
    the model (the evasion surrogate of the audit's ``faithfulness``); without, no graph is kept.
    """
    check_positive("steps", steps, integer=True)
    if temperature is not None:
        check_positive("temperature", temperature)
    features, mask_shape = feature_view(x)
    if importance.shape != (len(x), features):
        raise ValueError(f"importance must have shape ({len(x)}, {features}), got {tuple(importance.shape)}")
    with torch.set_grad_enabled(temperature is not None and torch.is_grad_enabled()):
        counts = torch.round(torch.linspace(0, features, steps + 1, device=x.device)).long()
        mask = _removed(importance, counts, temperature).to(x.dtype).view(len(x), steps + 1, *mask_shape)
        base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
        xs = x[:, None]
        curves = {}
        for name, inputs in (("deletion", xs * (1 - mask) + base * mask),
                             ("insertion", base * (1 - mask) + xs * mask)):
            flat = inputs.flatten(0, 1)
            probs = torch.cat([model(chunk).softmax(1) for chunk in flat.split(batch_size)])
            curves[name] = probs.gather(1, target.repeat_interleave(steps + 1)[:, None]).view(len(x), steps + 1)
        for name in ("deletion", "insertion"):
            c = curves[name]
            curves[f"{name}_auc"] = ((c[:, 1:] + c[:, :-1]) / 2).mean(1)
    return curves
