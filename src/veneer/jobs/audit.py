"""The audit of a model's explanations with its files (``veneer audit``): ``audit.json``, ``audit.md`` and the
verdict's measures (see :mod:`veneer.audit`)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from veneer.audit import EFFORTS, Audit, Calibration, registered_tests
from veneer.data import LabeledData
from veneer.jobs.results import AuditRun
from veneer.models import resolve_model
from veneer.report.audit import write_audit
from veneer.runs import RunDir

__all__ = ["EFFORTS", "audit_tests", "audit_reference", "audit_job"]


def audit_tests() -> list[tuple[str, str]]:
    """``(name, meaning)`` of every registered audit test (:func:`veneer.audit.registered_tests`), in order."""
    return [(name, test.meaning) for name, test in registered_tests().items()]


def audit_reference(reference: str | None = None, weights: str | None = None,
                    calibration: str | Path | None = None) -> nn.Module | Calibration | None:
    """What the audit compares against: the model ``reference`` (with ``weights``), the calibration saved in an
    earlier audit's ``audit.json`` (``calibration``), or ``None`` (clean twins trained by the audit)."""
    if reference is not None and calibration is not None:
        raise ValueError("pass either --reference or --calibration, not both")
    if reference is not None:
        return resolve_model(reference, weights)
    if calibration is not None:
        return Calibration.from_json(json.loads(Path(calibration).read_text())["calibration"])
    return None


def audit_job(model: nn.Module, train: LabeledData, test: LabeledData, run_dir: RunDir, *,
              methods: list[str] | None = None, effort: str = "fast", reference=None,
              tests: list | None = None, twin_model: nn.Module | None = None, seed: int = 0,
              progress: bool = False) -> AuditRun:
    """:class:`veneer.audit.Audit` of ``model`` at ``effort`` (twins and tangent spaces on ``train``, explanations
    of ``test``; ``tests``: names of registered tests or :class:`veneer.audit.AuditTest` objects, ``None`` for every
    registered test that applies; ``twin_model``: the architecture the twins copy, default ``model``'s); writes ``audit.json`` and ``audit.md``; returns the verdict, score, z_max, seconds and the
    flagged tests (``result.audit``: the full :class:`veneer.audit.AuditResult`)."""
    found = Audit(model, methods=methods, reference=reference, tests=tests, seed=seed, progress=progress,
                  effort=effort, twin_model=twin_model)(train, test)
    run_dir.start()
    paths = write_audit(found, run_dir.path)
    return AuditRun({"verdict": found.verdict, "score": found.score, "z_max": found.z_max, "seconds": found.seconds,
                     "flagged": [n for n, t in found.tests.items() if t["flag"]]}, audit=found, paths=paths)
