"""Does the explanation point at what the model uses, and do the methods agree?

* :func:`deletion_insertion` / :func:`faithfulness` -- Samek et al. (2017), "Evaluating the Visualization of
  What a Deep Neural Network Has Learned" (region perturbation, most relevant first, AOPC) and Petsiuk et al.
  (2018), "RISE", Sec. 4.1 (deletion and insertion curves). A manipulated map stops pointing at the evidence
  the model uses, so deleting its top features barely lowers the class probability.
* :func:`cross_method_agreement` -- rank agreement between methods (thesis Tables 3.1-3.2: a manipulation of
  one method transfers only partly to others; Occlusion, a finite difference of the predictions, follows
  the predictions the manipulation must keep).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from veneer.audit.base import TestResult, explain_maps, rank_similarity
from veneer.checks import check_tensor, resolve_target
from veneer.explain import Explainer
from veneer.metrics.deletion import deletion_insertion, feature_view


def faithfulness(model: nn.Module, x: torch.Tensor, explainers: dict[str, Explainer],
                 target: torch.Tensor | None = None, steps: int = 16, baseline: float | torch.Tensor = 0.0,
                 seed: int = 0) -> TestResult:
    """Deletion/insertion of each method's most important features (Samek et al. 2017; Petsiuk et al. 2018).

    Statistic per method: ``deletion AUC - insertion AUC`` of the class probability (larger = the map's top
    features matter less to the model than its bottom ones; a faithful map is strongly negative). Evidence:
    both AUCs per method and those of a random feature order.
    """
    start = time.perf_counter()
    x = check_tensor("x", x)
    with torch.no_grad():
        target = resolve_target(target, model(x))
    generator = torch.Generator().manual_seed(seed)
    features, _ = feature_view(x)
    orders = {"random": torch.rand(len(x), features, generator=generator, dtype=x.dtype)}
    orders.update({name: explain_maps(e, x, target) for name, e in explainers.items()})
    aucs = {}
    for name, importance in orders.items():
        curves = deletion_insertion(model, x, importance, target, steps, baseline)
        aucs[name] = {"deletion_auc": curves["deletion_auc"].mean().item(),
                      "insertion_auc": curves["insertion_auc"].mean().item()}
    components = {name: v["deletion_auc"] - v["insertion_auc"] for name, v in aucs.items() if name != "random"}
    return TestResult("faithfulness", components, {"steps": steps, "auc": aucs}, time.perf_counter() - start)


def agreement_matrix(maps: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Mean Spearman rank correlation between the importance maps ``(B, D)`` of every pair of methods."""
    names = list(maps)
    return {a: {b: rank_similarity(maps[a], maps[b]).mean().item() for b in names if b != a} for a in names}


def cross_method_agreement(model: nn.Module, x: torch.Tensor, explainers: dict[str, Explainer],
                           target: torch.Tensor | None = None) -> TestResult:
    """Rank agreement between explanation methods on the same inputs (thesis Tables 3.1-3.2: manipulations
    rarely transfer to every method). Grad-CAM maps are compared at input resolution (its upsampled maps).

    Statistic per method: ``1 - `` its mean Spearman correlation with the other methods (larger = the
    method has drifted away from the rest). Needs at least two methods. Evidence: the full matrix.
    """
    start = time.perf_counter()
    if len(explainers) < 2:
        raise ValueError(f"cross_method_agreement needs at least 2 explainers, got {list(explainers)}")
    x = check_tensor("x", x)
    with torch.no_grad():
        target = resolve_target(target, model(x))
    matrix = agreement_matrix({name: explain_maps(e, x, target) for name, e in explainers.items()})
    components = {a: 1 - sum(row.values()) / len(row) for a, row in matrix.items()}
    return TestResult("cross_method_agreement", components, {"spearman": matrix}, time.perf_counter() - start)
