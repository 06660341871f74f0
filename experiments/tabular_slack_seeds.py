"""Slack et al. 2020 ("Fooling LIME and SHAP", Sec. 4, Fig. 2) over seeds (issue 26): the table of
docs/tabular.md's "Reproduction (experiments/tabular_slack.py)" section measured with the runner.

    nice -n 15 python experiments/tabular_slack_seeds.py [--data compas] [--seeds 0,1,2] [--n 200] [--worker]

Per seed ``s``, for LIME and for KernelSHAP, :func:`veneer.manipulate.scaffolding.slack_case` exactly as
experiments/tabular_slack.py calls it (its ``CASES``: COMPAS race, Adult sex, German sex; ``real_recall`` 0.95,
LIME 5000 samples, KernelSHAP 2F + 2048 coalitions with 10 k-means background rows), one and two innocuous
features, everything random drawn from ``s``: the random columns (train ``s``, test ``s + 1``), the scaffolding's
rows, perturbations and forest, the ``--n`` explained test rows and LIME's / KernelSHAP's sampling. No setting is
chosen, so there is no validation split: every figure is on the data set's test split. Metrics, per explainer
(``lime``, ``kernel-shap``) and model (``biased``; ``scaffold1`` / ``scaffold2``: one or two innocuous features):
the sensitive group's top-1 and top-3 shares of the explained rows, ``random_1`` (and ``random_2``) top-1 shares,
and for the scaffolds the fidelity (share of all test rows on which the scaffolded model predicts what the biased
one predicts) and the detector's balanced accuracy on held-out training rows vs their perturbations; ``seconds``
the wall time of the seed. ``--worker`` measures the given seeds into the study's cache without writing a summary
(give each process its seeds); a run without it writes ``experiments/results/tabular_slack_seeds_<data>.json`` and
``.md`` (measuring any seed not yet cached). The cache is ``runs/experiments/tabular_slack_seeds_<data>_n<n>``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from runner import CACHE, cite, measure_seeds, parse_seeds, run_study, seed_range, seeds_parser
from tabular_slack import CASES
from veneer.manipulate.scaffolding import EXPLAINED_BY, slack_case

REAL_RECALL, LIME_SAMPLES = 0.95, 5000
MODELS = {"biased": "biased", "scaffold1": "scaffold, 1 feature", "scaffold2": "scaffold, 2 features"}


def config(data: str, n: int) -> dict[str, Any]:
    _, column, invert = CASES[data]
    return {"data": data, "biased_column": column, "invert": invert, "n": n, "real_recall": REAL_RECALL,
            "lime_samples": LIME_SAMPLES, "shap_samples": "2F + 2048 (shap's default)", "shap_background": 10,
            "scaffolding": "Scaffolding defaults (10 samples per row, 4000 rows, 100 trees, detector sees one-hot "
                           "group sums)", "target_class": 1}


def measurer(data: str, n: int):
    def measure(seed: int, split: str) -> dict[str, float]:
        assert split == "test", split  # no setting is chosen: the test split reports
        loader, column, invert = CASES[data]
        sensitive = column.split("=", 1)[0]
        train, test, metrics, start = loader("train"), loader("test"), {}, time.perf_counter()
        for perturbation in ("lime", "shap"):
            explainer = EXPLAINED_BY[perturbation][0]
            for innocuous in (1, 2):
                case = slack_case(train, test, column, perturbation, innocuous, invert=invert, n=n, seed=seed,
                                  lime_samples=LIME_SAMPLES, real_recall=REAL_RECALL)
                for row in case["rows"] if innocuous == 1 else case["rows"][1:]:  # the biased rows once
                    model = "biased" if row["model"] == "biased" else f"scaffold{innocuous}"
                    prefix = f"{explainer}/{model}"
                    metrics[f"{prefix}/sensitive_top1"] = row[f"{sensitive} top-1"]
                    metrics[f"{prefix}/sensitive_top3"] = row[f"{sensitive} top-3"]
                    for r in range(1, innocuous + 1):
                        metrics[f"{prefix}/random_{r}_top1"] = row[f"random_{r} top-1"]
                prefix = f"{explainer}/scaffold{innocuous}"
                metrics[f"{prefix}/fidelity_test"] = case["fidelity_test"]
                metrics[f"{prefix}/detector_accuracy"] = case["scaffolding"].detector_accuracy
                print(f"{data} seed {seed} {perturbation} {innocuous}: {time.perf_counter() - start:.0f} s", flush=True)
        metrics["seconds"] = time.perf_counter() - start
        return metrics
    return measure


def percent(summary: Mapping[str, Any], metric: str) -> str:
    """:func:`runner.cite` of a share in percent: ``"99.5 +- 1.2"``."""
    figure = summary["metrics"][metric]
    return cite({"metrics": {metric: {"mean": 100 * figure["mean"], "half_width": 100 * figure["half_width"]}}},
                metric, 1)


def doc_rows(data: str, summary: Mapping[str, Any]) -> list[str]:
    """The rows of docs/tabular.md's seeds table for ``data`` (shares in %, mean +- 95% half-width)."""
    sensitive = CASES[data][1].split("=", 1)[0].split("_")[-1]
    rows = []
    for explainer in ("lime", "kernel-shap"):
        for model, label in MODELS.items():
            prefix, m = f"{explainer}/{model}", summary["metrics"]
            randoms = " / ".join(percent(summary, f"{prefix}/random_{r}_top1") for r in (1, 2)
                                 if f"{prefix}/random_{r}_top1" in m)
            extra = (["-", "-"] if model == "biased" else
                     [percent(summary, f"{prefix}/{k}") for k in ("fidelity_test", "detector_accuracy")])
            cells = [f"{data} ({sensitive})", explainer, label, percent(summary, f"{prefix}/sensitive_top1"),
                     percent(summary, f"{prefix}/sensitive_top3"), randoms, *extra]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = seeds_parser(__doc__)
    parser.add_argument("--data", default="compas", choices=sorted(CASES))
    parser.add_argument("--n", type=int, default=200, help="test rows explained by LIME and KernelSHAP per seed")
    options, seeds = parse_seeds(parser)
    name = f"tabular_slack_seeds_{options.data}"
    cache = CACHE / f"{name}_n{options.n}"  # a probe with another --n keeps its own cache
    study = config(options.data, options.n)
    if options.worker:
        measure_seeds(name, measurer(options.data, options.n), seeds, config=study, cache=cache)
        return
    rows = f"{options.n} random test rows explained, fidelity on all {len(CASES[options.data][0]('test'))} test rows"
    summary = run_study(name, measurer(options.data, options.n), seeds, config=study, cache=cache,
                        what=f"Slack et al. 2020 on {options.data}: sensitive / random top-1 and top-3 shares of "
                             "LIME and KernelSHAP on the biased and the scaffolded model (1 or 2 innocuous "
                             "features), fidelity and detector accuracy",
                        splits={"test": f"{options.data} test split: {rows}; no setting is chosen"})
    print(f"{seed_range(summary['seeds'])}, {options.n} rows")
    print("\n".join(doc_rows(options.data, summary)))


if __name__ == "__main__":
    main()
