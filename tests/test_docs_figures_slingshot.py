"""The synthetic-visualisation figures docs/neurons.md cites over seeds equal the committed summary of
``experiments/slingshot_seeds.py`` (issue 26; the same check as tests/test_docs_figures.py: no number typed by
hand). A re-run that changes the summary fails here until the docs say the new figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = "docs/neurons.md"
NAME = "slingshot_seeds"
VARIANTS = ("adam-pixel", "sgd-pixel", "adam-pixel-robust", "adam-fourier", "adam-fourier-robust")
sys.path.insert(0, str(ROOT / "experiments"))
from runner import cite, doc_text, load_summary, seed_range  # noqa: E402  (experiments/runner.py)


def summary() -> dict:
    return load_summary(NAME)


def values(metric: str) -> list[float]:
    return summary()["metrics"][metric]["values"]


def per_seed(metric: str, digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values(metric))


def span(key: str, measure: str = "ssim", variants: tuple[str, ...] = VARIANTS) -> str:
    """The smallest and the largest mean of ``measure`` over ``variants`` of ``key`` (unit.model): ``"0.21-0.50"``."""
    means = [summary()["metrics"][f"{key}.{v}.{measure}"]["mean"] for v in variants]
    return f"{min(means):.2f}-{max(means):.2f}"


def seed_span(key: str, measure: str = "ssim") -> str:
    """The smallest and the largest single-seed value of ``measure`` over every variant and seed of ``key``."""
    found = [x for v in VARIANTS for x in values(f"{key}.{v}.{measure}")]
    return f"{min(found):.2f}-{max(found):.2f}"


def table_rows() -> list[str]:
    from slingshot_seeds import doc_tables  # experiments/slingshot_seeds.py: the rows docs/neurons.md prints
    ssim_rows, pearson_rows = doc_tables(summary())
    return ssim_rows + pearson_rows


def seeds_and_cost() -> str:
    found = summary()
    return (f"{seed_range(found['seeds'])}, `experiments/results/slingshot_seeds.json`; "
            f"{found['metrics']['seconds']['mean']:.0f} s per seed ({per_seed('seconds', 0)})")


def slingshot_logit() -> str:
    key, found = "logit.slingshot", summary()
    drop = f"{key}.accuracy_drop_points"
    return (f"SSIM {span(key)} over the variants (means; Pearson {span(key, 'pearson')}), largest "
            f"{cite(found, f'{key}.max_ssim')} (per seed {per_seed(f'{key}.max_ssim')}). Accuracy drop "
            f"{cite(found, drop)} pt (per seed {per_seed(drop, 1)}), AUROC drop {cite(found, f'{key}.auroc_drop', 4)} "
            f"(per seed {per_seed(f'{key}.auroc_drop', 4)}), top-100 Jaccard {cite(found, f'{key}.top100_jaccard')}. "
            f"The budget kept steps {per_seed(f'{key}.best_step', 0)} of 600; the manipulation loss fell only from "
            f"{per_seed(f'{key}.manipulation_before')} to {per_seed(f'{key}.manipulation_after')} (per seed)")


def slingshot_channel() -> str:
    """Seeds whose budget kept no iterate (the original came back) and the one whose budget kept a step."""
    seeds, steps = summary()["seeds"], values("channel.slingshot.best_step")
    kept = [i for i, step in enumerate(steps) if step > 0]
    assert len(kept) == 1, steps  # the docs say: one seed kept a step, the others none
    i = kept[0]
    none = " and ".join(str(seeds[j]) for j in range(len(seeds)) if j != i)
    return (f"No iterate kept 99.5% validation agreement on seeds {none} (the original came back); on seed "
            f"{seeds[i]} the budget kept step {steps[i]:.0f}, where the manipulation loss had hardly moved "
            f"({values('channel.slingshot.manipulation_before')[i]:.3f} -> "
            f"{values('channel.slingshot.manipulation_after')[i]:.3f}): largest SSIM "
            f"{values('channel.slingshot.max_ssim')[i]:.2f} (the original's "
            f"{values('channel.original.max_ssim')[i]:.2f}) at an accuracy drop of "
            f"{values('channel.slingshot.accuracy_drop_points')[i]:.1f} pt")


def silent_unit() -> str:
    found, n = summary()["metrics"], len(summary()["seeds"])
    for kind in ("logit", "channel"):
        for v in VARIANTS:  # the logit's visualisations, and the channel's SGD and Fourier ones, are the original's
            if kind == "logit" or v not in ("adam-pixel", "adam-pixel-robust"):
                assert found[f"{kind}.silent_unit.{v}.ssim"]["values"] == found[f"{kind}.original.{v}.ssim"]["values"]
        assert found[f"{kind}.silent_unit.agreement"]["values"] == [1.0] * n
    return (f"SSIM per seed {per_seed('channel.silent_unit.adam-pixel.ssim')} with Adam and "
            f"{per_seed('channel.silent_unit.adam-pixel-robust.ssim')} with transformations")


def fooling_circuit() -> str:
    found = summary()["metrics"]
    for kind in ("logit", "channel"):
        assert found[f"{kind}.fooling_circuit.agreement"]["values"] == [1.0] * len(summary()["seeds"])
    fourier = ("adam-fourier", "adam-fourier-robust")
    return (f"SSIM {span('logit.fooling_circuit')} (logit) and {span('channel.fooling_circuit')} (channel) over "
            f"the variants, Pearson {span('logit.fooling_circuit', 'pearson')} and "
            f"{span('channel.fooling_circuit', 'pearson')}: the Fourier variants show the cross (Pearson "
            f"{span('logit.fooling_circuit', 'pearson', fourier)} and "
            f"{span('channel.fooling_circuit', 'pearson', fourier)}); single seeds "
            f"{seed_span('logit.fooling_circuit')} and {seed_span('channel.fooling_circuit')}")


def goals() -> str:
    """How many (unit, attack) pairs reach SSIM >= 0.8 in every variant on some seed, and the largest SSIM."""
    found, n = summary()["metrics"], len(summary()["seeds"])
    pairs = [(k, a) for k in ("logit", "channel") for a in ("slingshot", "silent_unit", "fooling_circuit")]
    reached = [p for p in pairs if any(min(found[f"{p[0]}.{p[1]}.{v}.ssim"]["values"][i] for v in VARIANTS) >= 0.8
                                       for i in range(n))]
    trained = [(k, a) for k, a in pairs if a != "silent_unit"]
    largest = max(max(found[f"{k}.{a}.max_ssim"]["values"]) for k, a in trained)
    return (f"{len(reached)} of the {len(pairs)} (unit, attack) pairs reach SSIM >= 0.8 in every variant on any "
            f"seed; the slingshot and the fooling circuit reach at most {largest:.2f} in their best variant on any "
            f"seed (largest SSIM, mean over seeds: slingshot logit {cite(summary(), 'logit.slingshot.max_ssim')}, "
            f"fooling circuit {cite(summary(), 'logit.fooling_circuit.max_ssim')} and "
            f"{cite(summary(), 'channel.fooling_circuit.max_ssim')})")


def slingshot_behaviour() -> str:
    """The logit slingshot's behaviour goals per seed: accuracy drop <= 0.5 pt, AUROC drop <= 0.01."""
    seeds = summary()["seeds"]
    accuracy = [s for s, d in zip(seeds, values("logit.slingshot.accuracy_drop_points")) if d <= 0.5 + 1e-6]
    auroc = all(d <= 0.01 for d in values("logit.slingshot.auroc_drop"))
    assert auroc and len(accuracy) == 1, (accuracy, auroc)
    return (f"the AUROC goal holds on every seed, the accuracy goal on seed {accuracy[0]} only (test agreement "
            f"{per_seed('logit.slingshot.agreement', 3)})")


