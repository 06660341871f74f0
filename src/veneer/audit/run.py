"""The audit: run every applicable test on the model and on reference models, score, and give a verdict."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import veneer.audit.builtin  # noqa: F401  (registers the built-in tests)
from veneer.audit.base import TestResult, build_explainers, default_methods, predictions, unseen_by, usable_methods
from veneer.audit.calibration import (Z_FLAG, Calibration, combined_z, measured_false_positive_rate,
                                      nominal_false_positive_rate, train_twins, verdict)
from veneer.audit.registry import (EFFORTS, AuditContext, AuditTest, occlusion_window, option_owners,
                                   registered_tests, resolve_tests)
from veneer.checks import check_eval_mode
from veneer.data import LabeledData, as_labeled
from veneer.explain import BACKGROUND_METHODS, METHODS, describe_dropped, heatmap
from veneer.models import has_gradients
from veneer.progress import progress_bar

# options renamed since: old name -> new name (the old one still works, with a DeprecationWarning)
RENAMED_OPTIONS = {"eps_grid": "eps_values"}


def __getattr__(name: str):
    """``TESTS``: the names of the registered tests, in order (a live view); ``BUDGETS``: the deprecated name of
    :data:`EFFORTS`."""
    if name == "TESTS":
        return tuple(registered_tests())
    if name == "BUDGETS":
        warnings.warn("veneer.audit.BUDGETS is deprecated: use veneer.audit.EFFORTS (the audit's effort levels)",
                      DeprecationWarning, stacklevel=2)
        return EFFORTS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def skipped_tests(model: nn.Module, ctx: AuditContext, tests, with_reference: bool) -> dict[str, str]:
    """``{test name: why it does not apply to this model and data}`` for ``tests`` (names or
    :class:`AuditTest` instances; ``None``: every registered test): the test's own ``applies``, and for a test
    that needs a reference model, whether one was given."""
    skip = {}
    for test in resolve_tests(tests):
        reason = "no reference model was given" if test.needs_reference and not with_reference else \
            test.applies(model, ctx)
        if reason is not None:
            if not isinstance(reason, str) or not reason:
                raise TypeError(f"audit test {test.name!r}: applies must return None or the reason it does not "
                                f"apply (a non-empty string), got {reason!r}")
            skip[test.name] = reason
    return skip


# what a test raises when it cannot handle a model (an architecture it does not expect); the audit skips it
TEST_FAILURES = (RuntimeError, ValueError, TypeError, NotImplementedError)


def run_tests(model: nn.Module, ctx: AuditContext, tests, reference: nn.Module | None = None,
              failed: dict[str, str] | None = None, label: str = "the audited model") -> dict[str, TestResult]:
    """``{name: result}`` of ``tests`` (names or :class:`AuditTest` instances) run on ``model``; the explainers
    are built once for all of them (a fresh :meth:`AuditContext.fresh` context). With a ``failed`` dict, a test
    whose ``run`` raises (:data:`TEST_FAILURES`) on this model is left out and recorded there, ``{name: "failed
    on <label>: <error>"}`` (degrade, never refuse); tests already in it are not run."""
    ctx = ctx.fresh()
    results = {}
    for test in resolve_tests(tests):
        if failed is not None and test.name in failed:
            continue
        try:
            result = test.run(model, ctx, reference)
        except TEST_FAILURES as error:
            if failed is None:
                raise
            message = str(error).splitlines()[0] if str(error) else ""
            failed[test.name] = f"failed on {label}: {type(error).__name__}: {message}"
            continue
        if not isinstance(result, TestResult) or result.name != test.name or not result.components:
            raise ValueError(f"audit test {test.name!r} must return a TestResult named {test.name!r} with at "
                             f"least one component, got {result!r}")
        results[test.name] = result
    return results


@dataclass
class AuditResult:
    """The verdict (``clean``/``suspicious``/``manipulated``), its score, the scored tests, the calibration and
    the wall time. :meth:`to_json` gives the ``audit.json`` document."""

    verdict: str
    score: float
    tests: dict[str, dict[str, Any]]
    seconds: float
    config: dict[str, Any]
    calibration: Calibration
    z_max: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "score": self.score, "z_max": self.z_max, "tests": self.tests,
                "seconds": self.seconds, "config": self.config, "calibration": self.calibration.to_json()}

    def __str__(self) -> str:
        flags = [n for n, t in self.tests.items() if t["flag"]]
        dropped = self.config.get("dropped_methods") or {}
        note = f"; methods dropped: {describe_dropped(dropped)}" if dropped else ""
        return f"verdict {self.verdict} (score {self.score:.3f}; flagged: {', '.join(flags) or 'none'}{note})"


