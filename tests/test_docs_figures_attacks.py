"""The figures of docs/attacks.md's "Measured on MNIST (Fig. 3)" equal the committed summary of
``experiments/attacks_fig3_seeds.py`` (issue 26; the same check as tests/test_docs_figures.py: no number typed by
hand). A re-run that changes the summary fails here until the docs say the new figure.

Also docs/explain_graphs.md's accuracies of the bundled models it describes (``mnist-vit``, ``mnist-cnn``,
``mnist-resnet``), from ``experiments/results/audit_any_architecture.json`` and ``architectural.json``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = "docs/attacks.md"
NAME = "attacks_fig3_seeds"
HEADING, NEXT = "## Measured on MNIST (Fig. 3)", "Targeted map (Dombrowski):"  # the section, up to the next paragraph
sys.path.insert(0, str(ROOT / "experiments"))
from runner import cite, doc_text, load_summary, seed_range  # noqa: E402  (experiments/runner.py)

METHODS = {"gradient": "Gradient", "ig": "IG", "deeplift": "DeepLift"}
ATTACKS = ("random", "top-k", "mass-center")
DIGITS = {"topk": 3, "spearman": 3, "com_shift": 2}
READ_EPS, OTHER_EPS = 0.1, (0.02, 0.05)


def summary() -> dict:
    return load_summary(NAME)


def values(metric: str) -> list[float]:
    return summary()["metrics"][metric]["values"]


def per_seed(metric: str, digits: int) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values(metric))


def key(method: str, attack: str, eps: float, stat: str) -> str:
    return f"{method}/{attack}/eps{eps:g}/{stat}"


def main_row(method: str, attack: str) -> str:
    """A row of the eps-0.1 table: top-k intersection, Spearman and COM shift (mean +- 95% half-width)."""
    cells = [cite(summary(), key(method, attack, READ_EPS, stat), digits) for stat, digits in DIGITS.items()]
    return f"| {METHODS[method]} | {attack} | " + " | ".join(cells) + " |"


def other_row(method: str, attack: str) -> str:
    """A row of the eps-0.02 / 0.05 table: each statistic at both radii."""
    cells = [cite(summary(), key(method, attack, eps, stat), digits) for stat, digits in DIGITS.items()
             for eps in OTHER_EPS]
    return f"| {METHODS[method]} | {attack} | " + " | ".join(cells) + " |"


def setup() -> str:
    found = summary()
    n = values("n_attacked")
    return (f"{seed_range(found['seeds'])}, each drawing its 32 images (`mnist(\"test\").sample(32, seed=s)`) and "
            f"the random signs; {int(min(n))}-{int(max(n))} of the 32 correctly classified and attacked")


def label_kept() -> str:
    kept = [v for metric, figure in summary()["metrics"].items() if metric.endswith("/label_kept")
            for v in figure["values"]]
    return f"the lowest label-kept rate of any cell on any seed is {min(kept):.3f}; every image used l-inf <= eps"


def seconds() -> str:
    return f"{min(values('seconds')):.0f}-{max(values('seconds')):.0f} s of attack time per seed"


def readings(metric: str, digits: int) -> str:
    """One method's reading of the targeted attack against random signs: mean +- half-width (per seed)."""
    return ", ".join(f"{METHODS[m]} {cite(summary(), f'{m}/{metric}', digits)} ({per_seed(f'{m}/{metric}', digits)})"
                     for m in METHODS)


def failures(holds: Callable[[str, float, int], bool], methods: tuple[str, ...] = tuple(METHODS),
             eps_values: tuple[float, ...] = (*OTHER_EPS, READ_EPS)) -> str:
    """Where ``holds(method, eps, seed_position)`` fails: "on every seed" or the exceptions, per method and eps."""
    seeds, missed = summary()["seeds"], []
    for method in methods:
        for eps in eps_values:
            failed = [str(seeds[i]) for i in range(len(seeds)) if not holds(method, eps, i)]
            if failed:
                missed.append(f"{METHODS[method]} at eps {eps:g} on seed{'s' if len(failed) > 1 else ''} "
                              f"{', '.join(failed)}")
    return "on every seed" if not missed else "on every seed except " + "; ".join(missed)


def below_random(stat: str, attack: str, method: str, eps: float, i: int) -> bool:
    return values(key(method, attack, eps, stat))[i] < values(key(method, "random", eps, stat))[i]


def above_random(stat: str, attack: str, method: str, eps: float, i: int) -> bool:
    return values(key(method, attack, eps, stat))[i] > values(key(method, "random", eps, stat))[i]


