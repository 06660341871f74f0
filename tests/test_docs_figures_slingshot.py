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


CITED = [
    *[(DOC, lambda i=i: table_rows()[i]) for i in range(16)],  # 2 units x 4 models, SSIM and Pearson tables
    (DOC, seeds_and_cost),
    (DOC, slingshot_logit),
    (DOC, slingshot_channel),
    (DOC, silent_unit),
    (DOC, fooling_circuit),
    (DOC, goals),
    (DOC, slingshot_behaviour),
]


@pytest.mark.parametrize("doc, derive", CITED, ids=[f"{doc}:{i}" for i, (doc, _) in enumerate(CITED)])
def test_a_cited_figure_equals_its_committed_summary(doc, derive):
    text = doc_text(doc)
    assert derive() in text, f"{doc} does not cite {derive()!r} (from experiments/results)"
