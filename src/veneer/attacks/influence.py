"""The attack on influence functions of Ghorbani, Abid & Zou (2019), "Interpretation of Neural Networks is
Fragile" (AAAI), Sec. 3 ("Influence functions") and Fig. 4.

A test image's explanation is the ranking of the training images by their influence on its prediction
(:class:`veneer.explain.Influence`; the helpfulness ``I(z_i, z_t) = -I_up,loss(z_i, z_t)`` of Koh & Liang 2017,
largest = most influential in support of the prediction). The attack perturbs the test image so that the
originally most influential training images lose their influence, keeping the label, and is measured by the
Spearman rank correlation of the influence scores over the training set and the top-k intersection of the most
influential training images, against the random-sign perturbation of the same size.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from veneer.attacks.base import IterativeAttack, explanation_map
from veneer.attacks.ghorbani import RandomSign
from veneer.checks import check_positive
from veneer.explain import Influence
from veneer.metrics import spearman, topk_intersection


class InfluenceAttack(IterativeAttack):
    """Ghorbani et al. (2019), Eq. 1 with footnote 1 for influence functions: the perturbation
    ``-eps * sign(grad_x sum_{i in top} I(z_i, z_t))`` lowers the summed influence of the ``top`` training
    samples that were most influential for the clean test sample (``top=3`` in the paper).

    ``influence`` is a :class:`veneer.explain.Influence` built on ``model``. ``steps=1`` is the paper's single
    signed step; ``steps > 1`` iterates it with step ``step_size`` (default ``2.5 * eps / steps``), projecting
    onto the l-inf ball of radius ``eps`` and the input range after each step
    (:class:`~veneer.attacks.base.IterativeAttack`: label-changing steps are rejected, so every label is kept).
    The gradient is taken on the model itself (no Softplus surrogate: influence scores of the top layers
    already have a non-zero input gradient through ReLU networks).

    ``normalize=True`` (default) divides the scores by their l2 norm over the training set before summing the
    top ones, as the reference code's influence scores (Ghorbani et al.'s ``compute_exact_influence``). Every
    score carries the test loss gradient's scale, so without it (``normalize=False``, the literal Eq. 1) much of
    the step only makes the prediction more confident, which shrinks all scores alike and leaves the ranking.

    ``attack.result.dissimilarity`` is the drop of the ``top`` training samples' (normalized) summed influence,
    which also picks each image's returned iterate (the clean image when no accepted step lowers it).
    ``x_adv = attack(x, y)``; batched, deterministic.
    """

    name = "influence"

    def __init__(self, model: nn.Module, influence: Influence, eps: float = 8 / 255, top: int = 3, steps: int = 1,
                 step_size: float | None = None, normalize: bool = True, input_range: tuple[Any, Any] = (0.0, 1.0),
                 progress: bool = False):
        if not isinstance(influence, Influence):
            raise TypeError(f"influence must be a veneer.explain.Influence, got {type(influence).__name__}")
        super().__init__(model, influence, eps=eps, step_size=step_size, steps=steps, softplus_beta=None,
                         input_range=input_range, progress=progress)
        check_positive("top", top, integer=True)
        self.top, self.normalize = top, bool(normalize)

    def prepare(self, x, clean_map):
        if self.top > clean_map.shape[1]:
            raise ValueError(f"top must be at most the number of training samples ({clean_map.shape[1]}), "
                             f"got {self.top}")
        self._top = clean_map.topk(self.top, dim=1).indices
        self._clean_top = self._top_influence(clean_map)

    def _top_influence(self, scores: torch.Tensor) -> torch.Tensor:
        """``(B,)`` summed influence of the originally most influential samples (divided by the l2 norm of all
        scores when ``normalize``)."""
        if self.normalize:
            scores = scores / scores.norm(dim=1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
        return scores.gather(1, self._top).sum(1)

    def ascent_direction(self, current, labels):
        x_adv = current.detach().requires_grad_(True)
        scores = explanation_map(self.explainer, x_adv, labels, create_graph=True)
        (gradient,) = torch.autograd.grad(-self._top_influence(scores).sum(), x_adv)
        return gradient.sign()

    def dissimilarity(self, scores):
        return self._clean_top - self._top_influence(scores)


def influence_change(influence: Influence, x: torch.Tensor, x_adv: torch.Tensor, target: torch.Tensor, k: int = 5
                     ) -> dict[str, torch.Tensor]:
    """``(B,)`` tensors comparing the influence of every training sample on ``x`` and on ``x_adv`` (Ghorbani et al.
    2019, Fig. 4): ``spearman`` (rank correlation over the training set) and ``topk_intersection`` (share of the
    ``k`` most influential training samples of ``x`` still among those of ``x_adv``)."""
    clean = explanation_map(influence, x, target).detach()
    perturbed = explanation_map(influence, x_adv, target).detach()
    return {"spearman": spearman(clean, perturbed), "topk_intersection": topk_intersection(clean, perturbed, k)}


def influence_sweep(model: nn.Module, influence: Influence, x: torch.Tensor, y: torch.Tensor,
                    eps_values: list[float], *, top: int = 3, k: int = 5, steps: int = 1,
                    step_size: float | None = None, input_range: tuple[Any, Any] = (0.0, 1.0), seed: int = 0,
                    batch_size: int = 100) -> tuple[list[dict[str, Any]], dict[tuple[str, float], torch.Tensor]]:
    """Ghorbani et al. (2019), Fig. 4: at every ``eps`` the sign attack (:class:`InfluenceAttack`) and the
    random-sign baseline (:class:`~veneer.attacks.RandomSign`) on ``x`` (labels ``y`` kept), ``batch_size``
    images at a time. Returns one summary row per attack and eps (means of :func:`influence_change` at ``k``,
    label-kept rate, seconds) and the perturbed images keyed by ``(attack, eps)``."""
    if not eps_values:
        raise ValueError("eps_values must name at least one budget")
    check_positive("batch_size", batch_size, integer=True)
    rows, images = [], {}
    for eps in eps_values:
        attacks = {"influence": InfluenceAttack(model, influence, eps=eps, top=top, steps=steps,
                                                step_size=step_size, input_range=input_range),
                   "random": RandomSign(model, influence, eps=eps, input_range=input_range, seed=seed)}
        for name, attack in attacks.items():
            start = time.perf_counter()
            parts, records = [], []
            for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
                x_adv = attack(xb, yb)
                record = influence_change(influence, xb, x_adv, yb, k)
                record["label_kept"] = attack.result.label_kept
                parts.append(x_adv)
                records.append(record)
            images[(name, float(eps))] = torch.cat(parts)
            means = {key: torch.cat([r[key] for r in records]).double().mean().item() for key in records[0]}
            rows.append({"attack": name, "eps": float(eps), "n": len(x), "spearman": means["spearman"],
                         f"top{k}_intersection": means["topk_intersection"], "label_kept_rate": means["label_kept"],
                         "seconds": time.perf_counter() - start})
    return rows, images


__all__ = ["InfluenceAttack", "influence_change", "influence_sweep"]
