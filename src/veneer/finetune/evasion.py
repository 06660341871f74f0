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
:func:`registered_evasions`), filled where the layering allows: this module registers ``shared_logit_gradient``,
``gradient_slope``, ``hessian`` (the statistics themselves, in the graph), ``cross_method_agreement``,
``beta_smoothing``, ``weight_noise``, ``parameter_randomization`` (soft Spearman), ``faithfulness`` (soft deletion
masks) and ``tangent_space`` (tangent spaces from the fixed rows); :mod:`veneer.manipulate` registers
``noise_inputs`` (it owns the noise inputs of thesis Sec. 4.1) and ``fragility`` (it runs :mod:`veneer.attacks`),
:mod:`veneer.neurons` registers ``neuron_balance`` (it owns the layer choice). Each equals the audit's component
of the attacked method on the same inputs, exactly or as its temperature tends to 0 (tests/finetune/
test_evasion.py). The computations they share with the audit live in :mod:`veneer.explain` (``curvature``,
``weights``) and :mod:`veneer.metrics` (``soft``, ``deletion``, ``manifold``).

No surrogate: ``neuron_visualization``, ``visualization_consistency`` and ``visualization_outliers`` (synthetic
feature visualisations: an inner activation maximisation of 24-48 steps per unit from a random start, and a
discrete top-k choice of natural images; a surrogate would unroll that optimisation for every unit at every
step), ``influence_fragility`` (runs under the full effort only), ``neuron_group_fairness`` and ``scaffolding``
(tabular data with a protected attribute / LIME and KernelSHAP queries) and ``reference_comparison`` (needs the
auditor's reference model, which the attacker does not have).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from veneer.explain import Explainer, Gradient, IntegratedGradients, flat_maps, gradient_slope_ratio, shared_logit_ratio
from veneer.explain.curvature import rayleigh_quotient, top_hessian_eigen
from veneer.explain.weights import Reparametrized, parameterized_modules, randomize_module, weight_noise_offsets
from veneer.metrics.deletion import deletion_insertion
from veneer.metrics.manifold import tangent_basis, tangent_share
from veneer.metrics.soft import soft_rank, soft_spearman  # noqa: F401 (soft_rank re-exported by veneer.finetune)
from veneer.models.activations import FunctionalSoftplus

Surrogate = Callable[[nn.Module, torch.Tensor, Explainer], torch.Tensor]

_SURROGATES: dict[str, Surrogate] = {}

# evade_weight's default: the weight chosen on a validation split for the attacker who evades every test with a
# surrogate (bundled MNIST CNN, centre-of-mass manipulation on Gradient, 20 steps, 8 fixed rows, MNIST training images
# not trained on; of 100, 1000, 10000 every run was called clean and 100 kept the most strength, 46%;
# experiments/evasion_frontier.py, experiments/results/evasion_frontier.json: "weight_selection"). The first
# measurement, evading noise_inputs alone, had chosen 10 of 10, 100, 1000 (one seed).
EVADE_WEIGHT = 100.0


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
                         "(noise_inputs and fragility are registered by veneer.manipulate, neuron_balance by "
                         "veneer.neurons, once imported; add your own with veneer.finetune.register_evasion)")
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
    return 1 - soft_spearman(mine, other, temperature).mean()


def gradient_slope_surrogate(model: nn.Module, x: torch.Tensor, explainer: Explainer,
                             step: float = 0.01) -> torch.Tensor:
    """The audit's ``gradient_slope`` statistic itself (``|1 - median|`` over ``x`` of
    :func:`veneer.explain.gradient_slope_ratio` with the step ``step`` times the mean input norm;
    :func:`veneer.audit.invariance.gradient_slope`), the ratio in the graph of the parameters (second order)."""
    distance = step * x.flatten(1).norm(dim=1).mean().item()
    return (1 - gradient_slope_ratio(model, x, distance, create_graph=True).median()).abs()


def tangent_space_surrogate(model: nn.Module, x: torch.Tensor, explainer: Explainer, k: int = 32,
                            dim: int = 8) -> torch.Tensor:
    """The audit's ``tangent_space`` component of ``explainer`` (``1 -`` the mean share of the signed attribution's
    norm in the data's local tangent space, Anders et al. 2020, Secs. 4-5.1;
    :func:`veneer.audit.defences.tangent_space_projection`) with the tangent spaces estimated from the other rows
    of ``x`` rather than the whole training set: ``k`` and ``dim`` shrink to ``len(x) - 1`` and ``k - 1`` (the rank
    of ``k`` centred neighbours) when ``x`` is smaller. It equals ``tangent_space_projection(model, x, {...:
    explainer}, reference=x, k, dim)`` with those sizes; the bases depend on the data only, the attribution is in
    the graph of the parameters (second order)."""
    if len(x) < 3:
        raise ValueError(f"the tangent_space surrogate estimates tangent spaces from the other rows of x: it needs "
                         f"at least 3 rows (evade_samples >= 3), got {len(x)}")
    k = min(k, len(x) - 1)
    dim = min(dim, k - 1)
    flat = x.flatten(1)
    with torch.no_grad():
        basis = tangent_basis(flat, flat, k, dim)
    target = predicted(model, x)
    return 1 - tangent_share(explainer(x, target=target, create_graph=True).flatten(1), basis).mean()


