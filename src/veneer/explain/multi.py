"""Several explanation methods seen as one, so that an attack or a manipulation built for one explainer targets
all of them at once (Dimanov et al. 2020, "You shouldn't trust me: learning models which conceal unfairness
from multiple explanation methods", Sec. 3: the sum of the per-method losses)."""

from __future__ import annotations

import copy

import torch

from veneer.explain.base import Explainer


class MultiExplainer(Explainer):
    """The attributions of ``explainers`` (all bound to the same model) stacked along the batch dimension.

    ``MultiExplainer([Gradient(model), LRP(model)])(x, target)`` has shape ``(K * B, ...)``: rows
    ``k * B ... (k + 1) * B - 1`` are method ``k``'s attributions of ``x``. A per-item objective averaged over
    this batch (e.g. :class:`veneer.manipulate.FeatureSuppress`, whose loss is normalized per item by the
    original attribution's norm, so every method weighs the same) is then the mean of the per-method losses.
    Differentiable when every method is.
    """

    name = "multi"

    def __init__(self, explainers):
        explainers = list(explainers.values() if isinstance(explainers, dict) else explainers)
        if not explainers or not all(isinstance(e, Explainer) for e in explainers):
            raise TypeError("explainers must be a non-empty list (or dict) of veneer.explain.Explainer, got "
                            f"{[type(e).__name__ for e in explainers]}")
        model = explainers[0].model
        if any(e.model is not model for e in explainers):
            raise ValueError("explainers must all be bound to the same model")
        super().__init__(model)
        self.explainers = explainers
        self.differentiable = all(e.differentiable for e in explainers)

    def attribute(self, x, target, create_graph):
        return torch.cat([e(x, target=target, create_graph=create_graph) for e in self.explainers])

    def with_model(self, model):
        clone = copy.copy(self)
        clone.model, clone._classes_for = model, None
        clone.explainers = [e.with_model(model) for e in self.explainers]
        return clone