def original_accuracy() -> float:
    """The bundled MNIST CNN's test accuracy (the same for both units and every seed)."""
    found = [x for kind in ("logit", "channel") for x in values(f"{kind}.original.accuracy")]
    assert len(set(found)) == 1, found
    return 100 * found[0]


def exact(attack: str, lead: str) -> str:
    """A construction changes no prediction: its test agreement is 1 for both units on every seed."""
    found = [x for kind in ("logit", "channel") for x in values(f"{kind}.{attack}.agreement")]
    assert set(found) == {1.0}, found
    return f"{lead} (test agreement {found[0]:.1f} on every seed)"


# The slingshot transferred to the digits MLP: one run (seed 0), experiments/slingshot_transfer.py.
TRANSFER = "slingshot_transfer"


def transfer() -> dict:
    return load_summary(TRANSFER)


def transfer_cost() -> str:
    found = transfer()
    return (f"summary `experiments/results/{TRANSFER}.json`, seed {found['seed']}, about {found['seconds']:.0f} s of "
            "one thread")


def transfer_budget() -> str:
    found = transfer()
    assert not found["returned_original"]
    return (f"at {found['slingshot']['min_agreement']} it kept step "
            f"{found['results']['slingshot']['fine_tune']['best_step']:.0f}")


def transfer_row(model: str) -> str:
    """A row of the digits-MLP table: SSIM / Pearson per variant, accuracy (drop), AUROC, top-100 Jaccard."""
    results = transfer()["results"]
    found, original = results[model], results["original"]
    cells = [f"{v['ssim']:.2f} / {v['pearson']:.2f}" for v in (found["visualizations"][x] for x in VARIANTS)]
    drop = 100 * (original["accuracy"] - found["accuracy"])
    cells += [f"{100 * found['accuracy']:.1f} ({drop:.1f})", f"{found['auroc']:.4f}", f"{found['top100_jaccard']:.2f}"]
    return f"| {model} | " + " | ".join(cells) + " |"


