"""Do a model's synthetic feature visualisations behave like those of a trained network?

Manipulated visualisations (the gradient slingshot, Bareeva et al. 2025, "Manipulating Feature Visualizations
with Gradient Slingshots"; the silent units and fooling circuits of Geirhos et al. 2024, "Don't trust your eyes:
on the (un)reliability of feature visualizations", Sec. 3) plant an attractor in input space that the unit's
activation maximisation falls into whatever the auditor's settings, far outside the range of natural inputs.
:func:`visualization_consistency` looks at every unit of a layer (the audit's default layer) and at the logits,
with the unit unknown to it, and measures two things a planted attractor moves:

* ``activation_excess`` -- ``log10`` of each unit's activation at its synthetic visualisation (the Fourier
  parameterisation, whose images stay in [0, 1]) over its largest activation on natural images (the slingshot's
  bowl peaks ``gamma / 2 ||q_target||^2`` above the start; a silent unit grows once it fires);
* ``parametrization_agreement`` -- the Pearson correlation between each unit's visualisations under two
  parameterisations (pixels with Adam, no transformations; the decorrelated Fourier spectrum with transformation
  robustness): for a trained network they differ (each parameterisation has its own bias, Olah et al. 2017),
  while an attractor pulls both to the same image.

Each component is the maximum over the units (one attacked unit is enough); larger is more suspicious.

Both are calibrated on clean twins, which inherit a construction's forward code and buffers
(:func:`veneer.audit.inherited_state`), and a maximum over units hides one bad unit among ordinary extremes.
:func:`visualization_outliers` is twin-free instead: each unit is compared with the other units of the same layer
of the same model by a robust z-score (:func:`robust_z`), and the largest is scored against a fixed prior
(``prior_only``), on two per-unit statistics a planted unit moves:

* ``off_range_slope`` -- the unit's slope along the ray through each natural image beyond the natural intensities
  (between ``contrast / 2`` and ``contrast`` times the image) over its slope within them (between half and once
  the image), each the largest over the images: activation maximisation leaves the natural range, and a silent
  unit (Geirhos et al. 2024, Sec. 3.2) lives just above it, with a slope there that the unit's natural response
  lacks (a ReLU network without biases is positively homogeneous, so a trained unit's two slopes stay alike);
* ``gate_jump`` -- along the straight path from the unit's top natural image to its synthetic visualisation, the
  largest change of the unit's activation between neighbouring points over the total change: a ReLU network is
  continuous and piecewise linear along a line, while a fooling circuit (Sec. 3.1) switches the unit from itself to
  the decoy where its detector starts calling the input visualised, a step.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from veneer.audit.base import TestResult
from veneer.audit.registry import AuditContext, AuditTest, register_test
from veneer.checks import check_positive, check_tensor
from veneer.metrics import pearson
from veneer.models import capture
from veneer.neurons import default_layer, record, visualize

__all__ = ["logit_layer", "robust_z", "visualization_consistency", "visualization_outliers"]


@torch.no_grad()
def logit_layer(model: nn.Module, x: torch.Tensor) -> str | None:
    """The name of the last ``nn.Linear`` whose output is the model's output on ``x`` (the logits), else None."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        return None
    with capture(model, names) as seen:
        output = model(x)
        values = dict(seen.values)
    for name in reversed(names):
        if name in values and values[name].shape == output.shape and torch.equal(values[name], output):
            return name
    return None


