"""The one lifecycle every run command goes through (``veneer.cli.common.run_job``), the typed results it writes,
the behaviour budget's measures in ``metrics.json``, the audit's ``--effort``/``--budget``/``--list-tests``, the
defaults the CLI shares with the library and ``--plugin``."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import pytest

import veneer.audit
import veneer.cli.common as common
from veneer.cli import SUBCOMMANDS, build_parser, main
from veneer.jobs.results import JobResult
from veneer.models import pretrained, save

FEMALE = "personal_status_sex=female : divorced/separated/married"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "mnist.safetensors"
    save(pretrained("mnist-cnn"), path, {})
    return path


# every command that writes a run, with its run kind
RUN_COMMANDS = {
    "train": ["train", "--model", "digits-mlp", "--epochs", "1"],
    "explain": ["explain", "--n", "2", "--methods", "gradient"],
    "attack-input": ["attack-input", "--n", "2", "--steps", "1", "--show", "0"],
    "attack-input sweep": ["attack-input", "--sweep", "--n", "2", "--steps", "1", "--eps", "0.1", "--attack", "random",
                           "--method", "gradient", "--show", "0"],
    "attack-input influence": ["attack-input", "--attack", "influence", "--n", "2", "--train-n", "50", "--eps", "0.05",
                               "--show", "0"],
    "manipulate": ["manipulate", "--n", "16", "--batch-size", "16", "--max-steps", "1"],
    "scaffolding": ["manipulate", "--objective", "scaffolding", "--data", "german", "--features", FEMALE,
                    "--explain-n", "2"],
    "evaluate": ["evaluate", "--manipulated", "{weights}", "--objective", "com", "--n", "2", "--methods", "gradient",
                 "--noise", "2", "--examples", "1"],
    "neurons topk": ["neurons", "topk", "--n", "20", "--k", "2"],
    "neurons visualize": ["neurons", "visualize", "--n", "20", "--channels", "0", "--steps", "1"],
    "neurons push-down": ["neurons", "push-down", "--n", "20", "--steps", "1", "--k", "2", "--channels", "0",
                          "--encoder", "none", "--visualize", "0", "--batch-size", "8", "--attack-batch", "8"],
    "neurons push-up": ["neurons", "push-up", "--n", "20", "--steps", "1", "--k", "2", "--channels", "0",
                        "--encoder", "none", "--visualize", "0", "--n-decoys", "2", "--batch-size", "8",
                        "--attack-batch", "8"],
    "neurons fairwash": ["neurons", "fairwash", "--n", "200", "--steps", "1", "--channels", "0"],
    "influence": ["influence", "--n", "2", "--train-n", "50", "--show", "1"],
    "audit": ["audit", "--reference", "mnist-cnn"],
    "demo": ["demo"],
}


@pytest.mark.parametrize("name", sorted(RUN_COMMANDS))
def test_every_run_command_goes_through_the_one_lifecycle(name, monkeypatch, tmp_path, weights):
    """Each command parses its arguments, then hands one job to ``run_job`` (nothing else opens or writes the run):
    with ``run_job`` replaced, no command loads its data, runs or writes anything."""
    calls = []

    def spy(args, job, **options):
        calls.append((args.command, job))
        return 0

    for module in SUBCOMMANDS:
        if hasattr(module, "run_job"):
            monkeypatch.setattr(module, "run_job", spy)
    argv = [a.replace("{weights}", str(weights)) for a in RUN_COMMANDS[name]] + ["--out", str(tmp_path / "run")]
    assert main(argv) == 0
    assert [command for command, _ in calls] == [argv[0]] and callable(calls[0][1])
    assert not (tmp_path / "run").exists()


class Probe(JobResult):
    kind = "probe"

    def summary(self) -> str:
        return f"probe of {self.values['n']}"


def lifecycle_args(out: Path, *extra: str):
    return build_parser().parse_args(["explain", "--out", str(out), *extra])


def test_run_job_refuses_before_any_work_then_writes_kind_summary_and_report(tmp_path, capsys):
    jobs = []

    def job(run_dir):
        jobs.append(run_dir)
        run_dir.file("data.txt").write_text("x")
        return Probe({"n": 3, "nested": {"a": [1, 2]}})

    out = tmp_path / "run"
    assert common.run_job(lifecycle_args(out, "--seed", "5"), job) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["kind", "n", "nested"] and metrics["kind"] == "probe" and metrics["nested"]["a"] == [1, 2]
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 5 and config["config"]["command"] == "explain" and "run" not in config["config"]
    printed = capsys.readouterr().out.splitlines()
    assert printed[:2] == ["probe of 3", f"wrote {out}"] and printed[2] == f"wrote {out / 'report.html'}"
    assert (out / "report.html").is_file()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="holds another run"):
        common.run_job(lifecycle_args(out), job)
    assert len(jobs) == 1 and {p.name: p.read_bytes() for p in out.iterdir()} == before  # refused before any work
    other = tmp_path / "quiet"
    assert common.run_job(lifecycle_args(other, "--no-report"), job) == 0
    assert (other / "metrics.json").is_file() and not (other / "report.html").exists()


def test_run_job_seeds_before_the_job():
    import torch

    drawn = []

    def job(run_dir):
        drawn.append(torch.rand(1).item())
        return Probe({"n": 0})

    for _ in range(2):
        torch.rand(5)  # whatever happened before
        common.run_job(build_parser().parse_args(["explain", "--seed", "7"]), job, write=False)
    assert drawn[0] == drawn[1]


@pytest.mark.parametrize("name", ["explain", "attack-input sweep", "neurons topk", "influence"])
def test_a_run_writes_its_kind_into_metrics_json(name, tmp_path):
    out = tmp_path / "run"
    assert main(RUN_COMMANDS[name] + ["--out", str(out), "--no-report"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == name and (out / "config.json").is_file()
    assert "model" not in metrics  # a model never travels in the measures


def test_manipulate_writes_the_behaviour_budget_measures(tmp_path):
    plain, budgeted = tmp_path / "plain", tmp_path / "budget"
    base = ["manipulate", "--n", "32", "--batch-size", "16", "--max-steps", "2", "--no-report"]
    assert main(base + ["--out", str(plain)]) == 0
    metrics = json.loads((plain / "metrics.json").read_text())
    assert metrics["kind"] == "manipulate" and metrics["budget"] is None and metrics["steps"] == 2
    assert main(base + ["--min-agreement", "0.5", "--validation", "0.25", "--check-every", "1",
                        "--out", str(budgeted)]) == 0
    budget = json.loads((budgeted / "metrics.json").read_text())["budget"]
    assert set(budget) == {"min_agreement", "best_step", "best_val_attack", "budget_checks", "budget_checks_needed",
                           "short_horizon"} and budget["min_agreement"] == 0.5
    assert budget["best_step"] in (0, 1, 2)
    # a few steps give a few checks where the dual ascent needs 24 (docs/manipulate.md, short horizons)
    assert budget["budget_checks"] < budget["budget_checks_needed"] == 24 and budget["short_horizon"] == 1.0
    auto = tmp_path / "auto"
    assert main(base + ["--min-agreement", "0.5", "--validation", "0.25", "--check-every", "auto",
                        "--out", str(auto)]) == 0
    with pytest.raises(SystemExit) as refused:  # argparse: usage and one line naming the argument
        main(base + ["--min-agreement", "0.5", "--check-every", "often", "--out", str(tmp_path / "bad")])
    assert refused.value.code == 2


def test_a_neuron_attack_writes_the_behaviour_budget_measures(tmp_path):
    out = tmp_path / "down"
    assert main(RUN_COMMANDS["neurons push-down"] + ["--steps", "2", "--min-agreement", "0.5", "--validation", "0.25",
                                                     "--check-every", "1", "--out", str(out), "--no-report"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == "neurons push-down" and metrics["budget"]["min_agreement"] == 0.5
    assert metrics["budget"]["best_step"] == metrics["fine_tune"]["best_step"]  # the engine's measures, as they are


def test_budget_measures_are_taken_from_the_fine_tune_result():
    from torch import nn

    from veneer.finetune import FineTuneResult
    from veneer.jobs.results import budget_measures

    measures = {"min_agreement": 0.99, "best_step": 40, "best_val_attack": 0.25, "attack_before": 3.0,
                "budget_checks": 30, "budget_checks_needed": 24, "short_horizon": 0.0}
    assert budget_measures(FineTuneResult(nn.Identity(), measures=measures)) == {
        "min_agreement": 0.99, "best_step": 40, "best_val_attack": 0.25, "budget_checks": 30,
        "budget_checks_needed": 24, "short_horizon": 0.0}
    assert budget_measures(FineTuneResult(nn.Identity(), measures={"attack_before": 3.0})) is None


# ----------------------------------------------------------------------------------------- audit names


def fake_audit(monkeypatch) -> list[dict]:
    import veneer.jobs.audit as job

    seen = []

    class Audit:
        def __init__(self, model, methods=None, effort="fast", reference=None, tests=None, seed=0, progress=False,
                     twin_model=None):
            seen.append({"effort": effort, "reference": reference})

        def __call__(self, train, test):
            return type("Result", (), {"verdict": "clean", "score": 0.1, "z_max": 0.2, "seconds": 1.0,
                                       "tests": {"t": {"flag": False}}, "config": {"calibration": "reference"},
                                       "__str__": lambda self: "verdict: clean"})()

    monkeypatch.setattr(job, "Audit", Audit)
    monkeypatch.setattr(job, "write_audit", lambda result, path: {"json": path / "audit.json",
                                                                 "markdown": path / "audit.md"})
    monkeypatch.setattr("veneer.cli.audit.load_split", lambda args, split: None)
    return seen


def test_audit_effort_and_its_deprecated_name_budget(monkeypatch, tmp_path, capsys):
    seen = fake_audit(monkeypatch)
    assert build_parser().parse_args(["audit"]).effort == "fast"
    assert "deprecated" not in capsys.readouterr().err
    args = build_parser().parse_args(["audit", "--budget", "full"])
    assert args.effort == "full"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--budget is deprecated, use --effort" in err[0]
    assert main(["audit", "--effort", "full", "--out", str(tmp_path / "a"), "--no-report"]) == 0
    assert main(["audit", "--budget", "full", "--out", str(tmp_path / "b"), "--no-report"]) == 0
    assert [s["effort"] for s in seen] == ["full", "full"]
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics == {"kind": "audit", "verdict": "clean", "score": 0.1, "z_max": 0.2, "seconds": 1.0, "flagged": []}
    assert "verdict: clean" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["audit", "--effort", "slow"])


def test_audit_list_tests_needs_no_model(monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("--list-tests loaded a model")

    monkeypatch.setattr(common, "resolve_model", no_model)
    assert main(["audit", "--list-tests"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    registered = getattr(veneer.audit, "registered_tests", None)
    names = list(registered()) if registered else list(veneer.audit.TESTS)
    assert [line.split(":")[0] for line in lines] == names and "fragility" in names
    if registered:
        assert lines[0] == f"{names[0]}: {registered()[names[0]].meaning}"


# ----------------------------------------------------------------------------------------- defaults


def library_default(cls, name: str):
    """The default of keyword ``name`` in ``cls``'s constructor or the first base class constructor that has it."""
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            parameter = inspect.signature(klass.__init__).parameters.get(name)
            if parameter is not None and parameter.default is not inspect.Parameter.empty:
                return parameter.default
    raise AssertionError(f"{cls.__name__} has no default for {name}")


