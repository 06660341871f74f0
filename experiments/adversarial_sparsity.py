"""Why the audit zoo's FGSM-trained Adult MLPs are flagged by ``beta_smoothing`` (docs/audit.md, the zoo's goals).

For the clean Adult MLP of a seed, its cross-entropy fine-tune and its FGSM adversarial training (built exactly as
experiments/audit_zoo.py builds them), on the first 32 Adult test rows: the share of features whose input gradient
(predicted class) is below 1% of the row's largest, and the audit's ``beta_smoothing`` component (1 - Spearman
between the gradient and that of the Softplus(3) surrogate). Writes experiments/results/adversarial_sparsity.json.

    PYTHONPATH=src python experiments/adversarial_sparsity.py [--seeds 20,30]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from audit_zoo import Context, benign
from veneer.audit.defences import beta_smoothing
from veneer.data import load_dataset
from veneer.explain import Gradient
from veneer.models import pretrained
from veneer.runs import versions, write_json

SUMMARY = Path(__file__).parent / "results" / "adversarial_sparsity.json"


def measure(model: torch.nn.Module, x: torch.Tensor) -> dict:
    grad = Gradient(model)(x, target=model(x).argmax(1)).abs()
    small = (grad < 0.01 * grad.amax(1, keepdim=True)).float().mean().item()
    component = beta_smoothing(model, x, {"gradient": Gradient(model)}).components["gradient"]
    return {"near_zero_share": round(small, 3), "beta_smoothing_gradient": round(component, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="20,30")
    options = parser.parse_args()
    torch.set_num_threads(1)
    train, x = load_dataset("adult", "train"), load_dataset("adult", "test").x[:32]
    rows = []
    for seed in [int(s) for s in options.seeds.split(",")]:
        original = pretrained("adult-mlp", seed=seed, progress=False)
        ctx = Context("adult-mlp", seed, original, train)
        for change in (None, "fine-tune", "adversarial"):
            model = original if change is None else benign(change, ctx)[0]
            rows.append({"seed": seed, "model": change or "clean", **measure(model.eval(), x)})
            print(rows[-1], flush=True)
    write_json(SUMMARY, {"what": __doc__.split("\n\n")[1].replace("\n", " "), "rows": rows, "versions": versions()})


if __name__ == "__main__":
    main()
