"""How far an attack moved the explanations: the metrics of Ghorbani et al. (2019), Sec. 4, per image."""

from __future__ import annotations

import torch

from veneer.attacks.base import saliency_map
from veneer.explain import Explainer
from veneer.metrics import com_distance, spearman, topk_intersection


def explanation_change(explainer: Explainer, x: torch.Tensor, x_adv: torch.Tensor, target: torch.Tensor,
                       k: int) -> dict[str, torch.Tensor]:
    """``(B,)`` tensors comparing the saliency maps of ``x`` and ``x_adv`` (Ghorbani et al. 2019, Sec. 4):
    ``spearman`` (rank correlation), ``topk_intersection`` (share of the clean top-``k`` features kept in the
    perturbed top-``k``) and ``com_shift`` (center-of-mass displacement in pixels), all on ``explainer``'s
    model, maps as :func:`veneer.attacks.base.saliency_map`."""
    clean = saliency_map(explainer, x, target).detach()
    perturbed = saliency_map(explainer, x_adv, target).detach()
    return {"spearman": spearman(clean, perturbed), "topk_intersection": topk_intersection(clean, perturbed, k),
            "com_shift": com_distance(clean, perturbed)}
