"""Input-level fragility and its geometric cause.

* :func:`fragility_profile` -- Ghorbani, Abid & Zou (2019), "Interpretation of Neural Networks is Fragile",
  Algorithm 1 and Fig. 3: how far a targeted attack (centre-of-mass, top-k) moves the explanation within an
  l-inf budget, against the random-sign baseline, over a grid of budgets.
* :func:`hessian_geometry` -- Ghorbani et al. Sec. 5 (Fig. 6) and Dombrowski et al. (2019), "Explanations can
  be manipulated and geometry is to blame", Thm. 2: the explanation of ``g(x) = d f_t / dx`` changes along
  ``H v`` with ``H`` the input Hessian of the class score, so its largest eigenvalue bounds how fast the
  explanation can move, and its eigenvector is the most interpretation-fragile direction. That direction is
  nearly orthogonal to the prediction gradient, so the prediction barely moves along it (Fig. 6).
"""

from __future__ import annotations

import math
import time
import warnings

import torch
from torch import nn

from veneer.attacks import MassCenter, RandomSign, TopK, explanation_change
from veneer.audit.base import TestResult
from veneer.checks import check_eval_mode, check_tensor, resolve_target
from veneer.explain import Explainer
from veneer.explain.curvature import per_sample_dot, top_hessian_eigen
from veneer.models import with_softplus

ATTACKS = {"mass_center": MassCenter, "topk": TopK}


def fragility_profile(model: nn.Module, x: torch.Tensor, explainer: Explainer, eps_values=(0.02, 0.05),
                      target: torch.Tensor | None = None, attack: str = "mass_center", steps: int = 10,
                      k: int | None = None, input_range=(0.0, 1.0), seed: int = 0, *, eps_grid=None) -> TestResult:
    """Ghorbani et al. (2019), Alg. 1 / Fig. 3: top-k intersection between the clean and attacked saliency maps
    after ``attack`` (``"mass_center"`` or ``"topk"``, ``steps`` signed-gradient steps) and after the
    random-sign baseline, for every l-inf budget in ``eps_values`` (images in ``input_range``; ``eps_grid`` is
    the deprecated name of ``eps_values``).

    Statistic: the mean over budgets of the targeted attack's loss of top-k features, ``1 - intersection``
    (larger = more fragile; fine-tuning an explanation into a shape the data do not support makes it fragile,
    thesis Ch. 4). ``k`` defaults to 10% of the pixels. Evidence: the per-budget intersections of both attacks,
    the share of labels kept.
    """
    start = time.perf_counter()
    if eps_grid is not None:
        warnings.warn("fragility_profile(eps_grid=...) is deprecated: use eps_values=...", DeprecationWarning,
                      stacklevel=2)
        eps_values = eps_grid
    x = check_tensor("x", x, ndim=4)
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {sorted(ATTACKS)}, got {attack!r}")
    if not eps_values:
        raise ValueError("eps_values must hold at least one budget")
    with torch.no_grad():
        target = resolve_target(target, model(x))
    k = k or max(1, x.shape[-1] * x.shape[-2] // 10)
    profile = {"eps": [], attack: [], "random": [], "label_kept": []}
    for eps in eps_values:
        options = {"k": k} if attack == "topk" else {}
        targeted = ATTACKS[attack](model, explainer, eps=eps, steps=steps, input_range=input_range, **options)
        x_adv = targeted(x, target)
        x_rand = RandomSign(model, explainer, eps=eps, input_range=input_range, seed=seed)(x, target)
        profile["eps"].append(float(eps))
        profile[attack].append(explanation_change(explainer, x, x_adv, target, k)["topk_intersection"].mean().item())
        profile["random"].append(explanation_change(explainer, x, x_rand, target, k)["topk_intersection"].mean().item())
        profile["label_kept"].append(targeted.result.label_kept.float().mean().item())
    statistic = 1 - sum(profile[attack]) / len(profile[attack])
    return TestResult("fragility", {getattr(explainer, "name", "explainer"): statistic},
                      {"k": k, "steps": steps, **profile}, time.perf_counter() - start)


def hessian_geometry(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None,
                     softplus_beta: float = 20.0, iterations: int = 20, seed: int = 0) -> TestResult:
    """Largest input-Hessian eigenvalue of the class score and the angle between its eigenvector (the most
    interpretation-fragile direction) and the prediction gradient (Ghorbani et al. 2019, Sec. 5, Fig. 6;
    Dombrowski et al. 2019, Thm. 2), on the Softplus(``softplus_beta``) surrogate of ``model`` (ReLU networks
    have zero curvature almost everywhere).

    Statistic: the median over samples of ``|lambda_max| / ||grad||`` -- curvature per unit of slope, so a
    model whose logits are merely scaled does not change it; manipulated models bend their gradient field
    sharply to draw the wanted map (Dombrowski et al. Sec. 4). Evidence: median ``|lambda_max|``, median
    gradient norm and the mean angle in degrees.
    """
    start = time.perf_counter()
    x = check_tensor("x", x, ndim=(2, 3, 4, 5))
    check_eval_mode(model)
    surrogate = with_softplus(model, softplus_beta)
    with torch.no_grad():
        target = resolve_target(target, surrogate(x))
    eigenvalue, vector, grad = top_hessian_eigen(surrogate, x, target, iterations, seed)
    grad_norm = grad.flatten(1).norm(dim=1)
    cosine = per_sample_dot(vector, grad).abs() / grad_norm.clamp_min(1e-30)
    angle = torch.rad2deg(torch.arccos(cosine.clamp(max=1.0)))
    ratio = eigenvalue.abs() / grad_norm.clamp_min(1e-30)
    evidence = {"softplus_beta": softplus_beta, "iterations": iterations,
                "lambda_max_median": eigenvalue.abs().median().item(), "gradient_norm_median": grad_norm.median().item(),
                "angle_degrees_mean": angle.mean().item(), "angle_degrees_min": angle.min().item()}
    statistic = math.log10(max(ratio.median().item(), 1e-30))
    return TestResult("hessian", {"log10_curvature_per_slope": statistic}, evidence, time.perf_counter() - start)
