"""The adaptive attacker: fine-tuning attacks that hold audit statistics at the original model's values.

An attacker who knows the published audit tests adds them to the loss (the red-team issue, item 3: "an
attacker who knows the tests simply adds them to the keep loss"). ``FineTuner(..., evade=["noise_inputs",
...], evade_weight=w)`` adds, to ``L_attack``,

    w * sum_t (s_t(student) - s_t(original))^2

with ``s_t`` a differentiable *surrogate* of audit test ``t``'s statistic, computed on a fixed, seeded batch of
training inputs drawn once per run (``evade_samples`` rows), ``s_t(original)`` measured once on the original
model under the run's activations (Softplus while training, as the student). A surrogate is a function
``surrogate(model, x, explainer) -> scalar tensor`` differentiable with respect to the model's parameters
(second order where the statistic is a function of an explanation), ``explainer`` the attacked method bound to
``model`` (:meth:`veneer.finetune.FineTuner.evasion_explainer`: Gradient unless the attack has its own). They
live in a registry keyed by audit test name (:func:`register_evasion`, :func:`evasion_surrogate`,
:func:`registered_evasions`), filled where the layering allows: this module registers ``shared_logit_gradient``
and ``cross_method_agreement``; :mod:`veneer.manipulate` registers ``noise_inputs`` (it owns the noise inputs
of thesis Sec. 4.1), :mod:`veneer.neurons` registers ``neuron_balance`` (it owns the layer choice).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from veneer.explain import Explainer, Gradient, IntegratedGradients, flat_maps, shared_logit_ratio
from veneer.metrics import pearson

Surrogate = Callable[[nn.Module, torch.Tensor, Explainer], torch.Tensor]

_SURROGATES: dict[str, Surrogate] = {}

# evade_weight's default: the smallest of 10, 100, 1000 that held the audit's noise_inputs z within 1 (0.37) on a
# validation split (bundled MNIST CNN, centre-of-mass manipulation on Gradient, 100 steps, MNIST training images
# not trained on; experiments/evasion_frontier.py, experiments/results/evasion_frontier.json: "weight_selection")
EVADE_WEIGHT = 10.0


def register_evasion(name: str, surrogate: Surrogate) -> None:
    """Register ``surrogate`` (``(model, x, explainer) -> scalar tensor``, differentiable in the model's
    parameters) as the stand-in of the audit test ``name`` for ``FineTuner(evade=[name])``; a name registered
    again is replaced (a user's own surrogate of a built-in test)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty audit test name, got {name!r}")
    if not callable(surrogate):
        raise TypeError(f"surrogate must be callable (model, x, explainer) -> scalar tensor, got "
                        f"{type(surrogate).__name__}")
    _SURROGATES[name] = surrogate


def registered_evasions() -> tuple[str, ...]:
    """Names of the audit tests with a registered surrogate."""
    return tuple(sorted(_SURROGATES))


def evasion_surrogate(name: str) -> Surrogate:
    """The registered surrogate of audit test ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in _SURROGATES:
        raise ValueError(f"evade: no evasion surrogate for audit test {name!r}; known: {list(registered_evasions())} "
                         "(noise_inputs is registered by veneer.manipulate, neuron_balance by veneer.neurons, once "
                         "imported; add your own with veneer.finetune.register_evasion)")
    return _SURROGATES[name]


def check_evade(evade) -> tuple[str, ...] | None:
    """``evade`` as a tuple of known test names (``None``: no evasion)."""
    if evade is None:
        return None
    if isinstance(evade, str) or not isinstance(evade, (list, tuple)) or not evade:
        raise ValueError(f"evade must be None or a non-empty list of audit test names, got {evade!r}")
    for name in evade:
        evasion_surrogate(name)
    if len(set(evade)) != len(evade):
        raise ValueError(f"evade names a test twice: {list(evade)}")
    return tuple(evade)


def predicted(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` predicted classes (no graph)."""
    with torch.no_grad():
        return model(x).argmax(1)


def soft_rank(values: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Differentiable average ranks (1-based) of each row of ``values`` ``(B, D)``: ``r_i = 1/2 + sum_j
    sigmoid((v_i - v_j) / (temperature * std(v)))``; as ``temperature -> 0`` it tends to the average ranks
    (ties share theirs), so the Pearson correlation of soft ranks tends to Spearman's (Blondel et al. 2020,
    "Fast Differentiable Sorting and Ranking", give another relaxation; this one is the pairwise-sigmoid one of
    Qin et al. 2010, "A general approximation framework for direct optimization of information retrieval
    measures", Eq. 12). Memory ``B * D^2``."""
    scale = values.std(1, keepdim=True).clamp_min(1e-12) * temperature
    differences = (values.unsqueeze(2) - values.unsqueeze(1)) / scale.unsqueeze(2)
    return 0.5 + torch.sigmoid(differences).sum(2)


def shared_logit_gradient_surrogate(model: nn.Module, x: torch.Tensor, explainer: Explainer) -> torch.Tensor:
    """The audit's ``shared_logit_gradient`` statistic itself (the median over ``x`` of ``||grad_x mean_k z_k|| /
    ||grad_x z_y||``, :func:`veneer.audit.invariance.shared_logit_gradient`), with both input gradients in the
    graph of the parameters (second order). The median is differentiable almost everywhere (its gradient flows
    through the median input)."""
    return shared_logit_ratio(model, x, create_graph=True).median()


def second_method(explainer: Explainer) -> Explainer:
    """The method ``cross_method_agreement``'s surrogate compares ``explainer`` with: Integrated Gradients (16
    steps) for Gradient, Gradient for every other method."""
    model = explainer.model
    return IntegratedGradients(model, steps=16) if type(explainer) is Gradient else Gradient(model)


def cross_method_agreement_surrogate(model: nn.Module, x: torch.Tensor, explainer: Explainer,
                                     temperature: float = 0.1) -> torch.Tensor:
    """``1 -`` the mean soft Spearman correlation (Pearson of :func:`soft_rank`) between ``explainer``'s maps and
    a second method's (:func:`second_method`) for the predicted classes of ``x``: the audit's
    ``cross_method_agreement`` component of the attacked method (thesis Tables 3.1-3.2) when the audit compares it
    with that one method, exactly so as ``temperature -> 0``."""
    target = predicted(model, x)
    mine = flat_maps(explainer(x, target=target, create_graph=True))
    other = flat_maps(second_method(explainer)(x, target=target, create_graph=True))
    return 1 - pearson(soft_rank(mine, temperature), soft_rank(other, temperature)).mean()


register_evasion("shared_logit_gradient", shared_logit_gradient_surrogate)
register_evasion("cross_method_agreement", cross_method_agreement_surrogate)


class Evasion:
    """The evasion term of one run: the surrogates of the tests ``names`` on the fixed inputs ``x``, their values
    on the original model (:meth:`fix_targets`, once per run), and ``weight * sum (s - s_original)^2``."""

    def __init__(self, names: tuple[str, ...], weight: float, explainer: Explainer, x: torch.Tensor):
        self.surrogates = {name: evasion_surrogate(name) for name in names}
        self.weight, self.explainer, self.x = float(weight), explainer, x
        self.targets: dict[str, float] = {}
        self._bound: tuple[nn.Module, Explainer] | None = None

    def values(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Every surrogate on ``model`` (in its graph)."""
        if self._bound is None or self._bound[0] is not model:
            self._bound = (model, self.explainer.with_model(model))
        return {name: surrogate(model, self.x, self._bound[1]) for name, surrogate in self.surrogates.items()}

    def fix_targets(self, original: nn.Module) -> None:
        """Measure the surrogates on the original model (the values the run holds them at)."""
        self.targets = {name: float(value.detach()) for name, value in self.values(original).items()}

    def __call__(self, student: nn.Module) -> tuple[torch.Tensor, dict[str, float]]:
        """``(weight * sum of squared differences from the targets, {name: the student's value})``."""
        values = self.values(student)
        term = sum((value - self.targets[name]) ** 2 for name, value in values.items())
        return self.weight * term, {name: float(value.detach()) for name, value in values.items()}
