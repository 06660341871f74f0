"""Similarity between two batches of explanations, one value per sample.

Every function takes two tensors ``a`` and ``b`` of the same shape ``(B, ...)``, treats the
trailing dimensions of each sample as one flattened vector (``ssim`` needs ``(B, H, W)``),
and returns a ``(B,)`` tensor.  All of them are differentiable, so they can serve directly as
attack objectives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from veneer.checks import check_tensor

__all__ = ["mse", "pearson", "mean_pairwise_pearson", "cosine", "ssim"]


def _batched(name: str, x: object, *, floating: bool = True, min_ndim: int = 2) -> torch.Tensor:
    x = check_tensor(name, x, floating=floating)
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name} must be batched with shape (B, ...) and at least {min_ndim} dimensions, "
            f"got shape {tuple(x.shape)}"
        )
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return x


def _pair(
    a: object, b: object, *, floating: bool = True, min_ndim: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two batches of equal shape on one device and promote them to a common dtype."""
    a = _batched("a", a, floating=floating, min_ndim=min_ndim)
    b = _batched("b", b, floating=floating, min_ndim=min_ndim)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got a {tuple(a.shape)} and b {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"b is on {b.device} but a is on {a.device}; move them to one device")
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def _flat_features(a: torch.Tensor, name: str = "a", minimum: int = 2) -> int:
    n = math.prod(a.shape[1:])
    if n < minimum:
        raise ValueError(f"{name} must have at least {minimum} features per sample, got {n}")
    return n


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample: ``mean((a_i - b_i)^2)`` over each sample's entries.

    The distance used to compare saliency maps before and after manipulation by
    Dombrowski et al. (2019), "Explanations can be manipulated and geometry is to blame", Eq. (4).
    """
    a, b = _pair(a, b)
    return (a - b).pow(2).flatten(1).mean(dim=1)


def _centered_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the rows of two (B, n) tensors; 0 where a row is constant."""
    xc = x - x.mean(dim=1, keepdim=True)
    yc = y - y.mean(dim=1, keepdim=True)
    num = (xc * yc).sum(dim=1)
    den2 = xc.pow(2).sum(dim=1) * yc.pow(2).sum(dim=1)
    # Exact constancy test: the centred values of a constant row may be rounding noise, not 0.
    varies = (x != x[:, :1]).any(dim=1) & (y != y[:, :1]).any(dim=1)
    ok = varies & (den2 > 0)
    # Keep sqrt away from 0 where the result is replaced, so gradients stay finite there.
    den = torch.where(ok, den2, torch.ones_like(den2)).sqrt()
    r = torch.where(ok, num / den, torch.zeros_like(num))
    return r.clamp(-1.0, 1.0)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation coefficient between each pair of flattened samples, ``(B,)``.

    ``r = sum((a - mean a)(b - mean b)) / sqrt(sum (a - mean a)^2 * sum (b - mean b)^2)``, equal to
    ``scipy.stats.pearsonr``.  Where either sample is constant the coefficient is undefined
    (scipy returns NaN); this function returns 0 ("no linear association") instead, with a
    finite zero gradient, so that a dead (all-zero) explanation does not poison an attack loss.
    """
    a, b = _pair(a, b)
    _flat_features(a)
    return _centered_correlation(a.flatten(1), b.flatten(1))


def mean_pairwise_pearson(maps: torch.Tensor) -> torch.Tensor:
    """Mean Pearson correlation over all pairs of distinct rows of ``maps`` ``(n, D)`` (n >= 2), a scalar;
    differentiable, constant rows count as uncorrelated (as :func:`pearson`). Through the Gram matrix of the
    centred, unit-norm rows: O(n^2 + n D) memory, not one row per pair. The statistic of the audit's
    ``noise_inputs`` test (thesis Sec. 4.1: a globally manipulated model draws the same map for every input)."""
    maps = check_tensor("maps", maps, ndim=2)
    if len(maps) < 2:
        raise ValueError(f"maps must hold at least 2 rows, got {len(maps)}")
    centred = maps - maps.mean(1, keepdim=True)
    norms = centred.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, centred / norms.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(centred))
    gram = unit @ unit.T
    n = len(maps)
    return (gram.sum() - gram.diagonal().sum()) / (n * (n - 1))


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``<a, b> / (||a|| ||b||)`` between each pair of flattened samples, ``(B,)``.

    A zero sample gives 0 (the norms are clamped at 1e-8, as in
    ``torch.nn.functional.cosine_similarity``).
    """
    a, b = _pair(a, b)
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-8)


