"""What a new user reads: every ``--help`` entry says what it is and its default, and a run records only the
options it used (config.json, the report's "What was run")."""

from __future__ import annotations

import argparse
import json

import pytest

from veneer.cli import build_parser, main
from veneer.cli.common import recorded_options


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("veneer",)):
    """``(path, parser)`` of the parser and of every subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, (*path, name))


def test_every_option_of_every_subcommand_has_a_help_text_and_states_its_default():
    found = list(subcommands(build_parser()))
    assert {" ".join(path) for path, _ in found} >= {"veneer manipulate", "veneer neurons push-down", "veneer audit"}
    for path, parser in found:
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{name} has no help text"
            if action.option_strings and all(action.default is not none for none in (None, False, argparse.SUPPRESS)):
                assert "default" in parser._get_formatter()._get_help_string(action), f"{name} hides its default"
        assert "(default: None)" not in text and "(default: False)" not in text, path


@pytest.mark.parametrize("argv, default", [(["manipulate"], "(default: ce)"), (["manipulate"], "(default: 1)"),
                                           (["neurons", "push-down"], "(default: 0.001)"),
                                           (["audit"], "(default: fast)"), (["train"], "(default: 0)")])
def test_help_shows_the_defaults(argv, default, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    assert default in " ".join(capsys.readouterr().out.split())


def recorded(argv: list[str]) -> dict:
    return recorded_options(build_parser().parse_args(argv))


def test_a_run_records_only_the_options_it_uses():
    influence = {"train_n", "params", "influence_method", "damping", "top"}
    mass_center = recorded(["attack-input", "--attack", "mass-center"])
    assert not influence & set(mass_center) and {"eps", "method", "softplus_beta"} <= set(mass_center)
    by_influence = recorded(["attack-input", "--attack", "influence"])
    assert influence <= set(by_influence) and not {"method", "softplus_beta"} & set(by_influence)
    scaffolding = {"perturbation", "innocuous", "biased", "invert", "explain_n"}
    com = recorded(["manipulate", "--objective", "com", "--target", "1,2"])
    assert not scaffolding & set(com) and com["target"] == "1,2" and "alpha" in com
    assert not {"map", "region", "thickness", "classes", "features", "validation", "confidence", "color",
                "ig_steps"} & set(com)
    scaffold = recorded(["manipulate", "--objective", "scaffolding", "--features", "race=African-American"])
    assert scaffolding <= set(scaffold)
    assert not {"model", "method", "keep", "alpha", "lr", "epochs", "softplus_beta", "target", "split"} & set(scaffold)
    assert "model" in recorded(["manipulate", "--objective", "scaffolding", "--biased", "model"])
    budget = recorded(["manipulate", "--min-agreement", "0.99", "--method", "ig"])
    assert {"validation", "confidence", "check_every", "ig_steps"} <= set(budget)
    assert "color" not in recorded(["explain", "--data", "adult"])
    assert recorded(["explain", "--data", "image-folder:pictures"])["color"] == "auto"


def test_config_json_and_the_page_hold_what_the_run_used(tmp_path):
    out = tmp_path / "explain"
    assert main(["explain", "--model", "adult-mlp", "--data", "adult", "--n", "2", "--methods", "gradient",
                 "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert "color" not in config and config["n"] == json.loads((out / "metrics.json").read_text())["n"] == 2
    assert "--color" not in (out / "report.html").read_text()
