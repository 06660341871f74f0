"""The ``veneer`` command: one subcommand per job, each writing a run directory.

``veneer --plugin MODULE ...`` (repeatable; also ``VENEER_PLUGINS=mod1,mod2``) imports Python modules before the
command runs, so a user's module can register audit tests (:func:`veneer.audit.register_test`), LRP rules and
report sections that the command then uses.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from veneer.cli import attack, audit, demo, explain, influence, manipulate, neurons, report, train
from veneer.finetune import Interrupted

SUBCOMMANDS = (train, explain, attack, manipulate, neurons, demo, influence, audit, report)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` entries end with their default, as :class:`argparse.ArgumentDefaultsHelpFormatter`, except where
    there is none to state (``None``, a flag that is off) or the text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or any(action.default is none for none in (None, False, argparse.SUPPRESS))
                or "default" in text.lower()):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """The parser of ``veneer`` and of every subcommand (sub-subcommands inherit the class):
    :class:`DefaultsHelpFormatter` unless told otherwise."""

    def __init__(self, *args, formatter_class=DefaultsHelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="veneer", description="Attack explanations of neural networks.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import this Python module first (repeatable; also the environment variable "
                             "VENEER_PLUGINS, comma-separated), e.g. one that registers audit tests, LRP rules or "
                             "report sections")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM: the same orderly stop as Ctrl-C (a checkpoint, then a message)


def plugins(argv: list[str] | None = None) -> list[str]:
    """The plugin modules to import: ``VENEER_PLUGINS`` (comma-separated), then every ``--plugin MODULE`` of
    ``argv`` (before the subcommand), each once."""
    scan = argparse.ArgumentParser(add_help=False)
    scan.add_argument("--plugin", action="append", default=[])
    scan.add_argument("rest", nargs=argparse.REMAINDER)
    scan.add_argument("--debug", action="store_true")
    named = scan.parse_known_args(argv)[0].plugin
    from_env = [name.strip() for name in os.environ.get("VENEER_PLUGINS", "").split(",") if name.strip()]
    return list(dict.fromkeys(from_env + named))


def import_plugins(names: list[str]) -> None:
    """Import each plugin module; one that cannot be found raises ``ValueError`` naming ``--plugin`` and it."""
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name is None or not (name == error.name or name.startswith(f"{error.name}.")):
                raise  # the plugin was found; something it imports was not
            raise ValueError(f"--plugin {name}: no module named {name!r} (is it on PYTHONPATH, or installed?)") \
                from None


def interrupted_message(error: Interrupted) -> str:
    """An interrupted fine-tuning run, worded for the command line: where it stopped and how to continue it."""
    stopped = f"{error.name} interrupted at step {error.step} of {error.total}"
    if error.checkpoint_dir is None:
        return f"{stopped} (no checkpoint written)"
    return f"{stopped}; checkpoint in {error.checkpoint_dir}: run the same command with --resume " \
           f"--out {error.checkpoint_dir} to continue"


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand (after importing the plugins, see :func:`plugins`). Every failure is one line
    ``veneer <command>: error: ...`` and exit code 2 (``--debug`` shows the traceback); an interrupted
    fine-tuning run says how to resume it (exit code 130)."""
    try:
        import_plugins(plugins(argv))
    except Exception as error:  # noqa: BLE001 - one line, like every other error
        if "--debug" in (sys.argv[1:] if argv is None else argv):
            raise
        print(f"veneer: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
              file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return args.run(args) or 0
    except Exception as error:  # noqa: BLE001 - the CLI reports every error in one line
        if args.debug:
            raise
        if isinstance(error, Interrupted):
            print(f"veneer {args.command}: error: {interrupted_message(error)}", file=sys.stderr)
            return 130
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"veneer {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"veneer {args.command}: error: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
