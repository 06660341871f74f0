"""The measured figures docs/audit.md cites equal the committed summaries they come from (issue 26; the same check
as tests/test_docs_figures.py, which derives the zoo's headline and tables, the benign controls, the frontier table,
the rebalance spreads, the shared-logit held-out figures and the LIME/KernelSHAP figures: no number typed by hand).
A re-run that changes a summary fails here until the docs say the new figure. Single development runs whose
figures no summary holds are in experiments/notebook/audit.md, not in the doc.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = "docs/audit.md"
sys.path.insert(0, str(ROOT / "experiments"))
from runner import doc_text, load_summary  # noqa: E402  (experiments/runner.py)


@lru_cache(maxsize=None)
def summary(name: str) -> dict:
    """A committed summary, read once (the derive functions only read it)."""
    return load_summary(name)


def span(values: list[float], digits: int = 1, scale: float = 1.0, unit: str = "") -> str:
    """``"low-high"`` of ``values`` as the doc prints them (one figure when both ends print alike)."""
    low, high = f"{min(values) * scale:.{digits}f}", f"{max(values) * scale:.{digits}f}"
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"


# --- "Degrade, never refuse": experiments/results/audit_any_architecture.json ---------------------------------

def any_architecture_row(name: str) -> str:
    found = summary("audit_any_architecture")
    audit = found["audits"][name]
    accuracy = found["vit" if name == "mnist-vit" else name]["test_accuracy"]
    before = {"shift": "test accuracy ", "gated": "input-dependent tensors; ", "mnist-vit": "test accuracy "}[name]
    return f"{before}{accuracy:.3f}) | {audit['wall_seconds']:.1f} s | {audit['verdict']} |"


# --- "Neuron balance": experiments/results/rebalance_evasion.json ---------------------------------------------

def rebalance_accuracy() -> str:
    found = summary("rebalance_evasion")
    runs = found["runs"]
    original = {run["test_accuracy"]["original"] for run in runs}
    assert len(original) == 1, original  # one bundled model under every seed
    overlap = found["top10_overlap_attacked"]
    return (f"(mean over seeds; {overlap['min']:.3f}-{overlap['max']:.3f}) at "
            f"{span([run['test_accuracy']['attacked'] for run in runs], 1, 100)}% test accuracy "
            f"({100 * original.pop():.1f}% before)")


def rebalance_logits() -> str:
    runs = summary("rebalance_evasion")["runs"]
    assert all(run["rebalanced_predictions_equal_attacked"] for run in runs)
    mantissa, exponent = f"{max(run['rebalanced_max_logit_difference'] for run in runs):.0e}".split("e")
    return f"unchanged (largest logit difference {mantissa}e{int(exponent)}, float rounding)"


# --- "What a twin inherits": experiments/results/shared_logit_gradient.json -----------------------------------

def shared_logit_tuning() -> str:
    rows = summary("shared_logit_gradient")["rows"]
    ratio = {r["model"]: r["median_ratio"] for r in rows if r["kind"] == "clean" and r["split"] == "tuning"}
    assert sorted(ratio) == ["adult-mlp", "digits-mlp", "mnist-cnn", "mnist-resnet"], ratio
    return (f"seed 0 ({ratio['mnist-cnn']:.3f}, {ratio['digits-mlp']:.3f}), after the seed-0 Adult MLP "
            f"({ratio['adult-mlp']:.3f}) and MNIST ResNet ({ratio['mnist-resnet']:.3f})")


# --- The zoo's first held-out round: experiments/results/audit_zoo.json -----------------------------------------

def first_round() -> list[dict]:
    return summary("audit_zoo")["first_round_before_hardening"]


def first_round_flagged_by(test: str, only: bool = True) -> list[dict]:
    """The first round's models, before the hardening, that ``test`` flagged (alone when ``only``)."""
    return [r for r in first_round() if (r["flagged"] == [test] if only else test in r["flagged"])]


