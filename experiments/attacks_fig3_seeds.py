"""Ghorbani et al. (2019) Fig. 3 on bundled MNIST over seeds (issue 26): the input-level attacks of
``experiments/attacks_fig3.py`` (random / top-k / mass-center on Gradient, IG and DeepLift, eps 0.02 / 0.05 / 0.1,
10 signed-gradient steps) on 32 test images drawn per seed, through :func:`veneer.jobs.attack.attack_inputs`.

    nice -n 15 python experiments/attacks_fig3_seeds.py [--seeds 0,1,2] [--worker]

Per seed ``s``: 32 MNIST test images drawn with ``mnist("test").sample(32, seed=s)`` (class-stratified, shuffled;
only the correctly classified ones are attacked), attack seed ``s`` (the random-sign draws), the options of
``attacks_fig3.OPTIONS`` (k = 100 of 784 pixels, step_size 2.5 eps / 10, Softplus(30) surrogate, IG with 8 steps);
the run's files under ``runs/attacks_fig3_seeds/seed<s>``. No setting is chosen, so there is only a test split.
Metrics, means over the attacked images, for every method, attack and eps: ``topk`` (top-k intersection),
``spearman``, ``com_shift`` (pixels) and ``label_kept`` (rate); per method at eps 0.1 the readings of
docs/attacks.md: ``topk_minus_random`` (the top-k attack's intersection minus the random signs') and
``com_ratio`` (the mass-center attack's COM shift over the random signs'); ``n_attacked``, ``max_linf_over_eps``
(the largest per-image l-inf over its eps) and ``seconds`` (attack time). ``--worker`` measures the given seeds into
the study's cache without writing a summary; a run without it writes ``experiments/results/attacks_fig3_seeds.json``
and ``.md``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from attacks_fig3 import OPTIONS
from runner import measure_seeds, parse_seeds, print_summary, run_study, seeds_parser
from veneer.data import mnist
from veneer.jobs.attack import attack_inputs
from veneer.models import pretrained
from veneer.runs import RunDir, seed_everything

NAME, N, READ_EPS = "attacks_fig3_seeds", 32, 0.1
OUT = Path(__file__).resolve().parents[1] / "runs" / NAME
STATS = {"topk": "topk_intersection", "spearman": "spearman", "com_shift": "com_shift",
         "label_kept": "label_kept_rate"}
CONFIG = {"model": "mnist-cnn (bundled)", "images": f"mnist('test').sample({N}, seed=s)", "attack_seed": "s",
          **OPTIONS}


def key(method: str, attack: str, eps: float, stat: str) -> str:
    """The summary's metric name of ``stat`` (a :data:`STATS` key) for one method, attack and eps."""
    return f"{method}/{attack}/eps{eps:g}/{stat}"


def measure(seed: int, split: str) -> dict[str, float]:
    """Ghorbani et al. (2019) Fig. 3 on seed ``seed``'s test images (module docstring): every method x attack x eps
    and the readings at eps 0.1."""
    assert split == "test", split  # no setting is chosen here: the test images report
    folder = OUT / f"seed{seed}"
    options = {**OPTIONS, "seed": seed}
    run_dir = RunDir(folder, {"command": "attack-input", "sweep": True, "n": N, "sample_seed": seed, **options}, seed,
                     overwrite=True)  # the study's cache, not this folder, says which seeds are done
    seed_everything(seed)
    result = attack_inputs(pretrained("mnist-cnn", progress=False), mnist("test").sample(N, seed=seed), folder,
                           show=0, progress=True, **options)
    run_dir.write_result(result)
    rows = {(r["method"], r["attack"], r["eps"]): r for r in result.values["results"]}
    metrics = {key(method, attack, eps, stat): float(row[column])
               for (method, attack, eps), row in rows.items() for stat, column in STATS.items()}
    for method in OPTIONS["methods"]:
        random, top_k, center = (rows[(method, attack, READ_EPS)] for attack in ("random", "top-k", "mass-center"))
        metrics[f"{method}/topk_minus_random"] = top_k["topk_intersection"] - random["topk_intersection"]
        metrics[f"{method}/com_ratio"] = center["com_shift"] / random["com_shift"]
    per_image = pd.read_csv(folder / "per_image.csv")
    metrics["n_attacked"] = result.values["n_attacked"]
    metrics["max_linf_over_eps"] = float((per_image["linf"] / per_image["eps"]).max())
    metrics["seconds"] = sum(r["seconds"] for r in rows.values())
    return metrics


def main() -> None:
    options, seeds = parse_seeds(seeds_parser(__doc__))
    if options.worker:
        measure_seeds(NAME, measure, seeds, config=CONFIG)
        return
    summary = run_study(NAME, measure, seeds, config=CONFIG,
                        what="Ghorbani et al. Fig. 3 on MNIST: top-k intersection, Spearman, COM shift and label-kept "
                             "rate of random / top-k / mass-center attacks (10 steps) on Gradient, IG and DeepLift at "
                             "eps 0.02 / 0.05 / 0.1",
                        splits={"test": f"{N} MNIST test images per seed, mnist('test').sample({N}, seed=s); only the "
                                        "correctly classified ones are attacked"})
    print_summary(summary)


if __name__ == "__main__":
    main()
