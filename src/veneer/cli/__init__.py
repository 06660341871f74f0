"""The ``veneer`` command: one subcommand per job, each writing a run directory."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from veneer.cli import attack, audit, demo, explain, influence, manipulate, neurons, report, train
from veneer.finetune import Interrupted

SUBCOMMANDS = (train, explain, attack, manipulate, neurons, demo, influence, audit, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="veneer", description="Attack explanations of neural networks.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM: the same orderly stop as Ctrl-C (a checkpoint, then a message)


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. Every failure is one line ``veneer <command>: error: ...`` and exit code 2 (``--debug``
    shows the traceback); an interrupted fine-tuning run says how to resume it (exit code 130)."""
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return args.run(args) or 0
    except Exception as error:  # noqa: BLE001 - the CLI reports every error in one line
        if args.debug:
            raise
        code = 130 if isinstance(error, Interrupted) else 2
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"veneer {args.command}: error: {message}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"veneer {args.command}: error: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
