"""Group-fairness measures used by fairwashing attacks (models or neurons that hide a bias).

Conventions: ``N`` samples along the first dimension; ``group`` is an ``(N,)`` tensor of binary
group codes (bool, or integers / floats equal to 0 or 1).  Functions taking a per-sample
quantity accept ``(N,)`` (one classifier / neuron -> a 0-d tensor) or ``(N, C)`` (``C`` of them,
evaluated at once -> ``(C,)``).  A group without any sample makes the measure undefined and
raises a ``ValueError`` naming ``group``.
"""

from __future__ import annotations

import torch

from veneer.checks import check_tensor

__all__ = ["ks_distance", "balance", "ddi", "deo"]


def _binary(name: str, x: object, n: int | None = None) -> torch.Tensor:
    """Return ``x`` as an (N,) bool tensor, checking it holds only 0/1 codes."""
    x = check_tensor(name, x, ndim=1, floating=False)
    if n is not None and x.shape[0] != n:
        raise ValueError(f"{name} must have {n} entries (one per sample), got {x.shape[0]}")
    if x.dtype == torch.bool:
        return x
    if x.is_complex() or not ((x == 0) | (x == 1)).all():
        raise ValueError(f"{name} must hold binary codes 0/1 (or bool), got values {x.unique()[:10].tolist()}")
    return x == 1


def _per_sample(name: str, x: object) -> torch.Tensor:
    x = check_tensor(name, x, ndim=(1, 2), floating=False)
    if x.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(x.shape)}")
    return x


def _require_both(group: torch.Tensor, what: str = "") -> tuple[int, int]:
    n1 = int(group.sum())
    n0 = group.shape[0] - n1
    for code, count in ((0, n0), (1, n1)):
        if count == 0:
            raise ValueError(
                f"group has no sample of group {code}{what}; the measure compares both groups"
            )
    return n0, n1


