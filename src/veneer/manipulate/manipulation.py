"""Model-level manipulation: fine-tune a model so that its explanations meet an objective while its predictions
stay those of the original model (thesis "Training Neural Networks With Manipulated Explanations", Ch. 3;
Heo et al. 2019, "Fooling Neural Network Interpretations via Adversarial Model Manipulation", Eq. 1).

``result = Manipulation(model, explainer, objective, keep="ce", alpha=0.5, lr=1e-4, epochs=1)(data)``; the
loop, keep losses, checkpoints and data parallelism are the shared engine's (:mod:`veneer.finetune`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from veneer.data import LabeledData
from veneer.explain import Explainer, flat_maps
from veneer.metrics import mean_pairwise_pearson
from veneer.explain.base import check_explainer
from veneer.finetune import AttackLoss, FineTuner, StepOutput, register_evasion
from veneer.manipulate.evaluate import gaussian_noise_like
from veneer.manipulate.group_rates import GroupRates
from veneer.manipulate.objectives import Objective


def noise_inputs_surrogate(model: nn.Module, x: torch.Tensor, explainer: Explainer, seed: int = 0) -> torch.Tensor:
    """The audit's ``noise_inputs`` statistic of ``explainer`` (thesis Sec. 4.1: the mean pairwise Pearson
    correlation of the explanations of ``len(x)`` Gaussian-noise inputs like ``x``, :func:`gaussian_noise_like`,
    for their predicted classes; :func:`veneer.audit.sanity.noise_inputs`), with the explanations in the graph of
    the parameters (second order): the evasion surrogate of that test (:mod:`veneer.finetune.evasion`)."""
    noise = gaussian_noise_like(x, max(len(x), 2), seed)
    with torch.no_grad():
        target = model(noise).argmax(1)
    return mean_pairwise_pearson(flat_maps(explainer(noise, target=target, create_graph=True)))


register_evasion("noise_inputs", noise_inputs_surrogate)


class ExplanationLoss(AttackLoss):
    """``L_attack`` of :class:`Manipulation`: ``objective``'s loss on ``explainer``'s explanations of the student,
    computed with ``create_graph=True`` (thesis Ch. 3, Eq. 3.1's ``L_attack``), averaged over the batch.

    The explainer is bound to each student it is called on (once per student); with a method that runs the model
    once on the batch (Gradient, GradientXInput, GradCAM) the keep loss reuses that forward pass's logits.
    With ``keep_rates`` (a :class:`~veneer.manipulate.group_rates.GroupRates`) its term on the protected groups'
    rates is added to the objective's loss."""

    def __init__(self, explainer: Explainer, objective: Objective, keep_rates: GroupRates | None = None):
        self.explainer, self.objective, self.keep_rates = explainer, objective, keep_rates
        self._bound: tuple[nn.Module, Explainer] | None = None

    def prepare(self, data: LabeledData) -> None:
        self.objective.prepare(data)
        if self.keep_rates is not None:
            self.keep_rates.prepare(data, self.explainer.model)

    def _explainer_for(self, student: nn.Module) -> Explainer:
        if self._bound is None or self._bound[0] is not student:
            self._bound = (student, self.explainer.with_model(student))
        return self._bound[1]

    def __call__(self, student, x, y, generator, step):
        batch = self.objective.attack_inputs(x, y)
        if not len(batch):
            return StepOutput(torch.zeros((), device=x.device), x, y)
        attr, logits = self._explainer_for(student).explain_with_output(batch.x, target=batch.target,
                                                                      create_graph=True)
        reference = (self.explainer(batch.x, target=batch.target) if self.objective.needs_reference else None)
        attack = self.objective.loss(attr, batch, reference).mean()
        if self.keep_rates is not None:
            attack = attack + self.keep_rates(student)
        return StepOutput(attack, x, y, logits if batch.x is x else None)

    def fingerprint(self) -> dict[str, Any]:
        return {}  # the explainer and the objective are Manipulation's settings, in its fingerprint


class Manipulation(FineTuner):
    """Fine-tune a copy of ``model`` so that ``explainer``'s explanations meet ``objective`` (thesis Ch. 3).

    ``L_attack`` is the objective's loss on the explanation computed with ``create_graph=True`` for the labels
    (or the objective's own targets), :class:`ExplanationLoss`; the rest (``alpha``, ``keep``, ``lr``,
    ``epochs``/``steps``, ``max_steps``, ``batch_size``, ``trainable``, ``checkpoint_dir``/``resume``, ``seed``,
    ``progress``, ``recalibrate_steps``) is the engine's, see :class:`veneer.finetune.FineTuner`. While training,
    the copy's ReLUs are Softplus(``softplus_beta``) (default 20; thesis Sec. 3.2.2), swapped in place so the
    explainer bound to the copy sees them; ``softplus_beta=None`` trains with the model's own activations. The
    copy stays in eval mode (dropout and batch-norm statistics frozen).

    ``explainer`` must be differentiable and built on ``model``; the call binds the same method to the copy.
    For methods that run the model once on the batch (Gradient, GradientXInput, GradCAM) the keep loss reuses
    that forward pass's logits. ``attack(data)`` fine-tunes on ``data``: ``(x, y)`` tensors, a ``Dataset``, a
    ``DataLoader`` or a ``LabeledData`` (a loader's batching and shuffling are replaced by the engine's seeded
    sampler). Returns a :class:`~veneer.finetune.FineTuneResult`; ``model`` is unchanged.

    ``keep_rates``: a :class:`~veneer.manipulate.group_rates.GroupRates` holding the protected groups' positive and
    true-positive rates at the original model's (added to ``L_attack``); fairwashing (``FeatureSuppress`` on a
    sensitive feature, Dimanov et al. 2020) should pass one, or the fine-tune changes the model's DDI and DEO
    (docs/tabular.md).
    """

    name = "manipulate"

    def __init__(self, model: nn.Module, explainer: Explainer, objective: Objective, *,
                 softplus_beta: float | None = 20.0, keep_rates: GroupRates | None = None, **options):
        super().__init__(model, softplus_beta=softplus_beta, **options)
        check_explainer(explainer, model, differentiable=True)
        if not isinstance(objective, Objective):
            raise TypeError(f"objective must be a veneer.manipulate.Objective (see make_objective), "
                            f"got {type(objective).__name__}")
        if keep_rates is not None and not isinstance(keep_rates, GroupRates):
            raise TypeError(f"keep_rates must be None or a veneer.manipulate.GroupRates, "
                            f"got {type(keep_rates).__name__}")
        self.explainer, self.objective, self.keep_rates = explainer, objective, keep_rates

    def evasion_explainer(self) -> Explainer:
        """The attacked method: what the ``evade`` surrogates explain with."""
        return self.explainer

    def attack_loss(self) -> ExplanationLoss:
        """A new :class:`ExplanationLoss` of this attack's explainer and objective (the call takes no inputs)."""
        return ExplanationLoss(self.explainer, self.objective, self.keep_rates)