def test_cli_defaults_are_the_library_defaults():
    """Changed on purpose: `veneer manipulate` used --alpha 0.1 --lr 1e-3 (now Manipulation's 0.5 and 1e-4) and
    `veneer neurons push-up/fairwash` --steps 400 (now the attacks' 300). The flags that still differ say why in
    their help (manipulate/evaluate --ig-steps, --explain-n, influence --damping, fairwash's batch sizes)."""
    from veneer.manipulate import Manipulation
    from veneer.neurons import Fairwash, PushDown, PushUp

    args = build_parser().parse_args(["manipulate"])
    for flag in ("alpha", "lr", "epochs", "batch_size", "keep", "softplus_beta", "checkpoint_every", "validation",
                 "check_every", "confidence", "keep_mixup"):
        assert getattr(args, flag) == library_default(Manipulation, flag), flag
    for action, attack in (("push-down", PushDown), ("push-up", PushUp), ("fairwash", Fairwash)):
        args = build_parser().parse_args(["neurons", action])
        for flag in ("alpha", "lr", "steps", "keep", "temperature", "recalibrate_steps", "recalibrate_lr",
                     "validation", "check_every", "confidence") + (("batch_size", "attack_batch")
                                                                    if action != "fairwash" else ()):
            assert getattr(args, flag) == library_default(attack, flag), (action, flag)
    assert build_parser().parse_args(["neurons", "push-down"]).k == library_default(PushDown, "k")
    assert build_parser().parse_args(["neurons", "push-up"]).margin == library_default(PushUp, "margin")


