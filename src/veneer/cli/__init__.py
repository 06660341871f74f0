"""The ``veneer`` command: one subcommand per job, each writing a run directory."""

from __future__ import annotations

import argparse
import sys

from veneer.cli import attack, audit, demo, explain, manipulate, neurons, train

SUBCOMMANDS = (train, explain, attack, manipulate, neurons, demo, audit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="veneer", description="Attack explanations of neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (ValueError, FileNotFoundError) as error:
        print(f"veneer {args.command}: error: {error}", file=sys.stderr)
        return 2
