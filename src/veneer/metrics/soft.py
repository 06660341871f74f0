"""Differentiable relaxations of the rank metrics (:mod:`veneer.metrics.ranking`), for attackers that hold a
rank-based audit statistic in place (:mod:`veneer.finetune.evasion`). Each tends to its hard counterpart as its
``temperature`` tends to 0."""

from __future__ import annotations

import torch

from veneer.metrics.similarity import pearson

__all__ = ["soft_rank", "soft_spearman", "soft_topk_intersection"]


def soft_rank(values: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Differentiable average ranks (1-based) of each row of ``values`` ``(B, D)``: ``r_i = 1/2 + sum_j
    sigmoid((v_i - v_j) / (temperature * std(v)))``; as ``temperature -> 0`` it tends to the average ranks
    (ties share theirs), so the Pearson correlation of soft ranks tends to Spearman's (Blondel et al. 2020,
    "Fast Differentiable Sorting and Ranking", give another relaxation; this one is the pairwise-sigmoid one of
    Qin et al. 2010, "A general approximation framework for direct optimization of information retrieval
    measures", Eq. 12). Memory ``B * D^2``."""
    scale = values.std(1, keepdim=True).clamp_min(1e-12) * temperature
    differences = (values.unsqueeze(2) - values.unsqueeze(1)) / scale.unsqueeze(2)
    return 0.5 + torch.sigmoid(differences).sum(2)


def soft_spearman(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """``(B,)`` Pearson correlation of the soft ranks (:func:`soft_rank`) of the rows of ``a`` and ``b``
    ``(B, D)``: Spearman's rank correlation as ``temperature -> 0`` (without ties), differentiable."""
    return pearson(soft_rank(a, temperature), soft_rank(b, temperature))


def soft_topk_intersection(a: torch.Tensor, b: torch.Tensor, k: int, temperature: float = 0.1) -> torch.Tensor:
    """``(B,)`` relaxed top-k intersection (Ghorbani et al. 2019, Sec. 4; :func:`veneer.metrics.topk_intersection`)
    of the rows of ``a`` and ``b`` ``(B, D)``: ``sum_i m_i(a) m_i(b) / k`` with the soft membership
    ``m_i(v) = sigmoid((v_i - t) / (temperature * std(v)))`` and ``t`` midway between the k-th and (k+1)-th largest
    value of the row; the hard intersection as ``temperature -> 0`` (without ties at the k-th value)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < a.shape[1]:
        raise ValueError(f"k must be an int in [1, {a.shape[1] - 1}], got {k!r}")

    def membership(values: torch.Tensor) -> torch.Tensor:
        top = values.topk(k + 1, dim=1).values
        threshold = (top[:, k - 1:k] + top[:, k:k + 1]) / 2
        scale = values.std(1, keepdim=True).clamp_min(1e-12) * temperature
        return torch.sigmoid((values - threshold) / scale)

    return (membership(a) * membership(b)).sum(1) / k