def _excess_and_agreement(model: nn.Module, layer: str, natural: torch.Tensor, steps: int, seed: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unit of ``layer``: ``(log10 synthetic / natural maximum, Pearson of the two parameterisations)``."""
    shape = tuple(natural.shape[1:])
    fourier = visualize(model, layer, input_shape=shape, steps=steps, seed=seed)
    pixel = visualize(model, layer, input_shape=shape, steps=steps, seed=seed, parametrization="pixel",
                      jitter=0.0, rotation=0.0, scale=(1.0, 1.0))
    natural_max = _units(model, layer, natural).amax(0)
    synthetic = _units(model, layer, fourier).diagonal()  # bounded images: a trained unit's peak stays bounded
    floor = natural_max.abs().clamp(min=1e-6)
    excess = torch.log10(synthetic.clamp(min=1e-6) / floor)
    agreement = torch.nan_to_num(pearson(fourier.flatten(1), pixel.flatten(1)), nan=0.0)
    return excess, agreement


def _units(model: nn.Module, layer: str, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """``(B, units)`` activations (Nanfack et al. 2024, Eq. 1), ``chunk`` inputs per forward pass: what
    :func:`visualize` ascends, up to the number of positions, which cancels in the ratios."""
    return torch.cat([record(model, layer, part)[layer] for part in x.split(chunk)])


def visualization_consistency(model: nn.Module, x: torch.Tensor, layer: str | None = None, steps: int = 48,
                              seed: int = 0) -> TestResult:
    """``activation_excess`` and ``parametrization_agreement`` (module doc) over every unit of ``layer`` (default
    :func:`veneer.neurons.default_layer`) and of the logits (:func:`logit_layer`), natural images ``x``,
    visualisations of ``steps`` steps. Images only."""
    start = time.perf_counter()
    x = check_tensor("x", x, ndim=4)
    layers = _audited_layers(model, x, layer)
    components, evidence = {"activation_excess": -float("inf"), "parametrization_agreement": -1.0}, {}
    for name in layers:
        excess, agreement = _excess_and_agreement(model, name, x, steps, seed)
        components["activation_excess"] = max(components["activation_excess"], excess.max().item())
        components["parametrization_agreement"] = max(components["parametrization_agreement"],
                                                      agreement.max().item())
        evidence[name] = {"most_excessive_units": excess.argsort(descending=True)[:3].tolist(),
                          "most_agreeing_units": agreement.argsort(descending=True)[:3].tolist(),
                          "excess_median": excess.median().item(), "agreement_median": agreement.median().item()}
    return TestResult("visualization_consistency", components, {"layers": layers, "steps": steps, **evidence},
                      time.perf_counter() - start)


def _audited_layers(model: nn.Module, x: torch.Tensor, layer: str | None) -> list[str]:
    """``layer`` (default :func:`veneer.neurons.default_layer`) and the logits (:func:`logit_layer`), once each."""
    layers = [layer or default_layer(model)]
    logits = logit_layer(model, x[:2])
    if logits is not None and logits not in layers:
        layers.append(logits)
    return layers


def robust_z(values: torch.Tensor) -> torch.Tensor:
    """``(U,)`` robust z-scores of ``(U,)`` values against each other: ``(v - median) / (1.4826 MAD)``, the modified
    z-score of Iglewicz & Hoaglin (1993), "How to Detect and Handle Outliers", Eq. 2.2 (``0.6745 (v - median) /
    MAD``; the median absolute deviation floored at 1e-6). One outlier moves neither the median nor the MAD, so its
    own score stays large whatever the other units do."""
    values = check_tensor("values", values, ndim=1)
    if len(values) < 3:
        raise ValueError(f"values must hold at least 3 units to compare, got {len(values)}")
    median = values.median()
    spread = (values - median).abs().median() * 1.4826
    return (values - median) / spread.clamp(min=1e-6)


def _off_range_slope(model: nn.Module, layer: str, natural: torch.Tensor, contrast: float,
                     floor: torch.Tensor) -> torch.Tensor:
    """Per unit: ``log10`` of (its largest slope ``(a(contrast x) - a(contrast x / 2)) / (contrast / 2)`` over
    the images ``x`` + ``floor``) over (its largest ``(a(x) - a(x / 2)) / (1 / 2)`` + ``floor``); ``floor`` (the
    layer's median natural maximum) keeps units that hardly respond from dividing by zero."""
    def slope(low: float, high: float) -> torch.Tensor:
        rise = _units(model, layer, natural * high) - _units(model, layer, natural * low)
        return (rise / (high - low)).amax(0).clamp(min=0)

    return torch.log10((slope(contrast / 2, contrast) + floor) / (slope(0.5, 1.0) + floor))


def _gate_jump(model: nn.Module, layer: str, natural: torch.Tensor, natural_values: torch.Tensor,
               visualizations: torch.Tensor, points: int, floor: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Per unit ``u``: the activation ``a_t`` of ``u`` at ``points`` evenly spaced points from its top natural image
    to its visualisation ``visualizations[u]``; ``max_t |a_{t+1} - a_t| / (sum_t |a_{t+1} - a_t| + floor)``
    (``floor`` keeps a unit that hardly moves from scoring one tiny step as a jump). ``chunk`` units per batch."""
    weights = torch.linspace(0, 1, points).view(1, points, *(1,) * (natural.ndim - 1))
    starts = natural[natural_values.argmax(0)]
    jumps = []
    for first in range(0, len(starts), chunk):
        units = torch.arange(first, min(first + chunk, len(starts)))
        path = torch.lerp(starts[units, None], visualizations[units, None], weights)  # (n, points, ...)
        values = _units(model, layer, path.flatten(0, 1)).view(len(units), points, -1)
        own = values[torch.arange(len(units)), :, units]  # (n, points): each unit along its own path
        steps = own.diff(dim=1).abs()
        jumps.append(steps.amax(1) / (steps.sum(1) + floor))
    return torch.cat(jumps)


def visualization_outliers(model: nn.Module, x: torch.Tensor, layer: str | None = None, steps: int = 48,
                           contrast: float = 4.0, points: int = 33, seed: int = 0) -> TestResult:
    """Twin-free evidence of a planted unit (module doc): for every unit of ``layer`` (default
    :func:`veneer.neurons.default_layer`) and of the logits (:func:`logit_layer`), ``off_range_slope`` (along the
    rays through the natural images ``x``, up to ``contrast`` times their intensity) and ``gate_jump`` (``points``
    points from the unit's top image in ``x`` to its Fourier visualisation of ``steps`` steps,
    :func:`veneer.neurons.visualize`). Each
    component is the largest :func:`robust_z` of its statistic over the units of a layer, over the layers: one
    unit far out among the units of its own model, which no twin is needed to see. Images only."""
    start = time.perf_counter()
    x = check_tensor("x", x, ndim=4)
    check_positive("steps", steps, integer=True)
    if not contrast > 2:
        raise ValueError(f"contrast must be > 2 (how far beyond the natural intensities to probe; the slope beyond "
                         f"them is taken from contrast / 2 on), got {contrast!r}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 3:
        raise ValueError(f"points must be an int >= 3 (points along each path), got {points!r}")
    components, evidence = {"off_range_slope": -float("inf"), "gate_jump": -float("inf")}, {}
    layers = _audited_layers(model, x, layer)
    for name in layers:
        natural_values = _units(model, name, x)
        if natural_values.shape[1] < 3:
            raise ValueError(f"layer {name!r} has {natural_values.shape[1]} units; the robust z-score compares at "
                             f"least 3")
        floor = natural_values.amax(0).clamp(min=0).median().clamp(min=1e-6)
        visualizations = visualize(model, name, input_shape=tuple(x.shape[1:]), steps=steps, seed=seed)
        statistics = {"off_range_slope": _off_range_slope(model, name, x, contrast, floor),
                      "gate_jump": _gate_jump(model, name, x, natural_values, visualizations, points, floor)}
        evidence[name] = {}
        for component, values in statistics.items():
            z = robust_z(values)
            components[component] = max(components[component], z.max().item())
            evidence[name][component] = {"top_units": z.argsort(descending=True)[:3].tolist(),
                                         "top_z": z.sort(descending=True).values[:3].tolist(),
                                         "median": values.median().item()}
    return TestResult("visualization_outliers", components,
                      {"layers": layers, "steps": steps, "contrast": contrast, "points": points, **evidence},
                      time.perf_counter() - start)


def _applies(model: nn.Module, ctx: AuditContext) -> str | None:
    if ctx.x.ndim == 4 and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return None
    return "needs image inputs and a Conv2d layer whose units are visualised"


register_test(AuditTest(
    "visualization_consistency", source="Bareeva et al. 2025 (gradient slingshot); Geirhos et al. 2024, Sec. 3",
    meaning="Whether activation maximisation of any unit of the default layer or the logits falls into a planted "
            "attractor: a synthetic activation far above the natural maximum, or visualisations that agree across "
            "parameterisations (gradient slingshot, Bareeva et al. 2025; silent units and fooling circuits, "
            "Geirhos et al. 2024).",
    tolerance=0.15, applies=_applies,
    options={"fast": {"consistency_steps": 48, "consistency_rows": 1000},
             "full": {"consistency_steps": 200, "consistency_rows": 4000}},
    run=lambda model, ctx, reference=None: visualization_consistency(
        model, ctx.manifold[:ctx.options["consistency_rows"]].view(-1, *ctx.x.shape[1:]),
        steps=ctx.options["consistency_steps"], seed=ctx.seed)))


def _images(model: nn.Module, ctx: AuditContext) -> str | None:
    return None if ctx.x.ndim == 4 else "needs image inputs (B, C, H, W) whose units are visualised"


# The prior was set on the tuning models only -- the bundled MNIST CNN seeds 0 and 1, MNIST ResNet seed 0 and
# digits MLP seed 0, whose largest component was 2.3-8.4 (the digits MLP's hidden layer, off_range_slope) -- so
# that a component above 12 flags; the held-out clean models (MNIST CNN seed 2, digits MLP seed 1), the
# constructions and the slingshots are experiments/slingshot_audit.py, summary docs/img/slingshot_audit.json
# (docs/neurons.md).
register_test(AuditTest(
    "visualization_outliers", source="Geirhos et al. 2024, Sec. 3 (silent units, fooling circuits); Iglewicz & "
                                     "Hoaglin 1993 (modified z-score)",
    meaning="Whether one unit of the default layer or the logits stands out from the other units of the same model: "
            "a response above the natural intensity range far steeper than theirs (a silent unit), or a step in its "
            "activation on the way from its top natural image to its visualisation (a fooling circuit's gate; "
            "Geirhos et al. 2024). Twin-free (robust z against the model's own units), scored against a fixed prior.",
    # tolerance 5 (was 3, a component above 12 flagged) since the zoo (experiments/audit_zoo.py): its tuning models
    # already showed clean and benign digits MLPs up to 14.6 (off_range_slope: fine-tune, int8, FGSM, augmentation of
    # seed 10) and a ResNet at 13.0 (gate_jump, int8), and its held-out round flagged 5 of 10 digits MLPs; set after
    # that round was seen, so its second held-out round (seeds 30-33) checks it
    tolerance=5.0, prior_only=True, prior=(3.0, 0.0), applies=_images,
    options={"fast": {"outlier_steps": 48, "outlier_rows": 1000},
             "full": {"outlier_steps": 200, "outlier_rows": 4000}},
    run=lambda model, ctx, reference=None: visualization_outliers(
        model, ctx.manifold[:ctx.options["outlier_rows"]].view(-1, *ctx.x.shape[1:]),
        steps=ctx.options["outlier_steps"], seed=ctx.seed)))
