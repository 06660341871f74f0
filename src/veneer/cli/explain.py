"""``veneer explain``: attributions of every chosen method for a few inputs, as a figure and a file."""

from __future__ import annotations

import argparse
from veneer.cli.common import add_data_args, add_model_args, add_run_args, load_data, load_model
from veneer.explain import METHODS
from veneer.jobs.explain import explain_inputs
from veneer.runs import RunDir, seed_everything


def register(subparsers) -> None:
    parser = subparsers.add_parser("explain", help="explain inputs with every chosen method")
    add_model_args(parser)
    add_data_args(parser, n=8)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names")
    add_run_args(parser, "runs/explain")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    run_dir = RunDir(args.out, {k: v for k, v in vars(args).items() if k != "run"}, args.seed)
    seed_everything(args.seed)
    model, data = load_model(args), load_data(args)
    metrics = explain_inputs(model, data, [m for m in args.methods.split(",") if m], run_dir)
    run_dir.write_metrics(metrics)
    print(f"wrote {run_dir.file('explanations.png')} and {run_dir.file('metrics.json')}")
    return 0
