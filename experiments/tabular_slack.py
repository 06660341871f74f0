"""Slack et al. 2020 ("Fooling LIME and SHAP", Sec. 4, Fig. 2) on COMPAS (race), Adult (sex), German (sex).

    nice python experiments/tabular_slack.py [--datasets compas,adult,german] [--n 200] [--out runs/tabular_slack]

Per data set and explainer (:func:`veneer.manipulate.scaffolding.slack_case`): one or two random 0/1 columns are
appended (``random_1``, ``random_2``; Slack's "unrelated columns"); the biased model predicts from the sensitive
column alone; the innocuous model from ``random_1`` (one feature) or ``random_1 XOR random_2`` (two). The
scaffolding is trained on LIME's perturbations for the LIME rows, on KernelSHAP's for the SHAP rows. ``--n``
random test rows are explained for class 1 with LIME (5000 samples) and KernelSHAP (shap's 2F + 2048
coalitions, 10 k-means background rows). Fidelity: the share of all test rows on which the scaffolded model
predicts what the biased one predicts. Writes metrics.json, summary.md and one Fig.-2 chart per data set
(rank_<data>.png) into the run directory.
"""

from __future__ import annotations

import argparse
import time

import torch

from veneer.data import adult, compas, german
from veneer.manipulate.scaffolding import slack_case
from veneer.report.tabular import rank_chart
from veneer.runs import RunDir

# data set -> (loader, biased column, invert: class 1 when the column is 0)
CASES = {
    "compas": (compas, "race=African-American", False),  # recidivism iff African-American
    "adult": (adult, "sex=Female", True),  # >50K iff not female
    "german": (german, "personal_status_sex=female : divorced/separated/married", True),  # good iff male
}


def run_case(name: str, args) -> dict:
    n, seed = args.n, args.seed
    loader, column, invert = CASES[name]
    train, test = loader("train"), loader("test")
    rows, scaffolds = [], {}
    for perturbation in args.perturbations.split(","):
        for innocuous in (1, 2):
            start = time.perf_counter()
            case = slack_case(train, test, column, perturbation, innocuous, invert=invert, n=n, seed=seed,
                              real_recall=args.real_recall)
            result = case["scaffolding"]
            scaffolds[f"{perturbation}, {innocuous} feature(s)"] = {
                "detector_accuracy": result.detector_accuracy, "fidelity_heldout_train": result.fidelity,
                "fidelity_test": case["fidelity_test"], "seconds": time.perf_counter() - start}
            rows += case["rows"] if innocuous == 1 else case["rows"][1:]  # the biased rows once
            print(f"{name} {perturbation} {innocuous}: {time.perf_counter() - start:.0f} s", flush=True)
    return {"rows": rows, "scaffolds": scaffolds}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _md(name: str, result: dict) -> str:
    rows, scaffolds = result["rows"], result["scaffolds"]
    sensitive = CASES[name][1].split("=")[0]
    lines = [f"### {name} (sensitive: {sensitive})", "",
             f"| method | model | {sensitive} top-1 | {sensitive} top-3 | random_1 top-1 | random_2 top-1 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['model']} | {r[f'{sensitive} top-1']:.1%} | {r[f'{sensitive} top-3']:.1%}"
                     f" | {r['random_1 top-1']:.1%} | {_percent(r.get('random_2 top-1'))} |")
    lines += ["", "| scaffolding (perturbation, innocuous features) | detector accuracy | fidelity (held-out "
              "train) | fidelity (test) |", "|---|---|---|---|"]
    for key, s in scaffolds.items():
        lines.append(f"| {key} | {s['detector_accuracy']:.1%} | {s['fidelity_heldout_train']:.1%} "
                     f"| {s['fidelity_test']:.1%} |")
    return "\n".join(lines) + "\n"


def run_datasets(args, run_case, markdown, chart) -> None:
    """For each data set of ``args.datasets``: ``run_case(name, args)``, then its markdown and chart; metrics.json
    and summary.md in the run directory ``args.out`` are rewritten after every data set."""
    torch.set_num_threads(1)
    run = RunDir(args.out, vars(args), args.seed)
    metrics, summary = {}, []
    for name in args.datasets.split(","):
        metrics[name] = run_case(name, args)
        summary.append(markdown(name, metrics[name]))
        chart(name, metrics[name], run)
        run.write_metrics(metrics)
        run.file("summary.md").write_text("\n".join(summary))
        print(summary[-1], flush=True)


def common_parser(doc: str, datasets: list[str], out: str, n: int) -> argparse.ArgumentParser:
    """--datasets, --n (test rows explained by LIME / KernelSHAP), --out, --seed."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(datasets))
    parser.add_argument("--n", type=int, default=n, help="test rows explained by LIME and KernelSHAP per data set")
    parser.add_argument("--out", default=out)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main() -> None:
    parser = common_parser(__doc__, list(CASES), "runs/tabular_slack", 200)
    parser.add_argument("--perturbations", default="lime,shap", help="scaffoldings to build (and explainers)")
    parser.add_argument("--real-recall", type=float, default=0.95, help="Scaffolding real_recall")
    run_datasets(parser.parse_args(), run_case, _md, lambda name, result, run: rank_chart(
        result["rows"], run.file(f"rank_{name}.png"), f"{name}: features at ranks 1-3 (Slack et al. Fig. 2)"))


if __name__ == "__main__":
    main()
