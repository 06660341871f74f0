"""The audit test ``shared_logit_gradient`` on clean models and on models with a term shared by every logit.

A term added to every logit changes each logit's gradient (every gradient-based explanation) and no probability;
written in the forward code, it is copied into every clean twin, so twin calibration cannot see it
(``veneer.audit.inherited_state`` names it). The test compares the gradient of the mean logit with that of the
explained logit against a fixed prior, set on the bundled MNIST CNN and digits MLP of seed 0 after their values
and those of the seed-0 Adult MLP and MNIST ResNet had been seen (the four *tuning* models). Everything else here
is *held out*: the seed-1 models, the ViT (seeds 0 and 1), and every model with a shared term. The shared terms
(``veneer.manipulate.SharedTerm``, built by name with ``veneer.manipulate.architectural``; each scaled so that its
input gradient is 3 times the model's own logit gradient, on average over the first 16 inputs: not trivially huge):

* ``wave``: ``a * sin(w <x, d>)`` along a random direction ``d`` (thesis Sec. 4.1's "one picture for every
  input"; the suite's ``Veneered`` model);
* ``picture``: ``a * <x, t>`` with ``t`` a cross: every gradient explanation gains the same cross;
* ``gate``: ``a * tanh(<x, d>) ** 2``, a smooth input-dependent term.

Writes ``experiments/results/shared_logit_gradient.json``. Run: ``nice python experiments/shared_logit.py``
(training the seed-1 models takes a few minutes the first time; they are cached).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from veneer.audit.invariance import SHARED_LOGIT_GRADIENT, shared_logit_gradient
from veneer.data import load_dataset
from veneer.manipulate import architectural
from veneer.models import pretrained
from veneer.runs import versions, write_json

SUMMARY = Path(__file__).parent / "results" / "shared_logit_gradient.json"
MODELS = (("mnist-cnn", "mnist"), ("digits-mlp", "digits"), ("adult-mlp", "adult"), ("mnist-resnet", "mnist"),
          ("mnist-vit", "mnist"))
TUNING = {("mnist-cnn", 0), ("digits-mlp", 0), ("adult-mlp", 0), ("mnist-resnet", 0)}  # seen before the prior


def score(value: float) -> float:
    mean, sd = SHARED_LOGIT_GRADIENT.prior
    return (value - mean) / (sd ** 2 + SHARED_LOGIT_GRADIENT.tolerance ** 2) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--inputs", type=int, default=128)
    options = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, data in MODELS:
        x = load_dataset(data, "test").x[:options.inputs]
        for seed in [int(s) for s in options.seeds.split(",")]:
            model = pretrained(name, seed=seed)
            split = "tuning" if (name, seed) in TUNING else "held-out"
            candidates = [("clean", model)] + [(kind, architectural(model, kind, x[:16], seed=seed))
                                               for kind in ("wave", "picture", "gate")]
            for kind, candidate in candidates:
                with torch.no_grad():
                    same = bool(torch.allclose(candidate(x).softmax(1), model(x).softmax(1), atol=1e-6))
                value = shared_logit_gradient(candidate, x).statistic
                rows.append({"model": name, "seed": seed, "kind": kind, "split": split if kind == "clean" else
                             "held-out", "median_ratio": round(value, 4), "z": round(score(value), 2),
                             "flagged": score(value) > 3, "probabilities_unchanged": same})
                print(rows[-1], flush=True)
    clean = [r for r in rows if r["kind"] == "clean" and r["split"] == "held-out"]
    shared = [r for r in rows if r["kind"] != "clean"]
    write_json(SUMMARY, {
        "what": "shared_logit_gradient on clean bundled models and on the same models with a shared logit term",
        "prior": SHARED_LOGIT_GRADIENT.prior, "tolerance": SHARED_LOGIT_GRADIENT.tolerance,
        "tuning": sorted(f"{n} seed {s}" for n, s in TUNING), "inputs": options.inputs, "rows": rows,
        "held_out_clean_flagged": f"{sum(r['flagged'] for r in clean)} of {len(clean)}",
        "shared_term_flagged": f"{sum(r['flagged'] for r in shared)} of {len(shared)}",
        "versions": versions()})
    print(f"wrote {SUMMARY}")


if __name__ == "__main__":
    main()
