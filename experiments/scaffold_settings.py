"""A scaffold against the auditor's choices (issue 25, item 4): does a scaffold whose detector learnt the
perturbations of many explainer settings hide the sensitive feature under settings it never saw, and does the
audit's scaffolding test still flag it?

Data: COMPAS and German credit with two random columns (Slack et al. 2020, Sec. 4.1); biased: the rule on the
sensitive column; innocuous: the rule on random_1. Scaffolds (``veneer.manipulate.Scaffolding``, "both"
perturbations): the standard one (KernelSHAP background of 10 k-means centroids, LIME's Gaussian sampler) and
one trained on three k-means backgrounds (5, 10, 25 centroids) and the robust one (``ROBUST_SETTINGS``: those
and the raw rows; LIME's Gaussian and quartile samplers). Explained with settings the robust scaffold never
saw: KernelSHAP over 20 and 50 k-means centroids and over 200 raw training rows, with 256 and 2048
coalitions; LIME with kernel widths 0.5x and 2x the default and 1000 samples. Reported: the share of
``--rows`` test rows whose top-1 feature is the sensitive attribute (its one-hot group), fidelity to the
biased model on the test split, the audit statistic (``surrogate_detection``) and on-manifold KernelSHAP's
top-1 share.

    PYTHONPATH=src python experiments/scaffold_settings.py --out runs/scaffold_settings [--rows 30] [--commit]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import torch

from veneer.audit.scaffolding import surrogate_detection
from veneer.data import compas, german
from veneer.explain import KernelShap, Lime
from veneer.explain.model_agnostic import ConditionalShap
from veneer.manipulate.scaffolding import (ROBUST_SETTINGS, Scaffolding, add_random_features, feature_rule,
                                           one_hot_groups, top_k_share)
from veneer.runs import write_json

SEED = 0
# a middle way: several KernelSHAP k-means backgrounds only (LIME's Gaussian sampler, no raw-row background)
CENTROIDS = {"background_size": (5, 10, 25)}
CASES = (("compas", compas, "race=African-American", "race"),
         ("german", german, "personal_status_sex=female : divorced/separated/married", "personal_status_sex"))


def explainers(model, train, features: int) -> dict:
    """The auditor's settings, none of which the robust scaffold's detector was trained on."""
    raw = train.x[torch.randperm(len(train), generator=torch.Generator().manual_seed(SEED + 7))[:200]]
    width = 0.75 * math.sqrt(features)  # lime's default kernel width
    return {"kernel-shap, 20 centroids": KernelShap(model, train.x, num_samples=256, background_size=20, seed=SEED),
            "kernel-shap, 50 centroids, 2048": KernelShap(model, train.x, num_samples=2048, background_size=50,
                                                          seed=SEED),
            "kernel-shap, 200 raw rows": KernelShap(model, raw, num_samples=256, background_size=None, seed=SEED),
            "lime, width x0.5": Lime(model, train.x, num_samples=1000, kernel_width=0.5 * width, seed=SEED),
            "lime, width x2": Lime(model, train.x, num_samples=1000, kernel_width=2 * width, seed=SEED),
            "conditional-shap (defence)": ConditionalShap(model, train.x, num_samples=512, seed=SEED,
                                                          groups=one_hot_groups(train.feature_names))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/scaffold_settings")
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--commit", action="store_true", help="copy summary.json to experiments/results/")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, load, column, attribute in CASES:
        train, test = add_random_features(load("train"), 2, SEED), add_random_features(load("test"), 2, SEED + 1)
        x = test.x[torch.randperm(len(test), generator=torch.Generator().manual_seed(SEED))[:args.rows]]
        biased, group = feature_rule(train, [column]), train.features([attribute])
        for kind, settings in (("standard", {}), ("centroids 5/10/25", CENTROIDS), ("robust", ROBUST_SETTINGS)):
            result = Scaffolding(biased, feature_rule(train, ["random_1"]), "both", seed=SEED, **settings)(train)
            with torch.no_grad():
                fidelity = (result.model(test.x).argmax(1) == biased(test.x).argmax(1)).double().mean().item()
            detection = surrogate_detection(result.model, x, train.x, seed=SEED)
            row = {"data": name, "scaffold": kind, "detector_accuracy": round(result.detector_accuracy, 4),
                   "fidelity_test": round(fidelity, 4),
                   "audit_statistic": round(max(detection["lime"], detection["kernel-shap"]), 4),
                   "top1_sensitive": {}}
            for setting, explainer in explainers(result.model, train, train.x.shape[1]).items():
                row["top1_sensitive"][setting] = round(top_k_share(explainer(x, target=1), group, 1), 4)
            results.append(row)
            print(json.dumps(row), flush=True)
    summary = {"seed": SEED, "rows": args.rows, "split": "scaffolds trained on the train split; test rows explained",
               "robust_settings": {k: list(v) for k, v in ROBUST_SETTINGS.items()},
               "centroid_settings": {k: list(v) for k, v in CENTROIDS.items()}, "results": results}
    write_json(out / "summary.json", summary)
    if args.commit:
        shutil.copy(out / "summary.json", Path(__file__).parent / "results" / "scaffold_settings.json")


if __name__ == "__main__":
    main()