def shared_logit_two_classes() -> str:
    rows = first_round_flagged_by("shared_logit_gradient", only=False)
    assert {r["model"] for r in rows} == {f"adult-mlp-s10-{c}" for c in ("fine-tune", "pruned", "adversarial")}, rows
    return f"largest z {span([r['z_max'] for r in rows], 2)}"


def first_round_single(test: str, model: str) -> str:
    (row,) = first_round_flagged_by(test)
    assert row["model"] == model, row
    return f"{row['z_max']:.2f}"


def first_round_counts() -> str:
    flagged = sum(r["verdict"] != "clean" for r in first_round())
    return (f"`first_round_before_hardening` in the summary: {flagged} of {len(first_round())} clean and benign "
            f"models flagged")


def after_hardening() -> str:
    found = summary("audit_zoo")
    return (f"the first round has {found['first_round']['clean_flagged']} flagged and the tuning half "
            f"{found['tuning_in_sample']['clean_flagged']} (in-sample)")


# --- visualization_outliers before its tolerance went from 3 to 5 -----------------------------------------------

def outlier_component(model: str) -> float:
    """The test's largest component: its fixed prior plus its tolerance times the z the summary holds."""
    from veneer.audit import registered_tests

    test = registered_tests()["visualization_outliers"]
    z = next(r for r in summary("audit_zoo")["models"] if r["model"] == model)["z"]["visualization_outliers"]
    return test.prior[0] + test.tolerance * z


def old_flag_line() -> float:
    from veneer.audit import registered_tests
    from veneer.audit.calibration import Z_FLAG

    return registered_tests()["visualization_outliers"].prior[0] + \
        summary("audit_zoo")["held_out_as_frozen"]["visualization_outliers_tolerance"] * Z_FLAG


def outliers_as_ran() -> str:
    frozen = summary("audit_zoo")["held_out_as_frozen"]["held_out"]
    flagged = [m for family in ("clean", "benign") for m in frozen["per_family"][family]["flagged"]]
    digits = [m for m in flagged if m.startswith("digits-mlp")]
    assert len(flagged) == int(frozen["clean_flagged"].split(" of ")[0])
    assert len(digits) == frozen["per_test"]["visualization_outliers"]["clean_flagged"]
    assert all(outlier_component(m) > old_flag_line() for m in digits)
    return (f"{len(digits)} of the {len(flagged)} flagged clean models were digits MLPs flagged by "
            f"`visualization_outliers` (largest component {span([outlier_component(m) for m in digits])} against a "
            f"flag line of {old_flag_line():.0f};")


def outliers_in_tuning() -> str:
    from audit_zoo import FIRST_ROUND  # experiments/audit_zoo.py: the first held-out round's seeds, tuning since

    found = summary("audit_zoo")
    above = {base: [outlier_component(r["model"]) for r in found["models"]
                    if r["seed"] in FIRST_ROUND and r["base"] == base
                    and outlier_component(r["model"]) >= old_flag_line() - 1e-9]
             for base in ("digits-mlp", "mnist-resnet")}
    assert len(above["mnist-resnet"]) == 1, above
    return (f"(digits MLPs of the first round at {span(above['digits-mlp'])}, a ResNet at "
            f"{above['mnist-resnet'][0]:.1f})")


def pruned_digits() -> str:
    return f"flagged by `visualization_outliers` (largest component {outlier_component('digits-mlp-s20-pruned'):.1f})"


# --- "Against the goals": the held-out zoo --------------------------------------------------------------------

def goal_auroc() -> str:
    held = summary("audit_zoo")["held_out"]
    low, high = held["verdict_auroc_95"]
    return f"**missed**, {held['verdict_auroc']:.3f} ({low:.3f}-{high:.3f})"


