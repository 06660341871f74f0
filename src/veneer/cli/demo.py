"""``veneer demo``: the main job on bundled data, step by step into one run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from veneer.jobs.demo import demo


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the demonstration on bundled MNIST")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    demo(args.out, args.seed, say=print)
    print(f"wrote {Path(args.out) / 'explanations.png'} and {Path(args.out) / 'metrics.json'}")
    return 0