class Audit:
    """Can this model's explanations be trusted? ``Audit(model, methods=None, effort="fast", reference=None,
    tests=None, seed=0, z_flag=3.0, options=None, progress=False)(data, eval_data=None)`` runs every applicable
    test (the registered ones, :func:`veneer.audit.registered_tests`), scores each against reference models
    (:mod:`veneer.audit.calibration`) and returns an :class:`AuditResult`.

    ``data``: training data of the model's task (any form :func:`veneer.data.as_labeled` takes): the twins are
    trained on it and the tangent spaces estimated from it. ``eval_data``: the inputs explained (default: a
    seeded sample of ``data``). ``methods``: explanation method names (default Gradient, GxI, IG, LRP and for
    image CNNs Grad-CAM and Occlusion); a method that cannot explain the model (or a given reference model) is
    dropped with its reason and the tests run with the others (``config["dropped_methods"]``, ``config["unseen"]``;
    a ``ValueError`` only when none is left). ``effort``: ``"fast"`` or ``"full"``: the shared options of
    :data:`EFFORTS` and every test's own options at that level (``budget=`` is its deprecated name).
    ``reference``: ``None`` (clean twins trained here), a model or list of models (e.g. the model before
    fine-tuning), or a :class:`Calibration` from an earlier audit of the same architecture and data (no cost).
    ``twin_model``: a model of the same task whose architecture the auditor trusts: the twins are re-initialised
    copies of it instead of the audited model (whose forward code and stored tensors every twin would otherwise
    copy, :func:`veneer.audit.inherited_state`; ``config["calibration_cost"]["twins"]["inherited"]`` lists them).
    ``tests``: names of registered tests and :class:`AuditTest` instances (registered or not), in any mix; the
    registered ones run in registration order, then the others in the order given. ``options`` overrides
    entries of the effort level or of a test's options (e.g. ``{"twins": 5}``). The audited model is never
    changed.
    """

    def __init__(self, model: nn.Module, methods=None, effort: str | None = None, reference=None, tests=None,
                 seed: int = 0, z_flag: float = Z_FLAG, options: dict[str, Any] | None = None,
                 progress: bool = False, *, twin_model: nn.Module | None = None, budget: str | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_eval_mode(model)
        if budget is not None:
            if effort is not None:
                raise TypeError("pass effort= only (budget= is its deprecated name), not both")
            warnings.warn("Audit(budget=...) is deprecated: use effort=... (the same values, 'fast' or 'full')",
                          DeprecationWarning, stacklevel=2)
            effort = budget
        effort = "fast" if effort is None else effort
        if effort not in EFFORTS:
            raise ValueError(f"effort must be one of {sorted(EFFORTS)}, got {effort!r}")
        self.tests = resolve_tests(tests)
        self.options = self._options(effort, options or {})
        if methods is not None:
            unknown = [m for m in methods if m not in METHODS]
            if unknown:
                raise ValueError(f"methods must be names from {sorted(METHODS)}, got unknown {unknown}")
            if has_gradients(model) and not any(METHODS[m].differentiable for m in methods):
                raise ValueError(f"methods must include a differentiable method (e.g. gradient): the sanity and "
                                 f"defence tests differentiate the explanation; got {list(methods)}")
        if isinstance(reference, nn.Module):
            reference = [reference]
        if isinstance(reference, list):
            for i, ref in enumerate(reference):
                if not isinstance(ref, nn.Module):
                    raise TypeError(f"reference[{i}] must be a torch.nn.Module, got {type(ref).__name__}")
                check_eval_mode(ref, f"reference[{i}]")
        elif reference is not None and not isinstance(reference, Calibration):
            raise TypeError(f"reference must be None, a model, a list of models or a Calibration, "
                            f"got {type(reference).__name__}")
        self.model, self.methods, self.effort, self.reference = model, methods, effort, reference
        if twin_model is not None:
            if not isinstance(twin_model, nn.Module):
                raise TypeError(f"twin_model must be a torch.nn.Module, got {type(twin_model).__name__}")
            if reference is not None:
                raise ValueError("twin_model= builds the twins; it does not apply with reference= (no twins are "
                                 "trained): pass one of them")
            check_eval_mode(twin_model, "twin_model")
        self.seed, self.z_flag, self.progress, self.twin_model = seed, z_flag, progress, twin_model

    def _options(self, effort: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """The effort level's shared options, every registered and chosen test's own options at that level, and
        ``overrides`` (old option names still work, with a DeprecationWarning)."""
        registered = list(registered_tests().values())
        tests = registered + [t for t in self.tests if t not in registered]
        option_owners(tests)
        table = dict(EFFORTS[effort])
        for test in tests:
            table.update(test.options.get(effort, {}))
        overrides = dict(overrides)
        for old, new in RENAMED_OPTIONS.items():
            if old in overrides:
                warnings.warn(f"option {old!r} is deprecated: use {new!r}", DeprecationWarning, stacklevel=3)
                overrides[new] = overrides.pop(old)
        unknown = sorted(set(overrides) - set(table))
        if unknown:
            raise ValueError(f"options must override keys of EFFORTS[{effort!r}] or of a test's options "
                             f"{sorted(table)}, got unknown {unknown}")
        return {**table, **overrides}

    def _context(self, data: LabeledData, eval_data: LabeledData | None) -> tuple[AuditContext, dict[str, str]]:
        """What the tests see, and ``{method: why}`` for the methods dropped because they cannot explain the model
        (or a given reference model): the audit degrades to the others (:func:`veneer.audit.base.usable_methods`)."""
        options = self.options
        generator = torch.Generator().manual_seed(self.seed)
        source = eval_data if eval_data is not None else data
        rows = torch.randperm(len(source), generator=generator)[:options["samples"]]
        x = source.x[rows]
        manifold_rows = torch.randperm(len(data), generator=generator)[:options["manifold_rows"]]
        group = None
        for values in data.protected.values():
            if set(values.unique().tolist()) <= {0, 1} and len(values.unique()) == 2:
                group = values[manifold_rows]
                break
        methods = tuple(self.methods) if self.methods else default_methods(self.model, x)
        references = self.reference if isinstance(self.reference, list) else []
        methods, dropped = usable_methods([self.model, *references], x, methods)
        if self.methods and dropped:
            warnings.warn(f"methods dropped (they cannot explain this model; the tests run with the others): "
                          f"{describe_dropped(dropped)}", UserWarning, stacklevel=3)
        agnostic = [m for m in methods if m in BACKGROUND_METHODS]
        if agnostic and x.ndim != 2:
            raise ValueError(f"methods {agnostic} explain tabular rows (B, F) only (they perturb features around "
                             f"background rows); these inputs have shape {tuple(x.shape)}: drop them from methods")
        return AuditContext(x, source.y[rows], data.x[manifold_rows], data.y[manifold_rows], group, methods, options,
                            self.seed), dropped

    def __call__(self, data, eval_data=None) -> AuditResult:
        start = time.perf_counter()
        data = as_labeled(data, "data")
        eval_data = None if eval_data is None else as_labeled(eval_data, "eval_data")
        ctx, dropped = self._context(data, eval_data)
        references = self.reference if isinstance(self.reference, list) else None
        skipped = skipped_tests(self.model, ctx, self.tests, references is not None)
        tests = [t for t in self.tests if t.name not in skipped]
        failed: dict[str, str] = {}  # tests that raised on a model (an architecture they do not handle): skipped
        if isinstance(self.reference, Calibration):
            calibration = self.reference
            skipped.update({t.name: "the reused calibration has no reference values for it" for t in tests
                            if t.name not in calibration.values and not t.prior_only})
            tests = [t for t in tests if t.name in calibration.values or t.prior_only]
        elif not has_gradients(self.model) and self.reference is None and self.twin_model is None:
            calibration = Calibration("prior", details={"why": "a black box has no twins: each test's prior"})
            skipped.update({t.name: "the model is not differentiable (a black box: no twins) and the test has no "
                                    "prior" for t in tests if t.prior is None})
            tests = [t for t in tests if t.prior is not None]
        else:
            calibration = self._calibrate(data, eval_data, ctx,
                                          [t for t in tests if not (t.needs_reference or t.prior_only)], failed)
        bar = progress_bar(tests, desc="audit", disable=not self.progress)
        results = {}
        for test in bar:
            bar.set_postfix_str(test.name)
            results.update(run_tests(self.model, ctx, [test], references[0] if references else None, failed))
        skipped.update(failed)
        tests = [t for t in tests if t.name not in failed]
        if not tests:
            raise ValueError(f"no audit test could run on this model: {describe_dropped(skipped)}")
        scored = {test.name: calibration.score(results[test.name], self.z_flag, test) for test in tests}
        label, score = verdict(scored, self.z_flag)
        components = [len(r.components) for r in results.values()]
        config = {"effort": self.effort, "options": ctx.options, "methods": list(ctx.methods), "seed": self.seed,
                  "dropped_methods": dropped, "unseen": unseen_by(dropped, ctx.methods),
                  "tests": [t.name for t in tests], "skipped": skipped, "samples": len(ctx.x), "z_flag": self.z_flag,
                  "calibration": calibration.kind,
                  "calibration_cost": calibration.details,
                  "twin_model": None if self.twin_model is None else type(self.twin_model).__name__,
                  "false_positive_rate": {
                      **measured_false_positive_rate(self.effort, calibration.kind),
                      "gaussian_null": nominal_false_positive_rate(components, self.z_flag)},
                  "seconds_per_test": {n: round(r.seconds, 2) for n, r in results.items()}}
        zs = [t["z"] for t in scored.values()]
        config["combined_z"] = combined_z(zs)
        return AuditResult(label, score, scored, time.perf_counter() - start, config, calibration, max(zs),
                           {"examples": self._examples(ctx)})

    def _examples(self, ctx: AuditContext, count: int = 4) -> dict[str, Any] | None:
        """A few inputs and each method's signed heatmap (image data only), for the report's figure."""
        if ctx.x.ndim != 4:
            return None
        x = ctx.x[:count]
        target = predictions(self.model, x)
        explainers = build_explainers(self.model, ctx.methods, ctx.options["ig_steps"], occlusion_window(x))
        return {"images": x, "heatmaps": {n: heatmap(e(x, target=target)) for n, e in explainers.items()}}

    def _calibrate(self, data: LabeledData, eval_data: LabeledData | None, ctx: AuditContext,
                   tests: list[AuditTest], failed: dict[str, str]) -> Calibration:
        start = time.perf_counter()
        options = ctx.options
        if self.reference is None:
            models, details = train_twins(self.model, data, options["twins"], options["twin_steps"], seed=self.seed,
                                          eval_data=eval_data, progress=self.progress, architecture=self.twin_model)
            calibration = Calibration("twins", details={"twins": details})
        else:
            models = self.reference
            judge = eval_data or data
            accuracies = [(predictions(m, judge.x) == judge.y).float().mean().item() for m in models]
            calibration = Calibration("reference", details={"references": len(models), "accuracy": accuracies})
        kind = "twin" if self.reference is None else "reference model"
        for i, model in enumerate(progress_bar(models, desc="reference models", disable=not self.progress)):
            calibration.add(run_tests(model, ctx, tests, failed=failed, label=f"{kind} {i}"))
        calibration.details["seconds"] = round(time.perf_counter() - start, 2)
        return calibration


def audit(model: nn.Module, data, eval_data=None, **options) -> AuditResult:
    """``Audit(model, **options)(data, eval_data)``."""
    return Audit(model, **options)(data, eval_data)

