"""Audit against a reference model: the model before fine-tuning, or an independently trained one.

A manipulation keeps the predictions and moves the explanations of the attacked methods; Occlusion, a finite
difference of the predictions, moves little. An independently trained model differs in every method alike.
So the spread of the explanation divergence over methods, weighted by the prediction agreement, separates
the two (thesis Secs. 3.5 and 4; Heo et al. 2019, Sec. 5's transfer tables). Parameter shift statistics say
how far the weights moved (a fine-tuned copy moves little).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from veneer.audit.base import TestResult, explain_maps, predictions, rank_similarity, rebind
from veneer.checks import check_tensor
from veneer.explain import Explainer


def parameter_shift(model: nn.Module, reference: nn.Module) -> dict[str, float]:
    """Relative L2 change ``||w - w_ref|| / ||w_ref||`` of every parameter tensor the two models share by name
    and shape, and ``"total"`` over all of them; empty when they share none (other architectures)."""
    mine, theirs = dict(model.named_parameters()), dict(reference.named_parameters())
    shared = [n for n in mine if n in theirs and mine[n].shape == theirs[n].shape]
    shift = {n: ((mine[n] - theirs[n]).norm() / theirs[n].norm().clamp_min(1e-30)).item() for n in shared}
    if shared:
        num = sum((mine[n] - theirs[n]).pow(2).sum() for n in shared)
        den = sum(theirs[n].pow(2).sum() for n in shared)
        shift["total"] = (num.sqrt() / den.sqrt().clamp_min(1e-30)).item()
    return {k: float(v) for k, v in shift.items()}


def reference_comparison(model: nn.Module, reference: nn.Module, x: torch.Tensor,
                         explainers: dict[str, Explainer]) -> TestResult:
    """Prediction agreement vs explanation divergence per method, and parameter shift, against ``reference``
    (same input and output shapes; ``explainers`` are bound to ``model`` and rebound to ``reference``).

    Explanations of both models are taken for the reference's predicted classes. Statistic: ``agreement x
    (max - min)`` over methods of the divergence ``1 - Spearman`` (larger = predictions kept while some
    methods' explanations moved much more than others). Evidence: agreement, per-method divergence,
    parameter shift.
    """
    start = time.perf_counter()
    x = check_tensor("x", x)
    if len(explainers) < 2:
        raise ValueError(f"reference_comparison needs at least 2 explainers, got {list(explainers)}")
    target = predictions(reference, x)
    agreement = (predictions(model, x) == target).float().mean().item()
    divergence = {}
    for (name, e), ref_e in zip(explainers.items(), rebind(explainers, reference).values()):
        divergence[name] = 1 - rank_similarity(explain_maps(e, x, target), explain_maps(ref_e, x, target)).mean().item()
    spread = agreement * (max(divergence.values()) - min(divergence.values()))
    evidence = {"label_agreement": agreement, "divergence": divergence,
                "parameter_shift": parameter_shift(model, reference)}
    return TestResult("reference_comparison", {"divergence_spread": spread}, evidence, time.perf_counter() - start)
