"""The figures of docs/manipulate.md's "The acceptance cases over seeds", of its transfer table of the
centre-of-mass manipulation and of its Adult share falls per method equal the committed summaries of
``experiments/manipulate_acceptance_seeds.py`` (issue 26; no number typed by hand).

Each entry of ``CITED``: a text the doc must contain (whitespace-normalised), derived from a summary JSON
``experiments/results/manipulate_acceptance_<case>.json`` (``<case>_transfer`` for ``--transfer``) with
:func:`runner.cite` (mean +- half width of the 95% t-interval) and the per-seed values. A re-run that changes a
summary fails here until the doc says the new figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "manipulate.md"
sys.path.insert(0, str(ROOT / "experiments"))
from runner import cite, doc_text, load_summary, seed_range  # noqa: E402  (experiments/runner.py)

# case: (label in the table, digits of the attacked measure, its unit, digits of the probability MSE)
CASES = {
    "com": ("CenterOfMass (0, 0) on Gradient, keep ce, alpha 0.1", 2, " px", 4),
    "cross-gradient": ("TargetMap cross on Gradient, keep ce, alpha 0.1", 3, "", 4),
    "cross-lrp": ("TargetMap cross on LRP (epsilon_plus), keep ce, alpha 0.1", 3, "", 4),
    "cross-lrp-zbox": ("TargetMap cross on LRP (epsilon_plus, z^B first layer), keep ce, alpha 0.1", 3, "", 4),
    "com-prob-mse": ("CenterOfMass (0, 0) on Gradient, keep prob_mse, alpha 0.02", 2, " px", 4),
    "adult": ("Adult FeatureSuppress sex+race on Gradient, keep kl, alpha 0.1, ReLU training", 4, "", 5),
}
REPORTED = ("cross-gradient", "cross-lrp", "cross-lrp-zbox", "com-prob-mse", "adult", "com")
TRANSFER = ("com-transfer", "adult-transfer")
# method key of manipulate_acceptance.transfer_explainers: its label in the COM transfer table
COM_METHODS = {"gradient": "Gradient (attacked)", "smoothgrad": "SmoothGrad", "gradient_x_input": "GradientXInput",
               "ig": "IntegratedGradients (100 steps)", "lrp": "LRP (epsilon_plus)", "lrp_epsilon": "LRP (epsilon)",
               "gradcam": "Grad-CAM (layer 3)"}
# the same for the Adult share falls
ADULT_METHODS = {"gradient": "Gradient", "smoothgrad": "SmoothGrad", "gradient_x_input": "GradientXInput",
                 "ig": "IG", "lrp": "LRP"}


def summary(case: str) -> dict:
    return load_summary(f"manipulate_acceptance_{case.replace('-', '_')}")


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


def lrp_missed() -> str:
    """The LRP cross cases against the goal PCC >= 0.75: the largest per-seed PCC of either, and the accuracy."""
    found = {case: summary(case)["metrics"] for case in ("cross-lrp", "cross-lrp-zbox")}
    largest = max(max(m["manipulated"]["values"]) for m in found.values())
    assert largest < 0.75, largest
    drops = [v for m in found.values() for v in m["accuracy_change_points"]["values"]]
    return (f"TargetMap cross on LRP misses the goal on every seed, with either first-layer rule: PCC at most "
            f"{largest:.3f} after 310 steps (goal >= 0.75), at {min(drops):.1f} to {max(drops):.1f} pt")


def fairness_row(attribute: str) -> str:
    return (f"| {attribute} | {figure('adult', f'{attribute}_ddi_relative_change', 3)} | "
            f"{figure('adult', f'{attribute}_deo_relative_change', 3)} |")


def transfer_row(method: str) -> str:
    """The method's row of the COM transfer table: COM distance (px) original -> manipulated and success rate on the
    test images, then the same on the Gaussian-noise inputs (whose original distance varies with the seed's draw)."""
    found = summary("com-transfer")

    def com(metric: str, digits: int) -> str:
        return figure("com-transfer", f"{method}_{metric}", digits)

    return (f"| {COM_METHODS[method]} | {found['metrics'][f'{method}_original']['mean']:.2f} -> "
            f"{com('manipulated', 2)} | {com('success_rate', 3)} | {cite(found, f'{method}_noise_original', 2)} -> "
            f"{com('noise_manipulated', 2)} | {com('noise_success_rate', 2)} |")


def share_fall(method: str) -> str:
    return f"{figure('adult-transfer', f'{method}_share_fall', 3)} for {ADULT_METHODS[method]}"


CITED = [
    *[lambda case=case: row(case) for case in REPORTED],
    lrp_missed,
    *[lambda attribute=attribute: fairness_row(attribute) for attribute in ("sex", "race")],
    lambda: f"share fall {figure('adult', 'share_fall', 4)}",
    lambda: f"fine-tune {seed_range(summary('adult')['seeds'])}",
    *[lambda method=method: transfer_row(method) for method in COM_METHODS],
    lambda: f"transfer over fine-tune {seed_range(summary('com-transfer')['seeds'])}",
    *[lambda method=method: share_fall(method) for method in ADULT_METHODS],
    lambda: f"share falls over fine-tune {seed_range(summary('adult-transfer')['seeds'])}",
]


@pytest.mark.parametrize("derive", CITED, ids=[str(i) for i in range(len(CITED))])
def test_a_cited_figure_equals_its_committed_summary(derive):
    text = doc_text(DOC)
    assert derive() in text, f"{DOC.name} does not cite {derive()!r} (from experiments/results)"


@pytest.mark.parametrize("case", REPORTED)
def test_every_summary_is_over_three_seeds_on_the_test_split(case):
    found = summary(case)
    assert len(found["seeds"]) >= 3 and found["report_split"] == "test" and "selection" not in found


@pytest.mark.parametrize("case", TRANSFER)
def test_every_transfer_summary_is_over_three_seeds_on_the_test_split(case):
    found = summary(case)
    assert len(found["seeds"]) >= 3 and found["report_split"] == "test" and "selection" not in found


@pytest.mark.parametrize("case", TRANSFER)
def test_the_original_models_test_measure_is_the_same_on_every_seed(case):
    """The tables print the original model's test-split measure without an interval: it must not vary."""
    originals = {k: v for k, v in summary(case)["metrics"].items() if k.endswith("_original") and "_noise_" not in k}
    assert originals and all(len(set(v["values"])) == 1 for v in originals.values())
