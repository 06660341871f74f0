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
"""

from __future__ import annotations

import time

import torch
from torch import nn

from veneer.audit.base import TestResult
from veneer.audit.registry import AuditContext, AuditTest, register_test
from veneer.checks import check_tensor
from veneer.metrics import pearson
from veneer.models import capture
from veneer.neurons import default_layer, record, visualize

__all__ = ["logit_layer", "visualization_consistency"]


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
    natural_max = torch.cat([_units(model, layer, chunk) for chunk in natural.split(512)]).amax(0)
    synthetic = _units(model, layer, fourier).diagonal()  # bounded images: a trained unit's peak stays bounded
    floor = natural_max.abs().clamp(min=1e-6)
    excess = torch.log10(synthetic.clamp(min=1e-6) / floor)
    agreement = torch.nan_to_num(pearson(fourier.flatten(1), pixel.flatten(1)), nan=0.0)
    return excess, agreement


def _units(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """``(B, units)`` activations (Nanfack et al. 2024, Eq. 1): what :func:`visualize` ascends, up to the number
    of positions, which cancels in the ratio."""
    return record(model, layer, x)[layer]


def visualization_consistency(model: nn.Module, x: torch.Tensor, layer: str | None = None, steps: int = 48,
                              seed: int = 0) -> TestResult:
    """``activation_excess`` and ``parametrization_agreement`` (module doc) over every unit of ``layer`` (default
    :func:`veneer.neurons.default_layer`) and of the logits (:func:`logit_layer`), natural images ``x``,
    visualisations of ``steps`` steps. Images only."""
    start = time.perf_counter()
    x = check_tensor("x", x, ndim=4)
    layers = [layer or default_layer(model)]
    logits = logit_layer(model, x[:2])
    if logits is not None and logits not in layers:
        layers.append(logits)
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
