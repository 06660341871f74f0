"""The audit's run directory (audit.json, a markdown summary audit.md and figures) and its report page
(kind ``audit``): the verdict with a figure of every test's z against the flag line first, then what the audit
could not see, the table of every test (z, meaning, source) and each test's evidence."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt

from veneer.report.figures import TONES, explanation_grid, save_figure
from veneer.report.page import (IMAGE_TYPES, Card, Run, Section, Table, flatten, fmt, inline_figure, key_values,
                                records_table, register_section, tone)
from veneer.runs import write_json

if TYPE_CHECKING:  # the report reads audit.json; it needs veneer.audit only to write a result
    from veneer.audit import AuditResult

NEUTRAL_MEANING = ("The test's statistic compared with models known to be clean; a score near 1 means it lies far "
                   "outside their range.")
VERDICT_TONES = {"clean": "good", "suspicious": "warn", "manipulated": "bad"}


def describe_test(name: str, test: dict[str, Any]) -> tuple[str, str]:
    """``(meaning, source)`` of the test ``name``: as its audit.json record says, or, for records written before
    they said it, as the audit registry (:func:`veneer.audit.registered_tests`) does; a neutral sentence for a
    test neither knows."""
    meaning, source = test.get("meaning"), test.get("source")
    if not isinstance(meaning, str) or not isinstance(source, str):
        try:
            from veneer.audit import registered_tests  # here: the page of an old audit needs the registry only
        except ImportError:
            registered = None
        else:
            registered = registered_tests().get(name)
        meaning = meaning if isinstance(meaning, str) else getattr(registered, "meaning", "") or NEUTRAL_MEANING
        source = source if isinstance(source, str) else getattr(registered, "source", "")
    return meaning, source


def __getattr__(name: str) -> Any:
    """``MEANING`` (test name -> what a flag means), which this module had before the audit registry: deprecated."""
    if name == "MEANING":
        warnings.warn("veneer.report.audit.MEANING is deprecated: a test's meaning is "
                      "veneer.audit.registered_tests()[name].meaning (and audit.json's 'meaning')",
                      DeprecationWarning, stacklevel=2)
        from veneer.audit import registered_tests
        return {test_name: test.meaning for test_name, test in registered_tests().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def effort(config: dict[str, Any]) -> str:
    """The audit's effort level (``config["effort"]``; audits written before the rename say ``budget``)."""
    return config["effort"] if "effort" in config else config["budget"]


def z_chart(tests: dict[str, dict[str, Any]], z_flag: float):
    """Horizontal bars: each test's z against the reference models, flagged tests in the page's "bad" colour,
    the flag line dashed; returns the matplotlib figure."""
    names = list(tests)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1))
    ax.barh(names, [tests[n]["z"] for n in names],
            color=[TONES["bad"] if tests[n]["flag"] else TONES["accent"] for n in names])
    ax.axvline(z_flag, color="black", linestyle="--", linewidth=1, label=f"flag at z = {z_flag:g}")
    ax.invert_yaxis()
    ax.set_xlabel("z against reference models (larger = more suspicious)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def score_figure(tests: dict[str, dict[str, Any]], z_flag: float, path: str | os.PathLike) -> Path:
    """:func:`z_chart` as a PNG file."""
    return save_figure(z_chart(tests, z_flag), path)


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def score_sentence(report: dict[str, Any]) -> str:
    """What the audit's score is, with the numbers it comes from: ``max(Phi(z_max - z_flag), Phi(mean of the three
    largest z - 2))`` (:func:`veneer.audit.calibration.verdict`), 0.5 where the verdict leaves clean."""
    from veneer.audit.calibration import COMBINED_SUSPICIOUS  # the constant of the documented formula

    config = report["config"]
    z_max = max(test["z"] for test in report["tests"].values())
    return (f"Score {report['score']:.3f} = max(Phi(z_max - {config['z_flag']:g}), Phi(mean of the three largest z "
            f"- {COMBINED_SUSPICIOUS:g})) with z_max {z_max:.2f} and that mean {config['combined_z']:.2f}: 0.5 where "
            "the verdict leaves clean, near 1 far beyond.")


def markdown_summary(report: dict[str, Any]) -> str:
    """audit.md: verdict, calibration and its cost, and one table row per test."""
    config, calibration = report["config"], report["calibration"]
    fpr = config["false_positive_rate"]
    cost = config.get("calibration_cost", {})
    if config["calibration"] == "twins":
        twins = cost.get("twins", {})
        source = (f"{twins.get('count')} clean twins trained here (same architecture, re-initialised, "
                  f"{twins.get('steps')} steps each; accuracy {[round(a, 3) for a in twins.get('accuracy', [])]}; "
                  f"{cost.get('seconds', 0):.0f} s for training and testing them)")
    else:
        source = (f"{cost.get('references', '?')} given reference model(s) "
                  f"({cost.get('seconds', 0):.0f} s to test them)")
    lines = [f"# Audit: {report['verdict']}", "",
             f"{score_sentence(report)} Effort `{effort(config)}`, {config['samples']} inputs, methods {', '.join(config['methods'])}, "
             f"seed {config['seed']}, {report['seconds']:.0f} s in all.", "",
             f"Calibration: {source}. Verdict rule: manipulated when two tests flag, one has z > "
             f"{2 * config['z_flag']:g} or the mean of the three largest test z (here {config['combined_z']:.2f}) "
             f"exceeds 3; suspicious when one flags or that mean exceeds 2. {false_positive_sentence(fpr)}", "",
             "| test | statistic | z | score | flag | worst component | seconds | meaning |",
             "|---|---|---|---|---|---|---|---|"]
    for name, test in report["tests"].items():
        evidence = test["evidence"]
        lines.append(f"| {name} | {test['statistic']:.4g} | {test['z']:.2f} | {test['score']:.3f} | "
                     f"{'**yes**' if test['flag'] else 'no'} | {evidence['worst']} | {evidence['seconds']:.1f} | "
                     f"{_markdown_cell(describe_test(name, test)[0])} |")
    skipped = config.get("skipped") or {}
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"{name} ({why})" for name, why in skipped.items()) + "."]
    dropped = config.get("dropped_methods") or {}
    if dropped:
        lines += ["", "Methods dropped: " + "; ".join(f"{name} ({why})" for name, why in dropped.items()) + "."
                  + (f" Unseen: {config['unseen']}." if config.get("unseen") else "")]
    lines += ["", "Figures: `scores.png` (z per test), `explanations.png` (example explanations, image data).",
              f"Reference kind: {calibration['kind']}.", ""]
    return "\n".join(lines)


