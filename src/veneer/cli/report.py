"""``veneer report DIR``: (re)write the self-contained ``report.html`` of a run directory."""

from __future__ import annotations

import argparse

from veneer.report.html import write_report


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="write DIR/report.html from a run directory (any run, any age)")
    parser.add_argument("run_dir", metavar="DIR", help="run directory (config.json, metrics.json, figures, tables)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(f"wrote {write_report(args.run_dir)}")
    return 0
