"""docs/tabular.md's Slack et al. reproduction over seeds cites its committed summaries (issue 26).

Every figure of the section "Reproduction (experiments/tabular_slack.py)" that comes from
``experiments/results/tabular_slack_seeds_<data>.json`` (experiments/tabular_slack_seeds.py) is derived here from
that summary; a re-run that changes a summary fails here until the docs say the new figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
from runner import cite, doc_text, load_summary, seed_range  # noqa: E402  (experiments/runner.py)
from tabular_slack import CASES  # noqa: E402  (each data set's sensitive column)
from tabular_slack_seeds import doc_rows, percent  # noqa: E402  (the table rows: runner.cite in percent)

DOC = "docs/tabular.md"
DATA = ("compas", "german", "adult")
NAMES = {"compas": "COMPAS", "german": "German", "adult": "Adult"}
SCAFFOLDS = ("lime/scaffold1", "lime/scaffold2", "kernel-shap/scaffold1", "kernel-shap/scaffold2")


def summary(data: str) -> dict:
    return load_summary(f"tabular_slack_seeds_{data}")


def values(data: str, metric: str) -> list[float]:
    return summary(data)["metrics"][metric]["values"]


def per_seed(data: str, metric: str) -> str:
    return ", ".join(f"{100 * v:.1f}" for v in values(data, metric))


def sensitive(data: str) -> str:
    """The sensitive group's name in the docs: ``"race"`` (COMPAS), ``"sex"`` (Adult, German)."""
    return CASES[data][1].split("=", 1)[0].split("_")[-1]


def met(data: str, metrics: tuple[str, ...], bound: float, kind: str) -> str:
    """``"met on 3 of 3 seeds"``: the seeds on which every one of ``metrics`` reaches (``kind`` "max") or stays
    at or under (``"min"``) ``bound``."""
    seeds = summary(data)["seeds"]
    ok = sum(all(values(data, m)[i] >= bound - 1e-9 if kind == "max" else values(data, m)[i] <= bound + 1e-9
                 for m in metrics) for i in range(len(seeds)))
    return f"met on {ok} of {len(seeds)} seeds"


def span(numbers: list[float]) -> str:
    low, high = f"{100 * min(numbers):.1f}", f"{100 * max(numbers):.1f}"
    return f"{low} %" if low == high else f"{low}-{high} %"


def header() -> str:
    seeds = "; ".join(f"{NAMES[data]} {seed_range(summary(data)['seeds'])}" for data in DATA)
    (n,) = {summary(data)["config"]["n"] for data in DATA}  # one row count for every data set
    return (f"Over seeds ({seeds}; {n} explained test rows per seed; `experiments/tabular_slack_seeds.py`, summaries "
            + ", ".join(f"`experiments/results/tabular_slack_seeds_{data}.json`" for data in DATA))


def command(data: str) -> str:
    found = summary(data)
    seeds = "" if found["seeds"] == [0, 1, 2] else f" --seeds {','.join(str(s) for s in found['seeds'])}"
    return f"`nice -n 15 python experiments/tabular_slack_seeds.py --data {data}{seeds} --n {found['config']['n']}`"


def cost(data: str) -> str:
    seconds = [v / 60 for v in values(data, "seconds")]
    return (f"{NAMES[data]} {summary(data)['metrics']['seconds']['mean'] / 60:.1f} min per seed on average "
            f"({min(seconds):.1f}-{max(seconds):.1f} min)")


def acceptance(data: str) -> str:
    """The opening of ``data``'s acceptance sentence: data set, sensitive group, seeds and rows."""
    found = summary(data)
    return (f"Acceptance ({NAMES[data]}, {sensitive(data)}; {seed_range(found['seeds'])}, "
            f"{found['config']['n']} rows each):")


def biased_goal(data: str) -> str:
    s = summary(data)
    return (f"LIME and KernelSHAP rank {sensitive(data)} first for {percent(s, 'lime/biased/sensitive_top1')} % and "
            f"{percent(s, 'kernel-shap/biased/sensitive_top1')} % of the rows on the biased model (>= 90 %: "
            + met(data, ("lime/biased/sensitive_top1", "kernel-shap/biased/sensitive_top1"), 0.9, "max") + ")")


def scaffold_goal(data: str, explainer: str, bound: float) -> str:
    s, one, two = summary(data), f"{explainer}/scaffold1/sensitive_top1", f"{explainer}/scaffold2/sensitive_top1"
    return (f"{percent(s, one)} % (one innocuous feature; per seed {per_seed(data, one)}) and {percent(s, two)} % "
            f"(two; per seed {per_seed(data, two)}) (<= {100 * bound:.0f} %: one feature "
            f"{met(data, (one,), bound, 'min')}, two features {met(data, (two,), bound, 'min')})")


def fidelity_goal(data: str) -> str:
    fidelity = [f"{scaffold}/fidelity_test" for scaffold in SCAFFOLDS]
    return (f"fidelity {span([v for m in fidelity for v in values(data, m)])} over the four scaffolds and the "
            f"seeds (>= 95 %: all four {met(data, tuple(fidelity), 0.95, 'max')})")


def notes(data: str) -> list[str]:
    detector = [v for m in ("kernel-shap/scaffold1", "kernel-shap/scaffold2")
                for v in values(data, f"{m}/detector_accuracy")]
    top3 = [v for m in ("kernel-shap/scaffold1", "kernel-shap/scaffold2")
            for v in values(data, f"{m}/sensitive_top3")]
    xor = " / ".join(percent(summary(data), f"lime/scaffold2/random_{r}_top1") for r in (1, 2))
    return [f"{NAMES[data]} {span(detector)}", f"{span(top3)} on {NAMES[data]}", f"{NAMES[data]} {xor} %"]


CITED = [
    header,
    *[lambda data=data: cost(data) for data in DATA],
    *[lambda data=data: command(data) for data in DATA],
    *[lambda data=data, i=i: doc_rows(data, summary(data))[i] for data in DATA for i in range(6)],
    *[lambda data=data: acceptance(data) + " " + biased_goal(data) for data in DATA],
    *[lambda data=data: "On the scaffolded model LIME ranks it first for " + scaffold_goal(data, "lime", 0.1)
      for data in DATA],
    *[lambda data=data: "KernelSHAP for " + scaffold_goal(data, "kernel-shap", 0.3) for data in DATA],
    *[lambda data=data: fidelity_goal(data) for data in DATA],
    *[lambda data=data, i=i: notes(data)[i] for data in DATA for i in range(2)],
    *[lambda data=data: notes(data)[2] for data in ("german", "adult")],  # COMPAS: mostly a random column (the table)
]


def test_cite_in_percent_is_runner_cite_of_the_share_times_100():
    found = summary("compas")
    figure = found["metrics"]["kernel-shap/scaffold1/sensitive_top1"]
    assert percent(found, "kernel-shap/scaffold1/sensitive_top1") == (
        f"{100 * figure['mean']:.1f} +- {100 * figure['half_width']:.1f}")
    assert cite(found, "kernel-shap/scaffold1/sensitive_top1", 3).startswith(f"{figure['mean']:.3f} +- ")


@pytest.mark.parametrize("derive", CITED, ids=[str(i) for i in range(len(CITED))])
def test_a_cited_figure_equals_its_committed_summary(derive):
    text = doc_text(DOC)
    assert derive() in text, f"{DOC} does not cite {derive()!r} (from experiments/results)"
