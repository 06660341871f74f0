"""The figures the docs cite equal the committed summaries they come from (no number typed by hand).

Each entry: the doc, the text in it, and how that text is derived from a summary JSON under
``experiments/results/``. A re-run that changes a summary fails here until the docs say the new figure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


def summary(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def rebalance(field: str, statistic: str = "mean", digits: int = 3) -> str:
    return f"{summary('rebalance_evasion')[field][statistic]:.{digits}f}"


def shared_logit() -> dict:
    rows = summary("shared_logit_gradient")["rows"]
    held_out = [r for r in rows if r["kind"] == "clean" and r["split"] == "held-out"]
    shared = [r for r in rows if r["kind"] != "clean"]
    return {"clean_low": f"{min(r['median_ratio'] for r in held_out):.3f}",
            "clean_high": f"{max(r['median_ratio'] for r in held_out):.3f}",
            "clean_z": f"{max(r['z'] for r in held_out):.2f}",
            "shared_low": f"{min(r['median_ratio'] for r in shared):.3f}",
            "shared_z": f"{min(r['z'] for r in shared):.1f}",
            "shared_flagged": summary("shared_logit_gradient")["shared_term_flagged"],
            "clean_flagged": summary("shared_logit_gradient")["held_out_clean_flagged"]}


def architecture(name: str) -> str:
    return f"{summary('audit_any_architecture')['audits'][name]['wall_seconds']:.1f} s"


def zoo() -> dict:
    found = summary("tabular_zoo")
    held_out = found["leave_one_dataset_out"].values()
    return {"held_out": f"{sum(d['clean_flagged'] for d in held_out)} of {found['clean']} clean and "
                        f"{sum(d['scaffolds_flagged'] for d in held_out)} of {sum(d['scaffolds'] for d in held_out)} "
                        "scaffolds flagged",
            "auroc": f"AUROC {found['auroc']['surrogate']:.3f}", "cad": f"KNN-CAD alone {found['auroc']['knn_cad']:.3f}",
            "flagged": f"0 of {found['clean']} clean and {found['scaffolds_flagged']} of {found['scaffolds']} scaffolds"}


def benign_row(model: str) -> str:
    row = next(r for r in summary("benign_controls")["rows"] if r["model"] == model)
    return f"| {model} | {100 * row['test_accuracy']:.1f}% | {row['verdict']} | {row['z_max']:.2f} ({row['largest']}) |"


CITED = [
    ("docs/audit.md", lambda: f"(`--effort fast`, twins, every registered test): {summary('benign_controls')['benign_flagged']} flagged"),
    *[("docs/audit.md", lambda model=model: benign_row(model))
      for model in ("original", "fine-tune", "distilled", "pruned", "int8", "adversarial", "augmented")],
    ("docs/audit.md", lambda: f"keeps {rebalance('top10_overlap_attacked')} of the live"),
    ("docs/audit.md", lambda: f"from {rebalance('balance_spread_original')} to {rebalance('balance_spread_attacked')} "
                              f"({rebalance('balance_spread_attacked', 'min')}-"
                              f"{rebalance('balance_spread_attacked', 'max')})"),
    ("docs/audit.md", lambda: f"brings the spread to {rebalance('balance_spread_rebalanced')} "
                              f"({rebalance('balance_spread_rebalanced', 'min')}-"
                              f"{rebalance('balance_spread_rebalanced', 'max')})"),
    ("docs/audit.md", lambda: "clean, lie at {clean_low}-{clean_high} (largest z {clean_z}; {clean_flagged} flagged)"
                              .format(**shared_logit())),
    ("docs/audit.md", lambda: "at {shared_low} or more (z >= {shared_z}; {shared_flagged} flagged)".format(**shared_logit())),
    ("BENCHMARKS.md", lambda: f"| {architecture('shift')} |"),
    ("BENCHMARKS.md", lambda: f"| {architecture('gated')} |"),
    ("BENCHMARKS.md", lambda: f"| {architecture('mnist-vit')} |"),
    ("BENCHMARKS.md", lambda: zoo()["auroc"] + f" ({zoo()['cad']}), threshold-free"),
    ("BENCHMARKS.md", lambda: zoo()["flagged"]),
    ("BENCHMARKS.md", lambda: zoo()["held_out"]),
    ("README.md", lambda: zoo()["held_out"]),
]


@pytest.mark.parametrize("doc, derive", CITED, ids=[f"{doc}:{i}" for i, (doc, _) in enumerate(CITED)])
def test_a_cited_figure_equals_its_committed_summary(doc, derive):
    text = " ".join((ROOT / doc).read_text().split())  # line breaks in the docs do not matter
    assert derive() in text, f"{doc} does not cite {derive()!r} (from experiments/results)"
