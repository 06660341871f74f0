"""Defences used as evidence: how much of an explanation survives a defence that a clean explanation passes.

* :func:`beta_smoothing` -- Dombrowski et al. (2019), "Explanations can be manipulated and geometry is to
  blame", Sec. 5 (Thm. 3): replacing ReLU by Softplus(beta) bounds the explanation's curvature and undoes
  manipulations that rely on sharp bends of the gradient field.
* :func:`tangent_space_projection` -- Anders et al. (2020), "Fairwashing explanations with off-manifold
  detergent", Sec. 4-5: manipulations live mostly orthogonal to the data manifold; projecting an explanation
  on the local tangent space (estimated from training data by k nearest neighbours and an SVD of their
  differences, their Sec. 5.1) removes the manipulated part and keeps most of a clean explanation.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from veneer.audit.base import TestResult, explain_maps, predictions, rank_similarity, rebind
from veneer.checks import check_positive, check_tensor
from veneer.explain import Explainer
from veneer.metrics.manifold import project_tangent, tangent_basis, tangent_share  # noqa: F401 (re-exported)
from veneer.models import with_softplus


def beta_smoothing(model: nn.Module, x: torch.Tensor, explainers: dict[str, Explainer], softplus_beta: float = 3.0,
                   target: torch.Tensor | None = None) -> TestResult:
    """Dombrowski et al. (2019), Sec. 5: explain again with every ReLU replaced by Softplus(``softplus_beta``)
    (:func:`veneer.models.with_softplus`) and compare with the model's own explanation (Spearman of the
    absolute maps) for the model's predicted classes.

    Statistic per (differentiable) method: ``1 - Spearman`` (larger = the explanation only exists in the
    sharp ReLU geometry and is not what a smooth version of the same function shows).
    """
    start = time.perf_counter()
    x = check_tensor("x", x)
    check_positive("softplus_beta", softplus_beta)
    target = predictions(model, x) if target is None else target
    smooth = with_softplus(model, softplus_beta)
    components = {}
    for (name, e), smooth_e in zip(explainers.items(), rebind(explainers, smooth).values()):
        similarity = rank_similarity(explain_maps(e, x, target), explain_maps(smooth_e, x, target))
        components[name] = 1 - similarity.mean().item()
    return TestResult("beta_smoothing", components, {"softplus_beta": softplus_beta}, time.perf_counter() - start)


def tangent_space_projection(model: nn.Module, x: torch.Tensor, explainers: dict[str, Explainer],
                             reference: torch.Tensor, k: int = 32, dim: int = 8,
                             target: torch.Tensor | None = None) -> TestResult:
    """Anders et al. (2020): project each explanation (the signed attribution as a vector in input space) on
    the local tangent space of the data at its input (:func:`tangent_basis` from ``reference``, e.g. the
    training inputs) and measure the share of its norm that survives, ``||P e|| / ||e||``.

    Statistic per method: ``1 -`` the mean surviving share (larger = more of the explanation points off the
    data manifold, where a manipulation hides). Methods whose attribution is not input-shaped (Grad-CAM on
    multi-channel images) are skipped. Evidence: the surviving shares and a random direction's expected
    share ``sqrt(dim / D)``.
    """
    start = time.perf_counter()
    x = check_tensor("x", x)
    target = predictions(model, x) if target is None else target
    flat = x.flatten(1)
    basis = tangent_basis(flat, check_tensor("reference", reference).flatten(1).to(x.dtype), k, dim)
    surviving = {}
    for name, e in explainers.items():
        attr = e(x, target=target).flatten(1)
        if attr.shape != flat.shape:
            continue
        share = tangent_share(attr, basis)
        surviving[name] = share.mean().item()
    if not surviving:
        raise ValueError("no explainer gives input-shaped attributions to project")
    evidence = {"k": k, "dim": dim, "surviving_share": surviving,
                "random_direction_share": (dim / flat.shape[1]) ** 0.5}
    return TestResult("tangent_space", {n: 1 - s for n, s in surviving.items()}, evidence,
                      time.perf_counter() - start)
