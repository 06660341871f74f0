"""The attacks of Ghorbani, Abid & Zou (2019), "Interpretation of Neural Networks is Fragile" (AAAI), Sec. 3.

Saliency maps are the absolute attributions summed over channels (:func:`veneer.attacks.base.saliency_map`);
objectives that compare mass use maps normalized to sum 1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from veneer.attacks.base import ExplanationAttack, IterativeAttack, normalized
from veneer.checks import check_positive, check_tensor
from veneer.explain import Explainer
from veneer.metrics import center_of_mass, com_distance, spearman, topk_intersection


def spatial_mask(name: str, value: Any, x: torch.Tensor) -> torch.Tensor:
    """A ``(H, W)`` or ``(B, H, W)`` map matching ``x`` ``(B, C, H, W)``, returned as ``(B or 1, H, W)`` in
    x's dtype and device."""
    value = check_tensor(name, value, ndim=(2, 3), floating=False)
    height, width = x.shape[-2:]
    allowed = ((height, width), (x.shape[0], height, width))
    if tuple(value.shape) not in allowed:
        raise ValueError(f"{name} must have shape (H, W) = {allowed[0]} or (B, H, W) = {allowed[1]} to match x "
                         f"of shape {tuple(x.shape)}, got {tuple(value.shape)}")
    value = value.to(device=x.device, dtype=x.dtype)
    return value if value.ndim == 3 else value.unsqueeze(0)


class RandomSign(ExplanationAttack):
    """Random-sign baseline (Ghorbani et al. 2019, Sec. 4): every feature moves by ``+eps`` or ``-eps``
    (then clipped to ``input_range``), signs drawn uniformly.

    Shows whether a method is fragile at all: a targeted attack is only meaningful if it beats this.
    ``dissimilarity`` is ``1 - Spearman`` between the clean and perturbed saliency maps. A draw that
    changes the label is rejected (the clean image is returned, ``label_kept`` stays true). The signs come
    from a generator seeded with ``seed`` at every call: a call is reproducible, and image ``i`` of a
    batch gets the ``i``-th draw, so unlike the iterative attacks the result depends on the batch's order.
    """

    name = "random"

    def __init__(self, model: nn.Module, explainer: Explainer, eps: float = 8 / 255,
                 input_range: tuple[Any, Any] = (0.0, 1.0), seed: int = 0, progress: bool = False):
        super().__init__(model, explainer, eps, input_range, progress)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.seed = seed

    def dissimilarity(self, saliency):
        return 1 - spearman(self._clean_map, saliency)

    def search(self, x, labels, bounds):
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        signs = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
        candidate = self.project(x + self.eps * signs, x, bounds)
        kept, score = self.judge(candidate, labels)
        best = torch.where(kept.view(-1, 1, 1, 1), candidate, x)
        return best, torch.where(kept, score, torch.zeros_like(score)), kept.long()


class TopK(IterativeAttack):
    """Top-k attack (Ghorbani et al. 2019, Sec. 3): decrease the normalized saliency mass of the ``k`` features
    that were most important in the clean map, ``objective = -sum_{i in top-k(clean)} h_i / sum_i h_i``.

    ``dissimilarity`` (which picks the returned iterate, as the paper's reference code) is
    ``1 - top-k intersection`` between the clean and the perturbed map.
    """

    name = "top-k"

    def __init__(self, model: nn.Module, explainer: Explainer, k: int = 100, **options: Any):
        super().__init__(model, explainer, **options)
        check_positive("k", k, integer=True)
        self.k = k

    def prepare(self, x, clean_map):
        pixels = clean_map[0].numel()
        if self.k > pixels:
            raise ValueError(f"k must be at most the number of pixels per map ({pixels}), got {self.k}")
        flat = clean_map.flatten(1)
        self._top = torch.zeros_like(flat).scatter_(1, flat.topk(self.k, dim=1).indices, 1.0).view_as(clean_map)

    def objective(self, saliency, x_adv):
        return -(normalized(saliency) * self._top).sum(dim=(1, 2))

    def dissimilarity(self, saliency):
        return 1 - topk_intersection(self._clean_map, saliency, self.k)


class MassCenter(IterativeAttack):
    """Center-of-mass attack (Ghorbani et al. 2019, Sec. 3): maximise ``||C(h(x_adv)) - C(h(x))||_2``, the
    displacement of the saliency map's center of mass (``veneer.metrics.center_of_mass``) from the clean one.

    The surrogate objective is the squared displacement (same ascent signs, and a finite gradient where the
    displacement is 0); ``dissimilarity`` is the displacement in pixels on the original model.
    """

    name = "mass-center"

    def prepare(self, x, clean_map):
        self._clean_center = center_of_mass(clean_map)

    def objective(self, saliency, x_adv):
        return (center_of_mass(saliency) - self._clean_center).pow(2).sum(dim=1)

    def dissimilarity(self, saliency):
        return com_distance(self._clean_map, saliency)


class TargetRegion(IterativeAttack):
    """Targeted region attack (Ghorbani et al. 2019, Sec. 3, "targeted attack"): increase the share of
    normalized saliency mass inside ``mask`` (``(H, W)`` or ``(B, H, W)``, values in [0, 1], 1 = inside).

    ``objective = sum_i mask_i h_i / sum_i h_i``; ``dissimilarity`` is that share's gain over the clean map.
    """

    name = "target-region"

    def __init__(self, model: nn.Module, explainer: Explainer, mask: torch.Tensor, **options: Any):
        super().__init__(model, explainer, **options)
        mask = check_tensor("mask", mask, ndim=(2, 3), floating=False)
        if mask.dtype != torch.bool and bool(((mask < 0) | (mask > 1)).any()):
            raise ValueError("mask must hold values in [0, 1] (or booleans)")
        self.mask = mask

    def prepare(self, x, clean_map):
        self._mask = spatial_mask("mask", self.mask, x)
        self._clean_share = self._share(clean_map)

    def _share(self, saliency: torch.Tensor) -> torch.Tensor:
        return (normalized(saliency) * self._mask).sum(dim=(1, 2))

    def objective(self, saliency, x_adv):
        return self._share(saliency)

    def dissimilarity(self, saliency):
        return self._share(saliency) - self._clean_share


__all__ = ["RandomSign", "TopK", "MassCenter", "TargetRegion", "spatial_mask"]
