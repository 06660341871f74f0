"""The adaptive attacker (veneer.finetune.evasion): each surrogate against the audit statistic it stands for,
gradients to the parameters (second order, finite differences in float64), an evading run against the same run
without ``evade``, unknown names refused, bit-identical resume with ``evade``."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from veneer.data import as_labeled
from veneer.audit.defences import beta_smoothing, tangent_space_projection
from veneer.audit.fidelity import cross_method_agreement, faithfulness
from veneer.audit.geometry import fragility_profile, hessian_geometry
from veneer.audit.invariance import gradient_slope, shared_logit_gradient
from veneer.audit.neuron import neuron_balance
from veneer.audit.sanity import noise_inputs, parameter_randomization, weight_noise
from veneer.explain import Gradient, IntegratedGradients
from veneer.finetune import (AttackLoss, FineTuner, StepOutput, evasion_surrogate, register_evasion,
                             registered_evasions, soft_rank)
from veneer.finetune.evasion import _SURROGATES, cross_method_agreement_surrogate, smoothed
from veneer.manipulate import CenterOfMass, Manipulation
from veneer.metrics import pearson, topk_intersection
from veneer.metrics.soft import soft_topk_intersection
from veneer.models import softplus_activations
from veneer.neurons import PushDown

SURROGATES = ("noise_inputs", "shared_logit_gradient", "cross_method_agreement", "neuron_balance", "gradient_slope",
              "tangent_space", "beta_smoothing", "faithfulness", "weight_noise", "parameter_randomization")
SECOND_ORDER = SURROGATES + ("hessian", "fragility")  # those two: see their own tests below


def test_every_builtin_surrogate_is_registered():
    assert set(SECOND_ORDER) <= set(registered_evasions())


# the audit's statistic (the Gradient component, the audit's fast options) and the surrogate's keyword arguments
# that make it exact: soft ranks and soft masks at a temperature near 0
AUDIT_STATISTICS = {
    "gradient_slope": (lambda m, x: gradient_slope(m, x).components["slope_gap"], {}),
    "tangent_space": (lambda m, x: tangent_space_projection(m, x, {"g": Gradient(m)}, x, k=len(x) - 1,
                                                            dim=len(x) - 2).components["g"], {}),
    "beta_smoothing": (lambda m, x: beta_smoothing(m, x, {"g": Gradient(m)}).components["g"], {"temperature": 1e-6}),
    "faithfulness": (lambda m, x: faithfulness(m, x, {"g": Gradient(m)}, steps=8).components["g"],
                     {"temperature": 1e-6}),
    "hessian": (lambda m, x: hessian_geometry(m, x, iterations=15).statistic, {}),
    "weight_noise": (lambda m, x: weight_noise(m, x, {"g": Gradient(m)}).components["g"], {"temperature": 1e-6}),
    "parameter_randomization": (lambda m, x: parameter_randomization(m, x, {"g": Gradient(m)}).components["g"],
                                {"temperature": 1e-6}),
    "fragility": (lambda m, x: fragility_profile(m, x, Gradient(m), (0.05,), steps=8).statistic,
                  {"temperature": 1e-6}),
}


@pytest.mark.parametrize("name", sorted(AUDIT_STATISTICS))
def test_each_new_surrogate_is_the_audit_statistic(name, small_cnn, cnn_inputs):
    x = torch.cat([cnn_inputs, cnn_inputs.flip(-1)])  # 8 images: the tangent space needs neighbours
    audit, options = AUDIT_STATISTICS[name]
    value = evasion_surrogate(name)(small_cnn, x, Gradient(small_cnn), **options)
    assert value.item() == pytest.approx(audit(small_cnn, x), abs=1e-5)


def test_the_tangent_space_surrogate_refuses_too_few_rows(small_cnn, cnn_inputs):
    with pytest.raises(ValueError, match=r"at least 3 rows \(evade_samples >= 3\), got 2"):
        evasion_surrogate("tangent_space")(small_cnn, cnn_inputs[:2], Gradient(small_cnn))


def test_soft_topk_intersection_tends_to_the_hard_one():
    g = torch.Generator().manual_seed(2)
    a = torch.rand(4, 100, generator=g, dtype=torch.float64)
    b = a + 0.5 * torch.rand(4, 100, generator=g, dtype=torch.float64)
    assert torch.allclose(soft_topk_intersection(a, b, 10, 1e-6), topk_intersection(a, b, 10), atol=1e-8)
    assert not torch.allclose(soft_topk_intersection(a, b, 10), topk_intersection(a, b, 10), atol=1e-3)


def test_smoothing_swaps_the_live_activations_and_restores_them(small_cnn, cnn_inputs):
    """The Softplus(3) model the beta_smoothing surrogate explains is the live model (its parameters get the
    gradient), inside a fine-tune's Softplus(20) too; the activations come back on exit."""
    from veneer.models import with_softplus
    expected = with_softplus(small_cnn, 3.0)(cnn_inputs)
    with softplus_activations(small_cnn, 20.0):
        before = [type(m) for m in small_cnn.modules()]
        with smoothed(small_cnn, 3.0):
            assert torch.allclose(small_cnn(cnn_inputs), expected, atol=1e-12)
        assert [type(m) for m in small_cnn.modules()] == before
        assert not torch.allclose(small_cnn(cnn_inputs), expected, atol=1e-6)


