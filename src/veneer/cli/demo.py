"""``veneer demo``: the main job on bundled data, step by step into one run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from veneer.cli.common import add_run_args, report_run
from veneer.jobs.demo import demo


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the demonstration on bundled MNIST")
    add_run_args(parser, "runs/demo")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    demo(args.out, args.seed, say=print, overwrite=args.overwrite)
    print(f"wrote {Path(args.out) / 'explanations.png'} and {Path(args.out) / 'metrics.json'}")
    report_run(args, args.out)
    return 0
