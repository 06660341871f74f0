"""``veneer influence``: the training samples that most helped and most harmed each test prediction
(Koh & Liang 2017 influence functions over the model's last layer by default).

Writes ``scores.safetensors`` (all scores and the top-k indices), ``top.csv``, ``influence.png`` (test images
with their most helpful and harmful training images), ``config.json`` and ``metrics.json``.
"""

from __future__ import annotations

import argparse

import torch

from veneer.cli.common import add_data_args, add_model_args, add_run_args, load_data, load_model, open_run, report_run
from veneer.data import load_dataset
from veneer.explain import Influence
from veneer.explain.influence import METHODS, last_layer
from veneer.jobs.influence import influence_report
from veneer.runs import seed_everything


def add_influence_args(parser: argparse.ArgumentParser) -> None:
    """Options shared with ``veneer attack-input --attack influence``."""
    parser.add_argument("--train-n", type=int, default=1000,
                        help="training samples scored (a random subset of the train split drawn with --seed)")
    parser.add_argument("--params", default=None,
                        help="comma-separated module prefixes whose parameters count (default: the last layer)")
    parser.add_argument("--influence-method", default="exact", choices=METHODS, help="inverse-Hessian solver")
    parser.add_argument("--damping", type=float, default=0.01, help="added to the Hessian's diagonal")


def build_influence(args: argparse.Namespace, model):
    """The :class:`Influence` the parsed options describe, on the first ``--train-n`` training samples."""
    params = [p for p in args.params.split(",") if p] if args.params else [last_layer(model)]
    if args.train_n < 1:
        raise ValueError(f"--train-n must be >= 1, got {args.train_n}")
    train = load_dataset(args.data, "train")
    if args.train_n < len(train):
        generator = torch.Generator().manual_seed(args.seed)
        train = train.subset(torch.randperm(len(train), generator=generator)[:args.train_n].sort().values)
    return Influence(model.eval(), train, params=params, method=args.influence_method, damping=args.damping), train


def register(subparsers) -> None:
    parser = subparsers.add_parser("influence", help="most helpful / harmful training samples per test sample "
                                   "(Koh & Liang 2017 influence functions)")
    add_model_args(parser)
    add_data_args(parser, n=8)
    add_influence_args(parser)
    parser.add_argument("--k", type=int, default=5, help="helpful and harmful training samples per test sample")
    parser.add_argument("--show", type=int, default=4, help="test samples in the figure")
    add_run_args(parser, "runs/influence")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    run_dir = open_run(args)
    seed_everything(args.seed)
    model = load_model(args)
    influence, train = build_influence(args, model)
    test = load_data(args, model=model)
    run_dir.start()
    metrics = influence_report(influence, test.x, test.y, train.x, run_dir.path, k=args.k, show=args.show,
                               train_y=train.y)
    run_dir.write_metrics(metrics)
    print(f"{metrics['n_test']} test samples x {metrics['n_train']} training samples; wrote {run_dir.path}")
    report_run(args, run_dir.path)
    return 0
