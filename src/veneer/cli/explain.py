"""``veneer explain``: attributions of every chosen method for a few inputs, as a figure and a file."""

from __future__ import annotations

import argparse

from veneer.cli.common import add_data_args, add_model_args, add_run_args, load_data, load_model, load_split, run_job
from veneer.explain import BACKGROUND_METHODS, METHODS
from veneer.jobs.explain import explain_inputs
from veneer.models import has_gradients


def register(subparsers) -> None:
    parser = subparsers.add_parser("explain", help="explain inputs with every chosen method")
    add_model_args(parser)
    add_data_args(parser, n=8)
    parser.add_argument("--methods", default=None, help=f"comma-separated names from {', '.join(METHODS)} "
                        "(default: every method that applies to the model and data; "
                        f"{', '.join(BACKGROUND_METHODS)} only when named: tabular data, with the training split "
                        "as background)")
    add_run_args(parser, "runs/explain")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    methods = None if args.methods is None else [m for m in args.methods.split(",") if m]

    def job(run_dir):
        model = load_model(args)
        data = load_data(args, model=model)
        # LIME and KernelSHAP run when named, or by default on a model without gradients (a black box)
        agnostic = set(methods or ()) & set(BACKGROUND_METHODS) or (
            methods is None and not has_gradients(model))
        background = load_split(args, "train") if agnostic else None
        return explain_inputs(model, data, methods, run_dir, background)

    return run_job(args, job)
