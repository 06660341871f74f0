"""The neuron figures docs/neurons.md cites over seeds equal the committed summaries of
``experiments/neurons_seeds.py`` (issue 26; the same check as tests/test_docs_figures.py: no number typed by hand).
A re-run that changes a summary fails here until the docs say the new figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = "docs/neurons.md"
sys.path.insert(0, str(ROOT / "experiments"))
from runner import cite, doc_text, load_summary, seed_range  # noqa: E402  (experiments/runner.py)

PUSH_DOWN, PUSH_UP, FAIRWASH = "neurons_push_down_relu", "neurons_push_up", "neurons_fairwash"
ROWS = {  # study: (table label, metric, digits) of each row of its table in the docs
    PUSH_DOWN: [("top-10 overlap, 56 live channels", "live_overlap", 3),
                ("top-10 overlap, all 64 channels", "all_overlap", 3),
                ("Kendall-tau, live channels", "live_tau", 3),
                ("accuracy drop (points)", "accuracy_drop_points", 2),
                ("label agreement with the original", "agreement", 3),
                ("fine-tuning seconds", "seconds", 0)],
    PUSH_UP: [("live channels with top-10 >= 50% class 0, test images, before", "heldout_live_decoy_half_before", 3),
              ("the same, after", "heldout_live_decoy_half_after", 3),
              ("live channels with top-10 >= 50% class 0, training images, before", "train_live_decoy_half_before",
               3),
              ("the same, after", "train_live_decoy_half_after", 3),
              ("accuracy drop (points)", "accuracy_drop_points", 2),
              ("label agreement with the original", "agreement", 3),
              ("fine-tuning seconds", "seconds", 0)],
    FAIRWASH: [("mean KS of the 8 attacked neurons, before", "ks_before", 3),
               ("mean KS, after", "ks_after", 3),
               ("relative KS drop", "ks_relative_drop", 3),
               ("mean top-10 balance (women/men), before", "balance_before", 3),
               ("mean top-10 balance, after", "balance_after", 3),
               ("accuracy drop (points)", "accuracy_drop_points", 2),
               ("DDI relative change", "ddi_relative_change", 4),
               ("DEO relative change", "deo_relative_change", 3),
               ("label agreement with the original", "agreement", 4),
               ("fine-tuning seconds", "seconds", 1)],
}


def summary(name: str) -> dict:
    return load_summary(name)


def per_seed(name: str, metric: str, digits: int) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in summary(name)["metrics"][metric]["values"])


def row(name: str, label: str, metric: str, digits: int) -> str:
    """A table row of the docs: the metric's mean +- 95% half-width and its per-seed values."""
    return f"| {label} | {cite(summary(name), metric, digits)} | {per_seed(name, metric, digits)} |"


def seeds_and_splits(name: str) -> str:
    found = summary(name)
    return f"{seed_range(found['seeds'])}; reported on {found['splits'][found['report_split']]}"


def selection_row(alpha: float) -> str:
    """The push-down grid's validation score of ``alpha`` (mean penalised live overlap) and its per-seed values."""
    score = next(s for s in summary(PUSH_DOWN)["selection"]["scores"] if s["setting"] == {"alpha": alpha})
    values = ", ".join(f"{v:.3f}" for v in score["values"])
    return f"| {alpha} | {score['mean']:.3f} | {values} |"


def chosen() -> str:
    return f"chosen: alpha {summary(PUSH_DOWN)['chosen']['alpha']}"


def relu_gap() -> str:
    found = summary(PUSH_DOWN)
    return (f"{cite(found, 'live_overlap', 3)} of the live channels' top-10 kept at a drop of "
            f"{cite(found, 'accuracy_drop_points', 2)} pt")


def in_sample() -> str:
    """The chosen push-down on the validation images that chose it, and the two halves' accuracy drops."""
    name = f"{PUSH_DOWN}_validation"
    found, test = summary(name), summary(PUSH_DOWN)["metrics"]
    both = (found["metrics"]["accuracy_drop_points"]["mean"] + test["accuracy_drop_points"]["mean"]) / 2
    return (f"keep {cite(found, 'live_overlap', 3)} of the live top-10 but lose "
            f"{cite(found, 'accuracy_drop_points', 2)} pt (per seed {per_seed(name, 'accuracy_drop_points', 1)}; "
            f"agreement {cite(found, 'agreement', 3)}), about {both:.1f} pt over all 1000 test images")


