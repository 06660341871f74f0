"""Manipulations in the architecture (``veneer.manipulate.architectural``) on the bundled models: what they change.

For every bundled model (MNIST CNN, digits MLP, MNIST ResNet-8; seeds 0, 1 and 2, cached by
``veneer.models.pretrained``) and every registered family (``wave``, ``picture``, ``gate``: a term shared by every
logit; ``high_frequency``: a small fast wave per class; ``router`` / ``router_add``: a decoy's gradient routed into
the explanation), built with its default options and the same seed as the model, on the first ``--scale-rows``
*training* inputs (which set the term's scale: its gradient 3x the model's own, on average), this measures on the
whole bundled *test* split:

* accuracy before and after, the share of predictions unchanged, the largest change of any class probability and
  of any logit (``high_frequency``: with its bound ``a / w``);
* the gradient share: per input, the cosine between the input gradient of the manipulated model's predicted logit
  and that of the family's term (``veneer.manipulate.architectural.term_cosine``; 1: the explanation is the
  term's), its median and 10% quantile over the first ``--gradient-rows`` test inputs;
* the statistic of the audit test ``shared_logit_gradient`` (median ratio of the mean logit's gradient norm to
  the explained logit's, on the same inputs; it flags above 0.29, see experiments/shared_logit.py);
* what a clean twin inherits (``veneer.audit.inherited_state``), once per family (on the MNIST CNN).

A frequency sweep of ``high_frequency`` (``--frequencies``) shows the trade-off that set its default
(``frequency=1000``; the figures per frequency are in the summary and docs/manipulate.md): the logits move by at
most ``a / w``.
Writes ``experiments/results/architectural.json``.

    nice .venv/bin/python experiments/architectural.py      # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from veneer.audit import inherited_state
from veneer.audit.invariance import shared_logit_gradient
from veneer.data import load_dataset
from veneer.manipulate import ARCHITECTURAL, architectural, term_cosine
from veneer.models import pretrained
from veneer.runs import seed_everything, versions, write_json

SUMMARY = Path(__file__).parent / "results" / "architectural.json"
MODELS = (("mnist-cnn", "mnist"), ("digits-mlp", "digits"), ("mnist-resnet", "mnist"))


@torch.no_grad()
def logits_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(chunk) for chunk in x.split(500)])


def measure(original: torch.nn.Module, manipulated: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
            gradient_rows: int) -> dict:
    before, after = logits_of(original, x), logits_of(manipulated, x)
    cosine = term_cosine(manipulated, x[:gradient_rows])
    row = {"accuracy_before": round((before.argmax(1) == y).float().mean().item(), 4),
           "accuracy_after": round((after.argmax(1) == y).float().mean().item(), 4),
           "predictions_unchanged": round((before.argmax(1) == after.argmax(1)).float().mean().item(), 4),
           "max_probability_change": float((after.softmax(1) - before.softmax(1)).abs().max()),
           "max_logit_change": float((after - before).abs().max()),
           "gradient_cosine_median": round(cosine.median().item(), 4),
           "gradient_cosine_q10": round(cosine.quantile(0.1).item(), 4),
           "shared_logit_median_ratio": round(shared_logit_gradient(manipulated, x[:gradient_rows]).statistic, 4)}
    row["accuracy_change_pt"] = round(100 * (row["accuracy_after"] - row["accuracy_before"]), 2)
    if hasattr(manipulated, "bound"):
        row["logit_bound"] = manipulated.bound
    return row


def worst(rows: list[dict]) -> dict:
    """Per family, over models and seeds: the largest accuracy change (signed), the lowest share of predictions
    kept, the largest probability change, the lowest median gradient cosine, the range of the shared-logit ratio."""
    ratios = [r["shared_logit_median_ratio"] for r in rows]
    return {"accuracy_change_pt": max((r["accuracy_change_pt"] for r in rows), key=abs),
            "predictions_unchanged": min(r["predictions_unchanged"] for r in rows),
            "max_probability_change": max(r["max_probability_change"] for r in rows),
            "gradient_cosine_median": min(r["gradient_cosine_median"] for r in rows),
            "shared_logit_median_ratio": [min(ratios), max(ratios)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scale-rows", type=int, default=64)
    parser.add_argument("--gradient-rows", type=int, default=256)
    parser.add_argument("--frequencies", default="50,200,1000,2000")
    options = parser.parse_args()
    torch.set_num_threads(1)
    seed_everything(0)
    seeds = [int(s) for s in options.seeds.split(",")]
    rows, sweep, inherited = [], [], {}
    for name, data in MODELS:
        train, test = load_dataset(data, "train"), load_dataset(data, "test")
        scale_x = train.x[:options.scale_rows]
        for seed in seeds:
            model = pretrained(name, seed=seed)
            for family in sorted(ARCHITECTURAL):
                manipulated = architectural(model, family, scale_x, seed=seed)
                inherited.setdefault(family, inherited_state(manipulated))
                rows.append({"model": name, "seed": seed, "family": family,
                             **measure(model, manipulated, test.x, test.y, options.gradient_rows)})
                print(rows[-1], flush=True)
            for frequency in [float(f) for f in options.frequencies.split(",")]:
                manipulated = architectural(model, "high_frequency", scale_x, seed=seed, frequency=frequency)
                sweep.append({"model": name, "seed": seed, "frequency": frequency,
                              **measure(model, manipulated, test.x, test.y, options.gradient_rows)})
                print(sweep[-1], flush=True)
    write_json(SUMMARY, {
        "what": "architectural manipulations (veneer.manipulate.architectural, default options) on bundled models",
        "split": "scale set on the first scale_rows training inputs; every figure on the whole bundled test split "
                 "(gradient cosine: its first gradient_rows inputs); seeds = the model's training seed and the "
                 "family's seed",
        "seeds": seeds, "scale_rows": options.scale_rows,
        "gradient_rows": options.gradient_rows,
        "test_rows": {data: len(load_dataset(data, "test")) for _, data in MODELS},
        "rows": rows, "high_frequency_sweep": sweep, "inherited": inherited,
        "worst": {family: worst([r for r in rows if r["family"] == family]) for family in sorted(ARCHITECTURAL)},
        "versions": versions()})
    print(f"wrote {SUMMARY}")


if __name__ == "__main__":
    main()
