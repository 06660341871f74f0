"""``veneer train``: train a bundled model on its bundled dataset."""

from __future__ import annotations

import argparse

from veneer.cli.common import add_run_args, run_job
from veneer.jobs.train import train_job
from veneer.models import RECIPES


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a bundled model on its bundled dataset")
    parser.add_argument("--model", default="mnist-cnn", choices=sorted(RECIPES),
                        help="bundled model to train on its bundled dataset")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's number of epochs")
    add_run_args(parser, "runs/train")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    return run_job(args, lambda run_dir: train_job(args.model, run_dir, seed=args.seed, progress=True, **overrides))
