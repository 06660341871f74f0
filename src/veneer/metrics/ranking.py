"""Rank-based agreement between two batches of explanations, one value per sample.

Ghorbani, Abid & Zou (2019), "Interpretation of Neural Networks is Fragile" (AAAI), Sec. 3 and
Sec. 4 ("Metrics"), measure how much an adversarial perturbation changed a saliency map with
Spearman's rank-order correlation and the top-k intersection between the original and the
perturbed map.  Kendall's tau is the other classic rank correlation used for the same purpose.

Inputs are ``(B, ...)`` tensors; each sample's trailing dimensions form one flattened vector.
None of these functions is differentiable (ranks are piecewise constant).
"""

from __future__ import annotations

import torch

from veneer.metrics.similarity import _batched, _centered_correlation, _flat_features, _pair

__all__ = ["rank", "spearman", "kendall", "topk_intersection"]

# Pairs per (B, chunk, n) block in `kendall` when `chunk` is None: ~2 M (8 MB in float32).
# Blocks of ~13 M pairs fall out of cache and ran ~3-6x slower on 2 CPU cores; much smaller
# blocks mean hundreds of tiny parallel ops, slow when the cores are shared with other work.
_KENDALL_BLOCK = 1 << 21


def _rank_dtype(x: torch.Tensor) -> torch.dtype:
    """float32/float64 input keeps its dtype; half precision (inexact ranks above 2048) and
    integer input get float32 at least (the default dtype for integers)."""
    if x.is_floating_point():
        return torch.promote_types(x.dtype, torch.float32)
    return torch.get_default_dtype()


