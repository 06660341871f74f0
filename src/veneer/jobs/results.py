"""What each job returns: one typed result per run kind.

A result holds the run's measures (``metrics()``: the content of ``metrics.json``, JSON values only) and,
apart from them, what is not JSON (the fine-tuned model, the audit's full result, paths); its class attribute
``kind`` names the run kind, which :meth:`veneer.runs.RunDir.write_result` writes as ``metrics.json``'s
top-level ``"kind"``; ``summary()`` is the line the ``veneer`` command prints. A model never travels inside
the measures::

    result = manipulate_and_save(model, explainer, objective, data, "runs/com", alpha=0.1, lr=1e-3)
    result.model                         # the manipulated copy
    result.metrics()["budget"]           # None, or min_agreement / best_step / best_val_attack
    RunDir("runs/com", config, 0, resume=True).write_result(result)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from veneer.finetune import FineTuneResult

BUDGET_MEASURES = ("min_agreement", "best_step", "best_val_attack", "budget_checks", "budget_checks_needed",
                   "short_horizon")


def budget_measures(result: FineTuneResult) -> dict[str, Any] | None:
    """The behaviour budget's measures of a fine-tune (:class:`veneer.finetune.BehaviourBudget`), ``None``
    when it ran without one."""
    if "min_agreement" not in result.measures:
        return None
    return {key: result.measures[key] for key in BUDGET_MEASURES}


@dataclass
class JobResult:
    """A job's result: ``values`` are its measures as written to ``metrics.json`` (without ``"kind"``)."""

    kind: ClassVar[str]
    values: dict[str, Any]

    def metrics(self) -> dict[str, Any]:
        """The run's measures, JSON values only (``metrics.json`` less its ``"kind"``)."""
        return dict(self.values)

    def summary(self) -> str:
        """What the command prints about the run (before ``wrote DIR``)."""
        return f"{self.kind} run"


@dataclass
class ExplainRun(JobResult):
    kind: ClassVar[str] = "explain"

    def summary(self) -> str:
        v = self.values
        return f"{v['n']} inputs explained by {', '.join(v['methods'])}"


def _attack_rows(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"{r['attack']:>11} {r['method']:>9} eps={r['eps']:<6g} label kept {r['label_kept_rate']:.2f}  "
                     f"top-k {r['topk_intersection']:.3f}  spearman {r['spearman']:.3f}  COM shift {r['com_shift']:.2f}"
                     for r in rows)


@dataclass
class AttackInputRun(JobResult):
    """``veneer attack-input``: one row per attack x method x eps under ``results``."""

    kind: ClassVar[str] = "attack-input"

    def summary(self) -> str:
        return _attack_rows(self.values["results"])


@dataclass
class AttackSweepRun(AttackInputRun):
    """``veneer attack-input --sweep`` (Ghorbani et al. 2019, Fig. 3)."""

    kind: ClassVar[str] = "attack-input sweep"


@dataclass
class InfluenceAttackRun(JobResult):
    """``veneer attack-input --attack influence``: the sign attack vs random sign (Ghorbani et al. 2019, Fig. 4)."""

    kind: ClassVar[str] = "attack-input"

    def summary(self) -> str:
        k = self.values["k"]
        return "\n".join(f"{r['attack']:>9} eps={r['eps']:<6g} label kept {r['label_kept_rate']:.2f}  "
                         f"spearman {r['spearman']:.3f}  top-{k} {r[f'top{k}_intersection']:.3f}"
                         for r in self.values["results"])


@dataclass
class InfluenceRun(JobResult):
    kind: ClassVar[str] = "influence"

    def summary(self) -> str:
        return f"{self.values['n_test']} test samples x {self.values['n_train']} training samples"


@dataclass
class FineTuneRun(JobResult):
    """A fine-tuning attack's result: ``model`` is the fine-tuned copy (never in the measures); ``budget``
    the behaviour budget's measures (:func:`budget_measures`), written as ``metrics.json``'s ``"budget"``."""

    model: nn.Module | None = field(default=None, repr=False)
    budget: dict[str, Any] | None = None

    def metrics(self) -> dict[str, Any]:
        return {**self.values, "budget": self.budget}

    def _budget_note(self) -> str:
        if self.budget is None:
            return ""
        return (f"; behaviour budget min_agreement {self.budget['min_agreement']:g}: best step "
                f"{self.budget['best_step']}")


@dataclass
class ManipulateRun(FineTuneRun):
    """``veneer manipulate``: steps, seconds, the last history record, training accuracy (and, under torchrun,
    ``world_size``)."""

    kind: ClassVar[str] = "manipulate"

    def summary(self) -> str:
        return f"{self.values['steps']} steps in {self.values['seconds']:.1f} s{self._budget_note()}"


@dataclass
class ScaffoldingRun(JobResult):
    """``veneer manipulate --objective scaffolding`` (Slack et al. 2020); ``sensitive`` is the column's name."""

    kind: ClassVar[str] = "scaffolding"
    sensitive: str = ""

    def summary(self) -> str:
        v, s = self.values, self.sensitive
        lines = [f"detector accuracy {v['detector_accuracy']:.1%}, fidelity to the biased model on test rows "
                 f"{v['fidelity_test']:.1%}"]
        lines += [f"{row['method']:<12s} {row['model']:<22s} {s} top-1 {row[f'{s} top-1']:.1%}, "
                  f"top-3 {row[f'{s} top-3']:.1%}" for row in v["explanations"]]
        return "\n".join(lines)


