"""Measured scaffolding detection and the on-manifold defence (issue 25) on a zoo of tabular black boxes.

Data: COMPAS (sensitive column race=African-American), German credit (personal_status_sex=female : ...),
Adult (sex=Female), and a CSV that is not bundled: scikit-learn's breast-cancer table written to a CSV with
a binary "sex" column (random, seeded) and read back with ``veneer.data.table``. Two random 0/1 columns are
appended to each (Slack et al. 2020, Sec. 4.1).

Clean models: logistic regression, random forest, gradient boosting and an MLP (scikit-learn, trained on the
train split), each exported to ONNX (skl2onnx) and loaded back as a ``veneer.models.BlackBox`` (onnxruntime),
and the honest biased rule itself (it uses the sensitive column openly). Scaffolded models
(``veneer.manipulate.Scaffolding``): perturbations lime / shap / both x one or two innocuous random features x
detector strength (10 or 100 trees), the biased model the rule on the sensitive column.

For each model: the audit test's statistic (``surrogate_detection``, max over LIME/KernelSHAP perturbations)
and the KNN-CAD alternative (``knn_cad_detection``), on ``--rows`` test rows with the train split as the real
rows; for each scaffold, the share of explained test rows whose top-1 feature belongs to the sensitive
attribute (its one-hot group) under KernelSHAP, LIME and on-manifold KernelSHAP (``ConditionalShap``, the
one-hot attributes as groups). Adult: a seeded sample of 8000 training rows.

    PYTHONPATH=src python experiments/tabular_zoo.py --out runs/tabular_zoo [--rows 32] [--explain 20]

Writes RUN/summary.json (and copies it to experiments/results/tabular_zoo.json with --commit).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from veneer.audit.scaffolding import PRIOR, SCAFFOLDING, knn_cad_detection, surrogate_detection
from veneer.data import adult, compas, german, table
from veneer.explain import KernelShap, Lime
from veneer.explain.model_agnostic import ConditionalShap
from veneer.manipulate.scaffolding import (Scaffolding, add_random_features, feature_rule, one_hot_groups,
                                           top_k_share)
from veneer.models import onnx_model
from veneer.runs import write_json

SEED = 0


def breast_cancer_csv(folder: Path) -> tuple:
    """scikit-learn's breast-cancer table with a seeded random binary "sex" column, as a CSV read back."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.insert(0, "sex", np.random.default_rng(SEED).choice(["F", "M"], len(frame)))
    path = folder / "breast_cancer.csv"
    frame.to_csv(path, index=False)
    return table(path, "target", "sex", split="train"), table(path, "target", "sex", split="test")


def datasets(folder: Path):
    yield "compas", compas("train"), compas("test"), "race=African-American", "race"
    sex = "personal_status_sex=female : divorced/separated/married"
    yield "german", german("train"), german("test"), sex, "personal_status_sex"
    # a seeded 8000-row sample of Adult's 30162 training rows: the clean models train in minutes on 2 cores
    yield "adult", adult("train").sample(8000, SEED), adult("test"), "sex=Female", "sex"
    train, test = breast_cancer_csv(folder)
    yield "breast_cancer_csv", train, test, "sex=M", "sex"


def clean_models(train, folder: Path, name: str) -> dict:
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    estimators = {"logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                  "forest": RandomForestClassifier(100, random_state=SEED, n_jobs=1),
                  "boosting": GradientBoostingClassifier(random_state=SEED),
                  "mlp": make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=500, random_state=SEED))}
    x, y = train.x.numpy(), train.y.numpy()
    models = {}
    for key, estimator in estimators.items():
        estimator.fit(x, y)
        path = folder / f"{name}-{key}.onnx"
        path.write_bytes(to_onnx(estimator, x[:1], options={id(estimator): {"zipmap": False}}).SerializeToString())
        models[key] = onnx_model(path)
    return models


def statistics(model, x, train) -> dict:
    start = time.perf_counter()
    surrogate = surrogate_detection(model, x, train.x, seed=SEED)
    seconds = time.perf_counter() - start
    cad = knn_cad_detection(model, x, train.x, seed=SEED)
    return {"surrogate": {k: round(v, 4) for k, v in surrogate.items()},
            "surrogate_statistic": round(max(surrogate["lime"], surrogate["kernel-shap"]), 4),
            "knn_cad": {k: round(v, 4) for k, v in cad.items()},
            "knn_cad_statistic": round(max(cad["lime"], cad["kernel-shap"]), 4), "seconds": round(seconds, 2)}


def defence(model, train, x, group: list[int]) -> dict:
    found = {}
    explainers = {"kernel-shap": KernelShap(model, train.x, num_samples=512, seed=SEED),
                  "lime": Lime(model, train.x, num_samples=1000, seed=SEED),
                  "conditional-shap": ConditionalShap(model, train.x, num_samples=512, seed=SEED,
                                                      groups=one_hot_groups(train.feature_names))}
    for method, explainer in explainers.items():
        found[method] = round(top_k_share(explainer(x, target=1), group, 1), 4)
    return found