def ks_distance(values: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Two-sample Kolmogorov-Smirnov statistic between ``values[group == 0]`` and ``values[group == 1]``.

    ``D = sup_t |F_0(t) - F_1(t)|`` with ``F_g`` the empirical CDF of group ``g``; equal to
    ``scipy.stats.ks_2samp(v0, v1).statistic``.  Nanfack et al. (2024), "Adversarial Attacks on
    the Interpretation of Neuron Activation Maximization" (AAAI), use it to measure how
    differently a neuron activates on two groups.  ``values`` ``(N,)`` -> 0-d tensor, ``(N, C)``
    -> ``(C,)`` (one statistic per column, e.g. per neuron), in ``values``' floating dtype.
    Not differentiable (the statistic is piecewise constant).
    """
    values = _per_sample("values", values)
    group = _binary("group", group, values.shape[0]).to(values.device)
    n0, n1 = _require_both(group)
    squeeze = values.ndim == 1
    v = values[:, None] if squeeze else values
    if v.dtype == torch.bool:
        v = v.to(torch.get_default_dtype())
    dtype = v.dtype if v.is_floating_point() else torch.get_default_dtype()
    sorted_v, order = v.sort(dim=0)
    g = group[order]  # (N, C): group of each sorted value
    cdf1 = g.to(torch.float64).cumsum(dim=0) / n1
    cdf0 = (~g).to(torch.float64).cumsum(dim=0) / n0
    # The CDFs are only compared after the last of equal values (a step of the empirical CDF).
    last = torch.ones_like(g)
    last[:-1] = sorted_v[1:] != sorted_v[:-1]
    gap = torch.where(last, (cdf0 - cdf1).abs(), torch.zeros_like(cdf0))
    stat = gap.amax(dim=0).to(dtype)
    return stat[0] if squeeze else stat


def balance(top_indices: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Group balance of each set of top-k samples: ``min(n0, n1) / max(n0, n1)`` in ``[0, 1]``.

    ``top_indices`` ``(C, k)`` (or ``(k,)``) holds, for each of ``C`` channels/neurons, the indices
    of its ``k`` top-activating samples into ``group`` ``(N,)``; ``n0``/``n1`` count how many of
    them belong to group 0/1.  1 means an even split, 0 that one group is absent.  Nanfack et al.
    (2024), Sec. "Fairwashing", compare the share of each group among the top-activating images
    of a neuron; this symmetric ratio is minority/majority whichever group is the minority, so
    it never divides by zero (``k >= 1``).  Returns ``(C,)`` (a 0-d tensor for ``(k,)`` input).
    """
    top = check_tensor("top_indices", top_indices, ndim=(1, 2), floating=False)
    if top.is_floating_point() or top.is_complex() or top.dtype == torch.bool:
        raise TypeError(f"top_indices must hold integer indices, got dtype {top.dtype}")
    group = _binary("group", group)
    if top.shape[-1] == 0:
        raise ValueError("top_indices must hold at least one index per row (k >= 1)")
    n = group.shape[0]
    if ((top < 0) | (top >= n)).any():
        raise ValueError(f"top_indices must lie in [0, {n - 1}] (indices into group)")
    squeeze = top.ndim == 1
    top = top[None] if squeeze else top
    members = group.to(top.device)[top.long()]  # (C, k) bool
    n1 = members.sum(dim=1).to(torch.get_default_dtype())
    n0 = top.shape[1] - n1
    ratio = torch.minimum(n0, n1) / torch.maximum(n0, n1)
    return ratio[0] if squeeze else ratio


def _positive_rate(pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``pred`` (N,) or (N, C) over the rows selected by ``mask`` (N,)."""
    return pred[mask].mean(dim=0)


def _predictions(pred: object, n: int | None = None) -> torch.Tensor:
    pred = _per_sample("pred", pred)
    if n is not None and pred.shape[0] != n:
        raise ValueError(f"pred must have {n} rows (one per sample), got {pred.shape[0]}")
    if pred.is_floating_point():
        if ((pred < 0) | (pred > 1)).any():
            raise ValueError("pred must hold 0/1 predictions or probabilities in [0, 1]")
        return pred
    if pred.dtype != torch.bool and not ((pred == 0) | (pred == 1)).all():
        raise ValueError(f"pred must hold 0/1 predictions (or bool), got values {pred.unique()[:10].tolist()}")
    return pred.to(torch.get_default_dtype())


def ddi(pred: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Demographic disparity ``|P(pred = 1 | group = 0) - P(pred = 1 | group = 1)|``.

    The "DDI" (demographic disparity / statistical parity difference) reported by Dimanov et
    al. (2020), "You Shouldn't Trust Me: Learning Models Which Conceal Unfairness From Multiple
    Explanation Methods" (ECAI / SafeAI), Sec. 4, for models whose explanations were made to hide
    a sensitive attribute.  ``pred`` holds hard 0/1 predictions, ``(N,)`` -> 0-d or ``(N, C)`` ->
    ``(C,)``; float probabilities in ``[0, 1]`` are also accepted, giving the expected rates (a
    differentiable relaxation that equals the hard DDI on 0/1 input).
    """
    pred = _predictions(pred)
    group = _binary("group", group, pred.shape[0]).to(pred.device)
    _require_both(group)
    return (_positive_rate(pred, ~group) - _positive_rate(pred, group)).abs()


def deo(pred: torch.Tensor, y: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Equal-opportunity difference ``|P(pred = 1 | y = 1, group = 0) - P(pred = 1 | y = 1, group = 1)|``.

    The "DEO" (difference in equal opportunity, i.e. in true-positive rates; Hardt et al. 2016)
    reported by Dimanov et al. (2020), "You Shouldn't Trust Me", Sec. 4.  ``pred`` as in
    :func:`ddi`; ``y`` ``(N,)`` holds the binary true labels.  Each group needs at least one
    sample with ``y = 1``.
    """
    pred = _predictions(pred)
    y = _binary("y", y, pred.shape[0]).to(pred.device)
    group = _binary("group", group, pred.shape[0]).to(pred.device)
    _require_both(group)
    _require_both(group[y], " with y == 1")
    return (_positive_rate(pred, y & ~group) - _positive_rate(pred, y & group)).abs()