def rank(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (1 .. n) of each sample's flattened entries, ties sharing their mean rank.

    Same values as ``scipy.stats.rankdata(x_i, method='average')`` for every sample ``x_i``,
    returned with ``x``'s shape, in ``x``'s dtype (at least float32; the default dtype for integers).
    Vectorised over the batch: one sort, tie groups are found from equal neighbours, their
    sizes counted with a scatter, and each group's mean position computed exactly in integers.
    """
    x = _batched("x", x, floating=False)
    flat = x.flatten(1)
    batch, n = flat.shape
    dtype = _rank_dtype(x)
    if n == 0:
        return torch.empty(x.shape, dtype=dtype, device=x.device)
    values, order = flat.sort(dim=1)
    new_group = torch.ones_like(values, dtype=torch.bool)
    new_group[:, 1:] = values[:, 1:] != values[:, :-1]
    group = new_group.long().cumsum(dim=1) - 1  # (B, n): tie-group id of each sorted entry
    size = torch.zeros_like(group).scatter_add_(1, group, torch.ones_like(group)).gather(1, group)
    position = torch.arange(n, device=x.device).expand(batch, n)
    start = torch.where(new_group, position, torch.zeros_like(position)).cummax(dim=1).values
    # A group occupying 0-based positions start .. start + size - 1 shares the mean 1-based rank
    # start + (size + 1) / 2; computed in integers (doubled) so it is exact before the cast.
    sorted_ranks = (2 * start + size + 1).to(dtype) / 2
    ranks = torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)
    return ranks.view(x.shape)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation per sample, ``(B,)``: Pearson's r of the average ranks.

    Ghorbani et al. (2019), Sec. 4, "Spearman's rank order correlation" between original and
    perturbed saliency maps.  Equal to ``scipy.stats.spearmanr`` including ties.  A constant
    sample (undefined correlation, NaN in scipy) gives 0.
    """
    a, b = _pair(a, b, floating=False)
    _flat_features(a)
    return _centered_correlation(rank(a).flatten(1), rank(b).flatten(1))


def _tied_pairs(ranks: torch.Tensor) -> torch.Tensor:
    """Number of unordered tied pairs ``sum_g t_g (t_g - 1) / 2`` in each row of (B, n) ranks."""
    values = ranks.sort(dim=1).values
    new_group = torch.ones_like(values, dtype=torch.bool)
    new_group[:, 1:] = values[:, 1:] != values[:, :-1]
    group = new_group.long().cumsum(dim=1) - 1
    size = torch.zeros(values.shape, dtype=torch.int64, device=values.device)
    size.scatter_add_(1, group, torch.ones_like(group))
    return (size * (size - 1) // 2).sum(dim=1)


def kendall(a: torch.Tensor, b: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Kendall's tau-b per sample, ``(B,)``, equal to ``scipy.stats.kendalltau`` (variant 'b').

    ``tau_b = (P - Q) / sqrt((n0 - n1) (n0 - n2))`` with ``P``/``Q`` the concordant/discordant pairs,
    ``n0 = n (n - 1) / 2`` and ``n1`` (``n2``) the pairs tied in ``a`` (in ``b``); Kendall (1945),
    "The treatment of ties in ranking problems", Biometrika 33(3).

    ``P - Q`` is summed exactly over the ``n (n - 1) / 2`` pairs ``i < j`` of the sign of
    ``(rank a_i - rank a_j)(rank b_i - rank b_j)``, batched, ``chunk`` rows ``i`` at a time, so
    memory stays ``O(B * chunk * n)``; ``chunk=None`` picks about 2 M pairs (8 MB) per block
    (B=256, n=784 takes ~0.1-0.4 s on 2 idle CPU cores).  A constant sample (NaN in scipy)
    gives 0.
    """
    a, b = _pair(a, b, floating=False)
    n = _flat_features(a)
    if chunk is not None:
        if isinstance(chunk, bool) or not isinstance(chunk, int):
            raise TypeError(f"chunk must be None or a positive int, got {chunk!r}")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
    batch = a.shape[0]
    if chunk is None:
        chunk = max(1, _KENDALL_BLOCK // max(1, batch * n))
    # Ranks are multiples of 1/2 below n: exact in float32 up to n = 2^22, and the sign of a
    # product of two non-zero rank differences (|d| >= 1/2) is always exact.
    work = torch.float32 if n <= 1 << 22 else torch.float64
    x = rank(a).flatten(1).to(work)
    y = rank(b).flatten(1).to(work)
    s = torch.zeros(batch, dtype=torch.float64, device=x.device)  # P - Q
    # Two reusable buffers instead of fresh (B, chunk, n) tensors each step: less allocation
    # and page-fault traffic, which dominated when the CPU was busy with other work.
    size = batch * min(chunk, n) * n
    buf_x = torch.empty(size, dtype=work, device=x.device)
    buf_y = torch.empty(size, dtype=work, device=x.device)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows, cols = stop - start, n - start
        # Pairs (i, j) with i in [start, stop) and j >= start: j >= stop are counted once, the
        # square block j in [start, stop) twice (it is symmetric with a zero diagonal).
        used = batch * rows * cols
        dx = torch.sub(x[:, start:stop, None], x[:, None, start:], out=buf_x[:used].view(batch, rows, cols))
        dy = torch.sub(y[:, start:stop, None], y[:, None, start:], out=buf_y[:used].view(batch, rows, cols))
        sign = dx.mul_(dy).sign_()
        # Sums of +-1 are exact in float32 up to 2^24 terms per sample; accumulate in float64.
        acc = work if rows * cols < 1 << 24 else torch.float64
        block = sign.sum(dim=(1, 2), dtype=acc) - 0.5 * sign[:, :, :rows].sum(dim=(1, 2), dtype=acc)
        s += block.double()
    n0 = n * (n - 1) // 2
    untied_a = (n0 - _tied_pairs(x)).double()
    untied_b = (n0 - _tied_pairs(y)).double()
    den = (untied_a * untied_b).sqrt()
    tau = torch.where(den > 0, s / den.clamp(min=1), torch.zeros_like(den))
    return tau.clamp(-1.0, 1.0).to(_rank_dtype(a))


def topk_intersection(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of the ``k`` largest entries of ``a`` that are also among the ``k`` largest of ``b``.

    Ghorbani et al. (2019), Sec. 4, "top-k intersection": the share of the k most important
    features of the original saliency map that stay among the k most important of the
    perturbed one; in ``[0, 1]``, ``(B,)``.  Ties at the k-th value are broken by ``torch.topk``.
    Pass maps whose larger values mean "more important" (e.g. absolute attributions).
    """
    a, b = _pair(a, b, floating=False)
    n = _flat_features(a, minimum=1)
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {k!r}")
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in [1, {n}] (the number of features per sample), got {k}")
    x, y = a.flatten(1), b.flatten(1)
    top_a = x.topk(k, dim=1).indices
    top_b = y.topk(k, dim=1).indices
    in_b = torch.zeros(y.shape, dtype=torch.bool, device=y.device).scatter_(1, top_b, True)
    hits = in_b.gather(1, top_a).sum(dim=1)
    return hits.to(_rank_dtype(a)) / k