class smoothed:  # noqa: N801 - a context manager, like veneer.models.softplus_activations
    """Every ``nn.ReLU`` and ``nn.Softplus`` module of ``model`` swapped for ``Softplus(beta)`` in place, and
    functional ReLUs replaced, inside the block: the live parameters under other activations (``with_softplus``
    makes a copy, whose parameters a loss cannot reach). Softplus modules count too, because a fine-tune's student
    already runs Softplus(``softplus_beta``) in place of its ReLUs (a model with Softplus of its own is changed
    too)."""

    def __init__(self, model: nn.Module, beta: float):
        self.model, self.beta = model, beta
        self._slots: list = []

    def __enter__(self) -> nn.Module:
        self._slots = [(parent, name, child) for parent in self.model.modules()
                       for name, child in parent.named_children() if isinstance(child, (nn.ReLU, nn.Softplus))]
        for parent, name, _ in self._slots:
            setattr(parent, name, nn.Softplus(beta=self.beta))
        self._mode = FunctionalSoftplus(self.beta).__enter__()
        return self.model

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(None, None, None)
        for parent, name, child in self._slots:
            setattr(parent, name, child)
        self._slots = []


def beta_smoothing_surrogate(model: nn.Module, x: torch.Tensor, explainer: Explainer, softplus_beta: float = 3.0,
                             temperature: float = 0.1) -> torch.Tensor:
    """The audit's ``beta_smoothing`` component of ``explainer`` (Dombrowski et al. 2019, Sec. 5, Thm. 3: ``1 -``
    the mean Spearman correlation of the explanations before and after every ReLU becomes
    Softplus(``softplus_beta``); :func:`veneer.audit.defences.beta_smoothing`) with soft ranks
    (:func:`veneer.metrics.soft.soft_spearman`): exactly so as ``temperature -> 0``. Both maps are in the graph of the
    parameters (second order); "before" is the model under the run's own activations."""
    target = predicted(model, x)
    mine = flat_maps(explainer(x, target=target, create_graph=True))
    with smoothed(model, softplus_beta):
        smooth = flat_maps(explainer(x, target=target, create_graph=True))
    return 1 - soft_spearman(mine, smooth, temperature).mean()


def faithfulness_surrogate(model: nn.Module, x: torch.Tensor, explainer: Explainer, steps: int = 8,
                           temperature: float = 0.1) -> torch.Tensor:
    """The audit's ``faithfulness`` component of ``explainer`` (deletion AUC - insertion AUC of the predicted
    class's probability, Samek et al. 2017; Petsiuk et al. 2018, Sec. 4.1; :func:`veneer.audit.fidelity.
    faithfulness` with its fast ``steps``, black baseline for images, the rows' mean for tabular rows as the audit's
    training mean) with soft masks (:func:`veneer.metrics.deletion.deletion_insertion` with a ``temperature``): exactly so
    as ``temperature -> 0``. Differentiable through the probabilities and, via soft ranks, through the map
    (second order)."""
    target = predicted(model, x)
    importance = flat_maps(explainer(x, target=target, create_graph=True))
    baseline = 0.0 if x.ndim == 4 else x.mean(0)
    curves = deletion_insertion(model, x, importance, target, steps, baseline, temperature=temperature)
    return (curves["deletion_auc"] - curves["insertion_auc"]).mean()