def test_noise_inputs_surrogate_is_the_audit_statistic(small_cnn, cnn_inputs):
    audit = noise_inputs(small_cnn, cnn_inputs, {"gradient": Gradient(small_cnn)}, n=len(cnn_inputs), seed=0)
    value = evasion_surrogate("noise_inputs")(small_cnn, cnn_inputs, Gradient(small_cnn))
    assert value.item() == pytest.approx(audit.components["gradient"], abs=1e-10)


def test_shared_logit_gradient_surrogate_is_the_audit_statistic(small_cnn, cnn_inputs):
    audit = shared_logit_gradient(small_cnn, cnn_inputs)
    value = evasion_surrogate("shared_logit_gradient")(small_cnn, cnn_inputs, Gradient(small_cnn))
    assert value.item() == pytest.approx(audit.components["median_ratio"], abs=1e-10)


def test_neuron_balance_surrogate_is_the_audit_statistic(small_cnn):
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    audit = neuron_balance(small_cnn, x)
    value = evasion_surrogate("neuron_balance")(small_cnn, x, Gradient(small_cnn))
    assert audit.components["balance_spread"] > 0
    assert value.item() == pytest.approx(audit.components["balance_spread"], abs=1e-10)


def test_soft_ranks_tend_to_scipys_average_ranks_and_their_correlation_to_spearman():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 50, generator=g, dtype=torch.float64)
    a[0, :10] = 0.5  # ties share their average rank
    b = a + 0.3 * torch.rand(3, 50, generator=g, dtype=torch.float64)
    hard = torch.tensor([spearmanr(a[i], b[i]).statistic for i in range(3)], dtype=torch.float64)
    soft = pearson(soft_rank(a, 1e-5), soft_rank(b, 1e-5))
    assert torch.allclose(soft, hard, atol=1e-6)


def test_soft_spearman_at_the_default_temperature_is_monotone_in_spearman():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(1, 200, generator=g, dtype=torch.float64)
    noise = torch.rand(1, 200, generator=g, dtype=torch.float64)
    mixes = [a + t * noise for t in (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)]
    hard = [spearmanr(a[0], m[0]).statistic for m in mixes]
    soft = [pearson(soft_rank(a), soft_rank(m)).item() for m in mixes]
    assert hard == sorted(hard, reverse=True) and soft == sorted(soft, reverse=True)


def test_cross_method_surrogate_tends_to_the_audit_statistic_with_one_second_method(small_cnn, cnn_inputs):
    explainers = {"gradient": Gradient(small_cnn), "ig": IntegratedGradients(small_cnn, steps=16)}
    audit = cross_method_agreement(small_cnn, cnn_inputs, explainers).components["gradient"]
    value = cross_method_agreement_surrogate(small_cnn, cnn_inputs, Gradient(small_cnn), temperature=1e-6)
    assert value.item() == pytest.approx(audit, abs=1e-4)


