"""The figures of docs/manipulate.md's "The acceptance cases over seeds" equal the committed summaries of
``experiments/manipulate_acceptance_seeds.py`` (issue 26; no number typed by hand).

Each entry of ``CITED``: a text the doc must contain (whitespace-normalised), derived from a summary JSON
``experiments/results/manipulate_acceptance_<case>.json`` with :func:`runner.cite` (mean +- half width of the 95%
t-interval) and the per-seed values. A re-run that changes a summary fails here until the doc says the new figure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
DOC = ROOT / "docs" / "manipulate.md"
sys.path.insert(0, str(ROOT / "experiments"))
from runner import cite, seed_range  # noqa: E402  (experiments/runner.py: how the docs cite a summary)

# case: (label in the table, digits of the attacked measure, its unit, digits of the probability MSE)
CASES = {
    "com": ("CenterOfMass (0, 0) on Gradient, keep ce, alpha 0.1", 2, " px", 4),
    "cross-gradient": ("TargetMap cross on Gradient, keep ce, alpha 0.1", 3, "", 4),
    "com-prob-mse": ("CenterOfMass (0, 0) on Gradient, keep prob_mse, alpha 0.02", 2, " px", 4),
    "adult": ("Adult FeatureSuppress sex+race on Gradient, keep kl, alpha 0.1, ReLU training", 4, "", 5),
}
REPORTED = ("cross-gradient", "com-prob-mse", "adult", "com")


def summary(case: str) -> dict:
    return json.loads((RESULTS / f"manipulate_acceptance_{case.replace('-', '_')}.json").read_text())


def figure(case: str, metric: str, digits: int) -> str:
    """``"1.25 +- 0.10 (1.21, 1.30, 1.24)"``: the cited mean +- 95% half width and the per-seed values."""
    found = summary(case)
    values = ", ".join(f"{v:.{digits}f}" for v in found["metrics"][metric]["values"])
    return f"{cite(found, metric, digits)} ({values})"


def row(case: str) -> str:
    """The case's row of the table: steps, attacked measure original -> manipulated, success rate, accuracy change
    (points), probability MSE, fine-tuning seconds."""
    label, digits, unit, mse_digits = CASES[case]
    metrics = summary(case)["metrics"]
    return (f"| {label} | {metrics['steps']['mean']:.0f} | {metrics['original']['mean']:.{digits}f} -> "
            f"{figure(case, 'manipulated', digits)}{unit} | {figure(case, 'success_rate', 3)} | "
            f"{figure(case, 'accuracy_change_points', 2)} pt | {figure(case, 'probability_mse', mse_digits)} | "
            f"{cite(summary(case), 'train_seconds', 0)} s |")


def fairness_row(attribute: str) -> str:
    return (f"| {attribute} | {figure('adult', f'{attribute}_ddi_relative_change', 3)} | "
            f"{figure('adult', f'{attribute}_deo_relative_change', 3)} |")


CITED = [
    *[lambda case=case: row(case) for case in REPORTED],
    *[lambda attribute=attribute: fairness_row(attribute) for attribute in ("sex", "race")],
    lambda: f"share fall {figure('adult', 'share_fall', 4)}",
    lambda: f"fine-tune {seed_range(summary('adult')['seeds'])}",
]


@pytest.mark.parametrize("derive", CITED, ids=[str(i) for i in range(len(CITED))])
def test_a_cited_figure_equals_its_committed_summary(derive):
    text = " ".join(DOC.read_text().split())  # line breaks in the docs do not matter
    assert derive() in text, f"{DOC.name} does not cite {derive()!r} (from experiments/results)"


@pytest.mark.parametrize("case", REPORTED)
def test_every_summary_is_over_three_seeds_on_the_test_split(case):
    found = summary(case)
    assert len(found["seeds"]) >= 3 and found["report_split"] == "test" and "selection" not in found