def auroc(clean: list[float], flagged: list[float]) -> float:
    """P(statistic of a scaffold > that of a clean model), ties half (the Mann-Whitney form of the AUROC)."""
    wins = [(s > c) + 0.5 * (s == c) for s in flagged for c in clean]
    return float(np.mean(wins))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/tabular_zoo")
    parser.add_argument("--rows", type=int, default=32, help="test rows around which perturbations are drawn")
    parser.add_argument("--explain", type=int, default=20, help="test rows explained for the defence")
    parser.add_argument("--commit", action="store_true", help="copy summary.json to experiments/results/")
    parser.add_argument("--summary-only", action="store_true",
                        help="recompute the summary from the models measured in RUN/summary.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = json.loads((out / "summary.json").read_text())["models"] if args.summary_only else measure(args, out)
    summary = summarise(rows, args)
    write_json(out / "summary.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "models"}, indent=1))
    if args.commit:
        shutil.copy(out / "summary.json", Path(__file__).parent / "results" / "tabular_zoo.json")


def measure(args, out: Path) -> list[dict]:
    """Every model's statistics (and each scaffold's defence), one row per model."""
    rows = []
    for name, train, test, column, attribute in datasets(out):
        train, test = add_random_features(train, 2, SEED), add_random_features(test, 2, SEED + 1)
        x = test.x[torch.randperm(len(test), generator=torch.Generator().manual_seed(SEED))[:args.rows]]
        explained = x[:args.explain]
        group = train.features([attribute])
        biased = feature_rule(train, [column])
        models = {("clean", key): model for key, model in clean_models(train, out, name).items()}
        models[("clean", "honest rule")] = biased
        for perturbation in ("lime", "shap", "both"):
            for innocuous in (1, 2):
                for trees in (10, 100):
                    randoms = [f"random_{i + 1}" for i in range(innocuous)]
                    result = Scaffolding(biased, feature_rule(train, randoms), perturbation, seed=SEED,
                                         n_estimators=trees)(train)
                    key = f"{perturbation}, {innocuous} innocuous, {trees} trees"
                    models[("scaffold", key)] = result.model
        for (kind, key), model in models.items():
            row = {"data": name, "kind": kind, "model": key, **statistics(model, x, train)}
            if kind == "scaffold":
                row["defence_top1_sensitive"] = defence(model, train, explained, group)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def summarise(rows: list[dict], args) -> dict:
    """AUROC of both detectors, flags under the test's prior (fitted on the bundled data's clean models: the
    CSV is held out) and under leave-one-data-set-out priors, and the defence's shares."""
    clean = [r for r in rows if r["kind"] == "clean"]
    scaffolds = [r for r in rows if r["kind"] == "scaffold"]
    mean, sd = PRIOR
    bound = mean + 3 * (sd ** 2 + SCAFFOLDING.tolerance ** 2) ** 0.5
    held_out = {}
    for name in sorted({r["data"] for r in rows}):
        others = [r["surrogate_statistic"] for r in clean if r["data"] != name]
        m, s = float(np.mean(others)), float(np.std(others, ddof=1))
        limit = m + 3 * (s ** 2 + SCAFFOLDING.tolerance ** 2) ** 0.5
        held_out[name] = {"prior": [round(m, 4), round(s, 4)], "flag_above": round(limit, 4),
                          "clean_flagged": sum(r["surrogate_statistic"] > limit for r in clean if r["data"] == name),
                          "scaffolds_flagged": sum(r["surrogate_statistic"] > limit for r in scaffolds
                                                   if r["data"] == name),
                          "scaffolds": sum(r["data"] == name for r in scaffolds)}
    defended = [r["defence_top1_sensitive"]["conditional-shap"] for r in scaffolds]
    summary = {
        "seed": SEED, "rows": args.rows, "explained_rows": args.explain,
        "split": "real rows: train split; perturbations around and explanations of test rows",
        "prior": list(PRIOR), "tolerance": SCAFFOLDING.tolerance, "flag_above": round(bound, 4),
        "auroc": {"surrogate": auroc([r["surrogate_statistic"] for r in clean],
                                     [r["surrogate_statistic"] for r in scaffolds]),
                  "knn_cad": auroc([r["knn_cad_statistic"] for r in clean],
                                   [r["knn_cad_statistic"] for r in scaffolds])},
        "clean_flagged": sum(r["surrogate_statistic"] > bound for r in clean), "clean": len(clean),
        "scaffolds_flagged": sum(r["surrogate_statistic"] > bound for r in scaffolds), "scaffolds": len(scaffolds),
        "leave_one_dataset_out": held_out,
        "clean_statistic": {"mean": round(float(np.mean([r["surrogate_statistic"] for r in clean])), 4),
                            "sd": round(float(np.std([r["surrogate_statistic"] for r in clean], ddof=1)), 4),
                            "max": max(r["surrogate_statistic"] for r in clean)},
        "defence": {"conditional_shap_top1_sensitive_mean": round(float(np.mean(defended)), 4),
                    "conditional_shap_top1_sensitive_min": min(defended),
                    "scaffolds_at_least_90pct": sum(d >= 0.9 for d in defended)},
        "seconds_per_detection_mean": round(float(np.mean([r["seconds"] for r in rows])), 2),
        "flagged_per_data": {name: {"clean_flagged": sum(r["surrogate_statistic"] > bound for r in clean
                                                         if r["data"] == name),
                                    "scaffolds_flagged": sum(r["surrogate_statistic"] > bound for r in scaffolds
                                                             if r["data"] == name)}
                             for name in sorted({r["data"] for r in rows})},
        "models": rows,
    }
    return summary


if __name__ == "__main__":
    main()
