"""The figures of docs/influence.md's sections "Fig. 4 on bundled MNIST" and "Appendix H: fragility vs input
dimension" equal the committed summaries of ``experiments/influence_seeds.py`` (issue 26; no number typed by hand).

Each entry of ``CITED``: the text in the doc and how it is derived from a summary JSON under ``experiments/results/``
(``influence_fig4``, ``influence_dimension``: 100 epochs, ``influence_dimension_15epochs``). A re-run that changes a
summary fails here until the doc says the new figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "influence.md"
sys.path.insert(0, str(ROOT / "experiments"))
from runner import cite, doc_text, load_summary, seed_range  # noqa: E402  (experiments/runner.py)

EPS = (0.01, 0.02, 0.05, 0.1)
SHOWN_EPS = (0.01, 0.05, 0.1)  # the Appendix H tables' eps (0.02 is in the summaries)
FIG4_ROWS = (("0", "sign attack, 1 step", "d0", "attack1", "gap1"), ("0", "random sign", "d0", "random", None),
             ("0", "sign attack, 10 steps", "d0", "attack10", "gap10"),
             ("0.01", "sign attack, 1 step", "d0.01", "attack1", "gap1"),
             ("0.01", "random sign", "d0.01", "random", None))
DIMENSION = {15: "influence_dimension_15epochs", 100: "influence_dimension"}
CONTROLLED = (("MNIST 7x7", 49), ("MNIST 7x7 repeated to 14x14", 196), ("MNIST 7x7 repeated to 28x28", 784))
NATURAL = (("MNIST 7x7", 49), ("digits 8x8", 64), ("MNIST 14x14", 196), ("MNIST 28x28", 784))


def summary(name: str) -> dict:
    return load_summary(name)


def values(name: str, metric: str) -> list[float]:
    return summary(name)["metrics"][metric]["values"]


def per_seed(name: str, metric: str, digits: int = 3) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values(name, metric))


def seeds_holding(name: str, metric: str) -> str:
    """``"5 of 5 seeds"``: on how many seeds the 0/1 metric ``metric`` is 1."""
    found = values(name, metric)
    return f"{sum(v == 1.0 for v in found)} of {len(found)} seeds"


def fig4_row(damping: str, label: str, prefix: str, attack: str, gap: str | None, eps: float) -> str:
    """A row of the Fig. 4 table: Spearman, top-5, and (attacks) both minus random sign."""
    found = summary("influence_fig4")
    cells = [cite(found, f"{prefix}/{attack}/eps{eps}/{m}", 3) for m in ("spearman", "top5")]
    cells += [cite(found, f"{prefix}/{gap}/eps{eps}/{m}", 3) if gap else "-" for m in ("spearman", "top5")]
    return f"| {damping} | {label} | {eps} | " + " | ".join(cells) + " |"


def dimension_row(epochs: int, name: str, d: int, eps: float) -> str:
    """A row of an Appendix H table: attack, random and gap of Spearman and top-5."""
    found = summary(DIMENSION[epochs])
    cells = [cite(found, f"{name}/eps{eps}/{kind}_{m}", 3) for m in ("spearman", "top5")
             for kind in ("attack", "random", "gap")]
    return f"| {epochs} | {name} | {d} | {eps} | " + " | ".join(cells) + " |"


def span(found: list[float], digits: int) -> str:
    low, high = f"{min(found):.{digits}f}", f"{max(found):.{digits}f}"
    return low if low == high else f"{low}-{high}"


def fit_row(name: str, d: int) -> str:
    """A row of the Appendix H fit table: training accuracy and test images, 15 and 100 epochs."""
    cells = []
    for epochs in (15, 100):
        found = summary(DIMENSION[epochs])
        accuracy = found["metrics"][f"{name}/train_accuracy"]["values"]
        tested = found["metrics"][f"{name}/n_test"]["values"]
        cells += [span(accuracy, 3), span(tested, 0)]
    return f"| {name} | {d} | " + " | ".join(cells) + " |"


def trend(epochs: int, group: str) -> str:
    """The sentence part saying on how many seeds the attack's Spearman falls with d and the gap widens."""
    name = DIMENSION[epochs]
    return (f"falls strictly with d on {seeds_holding(name, f'{group}/eps0.01/attack_spearman_falls')} at eps 0.01 "
            f"and {seeds_holding(name, f'{group}/eps0.05/attack_spearman_falls')} at eps 0.05 (its gap to random "
            f"widens strictly on {seeds_holding(name, f'{group}/eps0.01/gap_widens')} at eps 0.01, "
            f"{seeds_holding(name, f'{group}/eps0.05/gap_widens')} at eps 0.05); the attack's Spearman at 49 minus "
            f"at 784 dimensions is {cite(summary(name), f'{group}/eps0.01/attack_spearman_drop', 3)} at eps 0.01 "
            f"(per seed {per_seed(name, f'{group}/eps0.01/attack_spearman_drop')}) and "
            f"{cite(summary(name), f'{group}/eps0.05/attack_spearman_drop', 3)} at eps 0.05 (per seed "
            f"{per_seed(name, f'{group}/eps0.05/attack_spearman_drop')})")


