"""The built-in audit tests, registered in this order on import (:func:`veneer.audit.register_test`): each test
function of :mod:`veneer.audit` with its meaning, source, tolerance, own options per effort level and the reason
it does not apply to a model and data."""

from __future__ import annotations

from torch import nn

from veneer.audit.base import has_conv
from veneer.audit.defences import beta_smoothing, tangent_space_projection
from veneer.audit.fidelity import cross_method_agreement, faithfulness
from veneer.audit.geometry import fragility_profile, hessian_geometry
from veneer.audit.influence import influence_fragility
from veneer.audit.neuron import neuron_balance, neuron_group_fairness, neuron_visualization
from veneer.audit.reference import reference_comparison
from veneer.audit.registry import AuditContext, AuditTest, register_test
from veneer.audit.sanity import noise_inputs, parameter_randomization, weight_noise
from veneer.explain import Gradient
from veneer.neurons import default_layer

FEATURE_ROWS = "the input attacks (veneer.attacks) perturb images (B, C, H, W); these inputs are feature rows"


def _needs_images(model: nn.Module, ctx: AuditContext) -> str | None:
    return None if ctx.x.ndim == 4 else FEATURE_ROWS


def _influence_applies(model: nn.Module, ctx: AuditContext) -> str | None:
    if ctx.x.ndim != 4:
        return FEATURE_ROWS
    if ctx.options["influence_train"] is None:
        # measured in the zoo (docs/audit.md): AUROC 0.53 under the fast effort, where its twin calibration is too
        # coarse; it only added to clean models' combined z
        return "runs under --effort full (or options={'influence_train': N})"
    return None


def _visualization_applies(model: nn.Module, ctx: AuditContext) -> str | None:
    if ctx.x.ndim == 4 and has_conv(model):
        return None
    return "needs image inputs and a Conv2d layer whose channels are visualised"


def _balance_applies(model: nn.Module, ctx: AuditContext) -> str | None:
    try:
        default_layer(model)
    except ValueError as error:
        return f"no layer whose channels it compares: {error}"
    return None


def _training_images(ctx: AuditContext, rows: int):
    """The first ``rows`` training inputs in the explained inputs' shape."""
    return ctx.manifold[:rows].view(-1, *ctx.x.shape[1:])


