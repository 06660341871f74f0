"""Calibration: each test's statistic scored against the same statistic on reference models, and the verdict.

Reference models are either given (``reference=``: e.g. the model before fine-tuning, or independently
trained ones) or *clean twins* the audit trains itself: deep copies of the audited model re-initialised with
``reset_parameters`` under other seeds and trained for a budgeted number of steps on the given data
(:func:`train_twins`). For every component ``c`` of a test the reference values give a mean ``mu_c`` and a
standard deviation ``s_c``; the audited value ``v_c`` gets

    z_c = (v_c - mu_c) / sqrt(s_c^2 + tol^2)

with ``tol`` the test's tolerance (:attr:`veneer.audit.AuditTest.tolerance`, in the statistic's units: it covers
what a handful of reference models cannot estimate, and the difference between a short-trained twin and a fully
trained model), multiplied by :data:`COMPONENT_TOLERANCE_FACTOR` for components known to vary more (Grad-CAM).
A test's ``z`` is its largest component ``z``; its score is ``Phi(z - z_flag)`` (0.5 exactly at the flag
threshold) and it flags when ``z > z_flag``.

Verdict (:func:`verdict`): ``manipulated`` when two or more tests flag, one test has ``z > 2 z_flag`` or the
mean of the three largest test z exceeds 3; ``suspicious`` when one test flags or that mean exceeds 2; else
``clean``. :func:`nominal_false_positive_rate` gives the verdict's false-positive rate when every component z
is an independent standard normal (Monte Carlo); the rate measured on clean models is in docs/audit.md.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from veneer.audit.base import TestResult
from veneer.audit.registry import AuditTest, registered_tests
from veneer.checks import check_positive
from veneer.data import LabeledData
from veneer.models import accuracy, train

# Components whose values vary between training runs more than three twins show: Grad-CAM's maps are coarse
# (the last conv layer's resolution, upsampled), so their rank statistics move with the training length; on the
# clean zoo models (fully trained, seeds 1-3) their values lay 2-5 twin tolerances above the twins. Their tolerance
# is multiplied by this factor.
# The synthetic-activation excess of visualization_consistency moves with how the model was trained, not only with
# planted attractors: in the zoo's first held-out round (experiments/audit_zoo.py, seeds 10-12, now tuning) a CNN
# fine-tuned on noisy inputs read 1.78 against its twins' 0.44-0.57 and clean CNNs' 0.49-0.53.
COMPONENT_TOLERANCE_FACTOR: dict[str, float] = {"gradcam": 3.0, "activation_excess": 3.0}
Z_FLAG = 3.0
# Verdict thresholds on the mean of the three largest test z (several tests moderately off, none flagged).
COMBINE_TOP = 3
COMBINED_SUSPICIOUS = 2.0
COMBINED_MANIPULATED = 3.0
# False-positive rate of the verdict measured by experiments/audit_zoo.py (summary experiments/results/audit_zoo.json,
# "held_out"; fast effort, twins, default thresholds): held-out clean models flagged / audited, and the setup it was
# measured on. visualization_outliers' tolerance was set after these models were seen (they were 6 of 38 before);
# its second held-out round (digits and Adult MLPs) flagged 1 of 20.
MEASURED_FALSE_POSITIVES = (2, 38)
MEASURED_SETUP = {"effort": "fast", "calibration": "twins",
                  "models": "held-out clean models of the audit zoo: MNIST CNN, MNIST ResNet, digits MLP and Adult MLP "
                            "of seeds 20-23 and six benign changes of each (fine-tune, distillation, pruning, int8, "
                            "adversarial training, augmentation); one tolerance was set after they were seen"}


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The exact two-sided ``level`` confidence interval of a binomial rate (Clopper & Pearson 1934): with
    0 of 13 clean models flagged, the false-positive rate may still be up to 0.25."""
    from scipy.stats import beta

    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - tail, successes + 1, trials - successes))
    return low, high


def measured_false_positive_rate(effort: str, calibration: str) -> dict[str, Any]:
    """What the zoo measured about clean models flagged, stated only for the setup it was measured on: for
    another effort or calibration the rate is ``None`` (not measured)."""
    flagged, audited = MEASURED_FALSE_POSITIVES
    if (effort, calibration) != (MEASURED_SETUP["effort"], MEASURED_SETUP["calibration"]):
        return {"measured": None, "measured_on": f"not measured for effort {effort!r} with {calibration} calibration"}
    return {"measured": flagged / audited, "interval_95": list(clopper_pearson(flagged, audited)),
            "measured_on": f"{flagged} of {audited} clean models of experiments/audit_zoo.py flagged "
                           f"({MEASURED_SETUP['models']})"}


def normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def reinitialized(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``model`` with every module's ``reset_parameters`` run under ``seed`` (eval mode)."""
    twin = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in twin.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return twin.eval()


def inherited_state(model: nn.Module) -> dict[str, list[str]]:
    """What a twin made by :func:`reinitialized` copies from ``model`` instead of learning it again: a
    manipulation placed there is in every twin, so a calibration on twins cannot see it (the auditor then needs
    a reference model or twins of an architecture they trust, ``Audit(twin_model=...)``).

    * ``"parameters"``: parameters of modules without ``reset_parameters`` (they keep their values);
    * ``"buffers"``: buffers of modules without ``reset_parameters`` (batch-norm statistics are reset by theirs);
    * ``"tensors"``: tensors stored as plain module attributes (used by the forward, never reset);
    * ``"forward_code"``: module classes defined outside ``torch.nn`` (their forward code is copied as it is;
      a term written there -- a term every logit shares, a gate, a high-frequency wave -- is in every twin).
    """
    found: dict[str, list[str]] = {"parameters": [], "buffers": [], "tensors": [], "forward_code": []}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if not hasattr(module, "reset_parameters"):
            found["parameters"] += [prefix + p for p, v in module._parameters.items() if v is not None]
            found["buffers"] += [prefix + b for b, v in module._buffers.items() if v is not None]
        found["tensors"] += [prefix + k for k, v in vars(module).items()
                             if isinstance(v, torch.Tensor) and not k.startswith("_")]
        kind = type(module)
        if not kind.__module__.startswith("torch.nn") and f"{kind.__module__}.{kind.__qualname__}" not in \
                found["forward_code"]:
            found["forward_code"].append(f"{kind.__module__}.{kind.__qualname__}")
    return found


def train_twins(model: nn.Module, data: LabeledData, count: int = 3, steps: int = 200, batch_size: int = 64,
                lr: float = 2e-3, seed: int = 0, eval_data: LabeledData | None = None, progress: bool = False,
                architecture: nn.Module | None = None) -> tuple[list[nn.Module], dict[str, Any]]:
    """``count`` clean twins of ``model``: same architecture (:func:`reinitialized` with seeds ``seed + 1000 +
    i``; or copies of ``architecture``, a model of the same task whose architecture the auditor trusts, when
    the audited model's own code or stored tensors may carry the manipulation), each trained by :func:`veneer.models.train` (Adam, cross-entropy, cosine schedule) for about ``steps``
    steps of ``batch_size`` on ``data`` (whole epochs over a seeded subset when ``data`` is larger). Returns
    the twins and their cost: seconds, steps and accuracy on ``eval_data`` (else ``data``) per twin, and what
    every twin inherits from the model it copies (:func:`inherited_state`, under ``"inherited"``)."""
    source = model if architecture is None else architecture
    check_positive("count", count, integer=True)
    check_positive("steps", steps, integer=True)
    rows = min(len(data), steps * batch_size)
    epochs = max(1, round(steps * batch_size / rows))
    twins, details = [], {"count": count, "steps": epochs * (rows // batch_size + (rows % batch_size > 0)),
                          "epochs": epochs, "rows": rows, "lr": lr, "batch_size": batch_size,
                          "seconds": [], "accuracy": [], "inherited": inherited_state(source),
                          "architecture": "audited model" if architecture is None else type(architecture).__name__}
    judge = eval_data or data
    for i in range(count):
        twin_seed = seed + 1000 + i
        subset = torch.randperm(len(data), generator=torch.Generator().manual_seed(twin_seed))[:rows]
        twin = reinitialized(source, twin_seed)
        result = train(twin, data.x[subset], data.y[subset], epochs=epochs, lr=lr, batch_size=batch_size,
                       seed=twin_seed, progress=progress, desc=f"train twin {i + 1}/{count}")
        twins.append(twin.eval())
        details["seconds"].append(round(result.seconds, 2))
        details["accuracy"].append(accuracy(twin, judge.x, judge.y))
    return twins, details


@dataclass
class Calibration:
    """Reference values of every test component: ``values[test][component]`` is the list over reference
    models. ``kind`` is ``"twins"`` or ``"reference"``; ``details`` records the cost (seconds, training steps,
    reference accuracies)."""

    kind: str
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, results: dict[str, TestResult]) -> None:
        """Append one reference model's test results."""
        for name, result in results.items():
            for component, value in result.components.items():
                self.values.setdefault(name, {}).setdefault(component, []).append(float(value))

    def reference_distribution(self, test: str, component: str, prior: tuple[float, float] | None = None
                               ) -> tuple[float, float]:
        """``(mean, sd)`` of the reference values of a component of the test named ``test`` (sd 0 for one
        value); ``prior`` for a test without reference values (one that needs a reference model)."""
        values = self.values.get(test, {}).get(component)
        if not values:
            if prior is None:
                raise ValueError(f"calibration has no reference values for test {test!r} component {component!r}")
            return prior
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        return mean, sd

    def score(self, result: TestResult, z_flag: float = Z_FLAG, test: AuditTest | None = None) -> dict[str, Any]:
        """``{"statistic", "score", "flag", "z", "meaning", "source", "tolerance", "evidence"}`` of one test result
        against the references, with the tolerance and prior of ``test`` (default: the registered test named
        ``result.name``)."""
        if test is None:
            registered = registered_tests()
            if result.name not in registered:
                raise ValueError(f"no audit test named {result.name!r} is registered (registered: "
                                 f"{list(registered)}); pass its AuditTest as test=")
            test = registered[result.name]
        z, reference = {}, {}
        for component, value in result.components.items():
            mean, sd = self.reference_distribution(result.name, component, test.prior)
            tol = test.tolerance * COMPONENT_TOLERANCE_FACTOR.get(component, 1.0)
            z[component] = (value - mean) / math.sqrt(sd ** 2 + tol ** 2)
            reference[component] = {"mean": mean, "sd": sd}
        worst = max(z, key=z.get)
        return {"statistic": result.statistic, "score": normal_cdf(z[worst] - z_flag), "flag": z[worst] > z_flag,
                "z": z[worst], "meaning": test.meaning, "source": test.source, "tolerance": test.tolerance,
                "evidence": {"components": result.components, "z": z, "reference": reference,
                             "tolerance": test.tolerance, "worst": worst, "seconds": result.seconds,
                             **result.evidence}}

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "values": self.values, "details": self.details}

    @classmethod
    def from_json(cls, blob: dict[str, Any]) -> "Calibration":
        return cls(blob["kind"], blob["values"], blob.get("details", {}))