def write_audit(result: AuditResult, directory: str | os.PathLike) -> dict[str, Path]:
    """Write ``audit.json``, ``audit.md``, ``scores.png`` and, for images, ``explanations.png``."""
    directory = Path(directory)
    report = result.to_json()
    paths = {"json": directory / "audit.json", "markdown": directory / "audit.md"}
    write_json(paths["json"], report)
    paths["markdown"].write_text(markdown_summary(report))
    paths["scores"] = score_figure(result.tests, result.config["z_flag"], directory / "scores.png")
    examples = result.extras.get("examples")
    if examples:
        paths["explanations"] = explanation_grid(examples["images"], examples["heatmaps"],
                                                 directory / "explanations.png")
    return paths


# ----------------------------------------------------------------------------------------- report page
def audit_section(run: Run) -> Section:
    """``veneer audit``: the verdict beside a figure of every test's z against the flag line, then what the audit
    could not see (skipped tests, calibration limits), the table of every test and each test's evidence."""
    audit = run.audit if run.audit is not None else {}
    if not audit:
        raise ValueError(f"the audit run {str(run.path)!r} has no readable audit.json")
    config, tests, verdict = audit["config"], audit["tests"], audit["verdict"]
    z_flag, skipped = config["z_flag"], config["skipped"]
    flagged = [name for name, test in tests.items() if test["flag"]]
    figure = inline_figure(z_chart(tests, z_flag), "z per test",
                           f"Each test's z against the reference models; a test flags beyond z = {z_flag:g} "
                           "(dashed), flagged tests in red." + (f" Not run: {', '.join(skipped)}." if skipped else ""))
    run.used.add("scores.png")  # the same figure, drawn here from audit.json
    section = Section("Audit", extra={"verdict": verdict, "tone": VERDICT_TONES.get(verdict, ""),
                                      "score": fmt(audit["score"]), "figure": figure,
                                      "score_text": score_sentence(audit) if "combined_z" in config else ""})
    section.cards += [Card("tests flagged", f"{len(flagged)} of {len(tests)}", ", ".join(flagged),
                           "bad" if flagged else "good"),
                      Card("tests not run", fmt(len(skipped)), ", ".join(skipped), "warn" if skipped else ""),
                      Card("effort", fmt(effort(config)), f"{fmt(config['samples'])} inputs"),
                      Card("audit time", f"{fmt(audit['seconds'])} s")]
    section.sections.append(_blind_spots(audit))
    part = Section("Tests")
    rows = []
    for name, test in tests.items():
        meaning, source = describe_test(name, test)
        rows.append([name, fmt(test["z"]), fmt(test["statistic"]), fmt(test["score"]),
                     "FLAG" if test["flag"] else "ok", meaning, source])
        part.sections.append(_test_section(run, name, test, meaning, source))
    part.tables.append(Table("every test", ["test", "z", "statistic", "score", "flag", "meaning", "source"], rows,
                             f"z: distance from the reference models in their spread (flag beyond {z_flag:g}); "
                             "score 0..1: 0.5 at the flag line, 1 far beyond it."))
    section.sections.append(part)
    examples = run.figure("explanations.png", "Example inputs and each method's explanation of the audited model.")
    if examples:
        section.sections.append(Section("Example explanations", figures=examples))
    if not run.config:
        run.config = config
    run.used.update({"audit.json", "audit.md"})
    return section


