"""The extension points, used the way a user does from outside the package: one plugin module registers an
audit test, how a new layer type propagates (with its own LRP rule) and a report section; the ``veneer``
command loads it with ``--plugin`` and lists, runs and reports what it registered."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from veneer.cli import main

PLUGIN = '''
import torch
from torch import nn

from veneer.audit import AuditTest, TestResult, register_test
from veneer.explain import Composite, Rule, register_composite, register_layer
from veneer.report import Card, Section, register_section


class MeanLogit(AuditTest):  # an audit test: the mean absolute logit of the explained inputs
    name, tolerance, source = "mean_logit", 0.5, "a user's notes"
    meaning = "Mean absolute logit of the explained inputs: a model scaled up to be overconfident moves it."

    def run(self, model, ctx, reference=None):
        with torch.no_grad():
            return TestResult(self.name, {"logit": model(ctx.x).abs().mean().item()})


class HalfPositive(Rule):  # an LRP rule for LeakyReLU: half the relevance where the input is negative
    kinds = ("pointwise",)

    def __call__(self, step, relevance):
        return relevance * torch.where(step.input > 0, 1.0, 0.5).to(relevance)


register_test(MeanLogit())
register_layer(nn.LeakyReLU, "pointwise")
register_composite("leaky", lambda *, epsilon, alpha, beta, stabilizer: Composite([(nn.LeakyReLU, HalfPositive())]))
register_section("my-kind", lambda run: Section("My experiment", cards=[Card("answer", str(run.metrics["answer"]))]),
                 title="My experiment")


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.LeakyReLU(0.1), nn.Linear(16, 10)).eval()
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The plugin module on sys.path; everything it registered is removed afterwards."""
    from veneer.audit import unregister_test
    from veneer.explain import unregister_composite, unregister_layer
    from veneer.report import unregister_section

    (tmp_path / "my_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_plugin"
    module = sys.modules.pop("my_plugin", None)
    if module is not None:
        unregister_test("mean_logit")
        unregister_layer(module.nn.LeakyReLU)
        unregister_composite("leaky")
        unregister_section("my-kind")


def test_a_plugin_adds_an_audit_test_that_veneer_audit_lists_runs_and_reports(plugin, tmp_path, capsys):
    assert main(["--plugin", plugin, "audit", "--list-tests"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert "mean_logit: Mean absolute logit of the explained inputs: a model scaled up to be overconfident moves " \
           "it." in listed
    out = tmp_path / "audit"
    # the model has a LeakyReLU: the cross-method test needs LRP through the layer type the plugin declared
    assert main(["--plugin", plugin, "audit", "--model", f"{plugin}:build", "--reference", f"{plugin}:build",
                 "--data", "digits", "--methods", "gradient,lrp", "--tests", "mean_logit,cross_method_agreement",
                 "--out", str(out)]) == 0
    audit = json.loads((out / "audit.json").read_text())
    assert set(audit["tests"]) == {"mean_logit", "cross_method_agreement"}
    test = audit["tests"]["mean_logit"]
    assert test["meaning"].startswith("Mean absolute logit") and test["tolerance"] == 0.5
    assert test["z"] == pytest.approx(0.0) and not test["flag"]  # the reference is the same model
    page = (out / "report.html").read_text()
    assert "mean_logit" in page and "Mean absolute logit of the explained inputs" in page


def test_a_plugin_rule_for_a_new_layer_type_is_used_by_lrp(plugin):
    import importlib

    import torch

    from veneer.explain import LRP

    module = importlib.import_module(plugin)
    model = module.build().double()
    x = torch.rand(3, 64, dtype=torch.float64)
    target = torch.tensor([0, 3, 7])
    relevance = LRP(model, composite="leaky", epsilon=1e-9)(x, target=target)
    # by hand: epsilon rule on both linear layers, the plugin's half-relevance rule on the LeakyReLU
    first, last = model[1], model[3]
    a = first(x)
    z = last(model[2](a))
    r = torch.zeros_like(z).scatter_(1, target[:, None], z.gather(1, target[:, None]))
    hidden = model[2](a)
    r_hidden = hidden * ((r / (z + 1e-9 * torch.where(z >= 0, 1.0, -1.0))) @ last.weight)
    r_pre = r_hidden * torch.where(a > 0, 1.0, 0.5)
    expected = x * ((r_pre / (a + 1e-9 * torch.where(a >= 0, 1.0, -1.0))) @ first.weight)
    torch.testing.assert_close(relevance, expected, rtol=1e-10, atol=1e-12)


def test_a_plugin_report_section_renders_a_run_of_its_kind(plugin, tmp_path, capsys):
    from veneer.runs import RunDir

    class MyResult:
        kind = "my-kind"

        def metrics(self):
            return {"answer": 42}

    RunDir(tmp_path / "mine", {"command": "my-experiment"}, 0).write_result(MyResult())
    assert main(["--plugin", plugin, "report", str(tmp_path / "mine")]) == 0
    page = (tmp_path / "mine" / "report.html").read_text()
    assert "My experiment" in page and "answer" in page and "42" in page