def transfer_fit() -> str:
    results = transfer()["results"]
    found, original = results["slingshot"], results["original"]
    fine_tune = found["fine_tune"]
    return (f"(manipulation loss {fine_tune['manipulation_before']:.1f} -> {fine_tune['manipulation_after']:.1f}; the "
            f"cross is clear in both pixel variants, Pearson {found['visualizations']['sgd-pixel']['pearson']:.2f} "
            f"with SGD), but only with a looser budget: {100 * (original['accuracy'] - found['accuracy']):.1f} pt "
            f"accuracy drop and AUROC down {original['auroc'] - found['auroc']:.3f} miss the goals")


# The audit of the constructions, the slingshots and six clean models: one run (seed 0) of
# experiments/slingshot_audit.py, whose summary is docs/img/slingshot_audit.json.
AUDIT = ROOT / "docs/img/slingshot_audit.json"
AUDITED = {"clean": "MNIST CNN seed 0 (tuning)", "clean_mnist_cnn_seed1": "MNIST CNN seed 1 (tuning)",
           "clean_mnist_resnet_seed0": "MNIST ResNet seed 0 (tuning)",
           "clean_digits_mlp_seed0": "digits MLP seed 0 (tuning)",
           "heldout_mnist_cnn_seed2": "MNIST CNN seed 2 (held out)",
           "heldout_digits_mlp_seed1": "digits MLP seed 1 (held out)",
           "slingshot": "slingshot, logit 3", "silent_unit": "silent unit, logit 3",
           "fooling_circuit": "fooling circuit, logit 3", "silent_unit_channel": "silent unit, channel 4:5",
           "fooling_circuit_channel": "fooling circuit, channel 4:5",
           "slingshot_digits_mlp": "slingshot, digits MLP logit 3"}
CONSTRUCTIONS = ("silent_unit", "fooling_circuit", "silent_unit_channel", "fooling_circuit_channel")
VISUAL = ("visualization_outliers", "visualization_consistency")


def audited(model: str) -> dict:
    import json

    return json.loads(AUDIT.read_text())["results"][model]


def component(model: str, name: str) -> float:
    return audited(model)["visualization_tests"]["visualization_outliers"]["components"][name]


def others(model: str) -> list[tuple[str, float]]:
    """The z of every test but the two visualisation ones, largest first."""
    return sorted(((t, z) for t, z in audited(model)["z"].items() if t not in VISUAL), key=lambda t: -t[1])


def audit_row(model: str) -> str:
    found = audited(model)
    flagged = ", ".join(f"`{t}`" for t in found["flagged"]) or "-"
    outliers = (f"{found['z']['visualization_outliers']:.2f} ({component(model, 'off_range_slope'):.1f}, "
                f"{component(model, 'gate_jump'):.1f})")
    if "visualization_consistency" in found["z"]:
        consistency = f"{found['z']['visualization_consistency']:.2f}"
    else:
        assert "visualization_consistency" in found["skipped"]
        consistency = "skipped (no conv)"
    test, z = others(model)[0]
    return f"| {AUDITED[model]} | {found['verdict']} | {flagged} | {outliers} | {consistency} | `{test}` {z:.2f} |"


def now_z(model: str) -> float:
    """``visualization_outliers``' z of ``model`` at the registered prior and tolerance (set after the run)."""
    from veneer.audit.registry import registered_tests

    test = registered_tests()["visualization_outliers"]
    largest = max(component(model, "off_range_slope"), component(model, "gate_jump"))
    return (largest - test.prior[0]) / test.tolerance


def now_span() -> str:
    found = [now_z(m) for m in CONSTRUCTIONS]
    return f"every construction below still does, z {min(found):.1f}-{max(found):.0f}"


def now_list() -> str:
    names = ("silent unit logit", "fooling circuit logit", "silent unit channel", "fooling circuit channel")
    return "(z: " + ", ".join(f"{name} {now_z(m):.1f}" for name, m in zip(names, CONSTRUCTIONS)) + ")"


def tuning_largest() -> str:
    tuning = [m for m in AUDITED if m.startswith("clean")]
    largest = max(tuning, key=lambda m: max(component(m, "off_range_slope"), component(m, "gate_jump")))
    assert largest == "clean_digits_mlp_seed0", largest
    return (f"the digits MLP's hidden layer gave the largest component, "
            f"{component(largest, 'off_range_slope'):.1f} in the table below")


