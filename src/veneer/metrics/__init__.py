"""Pure, batched tensor metrics that compare explanations and measure group fairness.

Similarity (``(B, ...)`` pairs -> ``(B,)``, differentiable): :func:`mse`, :func:`pearson`,
:func:`cosine`, :func:`ssim`; :func:`mean_pairwise_pearson` (rows of one ``(n, D)`` batch -> a scalar).  Ranking (not differentiable): :func:`rank`, :func:`spearman`,
:func:`kendall`, :func:`topk_intersection`.  Localization (differentiable):
:func:`center_of_mass`, :func:`com_distance`, :func:`com_distance_to`.  Fairness:
:func:`ks_distance`, :func:`balance`, :func:`ddi`, :func:`deo`.

Only torch is imported; every function works on any device and floating dtype.
"""

from veneer.metrics.fairness import balance, ddi, deo, ks_distance
from veneer.metrics.localization import center_of_mass, com_distance, com_distance_to
from veneer.metrics.ranking import kendall, rank, spearman, topk_intersection
from veneer.metrics.similarity import cosine, mean_pairwise_pearson, mse, pearson, ssim

__all__ = [
    "mse",
    "pearson",
    "mean_pairwise_pearson",
    "cosine",
    "ssim",
    "rank",
    "spearman",
    "kendall",
    "topk_intersection",
    "center_of_mass",
    "com_distance",
    "com_distance_to",
    "ks_distance",
    "balance",
    "ddi",
    "deo",
]
