"""Audit tests as objects: :class:`AuditTest`, the ordered registry, the audit's effort table and what a test
sees (:class:`AuditContext`).

A test is an :class:`AuditTest`: its ``name``, the ``meaning`` and ``source`` the report shows, its calibration
``tolerance`` (in the units of its statistic, :mod:`veneer.audit.calibration`), its own ``options`` per effort
level, ``applies`` (why it cannot run on a model and data, or ``None``) and ``run`` (the model -> a
:class:`~veneer.audit.base.TestResult`). :func:`register_test` adds one to the tests every :class:`veneer.audit.Audit`
runs; an unregistered instance can be passed to ``Audit(tests=[...])`` directly. A test written outside the
package::

    from veneer.audit import AuditTest, TestResult, register_test

    def mean_logit(model, ctx, reference=None):
        return TestResult("mean_logit", {"logit": model(ctx.x).abs().mean().item()})

    register_test(AuditTest("mean_logit", meaning="Mean absolute logit ...", source="...", tolerance=0.5,
                            run=mean_logit))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from veneer.audit.base import TestResult, build_explainers, differentiable
from veneer.explain import BACKGROUND_METHODS, Explainer

# The options every test shares (explained inputs, twins, explainers, training rows), per effort level; each test
# adds its own (AuditTest.options).
EFFORTS: dict[str, dict[str, Any]] = {
    "fast": {"samples": 32, "twins": 3, "twin_steps": 250, "ig_steps": 16, "manifold_rows": 4000,
             "lime_samples": 2000, "shap_samples": 512},
    "full": {"samples": 96, "twins": 5, "twin_steps": 600, "ig_steps": 32, "manifold_rows": 20000,
             "lime_samples": 5000, "shap_samples": None},
}


def occlusion_window(x: torch.Tensor) -> int:
    """Occlusion's square window: 5 pixels on images of at least 16x16, else 3."""
    return 5 if x.ndim == 4 and min(x.shape[-2:]) >= 16 else 3


@dataclass
class AuditContext:
    """What every test of one audit sees: inputs ``x`` to explain and their labels ``y``, training inputs
    ``manifold`` (tangent space; background of LIME and KernelSHAP) and their labels ``manifold_y`` (influence
    functions), the protected ``group`` (or None), the method names, the options (the effort level's, every
    test's own, the user's overrides) and the seed.

    :meth:`explainers` builds the methods for a model once per context (:func:`veneer.audit.run_tests` gives each
    call a fresh copy, :meth:`fresh`)."""

    x: torch.Tensor
    y: torch.Tensor
    manifold: torch.Tensor
    manifold_y: torch.Tensor
    group: torch.Tensor | None
    methods: tuple[str, ...]
    options: dict[str, Any]
    seed: int
    _built: dict[int, tuple[nn.Module, dict[str, Explainer]]] = field(default_factory=dict, init=False, repr=False,
                                                                       compare=False)

    def fresh(self) -> "AuditContext":
        """The same context without the explainers built so far."""
        return AuditContext(self.x, self.y, self.manifold, self.manifold_y, self.group, self.methods, self.options,
                            self.seed)

    def explainers(self, model: nn.Module) -> dict[str, Explainer]:
        """The methods (all but LIME and KernelSHAP, ``BACKGROUND_METHODS``) bound to ``model``: IG with
        ``options["ig_steps"]`` steps, Occlusion with :func:`occlusion_window` windows; built once per model."""
        key = id(model)
        if key not in self._built:
            names = [m for m in self.methods if m not in BACKGROUND_METHODS]
            self._built[key] = (model, build_explainers(model, names, self.options["ig_steps"],
                                                        occlusion_window(self.x)))
        return self._built[key][1]

    def differentiable_explainers(self, model: nn.Module) -> dict[str, Explainer]:
        """:meth:`explainers` whose attributions are gradients of the model (all but Occlusion)."""
        return differentiable(self.explainers(model))

    def every_explainer(self, model: nn.Module) -> dict[str, Explainer]:
        """:meth:`explainers` and LIME/KernelSHAP (tabular rows only) with the training rows ``manifold`` as
        background, ``options["lime_samples"]`` and ``options["shap_samples"]`` samples (built on each call)."""
        agnostic = build_explainers(model, [m for m in self.methods if m in BACKGROUND_METHODS],
                                    background=self.manifold, lime_samples=self.options["lime_samples"],
                                    shap_samples=self.options["shap_samples"])
        return {**self.explainers(model), **agnostic}

    def baseline(self) -> float | torch.Tensor:
        """Deletion baseline: black for images, the training mean of each column for tabular rows."""
        return 0.0 if self.x.ndim == 4 else self.manifold.mean(0)


