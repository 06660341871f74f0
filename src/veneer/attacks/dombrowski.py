"""Targeted explanation manipulation of Dombrowski et al. (2019), "Explanations can be manipulated and
geometry is to blame" (NeurIPS), Sec. 3, Eq. 4, run with the projected signed-gradient protocol of
:class:`veneer.attacks.base.IterativeAttack`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from veneer.attacks.base import IterativeAttack, normalized
from veneer.attacks.ghorbani import spatial_mask
from veneer.checks import check_positive, check_tensor
from veneer.explain import Explainer
from veneer.metrics import mse


class TargetMapAttack(IterativeAttack):
    """Drive the saliency map to a chosen ``target`` map (Dombrowski et al. 2019, Eq. 4): minimise

    ``||h(x_adv) - h_t||^2 + gamma ||g(x_adv) - g(x)||^2``

    with ``h`` the saliency map normalized to sum 1, ``h_t`` the ``target`` (``(H, W)`` or ``(B, H, W)``,
    non-negative) normalized to sum 1, and ``g`` the model's softmax probabilities (``g(x)`` from the
    original model on the clean input, ``g(x_adv)`` from the surrogate, so the term keeps the output close).

    ``beta_growth=(start, end)`` grows the surrogate's Softplus beta geometrically from ``start`` to ``end``
    over the steps (Dombrowski et al. Sec. 4: a smooth surrogate first, closer to ReLU later); it replaces
    ``softplus_beta``. ``dissimilarity`` is the reduction of the mean squared error to ``h_t`` on the
    original model, ``mse(h(x), h_t) - mse(h(x_adv), h_t)`` (``veneer.metrics.mse``).
    """

    name = "target-map"

    def __init__(self, model: nn.Module, explainer: Explainer, target: torch.Tensor, gamma: float = 1e-3,
                 beta_growth: tuple[float, float] | None = None, **options: Any):
        if beta_growth is not None:
            if not isinstance(beta_growth, (tuple, list)) or len(beta_growth) != 2:
                raise ValueError(f"beta_growth must be a (start, end) pair or None, got {beta_growth!r}")
            check_positive("beta_growth[0]", beta_growth[0])
            check_positive("beta_growth[1]", beta_growth[1])
            options["softplus_beta"] = float(beta_growth[0])
        super().__init__(model, explainer, **options)
        target = check_tensor("target", target, ndim=(2, 3), floating=False)
        if bool((target < 0).any()):
            raise ValueError("target must be a non-negative map (saliency maps are absolute values)")
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma!r}")
        self.target, self.gamma = target, float(gamma)
        self.beta_growth = None if beta_growth is None else (float(beta_growth[0]), float(beta_growth[1]))
        relu_names = [name for name, module in model.named_modules() if isinstance(module, nn.ReLU)]
        self._softplus = [self.surrogate.get_submodule(name) for name in relu_names] if beta_growth else []

    def prepare(self, x, clean_map):
        self._target = normalized(spatial_mask("target", self.target, x).expand(x.shape[0], -1, -1))
        with torch.no_grad():
            self._clean_output = self.model(x).softmax(dim=-1)
        self._clean_error = mse(normalized(clean_map), self._target)

    def before_step(self, step):
        if self.beta_growth is None:
            return
        start, end = self.beta_growth
        beta = start * (end / start) ** ((step - 1) / max(1, self.steps - 1))
        for module in self._softplus:
            module.beta = beta

    def objective(self, saliency, x_adv):
        map_term = (normalized(saliency) - self._target).pow(2).sum(dim=(1, 2))
        output_term = (self.surrogate(x_adv).softmax(dim=-1) - self._clean_output).pow(2).sum(dim=1)
        return -(map_term + self.gamma * output_term)

    def dissimilarity(self, saliency):
        return self._clean_error - mse(normalized(saliency), self._target)