def _blind_spots(audit: dict[str, Any]) -> Section:
    """What this audit could not see: the tests it did not run, and the limits of its calibration."""
    config, calibration = audit["config"], audit["calibration"]
    section = Section("What this audit could not see")
    skipped = config["skipped"]
    if skipped:
        section.tables.append(Table("tests not run", ["test", "why"], [[name, why] for name, why in skipped.items()]))
    else:
        section.text.append("Every registered test that applies ran.")
    dropped = config.get("dropped_methods") or {}
    if dropped:
        section.tables.append(Table("methods dropped", ["method", "why"], [[name, why] for name, why in dropped.items()],
                                    config.get("unseen") or ""))
    details = calibration.get("details") or {}
    if calibration["kind"] == "twins":
        twins = details.get("twins") or {}
        count = twins.get("count", len(twins.get("accuracy", [])))
        section.text.append(f"Calibration: {fmt(count)} clean twins trained here (same architecture, "
                            f"re-initialised, {fmt(twins.get('steps'))} steps each; accuracy "
                            f"{fmt(twins.get('accuracy'))}). A model is only compared with these {fmt(count)}: "
                            "their mean and spread, and so every z, are rough estimates, and a twin trained this "
                            "briefly may explain differently from a fully trained clean model.")
        inherited = {kind: names for kind, names in (twins.get("inherited") or {}).items() if names}
        if inherited:
            section.tables.append(Table(
                "what every twin copies", ["kind", "names"], [[kind, ", ".join(names)] for kind, names in inherited.items()],
                "Not re-initialised by the twins (parameters, buffers and tensors of modules without reset_parameters, "
                "forward code written outside torch.nn): a manipulation placed there is in every twin, so the "
                "twins cannot show it. Calibrate on an architecture you trust (--twin-model) or a reference model "
                "(--reference) to see it."))
    elif calibration["kind"] == "reference":
        section.text.append(f"Calibration: {fmt(details.get('references'))} given reference model(s) (accuracy "
                            f"{fmt(details.get('accuracy'))}). The verdict says how far the model lies from them, "
                            "not from clean models in general.")
    else:
        section.text.append(f"Calibration: {calibration['kind']}.")
    section.text.append(f"{fmt(config['samples'])} inputs explained with {fmt(config['methods'])}; a manipulation "
                        "that only shows on other inputs or other methods is not seen. Differences smaller than a "
                        "test's tolerance never flag: it is added in quadrature to the references' spread.")
    rate = config.get("false_positive_rate")
    if isinstance(rate, dict):
        section.text.append(false_positive_sentence(rate))
    return section


def false_positive_sentence(rate: dict[str, Any]) -> str:
    """What is known of the rate of clean models flagged: measured (with its 95% interval) only for the setup
    it was measured on, and the Gaussian-null bound."""
    if rate.get("measured") is None:
        measured = f"False-positive rate: {rate['measured_on']}"
    else:
        interval = rate.get("interval_95")
        bound = f" (95% interval {fmt(interval[0])}-{fmt(interval[1])})" if interval else ""
        measured = f"False-positive rate {fmt(rate['measured'])}{bound}: {rate['measured_on']}"
    return (f"{measured}; under an independent Gaussian null with no tolerance (a pessimistic bound): "
            f"{fmt(rate['gaussian_null'])}.")


def _test_section(run: Run, name: str, test: dict[str, Any], meaning: str, source: str) -> Section:
    """One test: its meaning and source, z, score and flag, then its evidence (a sentence, a mapping shown as a
    table, records, figures it names or named after the test)."""
    section = Section(name, text=[meaning] + ([f"Source: {source}."] if source else []), cards=[
        Card("z", fmt(test["z"])), Card("statistic", fmt(test["statistic"])),
        Card("score", fmt(test["score"]), "", tone(test["score"], 0.7, 0.4, low_is_bad=False)),
        Card("flag", "flagged" if test["flag"] else "not flagged", "", "bad" if test["flag"] else "good")])
    evidence = test["evidence"]
    if isinstance(evidence, str):
        figure = run.figure(evidence) if (run.path / evidence).suffix in IMAGE_TYPES else []
        if figure:
            section.figures += figure
        else:
            section.text.append(evidence)
    elif isinstance(evidence, dict):
        pairs = []
        for key, value in flatten(evidence):
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                section.tables.append(records_table(key, value))
            elif isinstance(value, str) and (run.path / value).suffix in IMAGE_TYPES and (run.path / value).is_file():
                section.figures += run.figure(value, key)
            else:
                pairs.append((key, value))
        if pairs:
            section.tables.insert(0, key_values("evidence", pairs))
    elif isinstance(evidence, list) and evidence and all(isinstance(v, dict) for v in evidence):
        section.tables.append(records_table("evidence", evidence))
    elif evidence is not None:
        section.text.append(fmt(evidence))
    section.figures += run.figures(rf"{re.escape(name)}([_.-].*)?\.(png|svg)")
    return section


register_section("audit", audit_section, title="Model audit")