def label_kept() -> str:
    found = summary("influence_fig4")["metrics"]
    return f"{min(min(f['values']) for m, f in found.items() if m.endswith('label_kept_min')):.3f}"


def beats(prefix: str, attack: str) -> str:
    return seeds_holding("influence_fig4", f"{prefix}/{attack}_beats_random")


def wins(prefix: str, gap: str, metric: str) -> str:
    """``"5 of 5 seeds"``: on how many seeds the attack's ``metric`` is below random's at every eps."""
    found = [values("influence_fig4", f"{prefix}/{gap}/eps{eps}/{metric}") for eps in EPS]
    return f"{sum(all(v < 0 for v in seed) for seed in zip(*found))} of {len(found[0])} seeds"


def misses(prefix: str, gap: str) -> str:
    """Where the attack does not beat random sign (gap >= 0): ``"eps 0.05 Spearman on seeds 1, 4; ..."``."""
    seeds_run, parts = summary("influence_fig4")["seeds"], []
    for eps in EPS:
        for metric, label in (("spearman", "Spearman"), ("top5", "top-5")):
            found = values("influence_fig4", f"{prefix}/{gap}/eps{eps}/{metric}")
            seeds = [seed for seed, v in zip(seeds_run, found) if v >= 0]
            if seeds:
                parts.append(f"eps {eps} {label} on seed{'s' if len(seeds) > 1 else ''} "
                             + ", ".join(str(s) for s in seeds))
    return "; ".join(parts) or "nowhere"


CITED = [
    lambda: f"({seed_range(summary('influence_fig4')['seeds'])}) the 1/7 images",
    lambda: f"smallest label-kept rate over seeds, perturbations and eps: {label_kept()}",
    lambda: f"test images per seed: {per_seed('influence_fig4', 'n_test', 0)}",
    *[lambda row=row, eps=eps: fig4_row(*row, eps) for row in FIG4_ROWS for eps in EPS],
    lambda: f"The single-step attack beats random sign on both measures at every eps on {beats('d0', 'attack1')} "
            f"with damping 0, the 10-step attack on {beats('d0', 'attack10')}, and the single-step attack with "
            f"damping 0.01 on {beats('d0.01', 'attack1')}",
    lambda: f"(damping 0: {misses('d0', 'gap1')}; damping 0.01: {misses('d0.01', 'gap1')})",
    lambda: f"on top-5 intersection alone it wins at every eps on {wins('d0', 'gap1', 'top5')} with damping 0",
    lambda: f"top-5 gap at eps 0.1: {cite(summary('influence_fig4'), 'd0/gap10/eps0.1/top5', 3)} for ten steps, "
            f"{cite(summary('influence_fig4'), 'd0/gap1/eps0.1/top5', 3)} for one",
    lambda: f"random sign alone brings Spearman to {cite(summary('influence_fig4'), 'd0/random/eps0.1/spearman', 3)} "
            f"at eps 0.1 (per seed {per_seed('influence_fig4', 'd0/random/eps0.1/spearman')})",
    lambda: f"with damping 0.01 random sign keeps {cite(summary('influence_fig4'), 'd0.01/random/eps0.1/spearman', 3)} "
            f"and the attack {cite(summary('influence_fig4'), 'd0.01/attack1/eps0.1/spearman', 3)}",
    lambda: f"({seed_range(summary('influence_dimension')['seeds'])}) the 1/7 images",
    lambda: seed_range(summary("influence_dimension_15epochs")["seeds"]) + " for both",
    *[lambda name=name, d=d: fit_row(name, d) for name, d in dict(CONTROLLED + NATURAL).items()],
    lambda: f"7x7 network's training accuracy per seed {per_seed(DIMENSION[15], 'MNIST 7x7/train_accuracy')}",
    *[lambda epochs=epochs, name=name, d=d, eps=eps: dimension_row(epochs, name, d, eps)
      for epochs in (15, 100) for name, d in CONTROLLED for eps in SHOWN_EPS],
    *[lambda name=name, d=d, eps=eps: dimension_row(100, name, d, eps) for name, d in NATURAL[1:] for eps in SHOWN_EPS],
    lambda: "With 15 epochs the sign attack's Spearman " + trend(15, "controlled"),
    lambda: "With 100 epochs it " + trend(100, "controlled"),
    lambda: "Over the natural resolutions (100 epochs) it " + trend(100, "natural"),
    lambda: "with 15 epochs it " + trend(15, "natural"),
]


@pytest.mark.parametrize("derive", CITED, ids=[f"docs/influence.md:{i}" for i in range(len(CITED))])
def test_a_cited_influence_figure_equals_its_committed_summary(derive):
    text = doc_text(DOC)
    assert derive() in text, f"docs/influence.md does not cite {derive()!r} (from experiments/results)"


def test_every_100_epoch_network_fits_its_training_images():
    """The docs' reason for 100 epochs: every input's last-epoch training loss below 0.1 on every seed."""
    losses = [v for name, figure in summary("influence_dimension")["metrics"].items() if name.endswith("/train_loss")
              for v in figure["values"]]
    assert len(losses) == 6 * len(summary("influence_dimension")["seeds"]) and max(losses) < 0.1