def _data_range(data_range: object, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    batch = a.shape[0]
    if data_range is None:
        lo = torch.minimum(a.flatten(1).amin(dim=1), b.flatten(1).amin(dim=1))
        hi = torch.maximum(a.flatten(1).amax(dim=1), b.flatten(1).amax(dim=1))
        rng = hi - lo
        # Two equal constant images have range 0; any positive range then gives SSIM = 1.
        return torch.where(rng > 0, rng, torch.ones_like(rng))
    if isinstance(data_range, bool):
        raise TypeError("data_range must be None, a positive number or a (B,) tensor, got bool")
    if isinstance(data_range, (int, float)):
        if not data_range > 0 or data_range == float("inf"):
            raise ValueError(f"data_range must be a finite number > 0, got {data_range!r}")
        return torch.full((batch,), float(data_range), dtype=a.dtype, device=a.device)
    if isinstance(data_range, torch.Tensor):
        check_tensor("data_range", data_range, floating=False)
        if data_range.ndim == 0:
            data_range = data_range.expand(batch)
        if data_range.shape != (batch,):
            raise ValueError(f"data_range must be a number or have shape ({batch},), got {tuple(data_range.shape)}")
        data_range = data_range.to(device=a.device, dtype=a.dtype)
        if not (data_range > 0).all():
            raise ValueError("data_range must be > 0 for every sample")
        return data_range
    raise TypeError(f"data_range must be None, a positive number or a (B,) tensor, got {type(data_range).__name__}")


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    data_range: float | torch.Tensor | None = None,
    win_size: int = 7,
) -> torch.Tensor:
    """Mean structural similarity (SSIM) of each pair of single-channel maps ``(B, H, W)`` -> ``(B,)``.

    Wang, Bovik, Sheikh & Simoncelli (2004), "Image quality assessment: from error visibility to
    structural similarity", IEEE TIP 13(4), Eq. (13) with local statistics (Sec. III-B) and the
    constants ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2``, ``K1 = 0.01``, ``K2 = 0.03`` (Eq. 7, 9)::

        SSIM(x, y) = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))

    The settings are those of ``skimage.metrics.structural_similarity`` with its defaults: a
    uniform ``win_size x win_size`` window, sample (co)variances (factor ``N / (N - 1)``), and the
    mean over the positions where the window lies fully inside the image.

    ``data_range`` (``L``) is a positive number, a ``(B,)`` tensor, or ``None`` for each sample's
    ``max(a, b) - min(a, b)`` (taken as 1 when both maps are the same constant).
    """
    a, b = _pair(a, b, min_ndim=3)
    if a.ndim != 3:
        raise ValueError(
            f"a and b must be single-channel maps of shape (B, H, W), got {tuple(a.shape)}; "
            "reduce channels first (e.g. heatmap(attr, reduce='abs_sum'))"
        )
    if isinstance(win_size, bool) or not isinstance(win_size, int):
        raise TypeError(f"win_size must be an int, got {win_size!r}")
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd int >= 3, got {win_size}")
    height, width = a.shape[1:]
    if height < win_size or width < win_size:
        raise ValueError(
            f"win_size={win_size} exceeds the image size {height}x{width} of a and b; "
            "use a smaller odd win_size or larger images"
        )
    rng = _data_range(data_range, a, b)
    c1 = (0.01 * rng).pow(2)[:, None, None]
    c2 = (0.03 * rng).pow(2)[:, None, None]

    # One pass of a 'valid' box filter over the five moment images, stacked as channels.
    stack = torch.stack([a, b, a * a, b * b, a * b], dim=1)
    mu = F.avg_pool2d(stack, kernel_size=win_size, stride=1)
    ux, uy, uxx, uyy, uxy = mu.unbind(dim=1)
    n = win_size * win_size
    cov_norm = n / (n - 1.0)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    num = (2 * ux * uy + c1) * (2 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return (num / den).flatten(1).mean(dim=1)