def directional_derivatives(surrogate, model, x) -> tuple[float, float]:
    """``(analytic, numeric)`` derivative of ``surrogate(model, x, Gradient(model))`` along a random parameter
    direction (central differences, h = 1e-6, float64) under Softplus(5) activations, after checking that the
    gradient reaches every hidden layer."""
    params = list(model.parameters())
    g = torch.Generator().manual_seed(5)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    with softplus_activations(model, 5.0):
        value = surrogate(model, x, Gradient(model))
        grads = torch.autograd.grad(value, params, allow_unused=True)
        assert all(grad is not None and grad.abs().sum() > 0 for grad in grads[:-2])  # every hidden layer
        analytic = sum((grad * d).sum() for grad, d in zip(grads, direction) if grad is not None)
        h, sides = 1e-6, []
        for sign in (1, -1):
            with torch.no_grad():
                for p, d in zip(params, direction):
                    p.add_(sign * h * d)
            sides.append(surrogate(model, x, Gradient(model)).item())
            with torch.no_grad():
                for p, d in zip(params, direction):
                    p.sub_(sign * h * d)
    return analytic.item(), (sides[0] - sides[1]) / (2 * h)


@pytest.mark.parametrize("name", SURROGATES)
def test_surrogate_gradients_reach_every_layer_and_agree_with_finite_differences(name, small_mlp, mlp_inputs):
    """Second order (the statistic is a function of input gradients or explanations)."""
    x = mlp_inputs.repeat(2, 1) + 0.1 * torch.randn(8, 12, generator=torch.Generator().manual_seed(5),
                                                    dtype=torch.float64)
    analytic, numeric = directional_derivatives(evasion_surrogate(name), small_mlp, x)
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_hessian_surrogate_gradient_is_the_eigenvalues_at_convergence(small_mlp, mlp_inputs):
    """Third order: the Rayleigh quotient's gradient with the power-iteration vector held fixed is the
    eigenvalue's (Hellmann-Feynman) once the iteration has converged; the finite difference recomputes the
    vector."""
    def surrogate(model, x, explainer):
        return evasion_surrogate("hessian")(model, x, explainer, iterations=400)

    analytic, numeric = directional_derivatives(surrogate, small_mlp, mlp_inputs)
    assert analytic == pytest.approx(numeric, rel=1e-4)


def test_fragility_surrogate_gradient_holds_the_attack_fixed(small_cnn, cnn_inputs):
    """The attacked inputs come from sign steps, locally constant in the parameters: the derivative with them
    held fixed is the statistic's own (finite differences recompute the attack)."""
    analytic, numeric = directional_derivatives(evasion_surrogate("fragility"), small_cnn, cnn_inputs)
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def tiny_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(6 * 7 * 7, 3)).eval()