BUILTIN_TESTS = (
    AuditTest(
        "fragility", source="Ghorbani, Abid & Zou 2019, Interpretation of Neural Networks is Fragile, Alg. 1, Fig. 3",
        meaning="How far a small targeted input perturbation (centre-of-mass attack within an l-inf budget) moves "
                "the top-k features of the saliency map while the label stays (Ghorbani et al. 2019, Alg. 1); a "
                "manipulated model's explanations move further than a clean one's.",
        tolerance=0.1, applies=_needs_images,
        options={"fast": {"eps_values": (0.05,), "attack_steps": 8},
                 "full": {"eps_values": (0.02, 0.05, 0.1), "attack_steps": 20}},
        run=lambda model, ctx, reference=None: fragility_profile(
            model, ctx.x, Gradient(model), ctx.options["eps_values"], steps=ctx.options["attack_steps"],
            seed=ctx.seed)),
    AuditTest(
        "influence_fragility", source="Ghorbani et al. 2019, Sec. 3, Fig. 4; Koh & Liang 2017, Eq. 2",
        meaning="How far a small input perturbation reshuffles the training samples most influential on the "
                "prediction (Ghorbani et al. 2019, Sec. 3, Fig. 4; Koh & Liang 2017), against random noise; a "
                "manipulated model's influence rankings are easier to reshuffle than a clean one's.",
        # fully trained clean MNIST CNNs (seeds 0-5) lie 0.03-0.07 above the short-trained twins' 1 - Spearman
        # (0.11), the digits MLPs 0.06-0.13 above theirs (docs/audit.md)
        tolerance=0.06, applies=_influence_applies,
        options={"fast": {"influence_train": None, "influence_eps": 0.05},
                 "full": {"influence_train": 1000, "influence_eps": 0.05}},
        run=lambda model, ctx, reference=None: influence_fragility(
            model, ctx.x, ctx.y,
            (ctx.manifold[:ctx.options["influence_train"]], ctx.manifold_y[:ctx.options["influence_train"]]),
            eps=ctx.options["influence_eps"], seed=ctx.seed)),
    AuditTest(
        "hessian", source="Ghorbani et al. 2019, Sec. 5, Fig. 6; Dombrowski et al. 2019, Thm. 2",
        meaning="Curvature of the class score around the inputs per unit of slope (largest input-Hessian "
                "eigenvalue over the gradient norm; Ghorbani et al. 2019, Sec. 5; Dombrowski et al. 2019, Thm. 2); "
                "a manipulated model bends its gradient field sharply to draw the wanted map, and sharp curvature "
                "makes gradient explanations easy to change.",
        tolerance=0.25,
        options={"fast": {"hessian_samples": 8, "hessian_iterations": 15},
                 "full": {"hessian_samples": 32, "hessian_iterations": 30}},
        run=lambda model, ctx, reference=None: hessian_geometry(
            model, ctx.x[:ctx.options["hessian_samples"]], iterations=ctx.options["hessian_iterations"],
            seed=ctx.seed)),
    AuditTest(
        "noise_inputs", source="thesis Sec. 4.1",
        meaning="Whether explanations of unrelated Gaussian-noise inputs look alike (mean pairwise correlation, "
                "thesis Sec. 4.1): a globally manipulated model draws the same picture for every input.",
        tolerance=0.1, options={"fast": {"noise_inputs": 24}, "full": {"noise_inputs": 64}},
        run=lambda model, ctx, reference=None: noise_inputs(
            model, ctx.x, ctx.differentiable_explainers(model), ctx.options["noise_inputs"], ctx.seed)),
    AuditTest(
        "weight_noise", source="thesis Sec. 4.2",
        meaning="How much the explanations change under Gaussian noise on the weights that keeps the predictions "
                "(thesis Sec. 4.2); a manipulation sits in a thin layer of fine-tuning, so its explanations fall "
                "apart faster than the accuracy.",
        tolerance=0.1,
        options={"fast": {"sigmas": (0.02, 0.05), "draws": 1}, "full": {"sigmas": (0.01, 0.02, 0.05), "draws": 2}},
        run=lambda model, ctx, reference=None: weight_noise(
            model, ctx.x, ctx.differentiable_explainers(model), ctx.options["sigmas"], ctx.options["draws"],
            ctx.seed)),
    AuditTest(
        "parameter_randomization", source="Adebayo et al. 2018, Sanity Checks for Saliency Maps, Sec. 3.1",
        meaning="Whether explanations stay the same when the layers are re-initialised from the top down "
                "(Adebayo et al. 2018, cascading randomisation): explanations that survive randomisation do not "
                "depend on what the model learned.",
        tolerance=0.1,
        run=lambda model, ctx, reference=None: parameter_randomization(
            model, ctx.x, ctx.differentiable_explainers(model), ctx.seed)),
    AuditTest(
        "faithfulness", source="Samek et al. 2017; Petsiuk et al. 2018, Sec. 4.1",
        meaning="Whether deleting what the explanation marks as important hurts the prediction (deletion/"
                "insertion curves, Samek et al. 2017; Petsiuk et al. 2018): a manipulated map stops pointing at "
                "what the model uses.",
        tolerance=0.1, options={"fast": {"deletion_steps": 8}, "full": {"deletion_steps": 20}},
        run=lambda model, ctx, reference=None: faithfulness(
            model, ctx.x, ctx.explainers(model), steps=ctx.options["deletion_steps"], baseline=ctx.baseline(),
            seed=ctx.seed)),
    AuditTest(
        "cross_method_agreement", source="thesis Tables 3.1-3.2",
        meaning="Rank agreement of each explanation method with the others; manipulations rarely transfer to "
                "every method (thesis Tables 3.1-3.2), so one method drifting away from the rest is evidence.",
        tolerance=0.1,
        run=lambda model, ctx, reference=None: cross_method_agreement(model, ctx.x, ctx.every_explainer(model))),
    AuditTest(
        "beta_smoothing",
        source="Dombrowski et al. 2019, Explanations can be manipulated and geometry is to blame, Sec. 5, Thm. 3",
        meaning="How far the explanation changes when every ReLU is replaced by Softplus (1 - Spearman; "
                "Dombrowski et al. 2019, Sec. 5): a manipulated explanation lives in the sharp bends of the ReLU "
                "geometry and disappears when they are smoothed, a clean one stays.",
        tolerance=0.1,
        run=lambda model, ctx, reference=None: beta_smoothing(model, ctx.x, ctx.differentiable_explainers(model))),
    AuditTest(
        "tangent_space",
        source="Anders et al. 2020, Fairwashing explanations with off-manifold detergent, Secs. 4-5.1",
        meaning="Share of the explanation that points off the data manifold (its norm outside the local tangent "
                "space estimated from the nearest training inputs; Anders et al. 2020): manipulations live mostly "
                "orthogonal to the data manifold, clean explanations mostly along it.",
        tolerance=0.08, options={"fast": {"knn_k": 32, "knn_dim": 8}, "full": {"knn_k": 48, "knn_dim": 10}},
        run=lambda model, ctx, reference=None: tangent_space_projection(
            model, ctx.x, ctx.differentiable_explainers(model), ctx.manifold, ctx.options["knn_k"],
            ctx.options["knn_dim"])),
    AuditTest(
        "neuron_visualization", source="Nanfack et al. 2024, Sec. 4.1.1, Fig. 9; Geirhos et al. 2023",
        meaning="Whether a layer's top-k natural images agree with its synthetic visualisations (Nanfack et al. "
                "2024, Sec. 4.1.1): after a neuron attack they decorrelate.",
        tolerance=0.15, applies=_visualization_applies,
        options={"fast": {"neuron_steps": 24}, "full": {"neuron_steps": 128}},
        run=lambda model, ctx, reference=None: neuron_visualization(
            model, _training_images(ctx, 2000), steps=ctx.options["neuron_steps"], seed=ctx.seed)),
    AuditTest(
        "neuron_balance", source="Nanfack et al. 2024, Eqs. 2-5; Du et al. 2018",
        meaning="Spread over a layer's channels of their activation scale relative to their downstream gain: "
                "clean training keeps the channels balanced (Du et al. 2018), while the push-down, push-up and "
                "fairwashing attacks (Nanfack et al. 2024, Eqs. 2-5) shrink the attacked channels and let the "
                "next layers amplify them back.",
        # 0.15 since the zoo's first held-out round (experiments/audit_zoo.py, seeds 10-12, now tuning): fully
        # trained clean CNNs spread 0.18-0.45 against the twins' 0.24-0.32, and 50% magnitude pruning 0.66 (z 3.4
        # at the former 0.1)
        tolerance=0.15, applies=_balance_applies,
        options={"fast": {"balance_samples": 512}, "full": {"balance_samples": 2048}},
        run=lambda model, ctx, reference=None: neuron_balance(
            model, _training_images(ctx, ctx.options["balance_samples"]))),
    AuditTest(
        "neuron_group_fairness", source="Nanfack et al. 2024, Eq. 5, Sec. 4.3",
        meaning="How much fairer across a protected attribute the neurons' pre-activations look than the "
                "decisions they produce (KS distances between the groups): fairwashing (Nanfack et al. 2024, "
                "Eq. 5) makes the neurons look alike across groups while the predictions stay as biased.",
        tolerance=0.1,
        applies=lambda model, ctx: None if ctx.group is not None else "the data has no binary protected attribute",
        run=lambda model, ctx, reference=None: neuron_group_fairness(model, ctx.manifold, ctx.group)),
    AuditTest(
        "reference_comparison", source="thesis Sec. 3.5; Heo et al. 2019, Sec. 5",
        meaning="Explanation divergence from the reference model against their prediction agreement: the same "
                "predictions with some methods' explanations moved much more than others' point to a "
                "manipulation (thesis Sec. 3.5; Heo et al. 2019).",
        tolerance=0.1, needs_reference=True,
        # no population of reference-vs-reference values exists: the prior reference distribution (mean, sd)
        prior=(0.1, 0.0),
        run=lambda model, ctx, reference=None: reference_comparison(model, reference, ctx.x,
                                                                    ctx.explainers(model))),
)
for _builtin in BUILTIN_TESTS:
    register_test(_builtin)

# the tests of later issues, each registered by its own module on import, after the ones above
import veneer.audit.invariance  # noqa: E402,F401  (shared_logit_gradient)
import veneer.audit.visualization  # noqa: E402,F401  (visualization_consistency)
import veneer.audit.scaffolding  # noqa: E402,F401  (scaffolding)