@dataclass
class EvaluateRun(JobResult):
    kind: ClassVar[str] = "evaluate"

    def summary(self) -> str:
        return f"objective {self.values['objective']}: transfer to {', '.join(self.values['methods'])}"


@dataclass
class TopkRun(JobResult):
    kind: ClassVar[str] = "neurons topk"

    def summary(self) -> str:
        v = self.values
        return f"top-{v['k']} samples of {v['channels']} channels of layer {v['layer']!r}"


@dataclass
class VisualizeRun(JobResult):
    kind: ClassVar[str] = "neurons visualize"

    def summary(self) -> str:
        return f"synthetic visualisations of {len(self.values['channels'])} channels of layer {self.values['layer']!r}"


@dataclass
class PushDownRun(FineTuneRun):
    """``veneer neurons push-down`` (Nanfack et al. 2024, Eq. 3), Table-1 measures."""

    kind: ClassVar[str] = "neurons push-down"

    def summary(self) -> str:
        v = self.values
        return (f"{v['attack']}: accuracy {v['accuracy_before']:.4f} -> {v['accuracy_after']:.4f}, held-out tau "
                f"{v['heldout']['summary']['tau']:.3f}, train top-{v['k']} overlap "
                f"{v['train']['summary']['topk_overlap']:.3f}{self._budget_note()}")


@dataclass
class PushUpRun(PushDownRun):
    """``veneer neurons push-up`` (Eq. 4), with the decoy share of every top-k."""

    kind: ClassVar[str] = "neurons push-up"


@dataclass
class FairwashRun(FineTuneRun):
    """``veneer neurons fairwash`` (Eq. 5): KS, balance, DDI/DEO and accuracy before and after."""

    kind: ClassVar[str] = "neurons fairwash"

    def summary(self) -> str:
        b, a = self.values["before"], self.values["after"]
        return (f"fairwash: mean KS {b['ks_attacked_mean']:.3f} -> {a['ks_attacked_mean']:.3f}, balance "
                f"{b['balance_attacked_mean']:.3f} -> {a['balance_attacked_mean']:.3f}, accuracy {b['accuracy']:.4f} "
                f"-> {a['accuracy']:.4f}, DDI {b['ddi']:.4f} -> {a['ddi']:.4f}, DEO {b['deo']:.4f} -> "
                f"{a['deo']:.4f}{self._budget_note()}")


@dataclass
class DemoRun(JobResult):
    """``veneer demo``: the levels' measures nested under ``explanations``, ``attacks``, ``manipulate``,
    ``neurons``."""

    kind: ClassVar[str] = "demo"

    def summary(self) -> str:
        return f"demo of {self.values['model']} (test accuracy {self.values['test_accuracy']:.4f}): " \
               f"{', '.join(k for k in ('explanations', 'attacks', 'manipulate', 'neurons') if k in self.values)}"


@dataclass
class AuditRun(JobResult):
    """``veneer audit``: verdict, score, z_max, seconds and the flagged tests; ``audit`` is the full
    :class:`veneer.audit.AuditResult`, ``paths`` the audit's own files (``audit.json``, ``audit.md``)."""

    kind: ClassVar[str] = "audit"
    audit: Any = field(default=None, repr=False)
    paths: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.audit}\ncalibration: {self.audit.config['calibration']}; {self.values['seconds']:.0f} s; "
                f"wrote {self.paths['json']}, {self.paths['markdown']}")


@dataclass
class TrainRun(JobResult):
    """``veneer train``: train/test accuracy and seconds of a bundled model; ``name`` the model, ``weights``
    the file written."""

    kind: ClassVar[str] = "train"
    name: str = ""
    weights: Path | None = None

    def summary(self) -> str:
        return (f"{self.name}: test accuracy {self.values['test_accuracy']:.4f} in "
                f"{self.values['train_seconds']:.1f} s -> {self.weights}")


@dataclass
class VisualizationAttackRun(FineTuneRun):
    """A manipulation of one unit's synthetic visualisation (issue 24): SSIM/Pearson of every visualiser variant to
    the target, before and after, and the unit's behaviour on natural data."""

    def summary(self) -> str:
        v = self.values
        ssims = [s["ssim"] for s in v["after"]["visualizations"].values()]
        return (f"{v['attack']} of unit {v['unit']} of layer {v['layer']}: SSIM to the target {min(ssims):.2f}-"
                f"{max(ssims):.2f} over {len(ssims)} visualisation variants, accuracy {v['before']['accuracy']:.4f}"
                f" -> {v['after']['accuracy']:.4f}{self._budget_note()}")


@dataclass
class SlingshotRun(VisualizationAttackRun):
    """``veneer neurons slingshot`` (Bareeva et al. 2025)."""

    kind: ClassVar[str] = "neurons slingshot"


@dataclass
class SilentUnitRun(VisualizationAttackRun):
    """``veneer neurons silent-unit`` (Geirhos et al. 2024, Sec. 3.2)."""

    kind: ClassVar[str] = "neurons silent-unit"


@dataclass
class FoolingCircuitRun(VisualizationAttackRun):
    """``veneer neurons fooling-circuit`` (Geirhos et al. 2024, Sec. 3.1)."""

    kind: ClassVar[str] = "neurons fooling-circuit"