class AuditTest:
    """One audit test. Subclass it (class attributes, methods ``applies`` and ``run``) or make an instance with
    keyword arguments (``run=`` and ``applies=`` functions of ``(model, ctx[, reference])``).

    * ``name``: the key of the test in the results, the calibration and ``audit.json``;
    * ``meaning``: one or two sentences for the report: what the statistic measures and why a manipulated model
      moves it, with the paper;
    * ``source``: the citation (every built-in test has one; may be empty);
    * ``tolerance`` (> 0): added in quadrature to the reference models' spread, in the statistic's units
      (:meth:`veneer.audit.Calibration.score`);
    * ``options``: ``{}`` or ``{effort: {key: value}}`` for every level of :data:`EFFORTS` with the same keys:
      the test's own settings, read from ``ctx.options`` (``Audit(options=...)`` overrides them);
    * ``needs_reference``: runs only against a given reference model (``run`` gets it as ``reference``) and is
      not run on the reference models; its statistic is scored against ``prior`` ``(mean, sd)``;
    * ``prior_only``: never run on twins or reference models; its statistic is scored against ``prior`` alone
      (a test from an invariance of the function, whose value on clean models is known: a twin copies the
      forward code and stored tensors of the audited model, :func:`veneer.audit.inherited_state`, so it would
      carry the same manipulation);
    * ``applies(model, ctx)``: ``None`` when the test can run, else the reason it cannot (listed in
      ``audit.json``'s ``config.skipped``);
    * ``run(model, ctx, reference=None)``: a :class:`~veneer.audit.base.TestResult` named ``name`` whose
      components are oriented so that larger is more suspicious.
    """

    name: str = ""
    meaning: str = ""
    source: str = ""
    tolerance: float = 0.1
    options: dict[str, dict[str, Any]] = {}
    needs_reference: bool = False
    prior_only: bool = False
    prior: tuple[float, float] | None = None

    def __init__(self, name: str | None = None, *, meaning: str | None = None, source: str | None = None,
                 tolerance: float | None = None, options: dict[str, dict[str, Any]] | None = None,
                 needs_reference: bool | None = None, prior_only: bool | None = None,
                 prior: tuple[float, float] | None = None,
                 run: Callable[..., TestResult] | None = None,
                 applies: Callable[[nn.Module, AuditContext], str | None] | None = None):
        given = {"name": name, "meaning": meaning, "source": source, "tolerance": tolerance, "options": options,
                 "needs_reference": needs_reference, "prior_only": prior_only, "prior": prior, "run": run,
                 "applies": applies}
        for key, value in given.items():
            if value is not None:
                setattr(self, key, value)

    def applies(self, model: nn.Module, ctx: AuditContext) -> str | None:
        """``None``: the test runs on ``model`` and ``ctx``; else why it does not apply."""
        return None

    def run(self, model: nn.Module, ctx: AuditContext, reference: nn.Module | None = None) -> TestResult:
        raise NotImplementedError(f"audit test {self.name!r} must define run(model, ctx, reference=None)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def check_test(test: Any, argument: str = "test") -> AuditTest:
    """``test`` if it is a complete :class:`AuditTest`, else a ValueError/TypeError naming ``argument``."""
    if not isinstance(test, AuditTest):
        raise TypeError(f"{argument} must be an AuditTest instance (or a registered test's name), "
                        f"got {type(test).__name__}")
    if not isinstance(test.name, str) or not test.name.isidentifier():
        raise ValueError(f"{argument}.name must be a non-empty identifier (letters, digits, _), got {test.name!r}")
    label = f"{argument} {test.name!r}"
    if not isinstance(test.meaning, str) or not test.meaning.strip():
        raise ValueError(f"{label} needs a non-empty meaning (what its statistic measures, shown in the report)")
    if not isinstance(test.source, str):
        raise ValueError(f"{label}: source must be a string (the citation; may be empty), got {test.source!r}")
    if isinstance(test.tolerance, bool) or not isinstance(test.tolerance, (int, float)) \
            or not (math.isfinite(test.tolerance) and test.tolerance > 0):
        raise ValueError(f"{label}: tolerance must be a finite number > 0, got {test.tolerance!r}")
    if not isinstance(test.options, dict) or (test.options and set(test.options) != set(EFFORTS)):
        raise ValueError(f"{label}: options must be {{}} or a dict with one entry per effort level "
                         f"{sorted(EFFORTS)}, got {test.options!r}")
    keys = [set(level) for level in test.options.values()]
    if keys and any(k != keys[0] for k in keys):
        raise ValueError(f"{label}: options must name the same keys at every effort level, got {test.options!r}")
    shared = sorted(set().union(*keys) & set(EFFORTS["fast"])) if keys else []
    if shared:
        raise ValueError(f"{label}: options {shared} are the audit's shared options (EFFORTS); read them from "
                         f"ctx.options instead of declaring them")
    if (test.needs_reference or test.prior_only) and (not isinstance(test.prior, tuple) or len(test.prior) != 2):
        raise ValueError(f"{label}: a test that needs a reference model or is scored against its prior only needs "
                         f"a prior (mean, sd), got {test.prior!r}")
    if not callable(test.run) or not callable(test.applies):
        raise TypeError(f"{label}: run and applies must be callable")
    return test


_REGISTRY: dict[str, AuditTest] = {}


def registered_tests() -> dict[str, AuditTest]:
    """``{name: test}`` of the registered tests, in registration order (a copy)."""
    return dict(_REGISTRY)


def option_owners(tests) -> dict[str, str]:
    """``{option key: test name}`` over ``tests``; a ValueError when two tests declare the same key."""
    owners: dict[str, str] = {}
    for test in tests:
        for key in next(iter(test.options.values()), {}):
            if owners.get(key, test.name) != test.name:
                raise ValueError(f"option {key!r} of test {test.name!r} is already an option of test "
                                 f"{owners[key]!r}: name it differently")
            owners[key] = test.name
    return owners


def register_test(test, replace: bool = False):
    """Add ``test`` (an :class:`AuditTest` instance, or a subclass, which is instantiated) to the registered
    tests: :class:`veneer.audit.Audit` runs it by default and accepts its name in ``tests=``. A name already
    registered raises ValueError unless ``replace=True`` (the test then keeps its place in the order). Returns
    ``test``, so it also decorates a subclass::

        @register_test
        class MeanLogit(AuditTest):
            name, meaning, source, tolerance = "mean_logit", "...", "...", 0.5
            def run(self, model, ctx, reference=None): ...
    """
    instance = test() if isinstance(test, type) and issubclass(test, AuditTest) else test
    check_test(instance)
    if instance.name in _REGISTRY and not replace:
        raise ValueError(f"an audit test named {instance.name!r} is already registered; pass replace=True to "
                         f"replace it, or unregister_test({instance.name!r}) first")
    option_owners([t for n, t in _REGISTRY.items() if n != instance.name] + [instance])
    _REGISTRY[instance.name] = instance
    return test


def unregister_test(name: str) -> AuditTest:
    """Remove the registered test ``name`` and return it; a ValueError listing the registered names if none."""
    if name not in _REGISTRY:
        raise ValueError(f"no audit test named {name!r} is registered; registered: {list(_REGISTRY)}")
    return _REGISTRY.pop(name)


def resolve_tests(tests) -> list[AuditTest]:
    """The tests an audit runs: every registered test for ``None``, else ``tests`` (names of registered tests
    and :class:`AuditTest` instances, in any mix) with the registered ones in registration order followed by
    the others in the order given."""
    if tests is None:
        return list(_REGISTRY.values())
    if isinstance(tests, (str, AuditTest)) or not hasattr(tests, "__iter__"):
        raise TypeError(f"tests must be a list of test names or AuditTest instances, got {tests!r}")
    chosen = []
    for i, test in enumerate(tests):
        if isinstance(test, str):
            if test not in _REGISTRY:
                raise ValueError(f"tests must be names of registered tests {list(_REGISTRY)} or AuditTest "
                                 f"instances, got unknown {test!r}")
            test = _REGISTRY[test]
        chosen.append(check_test(test, f"tests[{i}]"))
    names = [t.name for t in chosen]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"tests must name each test once, got {twice} more than once")
    order = {test: i for i, test in enumerate(_REGISTRY.values())}
    registered = sorted((t for t in chosen if order.get(t) is not None), key=order.__getitem__)
    return registered + [t for t in chosen if t not in order]