def gradient_lowest(method: str, eps: float, i: int) -> bool:
    """Gradient's top-k intersection is below IG's and DeepLift's under every attack."""
    return all(values(key(method, a, eps, "topk"))[i] < min(values(key(m, a, eps, "topk"))[i] for m in METHODS
                                                             if m != method) for a in ATTACKS)


GRAPHS = "docs/explain_graphs.md"


def bundled_accuracy(model: str, seed: int) -> float:
    """A bundled model's test accuracy (every bundled test image) before any architectural manipulation."""
    (accuracy,) = {row["accuracy_before"] for row in load_summary("architectural")["rows"]
                   if row["model"] == model and row["seed"] == seed}
    return accuracy


def vit_accuracy() -> str:
    vit = load_summary("audit_any_architecture")["vit"]
    n = load_summary("architectural")["test_rows"]["mnist"]
    return (f"seed {vit['seed']}, one training run: train accuracy {vit['train_accuracy']:.3f}, test accuracy "
            f"{vit['test_accuracy']:.3f}, in `experiments/results/audit_any_architecture.json`; below the CNN's "
            f"{bundled_accuracy('mnist-cnn', 0):.3f}, seed 0, on the same {n} test images")


def resnet_accuracy() -> str:
    n = load_summary("architectural")["test_rows"]["mnist"]
    seeds = load_summary("architectural")["seeds"]
    each = [f"{bundled_accuracy('mnist-resnet', seed):.3f} for seed {seed}" for seed in seeds]
    return f"test accuracy on the {n} bundled test images " + ", ".join(each[:-1]) + f" and {each[-1]}"


CLAIMS = [  # (the claim, where it must hold, the methods it is about) of the section's reading
    ("at each method and eps the top-k attack leaves a lower top-k intersection than random signs",
     lambda m, e, i: below_random("topk", "top-k", m, e, i), tuple(METHODS)),
    ("at each method and eps the mass-center attack moves the center of mass further than random signs",
     lambda m, e, i: above_random("com_shift", "mass-center", m, e, i), tuple(METHODS)),
    ("Gradient's top-k intersection is the lowest of the three methods under every attack at every eps",
     gradient_lowest, ("gradient",)),
    ("for IG and DeepLift, at every eps, the top-k attack leaves a higher Spearman than random signs",
     lambda m, e, i: above_random("spearman", "top-k", m, e, i), ("ig", "deeplift")),
]

CITED = [
    *[(DOC, lambda m=m, a=a: main_row(m, a)) for m in METHODS for a in ATTACKS],
    *[(DOC, lambda m=m, a=a: other_row(m, a)) for m in METHODS for a in ATTACKS],
    (DOC, setup),
    (DOC, label_kept),
    (DOC, seconds),
    (DOC, lambda: f"intersection minus random signs' is {readings('topk_minus_random', 3)}"),
    (DOC, lambda: f"{readings('com_ratio', 1)} times"),
    *[(DOC, lambda c=c, h=h, m=m: f"{c} {failures(h, m)}") for c, h, m in CLAIMS],
    (GRAPHS, vit_accuracy),
    (GRAPHS, resnet_accuracy),
]


# the section's phrases that hold numbers but no measured figure: the command, the machine, the interval, MNIST
PHRASES = ["nice -n 15", "--seeds 0,1,2", "2 shared CPU cores", "95% half-width", "pixels are 0",
           "exactly 0 attribution", "checked on seed 0"]


def section() -> str:
    text = doc_text(DOC)
    return text[text.index(HEADING):text.index(NEXT)]


@pytest.mark.parametrize("doc, derive", CITED, ids=[f"{doc}:{i}" for i, (doc, _) in enumerate(CITED)])
def test_a_cited_figure_equals_its_committed_summary(doc, derive):
    text = doc_text(doc)
    assert derive() in text, f"{doc} does not cite {derive()!r} (from experiments/results)"


def test_every_image_stayed_within_its_eps():
    """The section says so: the largest per-image l-inf over its eps, on any seed, is at most 1 (float rounding)."""
    assert max(values("max_linf_over_eps")) <= 1 + 1e-6


def test_the_section_cites_no_other_measured_number():
    """Every number of the section is a derived figure above or one of the run's settings."""
    rest = section()
    for text in [derive() for _, derive in CITED] + PHRASES:
        rest = rest.replace(text, "")
    settings = {"3", "32", "100", "784", "10", "2.5", "30", "8", "0.02", "0.05", "0.1", "300"}
    left = set(re.findall(r"\d+(?:\.\d+)?", rest)) - settings
    assert not left, f"the section cites numbers no summary gives: {sorted(left)}"
