"""The evasion surrogate of the audit's ``fragility`` test (:mod:`veneer.finetune.evasion`), registered here because
it runs Ghorbani et al.'s input attack (:mod:`veneer.attacks`), which the fine-tuning engine's layer cannot import."""

from __future__ import annotations

import torch
from torch import nn

from veneer.attacks import MassCenter
from veneer.explain import Explainer, flat_maps
from veneer.finetune import register_evasion
from veneer.finetune.evasion import predicted
from veneer.metrics.soft import soft_topk_intersection


def fragility_surrogate(model: nn.Module, x: torch.Tensor, explainer: Explainer, eps: float = 0.05,
                        steps: int = 8, input_range=(0.0, 1.0), temperature: float = 0.1) -> torch.Tensor:
    """The audit's ``fragility`` statistic (Ghorbani et al. 2019, Alg. 1, Fig. 3: ``1 -`` the mean top-k
    intersection, k = 10% of the pixels, between the saliency maps of ``x`` and of the centre-of-mass attack's
    ``x_adv`` within l-inf radius ``eps`` after ``steps`` signed-gradient steps; :func:`veneer.audit.geometry.
    fragility_profile` with its fast options) with the soft intersection (:func:`veneer.metrics.soft.
    soft_topk_intersection`): exactly so as ``temperature -> 0``. ``x_adv`` is a constant of the step (the
    attack's sign steps have no useful derivative; envelope argument: it is the attack's optimum); both maps are
    in the graph of the parameters (second order)."""
    target = predicted(model, x)
    x_adv = MassCenter(model, explainer, eps=eps, steps=steps, input_range=input_range)(x, target).detach()
    k = max(1, x.shape[-1] * x.shape[-2] // 10)
    clean = flat_maps(explainer(x, target=target, create_graph=True))
    attacked = flat_maps(explainer(x_adv, target=target, create_graph=True))
    return 1 - soft_topk_intersection(clean, attacked, k, temperature).mean()


register_evasion("fragility", fragility_surrogate)
