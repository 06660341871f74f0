"""``veneer demo``: the main job on bundled data, step by step into one run directory."""

from __future__ import annotations

import argparse

from veneer.cli.common import add_run_args, run_job
from veneer.jobs.demo import demo


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the demonstration on bundled MNIST")
    add_run_args(parser, "runs/demo")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_job(args, lambda run_dir: demo(run_dir, say=print))