def goal_effective() -> str:
    held = summary("audit_zoo")["held_out"]
    low, high = held["verdict_auroc_effective_95"]
    return f"it is {held['verdict_auroc_effective']:.3f} ({low:.3f}-{high:.3f}) and all are detected"


def goal_clean() -> str:
    held = summary("audit_zoo")["held_out"]
    return f"**missed**, {held['clean_flagged']} (upper bound {held['false_positive_95'][1]:.2f})"


def loss_fall(model: str) -> float:
    before, after = next(r for r in summary("audit_zoo")["models"] if r["model"] == model)["attack_loss"]
    return 100 * (1 - after / before)


def goal_misses() -> str:
    held = summary("audit_zoo")["held_out"]["per_family"]["model-level"]["missed"]
    short = ["mnist-cnn-s20-location-ig", "mnist-resnet-s20-location-gradient", "mnist-cnn-s20-topk-gxi"]
    rose = ["adult-mlp-s20-feature-suppress-gradient", "adult-mlp-s20-feature-suppress-ig"]
    lrp, digits = "mnist-cnn-s20-com-lrp", ["digits-mlp-s20-com-gradient", "digits-mlp-s20-target-map-gradient"]
    assert sorted(held) == sorted(short + rose + [lrp] + digits), held
    assert all(loss_fall(m) < 0 for m in rose)
    return (f"(location on IG and on the ResNet, top-k on GxI: {span([loss_fall(m) for m in short], 0)}% lower; both "
            f"Adult feature suppressions: their loss rose; centre of mass on LRP: {loss_fall(lrp):.0f}% lower; the "
            f"digits MLP's centre of mass and target map: {loss_fall(digits[0]):.0f}% and {loss_fall(digits[1]):.0f}% "
            "lower)")


def fast_audit_seconds() -> str:
    """The median wall time of the bundled MNIST CNN's fast audit, from bench/results/audit.json."""
    found = json.loads((ROOT / "bench" / "results" / "audit.json").read_text())
    return (f"{found['median']['wall_s']:.0f} s of wall time (`python bench/audit.py`: the median of "
            f"{found['settings']['repeats']} audits, {found['settings']['threads']} threads")


# --- "The adaptive attacker": experiments/results/evasion_frontier.json ----------------------------------------

def frontier() -> dict:
    return summary("evasion_frontier")


def frontier_runs(group: str) -> list[dict]:
    return [run for result in frontier()["results"] for run in result["runs"] if run["group"] == group]


def frontier_z(group: str, test: str) -> list[float]:
    return [run["audit"]["z"][test] for run in frontier_runs(group)]


def frontier_distance() -> str:
    return f"sits {frontier()['original']['com_distance']:.2f} px from the target);"


def frontier_original() -> str:
    audit = frontier()["original"]["audit"]
    return f"on the original it says {audit['verdict']} (combined z {audit['combined_z']:.2f})"


def frontier_weights() -> str:
    rows = frontier()["weight_selection"]["rows"]
    weights = [f"{r['evade_weight']:.0f}" for r in rows]
    kept = [f"{100 * r['strength_kept']:.0f}%" for r in rows]
    verdicts = {r["audit"]["verdict"] for r in rows}
    best = max(rows, key=lambda r: r["strength_kept"])
    assert best["evade_weight"] == frontier()["evade_weight"] == frontier()["weight_selection"]["chosen"]
    return (f"weights {', '.join(weights[:-1])} and {weights[-1]} kept {', '.join(kept[:-1])} and {kept[-1]} there, "
            f"all called {verdicts.pop() if len(verdicts) == 1 else verdicts}; {best['evade_weight']:.0f} kept the most")


def frontier_without_evasion() -> str:
    return (f"without evasion, `gradient_slope` (z {span(frontier_z('none', 'gradient_slope'))}) and `tangent_space` "
            f"(z {span(frontier_z('none', 'tangent_space'))}) flag the attack")