def hessian_surrogate(model: nn.Module, x: torch.Tensor, explainer: Explainer, softplus_beta: float = 20.0,
                      iterations: int = 15, seed: int = 0) -> torch.Tensor:
    """The audit's ``hessian`` statistic (``log10`` of the median over ``x`` of ``|lambda_max| / ||grad||`` of the
    predicted class score under Softplus(``softplus_beta``), Ghorbani et al. 2019, Sec. 5; Dombrowski et al. 2019,
    Thm. 2; :func:`veneer.audit.geometry.hessian_geometry` with its fast ``iterations``): the power iteration
    runs without a graph for ``iterations - 1`` steps (:func:`veneer.explain.curvature.top_hessian_eigen`), and its
    last step, the Rayleigh quotient the audit reports, is recomputed in the graph of the parameters
    (:func:`veneer.explain.curvature.rayleigh_quotient`): the same value, and at convergence the eigenvalue's exact
    derivative (Hellmann-Feynman)."""
    with smoothed(model, softplus_beta):
        target = predicted(model, x)
        if iterations > 1:
            vector = top_hessian_eigen(model, x, target, iterations - 1, seed)[1]
        else:
            generator = torch.Generator().manual_seed(seed)
            vector = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            vector = vector / vector.flatten(1).norm(dim=1).view(-1, *[1] * (x.ndim - 1))
        eigenvalue, grad_norm = rayleigh_quotient(model, x, target, vector)
    return torch.log10((eigenvalue.abs() / grad_norm.clamp_min(1e-30)).median().clamp_min(1e-30))


def changed_explanation(model: nn.Module, values: dict[str, torch.Tensor], explainer: Explainer, x: torch.Tensor,
                        target: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` maps of ``explainer`` on ``model`` run with ``values`` in place of some parameters
    (:class:`veneer.explain.weights.Reparametrized`), in the graph of the live parameters."""
    return flat_maps(explainer.with_model(Reparametrized(model, values))(x, target=target, create_graph=True))


def weight_noise_surrogate(model: nn.Module, x: torch.Tensor, explainer: Explainer, sigmas=(0.02, 0.05),
                           draws: int = 1, seed: int = 0, temperature: float = 0.1) -> torch.Tensor:
    """The audit's ``weight_noise`` component of ``explainer`` (thesis Sec. 4.2: the mean ``1 - Spearman`` between
    the explanations before and after relative Gaussian weight noise of each size in ``sigmas``, ``draws`` each,
    over the share of predicted labels the noise keeps; :func:`veneer.audit.sanity.weight_noise` with its fast
    options and the same noise, :func:`veneer.explain.weights.weight_noise_offsets`) with soft ranks: exactly so
    as ``temperature -> 0``. The noisy weights are the live ones plus noise scaled by their own std, so both maps
    are in the graph of the parameters; the share of kept labels (an argmax count) is a constant of the step."""
    target = predicted(model, x)
    clean = flat_maps(explainer(x, target=target, create_graph=True))
    generator = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    changes, kept = [], []
    for sigma in sigmas:
        for _ in range(draws):
            noisy = {name: p + offset for (name, p), offset in
                     zip(params.items(), weight_noise_offsets(model, sigma, generator).values())}
            with torch.no_grad():
                kept.append((Reparametrized(model, noisy)(x).argmax(1) == target).float().mean().item())
            changes.append(1 - soft_spearman(clean, changed_explanation(model, noisy, explainer, x, target),
                                             temperature).mean())
    return torch.stack(changes).mean() / max(sum(kept) / len(kept), 0.05)


def parameter_randomization_surrogate(model: nn.Module, x: torch.Tensor, explainer: Explainer, seed: int = 0,
                                      temperature: float = 0.1) -> torch.Tensor:
    """The audit's ``parameter_randomization`` component of ``explainer`` (Adebayo et al. 2018, Sec. 3.1: the mean
    over the stages of cascading re-initialisation from the top layer down of the Spearman correlation with the
    trained model's explanation; :func:`veneer.audit.sanity.parameter_randomization`, the same re-initialised
    values, :func:`veneer.explain.weights.randomize_module`) with soft ranks: exactly so as ``temperature -> 0``.
    The re-initialised layers are constants; the layers below them keep the live parameters, so both maps stay
    in the graph of the parameters."""
    target = predicted(model, x)
    clean = flat_maps(explainer(x, target=target, create_graph=True))
    randomized = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    values: dict[str, torch.Tensor] = {}
    similarities = []
    for prefix, module in parameterized_modules(randomized)[::-1]:
        randomize_module(module, generator)
        values.update({f"{prefix}.{name}": p.detach() for name, p in module.named_parameters(recurse=False)})
        similarities.append(soft_spearman(clean, changed_explanation(model, values, explainer, x, target),
                                          temperature).mean())
    return torch.stack(similarities).mean()


register_evasion("shared_logit_gradient", shared_logit_gradient_surrogate)
register_evasion("cross_method_agreement", cross_method_agreement_surrogate)
register_evasion("gradient_slope", gradient_slope_surrogate)
register_evasion("tangent_space", tangent_space_surrogate)
register_evasion("beta_smoothing", beta_smoothing_surrogate)
register_evasion("faithfulness", faithfulness_surrogate)
register_evasion("hessian", hessian_surrogate)
register_evasion("weight_noise", weight_noise_surrogate)
register_evasion("parameter_randomization", parameter_randomization_surrogate)


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
