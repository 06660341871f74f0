"""Degrade, never refuse: a method that cannot explain the model is dropped with its reason (the operation and
module it stopped at), the audit's tests and the multi-method commands run with the others, and only when no
method is left does the command fail, in one line."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from veneer.audit import Audit, AuditTest
from veneer.cli import main
from veneer.data import digits
from veneer.explain import select_methods

MODELS = '''
import torch
from torch import nn


class Shift(nn.Module):
    """The issue's model: the input multiplied by a stored tensor in the forward."""

    def __init__(self):
        super().__init__()
        self.shift = nn.Parameter(torch.randn(64, 10) * 0.1)

    def forward(self, x):
        return x.flatten(1) @ self.shift


class Gated(nn.Module):
    """A product of two input-dependent tensors: LRP and DeepLift have no rule for it."""

    def __init__(self):
        super().__init__()
        self.shift = nn.Parameter(torch.randn(64, 10) * 0.1)

    def forward(self, x):
        flat = x.flatten(1)
        return (flat @ self.shift) * flat.mean(1, keepdim=True)


def shift():
    torch.manual_seed(0)
    return Shift().eval()


def gated():
    torch.manual_seed(0)
    return Gated().eval()
'''


@pytest.fixture
def models(tmp_path, monkeypatch):
    (tmp_path / "degrade_models.py").write_text(textwrap.dedent(MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    import degrade_models

    yield degrade_models
    sys.modules.pop("degrade_models", None)


CHEAP = {"samples": 8}
TESTS = ["noise_inputs", "cross_method_agreement"]


def test_the_audit_drops_a_method_that_cannot_explain_the_model_and_runs_the_tests_with_the_others(models):
    model, data = models.gated(), digits("train")
    result = Audit(model, reference=models.gated(), tests=TESTS, options=CHEAP)(data)
    config = result.config
    assert config["methods"] == ["gradient", "gradient_x_input", "ig"]
    assert set(config["dropped_methods"]) == {"lrp"}
    reason = config["dropped_methods"]["lrp"]
    assert "LRP cannot propagate through" in reason and "node 'mul'" in reason and "\n" not in reason
    assert "lrp alone" in config["unseen"]
    assert set(result.tests) == set(TESTS)  # every test ran, with three methods
    assert "methods dropped: lrp (LRP cannot propagate" in str(result)


def test_a_method_asked_for_is_dropped_too_and_none_left_is_one_line(models):
    model, data = models.gated(), digits("train")
    with pytest.warns(UserWarning, match="methods dropped .*deeplift .*lrp "):
        result = Audit(model, methods=["gradient", "deeplift", "lrp"], reference=models.gated(), tests=TESTS[:1],
                       options=CHEAP)(data)
    assert result.config["methods"] == ["gradient"]
    assert set(result.config["dropped_methods"]) == {"deeplift", "lrp"}
    with pytest.raises(ValueError) as error:
        Audit(model, methods=["lrp", "deeplift"], reference=models.gated(), tests=TESTS[:1], options=CHEAP)(data)
    message = str(error.value)
    assert "\n" not in message and "no explanation method can be used" in message
    assert "lrp (LRP cannot propagate" in message and "deeplift (DeepLift cannot propagate" in message


def test_a_reference_model_the_method_cannot_explain_drops_it_too(models):
    data = digits("train")
    result = Audit(models.shift(), reference=models.gated(), tests=TESTS[:1], options=CHEAP)(data)
    assert result.config["dropped_methods"]["lrp"].startswith("reference[0]: LRP cannot propagate")
    assert "lrp" not in result.config["methods"]


def test_a_test_that_cannot_handle_the_model_is_skipped_with_its_error(models):
    """A test whose run raises on a model (here: one that needs a conv layer) is skipped with its error; the others
    run. The issue's model is linear: the Hessian test runs and finds no curvature (its gradient does not depend
    on the input), instead of failing."""
    def needs_conv(model, ctx, reference=None):
        raise RuntimeError("this test reads a Conv2d layer")

    data = digits("train")
    picky = AuditTest("picky", meaning="A test that only handles CNNs.", tolerance=0.1, run=needs_conv)
    result = Audit(models.shift(), reference=models.shift(), tests=["hessian", "noise_inputs", picky],
                   options=CHEAP)(data)
    assert set(result.tests) == {"hessian", "noise_inputs"}
    assert result.tests["hessian"]["statistic"] == -30.0  # log10 of a zero curvature, clamped
    assert result.config["skipped"]["picky"] == ("failed on reference model 0: RuntimeError: this test reads a "
                                                 "Conv2d layer")
    with pytest.raises(ValueError, match="^no audit test could run on this model: picky \\(failed on"):
        Audit(models.shift(), reference=models.shift(), tests=[picky], options=CHEAP)(data)


def test_select_methods_degrades_and_says_why(models):
    x = digits("test").x[:1]
    with pytest.warns(UserWarning, match="methods dropped"):
        chosen = select_methods(models.gated(), x, ["gradient", "lrp"])
    assert chosen == ["gradient"] and set(chosen.dropped) == {"lrp"}
    chosen = select_methods(models.gated(), x)  # the defaults: silently the ones that apply, reasons kept
    assert "lrp" not in chosen and "gradient" in chosen and "lrp" in chosen.dropped and "gradcam" in chosen.dropped
    with pytest.raises(ValueError, match="^no explanation method asked for can be used .*lrp \\(LRP cannot"):
        select_methods(models.gated(), x, ["lrp"])


def test_the_issue_model_through_veneer_audit_end_to_end(models, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(["audit", "--model", "degrade_models:gated", "--reference", "degrade_models:gated",
                 "--data", "digits", "--tests", ",".join(TESTS), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "methods dropped: lrp" in printed
    audit = json.loads((out / "audit.json").read_text())
    assert set(audit["tests"]) == set(TESTS) and "lrp" in audit["config"]["dropped_methods"]
    assert (out / "report.html").is_file()

    # the issue's own model: x.flatten(1) @ self.shift is linear in x, so every method explains it
    out = tmp_path / "shift"
    assert main(["audit", "--model", "degrade_models:shift", "--reference", "degrade_models:shift",
                 "--data", "digits", "--tests", ",".join(TESTS), "--out", str(out)]) == 0
    audit = json.loads((out / "audit.json").read_text())
    assert audit["config"]["dropped_methods"] == {} and "lrp" in audit["config"]["methods"]
    assert set(audit["tests"]) == set(TESTS)


def test_explain_degrades_and_records_the_dropped_methods(models, tmp_path):
    out = tmp_path / "explain"
    with pytest.warns(UserWarning, match="methods dropped"):
        code = main(["explain", "--model", "degrade_models:gated", "--data", "digits", "--methods",
                     "gradient,lrp", "--n", "2", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["methods"] == ["gradient"] and "lrp" in metrics["dropped_methods"]


def test_gated_model_is_really_out_of_lrp_reach(models):
    """The premise of the tests above: the product of two input-dependent tensors is a named refusal."""
    from veneer.explain import LRP, GraphError

    with pytest.raises(GraphError, match="product or quotient of two tensors that both depend on the input"):
        LRP(models.gated())(torch.rand(2, 1, 8, 8))
