"""``veneer explain``: attributions of every chosen method for a few inputs, as a figure and a file."""

from __future__ import annotations

import argparse
import time

import torch
from safetensors.torch import save_file

from veneer.cli.common import add_data_args, add_model_args, add_run_args, build_explainers, load_data, load_model
from veneer.data import load_dataset
from veneer.explain import BACKGROUND_METHODS, METHODS, heatmap
from veneer.models import accuracy
from veneer.report import explanation_grid
from veneer.runs import RunDir, seed_everything


def register(subparsers) -> None:
    parser = subparsers.add_parser("explain", help="explain inputs with every chosen method")
    add_model_args(parser)
    add_data_args(parser, n=8)
    parser.add_argument("--methods", default=",".join(m for m in METHODS if m not in BACKGROUND_METHODS),
                        help=f"comma-separated method names ({', '.join(BACKGROUND_METHODS)}: tabular data, "
                             "with the training split as background)")
    add_run_args(parser, "runs/explain")
    parser.set_defaults(run=run)


def explain_inputs(model, data, methods: list[str], run_dir: RunDir, background=None) -> dict:
    """Explain ``data`` with each method (``background``: training data for LIME and KernelSHAP); write
    explanations.png and attributions.safetensors; return metrics."""
    x, y = data.x, data.y
    explainers = build_explainers(model, methods, background=background)
    attributions, seconds = {}, {}
    for name, explainer in explainers.items():
        start = time.perf_counter()
        attributions[name] = explainer(x, target=y).detach()
        seconds[name] = time.perf_counter() - start
    if x.ndim == 4:
        maps = {name: heatmap(a.expand_as(x) if a.shape[1] == 1 else a, reduce="sum")
                for name, a in attributions.items()}
        explanation_grid(x, maps, run_dir.file("explanations.png"),
                         row_titles=[f"label {data.classes[int(c)]}" for c in y])
    save_file({k: v.contiguous() for k, v in attributions.items()}, str(run_dir.file("attributions.safetensors")))
    return {"accuracy_on_inputs": accuracy(model, x, y), "n": len(x),
            "seconds_per_method": seconds, "images_per_second": {k: len(x) / v for k, v in seconds.items()}}


def run(args: argparse.Namespace) -> int:
    run_dir = RunDir(args.out, {k: v for k, v in vars(args).items() if k != "run"}, args.seed)
    seed_everything(args.seed)
    model, data = load_model(args), load_data(args)
    methods = [m for m in args.methods.split(",") if m]
    background = load_dataset(args.data, "train") if set(methods) & set(BACKGROUND_METHODS) else None
    metrics = explain_inputs(model, data, methods, run_dir, background)
    run_dir.write_metrics(metrics)
    figure = "explanations.png" if data.x.ndim == 4 else "attributions.safetensors"
    print(f"wrote {run_dir.file(figure)} and {run_dir.file('metrics.json')}")
    return 0