def images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training images, labels and held-out images the statistics are measured on."""
    g = torch.Generator().manual_seed(1)
    return (torch.rand(48, 1, 14, 14, generator=g), torch.randint(0, 3, (48,), generator=g),
            torch.rand(32, 1, 14, 14, generator=g))


def manipulate(model, x, y, **options):
    options = {"steps": 15, "evade_samples": 16, **options}
    return Manipulation(model, Gradient(model), CenterOfMass((0, 0)), batch_size=16, lr=1e-2, **options)((x, y))


def manipulate_many_samples(model, x, y, **options):
    """``manipulate`` with 32 surrogate samples: the fragility surrogate attacks sampled inputs with sign steps, and
    with 16 samples its estimate is too noisy to steer by reliably (on one CPU the evading run kept 0.53 of the
    plain run's move with 16 samples, 0.19 with 32)."""
    return manipulate(model, x, y, evade_samples=32, **options)


def push_down(model, x, y, **options):
    return PushDown(model, "4", k=3, steps=20, batch_size=8, attack_batch=4, lr=1e-2, **options)((x, y))


@pytest.mark.parametrize("name, attack", [("noise_inputs", manipulate), ("shared_logit_gradient", manipulate),
                                          ("cross_method_agreement", manipulate), ("neuron_balance", push_down),
                                          ("beta_smoothing", manipulate), ("hessian", manipulate),
                                          ("parameter_randomization", manipulate),
                                          ("fragility", manipulate_many_samples)])
def test_an_evading_run_keeps_the_statistic_closer_to_the_originals(name, attack):
    x, y, held = images()
    model = tiny_cnn()
    statistic = evasion_surrogate(name)
    original = statistic(model, held, Gradient(model)).item()
    plain, evading = attack(model, x, y), attack(model, x, y, evade=[name], evade_weight=100.0)
    moved = {run: abs(statistic(r.model, held, Gradient(r.model)).item() - original)
             for run, r in (("plain", plain), ("evading", evading))}
    assert moved["evading"] < 0.5 * moved["plain"]
    assert f"evade.{name}" in evading.history[-1] and f"evade_target.{name}" in evading.measures
    assert not any(key.startswith("evade") for key in plain.history[-1])


@pytest.mark.parametrize("name", ["tangent_space", "faithfulness", "gradient_slope", "weight_noise"])
def test_an_evading_run_holds_the_statistic_on_its_own_rows(name):
    """A run this short moves these four statistics too little on new images for the comparison above; on the
    rows the evasion term holds (the run's fixed, seeded training rows, under its Softplus(20)) the evading run
    keeps the statistic closer to the original's than the plain run. They move by hundredths, and the term is
    ``w * difference^2``, so the weight that holds them is 1e4 (100 does not)."""
    x, y, _ = images()
    model = tiny_cnn()
    rows = as_labeled((x, y)).sample(16, seed=0).x
    statistic = evasion_surrogate(name)

    def value(m):
        with softplus_activations(m, 20.0):
            return statistic(m, rows, Gradient(m)).item()

    original = value(model)
    plain, evading = manipulate(model, x, y), manipulate(model, x, y, evade=[name], evade_weight=1e4)
    assert evading.measures[f"evade_target.{name}"] == pytest.approx(original, abs=1e-5)
    moved = {"plain": abs(value(plain.model) - original), "evading": abs(value(evading.model) - original)}
    assert moved["evading"] < 0.5 * moved["plain"]


def test_resume_with_evade_is_bit_identical(tmp_path):
    x, y, _ = images()
    options = {"evade": ["noise_inputs", "shared_logit_gradient"], "checkpoint_every": 2, "steps": 4,
               "evade_samples": 8}
    whole = manipulate(tiny_cnn(), x, y, **options)
    manipulate(tiny_cnn(), x, y, checkpoint_dir=tmp_path, max_steps=2, **options)
    resumed = manipulate(tiny_cnn(), x, y, checkpoint_dir=tmp_path, resume=True, **options)
    assert resumed.history == whole.history and len(whole.history) == 4
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(),
                                                 resumed.model.state_dict().values()))


def test_unknown_or_malformed_evade_names_are_refused_naming_the_known_ones():
    model = tiny_cnn()
    with pytest.raises(ValueError, match=r"audit test 'influence_fragility'; known: \[.*noise_inputs"):
        FineTuner(model, evade=["influence_fragility"])
    with pytest.raises(ValueError, match="evade must be None or a non-empty list"):
        FineTuner(model, evade="noise_inputs")
    with pytest.raises(ValueError, match="names a test twice"):
        FineTuner(model, evade=["noise_inputs", "noise_inputs"])
    with pytest.raises(ValueError, match="evade_weight"):
        FineTuner(model, evade=["noise_inputs"], evade_weight=0)


def test_a_users_surrogate_joins_the_attack_loss(monkeypatch):
    """A registered surrogate of a user's own test: held at the original's value (here the mean logit of class
    0 on the fixed rows) while the attack pushes that very logit up."""
    monkeypatch.setitem(_SURROGATES, "mean_logit", None)  # the registration is undone after the test
    register_evasion("mean_logit", lambda model, x, explainer: model(x)[:, 0].mean())
    x, y, held = images()
    model = tiny_cnn()

    class MeanLogit(AttackLoss):
        def __call__(self, student, x, y, generator, step):
            logits = student(x)
            return StepOutput(-logits[:, 0].mean(), x, y, logits)

    runs = {evade: FineTuner(model, steps=10, lr=1e-2, batch_size=16, evade=evade)((x, y), loss=MeanLogit())
            for evade in (None, ("mean_logit",))}
    before = model(held)[:, 0].mean().item()
    moved = {evade: abs(r.model(held)[:, 0].mean().item() - before) for evade, r in runs.items()}
    assert moved[("mean_logit",)] < 0.5 * moved[None]