def frontier_evade_all() -> str:
    flagged = [(result["seed"], run) for result in frontier()["results"] for run in result["runs"]
               if run["group"] == "all" and "gradient_slope" in run["audit"]["flagged"]]
    seeds = " and ".join(str(seed) for seed, _ in flagged)
    return (f"by `neuron_balance` (z {span(frontier_z('all', 'neuron_balance'))}, above its no-evasion "
            f"{span(frontier_z('none', 'neuron_balance'))}: the 8-row surrogate does not hold the audit's 512-image "
            f"statistic) and on seeds {seeds} also `gradient_slope` "
            f"({span([run['audit']['z']['gradient_slope'] for _, run in flagged])})")


def frontier_kept() -> str:
    row = next(r for r in frontier()["aggregate"] if r["group"] == "all")
    return f"{100 * row['strength_kept']['mean']:.0f}%"


def validation_kept() -> str:
    row = next(r for r in frontier()["weight_selection"]["rows"] if r["evade_weight"] == frontier()["evade_weight"])
    return f"were called {row['audit']['verdict']} while keeping {100 * row['strength_kept']:.0f}%"


# --- "Benign controls": experiments/results/benign_controls.json ------------------------------------------------

def benign_bound() -> str:
    from veneer.audit.calibration import clopper_pearson

    flagged = summary("benign_controls")["benign_flagged"]
    successes, trials = (int(v) for v in flagged.split(" of "))
    return (f"({flagged} still allows a false-positive rate up to {clopper_pearson(successes, trials)[1]:.2f}, "
            "Clopper-Pearson 95%)")


CITED = [
    *[(DOC, lambda name=name: any_architecture_row(name)) for name in ("shift", "gated", "mnist-vit")],
    (DOC, rebalance_accuracy),
    (DOC, rebalance_logits),
    (DOC, shared_logit_tuning),
    (DOC, lambda: f"moved it past the flag line (their {shared_logit_two_classes()}; below)"),
    (DOC, lambda: f"Adult MLP reached {shared_logit_two_classes()})"),
    (DOC, lambda: "first held-out round (z "
                  f"{first_round_single('visualization_consistency', 'mnist-cnn-s10-augmented')}, below;"),
    (DOC, lambda: "(it flagged a pruned MNIST CNN at z "
                  f"{first_round_single('neuron_balance', 'mnist-cnn-s10-pruned')})"),
    (DOC, lambda: "(it flagged a noise-augmented CNN at z "
                  f"{first_round_single('visualization_consistency', 'mnist-cnn-s10-augmented')})"),
    (DOC, first_round_counts),
    (DOC, after_hardening),
    (DOC, outliers_as_ran),
    (DOC, outliers_in_tuning),
    (DOC, pruned_digits),
    (DOC, benign_bound),
    (DOC, frontier_distance),
    (DOC, frontier_original),
    (DOC, frontier_weights),
    (DOC, frontier_without_evasion),
    (DOC, frontier_evade_all),
    (DOC, lambda: f"(evading every test keeps {frontier_kept()} <= 50% of the strength, and is flagged)"),
    (DOC, validation_kept),
    (DOC, lambda: f"an attacker evading every test with a surrogate keeps {frontier_kept()} of the strength"),
    (DOC, goal_auroc),
    (DOC, goal_effective),
    (DOC, goal_misses),
    (DOC, goal_clean),
    (DOC, lambda: f"takes {fast_audit_seconds()}; BENCHMARKS.md, \"Audit\", has each test's cost"),
    (DOC, lambda: f"met (Cost, above: {fast_audit_seconds()}; every fast test and the twins included)"),
]


@pytest.mark.parametrize("doc, derive", CITED, ids=[f"{doc}:{i}" for i, (doc, _) in enumerate(CITED)])
def test_a_cited_figure_equals_its_committed_summary(doc, derive):
    text = doc_text(doc)
    assert derive() in text, f"{doc} does not cite {derive()!r} (from experiments/results)"