def combined_z(zs: list[float], top: int = COMBINE_TOP) -> float:
    """Mean of the ``top`` largest test z (fewer when fewer tests ran): evidence that accumulates over tests."""
    best = sorted(zs, reverse=True)[:top]
    return sum(best) / len(best)


def verdict(scored: dict[str, dict[str, Any]], z_flag: float = Z_FLAG) -> tuple[str, float]:
    """``(verdict, score)`` from scored tests (each with ``"z"`` and ``"flag"``).

    ``manipulated``: two or more tests flag, or one has ``z > 2 z_flag``, or the mean of the three largest
    test z (:func:`combined_z`) exceeds :data:`COMBINED_MANIPULATED`; ``suspicious``: one test flags or that
    mean exceeds :data:`COMBINED_SUSPICIOUS`; else ``clean``. Score: ``max(Phi(z_max - z_flag),
    Phi(combined - COMBINED_SUSPICIOUS))`` (0.5 where the verdict leaves ``clean``).
    """
    if not scored:
        raise ValueError("no test was scored")
    zs = [t["z"] for t in scored.values()]
    flags = sum(bool(t["flag"]) for t in scored.values())
    strongest, combined = max(zs), combined_z(zs)
    if flags >= 2 or strongest > 2 * z_flag or combined > COMBINED_MANIPULATED:
        label = "manipulated"
    elif flags == 1 or combined > COMBINED_SUSPICIOUS:
        label = "suspicious"
    else:
        label = "clean"
    return label, max(normal_cdf(strongest - z_flag), normal_cdf(combined - COMBINED_SUSPICIOUS))


def nominal_false_positive_rate(components: list[int], z_flag: float = Z_FLAG, draws: int = 20000,
                                seed: int = 0) -> float:
    """P(verdict != clean) for a clean model when each test's z is the largest of its ``components[i]``
    independent standard normals (the null the scores assume), by Monte Carlo with ``draws`` draws."""
    if not components or min(components) < 1:
        raise ValueError(f"components must list >= 1 component per test, got {components!r}")
    generator = torch.Generator().manual_seed(seed)
    tests = torch.stack([torch.randn(draws, n, generator=generator, dtype=torch.float64).amax(1)
                         for n in components], 1)
    top = tests.topk(min(COMBINE_TOP, len(components)), dim=1).values.mean(1)
    flags = (tests > z_flag).sum(1)
    positive = (flags >= 1) | (tests.amax(1) > 2 * z_flag) | (top > COMBINED_SUSPICIOUS)
    return positive.double().mean().item()