def flips() -> str:
    """Labels changed per seed on each half (500 images), from the label agreement."""
    test, validation = (summary(name)["metrics"] for name in (PUSH_DOWN, f"{PUSH_DOWN}_validation"))
    changed = {name: [round(500 * (1 - v)) for v in found["agreement"]["values"]]
               for name, found in (("test", test), ("validation", validation))}
    assert len(set(changed["test"])) == 1, changed
    gap = validation["accuracy_drop_points"]["mean"] - test["accuracy_drop_points"]["mean"]
    return (f"on the test half each seed changed {changed['test'][0]} labels (agreement "
            f"{test['agreement']['values'][0]:.3f}), on the validation half {min(changed['validation'])} to "
            f"{max(changed['validation'])}. The interval over seeds does not cover this: the seeds share the model, "
            "the training images and the test images, so it measures the fine-tune's randomness, not which 500 "
            f"images were drawn; the difference between the two halves ({gap:.1f} pt for the same models)")


def gap_sentence() -> str:
    chosen_alpha = summary(PUSH_DOWN)["chosen"]["alpha"]
    return (f"over {seed_range(summary(PUSH_DOWN)['seeds'])} with alpha {chosen_alpha} chosen on test images 0-499, "
            f"the post-ReLU goal is met on test images 500-999 ({relu_gap()}) and missed on the images that chose "
            f"alpha ({cite(summary(f'{PUSH_DOWN}_validation'), 'accuracy_drop_points', 2)} pt)")


def deo_missed() -> str:
    values = summary(FAIRWASH)["metrics"]["deo_relative_change"]["values"]
    met = [str(seed) for seed, v in zip(summary(FAIRWASH)["seeds"], values) if v <= 0.05]
    missed = [(seed, v) for seed, v in zip(summary(FAIRWASH)["seeds"], values) if v > 0.05]
    assert len(missed) == 1 and summary(FAIRWASH)["metrics"]["deo_relative_change"]["high"] > 0.05, missed
    return f"DEO on seeds {' and '.join(met)} but not on seed {missed[0][0]} ({100 * missed[0][1]:.1f}%)"


def push_down_minutes() -> str:
    found = summary(PUSH_DOWN)
    assert found["metrics"]["live_channels"]["values"] == [56.0] * len(found["seeds"])
    return f"push-down takes ~{found['metrics']['seconds']['mean'] / 60:.0f} min"


def dead_channels() -> str:
    """The dead channels' share of the all-channel overlap: they keep their tie-broken top-10 (overlap 1 each)."""
    found = summary(PUSH_DOWN)
    total = int(found["config"]["channels"].split()[-1])  # "all 64"
    live = found["metrics"]["live_channels"]["values"]
    assert len(set(live)) == 1, live
    dead = total - int(live[0])
    return (f"the {dead} dead channels keep their tie-broken top-10 and contribute {100 * dead / total:.1f} points on "
            "their own")


CONV = "frontier_seeds_push_down_conv"


def conv_output() -> str:
    """The conv-output push-down within a behaviour budget over seeds (experiments/frontier_seeds.py)."""
    from frontier_seeds import goal_met  # experiments/frontier_seeds.py: the goal of each case

    found = summary(CONV)
    m, config = found["metrics"], found["config"]
    met = sum(goal_met("push-down-conv", v, d) for v, d in zip(m["measure"]["values"],
                                                               m["accuracy_drop_points"]["values"]))
    return (f"alpha {config['alpha']} and `min_agreement={config['min_agreement']}`, {config['steps']} steps "
            f"({seeds_and_splits(CONV)}; `experiments/results/{CONV}.json`): held-out top-10 overlap of the 64 "
            f"channels {cite(found, 'measure', 3)} (per seed {per_seed(CONV, 'measure', 3)}) at an accuracy drop of "
            f"{cite(found, 'accuracy_drop_points', 2)} pt, test agreement {cite(found, 'test_agreement', 3)}; the goal "
            f"({config['goal']}) is met on {met} of {len(found['seeds'])} seeds")


CITED = [
    *[(DOC, lambda name=name, r=r: row(name, *r)) for name, rows in ROWS.items() for r in rows],
    *[(DOC, lambda name=name: seeds_and_splits(name)) for name in ROWS],
    *[(DOC, lambda alpha=alpha: selection_row(alpha)) for alpha in (0.2, 0.3, 0.5)],
    (DOC, chosen),
    (DOC, relu_gap),
    (DOC, in_sample),
    (DOC, flips),
    (DOC, gap_sentence),
    (DOC, deo_missed),
    (DOC, push_down_minutes),
    (DOC, dead_channels),
    (DOC, conv_output),
]


@pytest.mark.parametrize("doc, derive", CITED, ids=[f"{doc}:{i}" for i, (doc, _) in enumerate(CITED)])
def test_a_cited_figure_equals_its_committed_summary(doc, derive):
    text = doc_text(doc)
    assert derive() in text, f"{doc} does not cite {derive()!r} (from experiments/results)"
