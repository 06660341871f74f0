"""``veneer influence``: the training samples that most helped and most harmed each test prediction
(Koh & Liang 2017 influence functions over the model's last layer by default).

Writes ``scores.safetensors`` (all scores and the top-k indices), ``top.csv``, ``influence.png`` (test images
with their most helpful and harmful training images), ``config.json`` and ``metrics.json``.
"""

from __future__ import annotations

import argparse

from veneer.cli.common import add_data_args, add_model_args, add_run_args, check_count, load_data, load_model, run_job
from veneer.data import load_dataset
from veneer.explain.influence import METHODS
from veneer.jobs.influence import influence_on, influence_report


def add_influence_args(parser: argparse.ArgumentParser) -> None:
    """Options shared with ``veneer attack-input --attack influence``."""
    parser.add_argument("--train-n", type=int, default=1000,
                        help="training samples scored (a random subset of the train split drawn with --seed)")
    parser.add_argument("--params", default=None,
                        help="comma-separated module prefixes whose parameters count (default: the last layer)")
    parser.add_argument("--influence-method", default="exact", choices=METHODS, help="inverse-Hessian solver")
    parser.add_argument("--damping", type=float, default=0.01,
                        help="added to the Hessian's diagonal (default 0.01, not Influence's 0: the Hessian of a "
                             "last layer under cross-entropy is singular, a shift of all logits changes nothing)")


def build_influence(args: argparse.Namespace, model):
    """``(Influence, training samples)`` the parsed options describe (:func:`veneer.jobs.influence.influence_on`:
    ``--train-n`` training samples drawn with ``--seed``)."""
    check_count("--train-n", args.train_n)
    params = [p for p in args.params.split(",") if p] if args.params else None
    return influence_on(model, load_dataset(args.data, "train"), train_n=args.train_n, params=params,
                        method=args.influence_method, damping=args.damping, seed=args.seed)


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
    def job(run_dir):
        model = load_model(args)
        influence, train = build_influence(args, model)
        test = load_data(args, model=model)
        run_dir.start()
        return influence_report(influence, test.x, test.y, train.x, run_dir.path, k=args.k, show=args.show,
                                train_y=train.y)

    return run_job(args, job)