def test_help_says_radius_not_budget_for_eps(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["attack-input", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "l-inf radii eps" in help_text and "budget" not in help_text


# ----------------------------------------------------------------------------------------- plugins


PLUGIN = """
import veneer.cli.audit

veneer.cli.audit.PLUGIN_SEEN = __name__
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A plugin module on sys.path that marks veneer.cli.audit when imported."""
    (tmp_path / "veneer_probe_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("VENEER_PLUGINS", raising=False)
    import veneer.cli.audit as audit_cli

    seen = []

    def listing():
        seen.append(getattr(audit_cli, "PLUGIN_SEEN", None))  # what the command saw when it ran
        return [("probe", "a test")]

    monkeypatch.setattr(audit_cli, "audit_tests", listing)
    yield seen
    sys.modules.pop("veneer_probe_plugin", None)
    if hasattr(audit_cli, "PLUGIN_SEEN"):
        del audit_cli.PLUGIN_SEEN


def test_a_plugin_is_imported_before_the_command_runs(plugin, capsys):
    assert main(["--plugin", "veneer_probe_plugin", "audit", "--list-tests"]) == 0
    assert plugin == ["veneer_probe_plugin"] and "probe: a test" in capsys.readouterr().out


def test_plugins_from_the_environment(plugin, monkeypatch):
    monkeypatch.setenv("VENEER_PLUGINS", " veneer_probe_plugin , ")
    assert main(["audit", "--list-tests"]) == 0
    assert plugin == ["veneer_probe_plugin"]


def test_a_missing_plugin_is_one_line_naming_it(capsys, monkeypatch):
    monkeypatch.delenv("VENEER_PLUGINS", raising=False)
    assert main(["--plugin", "veneer_no_such_plugin", "explain"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("veneer: error: --plugin veneer_no_such_plugin: ")
    assert "no module named 'veneer_no_such_plugin'" in err[0]
