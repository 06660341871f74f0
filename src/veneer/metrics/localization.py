"""Where an explanation puts its mass: centre of mass of heatmaps and how far it moves.

Ghorbani, Abid & Zou (2019), "Interpretation of Neural Networks is Fragile" (AAAI), Sec. 3,
"center attack": the centre of mass of a saliency map, ``C(I) = sum_{i,j} I(i,j) [i, j] /
sum_{i,j} I(i,j)``, and the dissimilarity ``||C(I(x)) - C(I(x + delta))||_2`` that the attack
maximises.  All functions here are differentiable and work on batches of ``(B, H, W)`` maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from veneer.checks import check_tensor

__all__ = ["center_of_mass", "com_distance", "com_distance_to"]


def _heatmap(name: str, h: object) -> torch.Tensor:
    h = check_tensor(name, h, ndim=3)
    if h.shape[1] == 0 or h.shape[2] == 0:
        raise ValueError(f"{name} must have non-empty maps, got shape {tuple(h.shape)}")
    if (h < 0).any():
        raise ValueError(
            f"{name} has negative values; the centre of mass needs a non-negative heatmap "
            "(e.g. heatmap(attr, reduce='abs_sum'))"
        )
    return h


def _com(h: torch.Tensor) -> torch.Tensor:
    _, height, width = h.shape
    rows = torch.arange(height, dtype=h.dtype, device=h.device)
    cols = torch.arange(width, dtype=h.dtype, device=h.device)
    row_mass = h.sum(dim=2)  # (B, H)
    col_mass = h.sum(dim=1)  # (B, W)
    total = row_mass.sum(dim=1)
    moments = torch.stack([row_mass @ rows, col_mass @ cols], dim=1)  # (B, 2)
    ok = (total > 0)[:, None]
    safe_total = torch.where(ok, total[:, None], torch.ones_like(total[:, None]))
    centre = torch.tensor([(height - 1) / 2, (width - 1) / 2], dtype=h.dtype, device=h.device)
    return torch.where(ok, moments / safe_total, centre.expand_as(moments))


def center_of_mass(h: torch.Tensor) -> torch.Tensor:
    """Centre of mass ``(row, col)`` of each non-negative map in ``h`` ``(B, H, W)`` -> ``(B, 2)``.

    Ghorbani et al. (2019), Sec. 3: ``C(I) = sum_{i,j} I(i,j) [i, j] / sum_{i,j} I(i,j)``, in pixel
    coordinates (pixel ``i`` sits at coordinate ``i``), the same as
    ``scipy.ndimage.center_of_mass``.  A map that sums to 0 has no centre of mass (scipy returns
    NaN); it gets the image centre ``((H - 1) / 2, (W - 1) / 2)`` instead.  Negative values are
    rejected: reduce signed attributions to a non-negative heatmap first.
    """
    return _com(_heatmap("h", h))


def com_distance(h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between the centres of mass of two batches of maps, ``(B,)``.

    The "center attack" dissimilarity of Ghorbani et al. (2019), Sec. 3 (reported as the
    "center of mass shift" in Sec. 4), in pixels.
    """
    h1 = _heatmap("h1", h1)
    h2 = _heatmap("h2", h2)
    if h1.shape != h2.shape:
        raise ValueError(f"h1 and h2 must have the same shape, got h1 {tuple(h1.shape)} and h2 {tuple(h2.shape)}")
    if h1.device != h2.device:
        raise ValueError(f"h2 is on {h2.device} but h1 is on {h1.device}; move them to one device")
    dtype = torch.promote_types(h1.dtype, h2.dtype)
    return torch.linalg.vector_norm(_com(h1.to(dtype)) - _com(h2.to(dtype)), dim=1)


def com_distance_to(h: torch.Tensor, point: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Euclidean distance from each map's centre of mass to ``point``, ``(B,)``.

    ``point`` is one ``(row, col)`` pair (a sequence or a ``(2,)`` tensor) or a ``(B, 2)`` tensor
    of per-sample targets, in the pixel coordinates of :func:`center_of_mass`; the objective of
    a targeted centre attack (Ghorbani et al. 2019, Sec. 3).
    """
    h = _heatmap("h", h)
    if isinstance(point, torch.Tensor):
        target = check_tensor("point", point, ndim=(1, 2), floating=False)
        if target.dtype == torch.bool or target.is_complex():
            raise TypeError(f"point must hold real coordinates, got dtype {target.dtype}")
        if target.shape not in ((2,), (h.shape[0], 2)):
            raise ValueError(f"point must have shape (2,) or ({h.shape[0]}, 2), got {tuple(target.shape)}")
        target = target.to(device=h.device, dtype=h.dtype)
    elif isinstance(point, Sequence) and not isinstance(point, (str, bytes)):
        if len(point) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point):
            raise ValueError(f"point must be a (row, col) pair of numbers, got {point!r}")
        target = torch.tensor([float(v) for v in point], dtype=h.dtype, device=h.device)
        if not torch.isfinite(target).all():
            raise ValueError(f"point must be finite, got {point!r}")
    else:
        raise TypeError(f"point must be a (row, col) pair or a tensor, got {type(point).__name__}")
    return torch.linalg.vector_norm(_com(h) - target, dim=1)