def found_by() -> str:
    return (f"The silent units are found by `off_range_slope` alone ({component('silent_unit', 'off_range_slope'):.1f} "
            f"on the logit, {component('silent_unit_channel', 'off_range_slope'):.1f} on the channel), the fooling "
            f"circuits by `gate_jump` ({component('fooling_circuit', 'gate_jump'):.1f} on the logit, "
            f"{component('fooling_circuit_channel', 'gate_jump'):.1f} on the channel;")


def slingshots_found() -> str:
    top = others("slingshot")[:3]
    assert top[0][0] == "neuron_balance" and sum(z for _, z in top) / 3 > 3, top
    digits = dict(others("slingshot_digits_mlp"))["neuron_balance"]
    return (f"The slingshots are found by `neuron_balance` (z {top[0][1]:.2f} on the MNIST CNN, with `{top[1][0]}` "
            f"{top[1][1]:.2f} and `{top[2][0]}` {top[2][1]:.2f} the mean of the three largest is above 3; "
            f"{digits:.2f} on the digits MLP)")


def slingshots_unseen() -> str:
    z = {m: audited(m)["z"] for m in ("slingshot", "slingshot_digits_mlp")}
    return (f"`visualization_outliers` does not see them ({z['slingshot']['visualization_outliers']:.2f} and "
            f"{z['slingshot_digits_mlp']['visualization_outliers']:.2f}), nor does `visualization_consistency` "
            f"({z['slingshot']['visualization_consistency']:.2f})")


def clean_largest() -> str:
    tuning = max((m for m in AUDITED if m.startswith("clean")), key=lambda m: audited(m)["z"]["visualization_outliers"])
    held = max((m for m in AUDITED if m.startswith("heldout")), key=lambda m: audited(m)["z"]["visualization_outliers"])
    assert (tuning, held) == ("clean_digits_mlp_seed0", "heldout_mnist_cnn_seed2"), (tuning, held)
    return (f"the largest `visualization_outliers` z of a tuning model is "
            f"{audited(tuning)['z']['visualization_outliers']:.2f} (the digits MLP's `off_range_slope`, "
            f"{component(tuning, 'off_range_slope'):.1f}), of a held-out one "
            f"{audited(held)['z']['visualization_outliers']:.2f} (MNIST CNN seed 2)")


def zoo_constructions() -> str:
    """The constructions of the audit zoo's held-out seed (experiments/results/audit_zoo.json): the seed-0 table
    above is not the whole story."""
    models = {m["model"]: m for m in load_summary("audit_zoo")["models"]}
    silent, circuit = models["mnist-cnn-s20-silent-unit"], models["mnist-cnn-s20-fooling-circuit"]
    return (f"the silent unit is called {silent['verdict']} (`visualization_outliers` z "
            f"{silent['z']['visualization_outliers']:.1f}), but the fooling circuit only {circuit['verdict']}: "
            f"`visualization_outliers` does not flag it (z {circuit['z']['visualization_outliers']:.2f})")


CITED = [
    (DOC, zoo_constructions),
    *[(DOC, lambda i=i: table_rows()[i]) for i in range(16)],  # 2 units x 4 models, SSIM and Pearson tables
    (DOC, seeds_and_cost),
    (DOC, slingshot_logit),
    (DOC, slingshot_channel),
    (DOC, silent_unit),
    (DOC, fooling_circuit),
    (DOC, goals),
    (DOC, slingshot_behaviour),
    (DOC, lambda: f"The bundled MNIST CNN (test accuracy {original_accuracy():.1f}%)"),
    (DOC, lambda: f"the accuracy drop from the original's {original_accuracy():.1f}% in points"),
    (DOC, lambda: exact("silent_unit", "bit for bit the original's")),
    (DOC, lambda: exact("fooling_circuit", "No prediction changes")),
    (DOC, transfer_cost),
    (DOC, transfer_budget),
    *[(DOC, lambda model=model: transfer_row(model)) for model in ("original", "slingshot")],
    (DOC, transfer_fit),
    *[(DOC, lambda model=model: audit_row(model)) for model in AUDITED],
    (DOC, now_span),
    (DOC, now_list),
    (DOC, tuning_largest),
    (DOC, found_by),
    (DOC, slingshots_found),
    (DOC, slingshots_unseen),
    (DOC, clean_largest),
]


@pytest.mark.parametrize("doc, derive", CITED, ids=[f"{doc}:{i}" for i, (doc, _) in enumerate(CITED)])
def test_a_cited_figure_equals_its_committed_summary(doc, derive):
    text = doc_text(doc)
    assert derive() in text, f"{doc} does not cite {derive()!r} (from experiments/results)"
