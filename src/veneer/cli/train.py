"""``veneer train``: train a bundled model on its bundled dataset."""

from __future__ import annotations

import argparse

from veneer.cli.common import add_run_args, open_run, report_run
from veneer.models import RECIPES, train_bundled


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a bundled model on its bundled dataset")
    parser.add_argument("--model", default="mnist-cnn", choices=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's number of epochs")
    add_run_args(parser, "runs/train")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    run_dir = open_run(args)
    _, metadata = train_bundled(args.model, run_dir.file("model.safetensors"), seed=args.seed, progress=True, **overrides)
    run_dir.write_metrics({k: metadata[k] for k in ("train_accuracy", "test_accuracy", "train_seconds")})
    print(f"{args.model}: test accuracy {metadata['test_accuracy']:.4f} in {metadata['train_seconds']:.1f} s "
          f"-> {run_dir.file('model.safetensors')}")
    report_run(args, run_dir.path)
    return 0
