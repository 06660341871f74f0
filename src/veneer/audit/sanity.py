"""Sanity checks of explanations that need no reference explanation.

* :func:`noise_inputs` -- thesis Sec. 4.1: a globally manipulated model draws the same picture for every
  input, Gaussian noise included; a clean model's explanations of noise are unrelated to each other.
* :func:`weight_noise` -- thesis Sec. 4.2: Gaussian noise on the weights barely moves a clean model's
  explanations at sizes that keep its predictions, but undoes a manipulation that sits in a thin layer of
  fine-tuning on top of the original function.
* :func:`parameter_randomization` -- Adebayo et al. (2018), "Sanity Checks for Saliency Maps", Sec. 3.1
  (cascading randomisation from the top layer): an explanation that survives the randomisation of the
  weights does not explain what the model learned.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from veneer.audit.base import TestResult, explain_maps, predictions, rank_similarity, rebind
from veneer.checks import check_positive, check_tensor
from veneer.explain import Explainer
from veneer.explain.weights import parameterized_modules, randomize_module, weight_noise_offsets
from veneer.metrics import mean_pairwise_pearson
from veneer.manipulate import gaussian_noise_like


def mean_pairwise_correlation(maps: torch.Tensor) -> float:
    """Mean Pearson correlation over all pairs of distinct rows of ``maps`` ``(n, D)`` (n >= 2), in float64;
    constant rows count as uncorrelated (:func:`veneer.metrics.mean_pairwise_pearson`)."""
    return mean_pairwise_pearson(maps.double()).item()


def noise_inputs(model: nn.Module, x: torch.Tensor, explainers: dict[str, Explainer], n: int = 32,
                 seed: int = 0) -> TestResult:
    """Thesis Sec. 4.1: explain ``n`` Gaussian-noise inputs with the mean and spread of ``x`` (clipped to its
    range; :func:`veneer.manipulate.gaussian_noise_like`) for the predicted class, and measure how alike the
    explanations are: the mean pairwise Pearson correlation of the importance maps, per method.

    Statistic per method: that correlation (larger = the model draws one picture whatever the input).
    Evidence: the same correlation on the real inputs ``x`` for comparison.
    """
    start = time.perf_counter()
    x = check_tensor("x", x)
    check_positive("n", n, integer=True)
    noise = gaussian_noise_like(x, max(n, 2), seed)
    noise_target, real_target = predictions(model, noise), predictions(model, x)
    components, real = {}, {}
    for name, explainer in explainers.items():
        components[name] = mean_pairwise_correlation(explain_maps(explainer, noise, noise_target))
        real[name] = mean_pairwise_correlation(explain_maps(explainer, x, real_target))
    return TestResult("noise_inputs", components, {"n": n, "real_input_correlation": real},
                      time.perf_counter() - start)


def add_weight_noise(model: nn.Module, sigma: float, generator: torch.Generator) -> nn.Module:
    """A copy of ``model`` whose every parameter tensor ``w`` gets Gaussian noise of standard deviation
    ``sigma * std(w)`` (``sigma * |w|`` for one-element tensors): noise relative to each layer's scale."""
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        offsets = weight_noise_offsets(noisy, sigma, generator)
        for name, p in noisy.named_parameters():
            p.add_(offsets[name])
    return noisy


def weight_noise(model: nn.Module, x: torch.Tensor, explainers: dict[str, Explainer], sigmas=(0.02, 0.05),
                 draws: int = 1, seed: int = 0) -> TestResult:
    """Thesis Sec. 4.2: add Gaussian weight noise of relative sizes ``sigmas`` (:func:`add_weight_noise`,
    ``draws`` copies each) and compare each noisy copy with the model: share of unchanged predicted labels,
    and the Spearman rank correlation of the explanations of the original predicted classes, per method.

    Statistic per method: the mean explanation change ``1 - Spearman`` over sizes and draws, divided by
    the mean share of kept labels (a change that comes with the predictions is not suspicious). Larger = a
    thinner veneer: the explanation falls apart under noise the predictions survive.
    """
    start = time.perf_counter()
    x = check_tensor("x", x)
    if not sigmas or any(not s > 0 for s in sigmas):
        raise ValueError(f"sigmas must be a non-empty list of sizes > 0, got {sigmas!r}")
    check_positive("draws", draws, integer=True)
    target = predictions(model, x)
    clean = {name: explain_maps(e, x, target) for name, e in explainers.items()}
    generator = torch.Generator().manual_seed(seed)
    change = {name: [] for name in explainers}
    kept = []
    for sigma in sigmas:
        for _ in range(draws):
            noisy = add_weight_noise(model, sigma, generator)
            kept.append((predictions(noisy, x) == target).float().mean().item())
            for name, e in rebind(explainers, noisy).items():
                change[name].append(1 - rank_similarity(clean[name], explain_maps(e, x, target)).mean().item())
    label_kept = sum(kept) / len(kept)
    components = {name: sum(v) / len(v) / max(label_kept, 0.05) for name, v in change.items()}
    evidence = {"sigmas": list(sigmas), "draws": draws, "label_kept": kept,
                "explanation_change": change}
    return TestResult("weight_noise", components, evidence, time.perf_counter() - start)


def parameter_randomization(model: nn.Module, x: torch.Tensor, explainers: dict[str, Explainer], seed: int = 0,
                            target: torch.Tensor | None = None) -> TestResult:
    """Adebayo et al. (2018), Sec. 3.1, cascading randomisation: re-initialise the parameterised layers one
    after the other from the top (output) layer down, and after each stage compare each method's explanation
    with the trained model's by Spearman rank correlation of the absolute maps (their Fig. 2 measure).

    Statistic per method: the mean similarity over the stages (larger = the explanation does not depend on
    the learned weights). Evidence: the per-stage similarities and the layer names.
    """
    start = time.perf_counter()
    x = check_tensor("x", x)
    target = predictions(model, x) if target is None else target
    clean = {name: explain_maps(e, x, target) for name, e in explainers.items()}
    randomized = copy.deepcopy(model)
    layers = parameterized_modules(randomized)[::-1]
    if not layers:
        raise ValueError("model has no parameterised layer to randomise")
    generator = torch.Generator().manual_seed(seed)
    stages = {name: [] for name in explainers}
    for _, module in layers:
        randomize_module(module, generator)
        for name, e in rebind(explainers, randomized).items():
            stages[name].append(rank_similarity(clean[name], explain_maps(e, x, target)).mean().item())
    components = {name: sum(v) / len(v) for name, v in stages.items()}
    return TestResult("parameter_randomization", components,
                      {"layers_top_down": [n for n, _ in layers], "similarity_per_stage": stages},
                      time.perf_counter() - start)
