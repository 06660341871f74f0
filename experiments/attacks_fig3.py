"""Ghorbani et al. (2019) Fig. 3 on bundled MNIST: eps vs top-k intersection, Spearman and COM shift for
random / top-k / mass-center attacks on Gradient, IG and DeepLift, through the job behind
``veneer attack-input --sweep`` (:func:`veneer.jobs.attack.attack_inputs`).

Usage: ``python experiments/attacks_fig3.py [OUT]`` (default ``runs/attacks_fig3``); prints a Markdown table.
Sizes (chosen to finish in about 10 minutes on 2 shared CPU cores): the first 32 MNIST test images (those the
model classifies correctly), eps 0.02 / 0.05 / 0.1, 10 signed-gradient steps (step_size = 2.5 eps / 10),
IG with 8 steps, Softplus(30) surrogate, k = 100 (of 784 pixels).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from veneer.attacks import ATTACKS
from veneer.data import mnist
from veneer.jobs.attack import attack_inputs
from veneer.models import pretrained
from veneer.runs import RunDir, seed_everything

OPTIONS = dict(methods=["gradient", "ig", "deeplift"], attacks=list(ATTACKS), eps_values=[0.02, 0.05, 0.1],
               steps=10, ig_steps=8, k=100, softplus_beta=30.0, with_sweep=True)


def main(out: str) -> None:
    run_dir = RunDir(out, {"command": "attack-input", "sweep": True, "n": 32, **OPTIONS}, 0)
    seed_everything(0)
    start = time.perf_counter()
    run_dir.write_result(attack_inputs(pretrained("mnist-cnn"), mnist("test").subset(slice(0, 32)), Path(out),
                                        **OPTIONS))
    table = pd.read_csv(f"{out}/sweep.csv")
    columns = ["method", "attack", "eps", "n", "label_kept_rate", "topk_intersection", "spearman", "com_shift",
               "linf", "seconds"]
    table = table[columns].sort_values(["method", "attack", "eps"])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/attacks_fig3")
