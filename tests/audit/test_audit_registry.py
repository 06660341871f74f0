"""veneer.audit.registry: audit tests as objects, registered from outside the package, and the effort names."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

import veneer.audit
from veneer.audit import (EFFORTS, Audit, AuditTest, Calibration, TestResult, fragility_profile, register_test,
                          registered_tests, unregister_test)
from veneer.data import as_labeled
from veneer.explain import Gradient
from veneer.models import train
from veneer.models.architectures import tabular_mlp

BUILTIN = ("fragility", "influence_fragility", "hessian", "noise_inputs", "weight_noise", "parameter_randomization",
           "faithfulness", "cross_method_agreement", "beta_smoothing", "tangent_space", "neuron_visualization",
           "neuron_balance", "neuron_group_fairness", "reference_comparison", "shared_logit_gradient", "gradient_slope",
           "visualization_consistency", "visualization_outliers", "scaffolding")


class MeanLogit(AuditTest):
    """A user's test, written outside veneer: the mean absolute logit on the first rows of the audited inputs."""

    name = "mean_logit"
    meaning = "Mean absolute logit on the audited inputs: a model whose logits were scaled up is overconfident."
    source = "tests/audit/test_registry.py"
    tolerance = 0.5
    options = {"fast": {"logit_rows": 8}, "full": {"logit_rows": 32}}

    def run(self, model, ctx, reference=None):
        rows = ctx.options["logit_rows"]
        with torch.no_grad():
            value = model(ctx.x[:rows]).abs().mean().item()
        return TestResult(self.name, {"logit": value}, {"rows": len(ctx.x[:rows])})


def _row_norm(model, ctx, reference=None):
    with torch.no_grad():
        return TestResult("row_norm", {"norm": model(ctx.x).norm(dim=1).mean().item()})


@pytest.fixture(scope="module")
def task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = tabular_mlp(6, (16, 8), 2)
    train(model, x, y, epochs=10, lr=3e-3, progress=False)
    return model.eval(), as_labeled((x, y))


@pytest.fixture
def mean_logit():
    test = register_test(MeanLogit())
    try:
        yield test
    finally:
        unregister_test("mean_logit")


def test_a_user_test_registered_from_outside_runs_calibrated_against_twins(task, mean_logit):
    model, data = task
    assert list(registered_tests()) == [*BUILTIN, "mean_logit"] and veneer.audit.TESTS[-1] == "mean_logit"
    result = Audit(model, tests=["mean_logit"], seed=0,
                   options={"twins": 2, "twin_steps": 20, "samples": 16, "logit_rows": 4})(data)
    assert result.config["tests"] == ["mean_logit"] and result.config["options"]["logit_rows"] == 4
    record = result.tests["mean_logit"]
    assert (record["meaning"], record["source"], record["tolerance"]) == (MeanLogit.meaning, MeanLogit.source, 0.5)
    assert record["evidence"]["rows"] == 4
    twins = result.calibration.values["mean_logit"]["logit"]
    assert len(twins) == 2 and result.calibration.kind == "twins"
    mean, sd = sum(twins) / 2, abs(twins[0] - twins[1]) / math.sqrt(2)
    assert record["z"] == pytest.approx((record["statistic"] - mean) / math.sqrt(sd ** 2 + 0.5 ** 2))
    stored = json.loads(json.dumps(result.to_json()))  # what audit.json holds
    assert stored["tests"]["mean_logit"]["meaning"] == MeanLogit.meaning
    assert stored["calibration"]["values"]["mean_logit"]["logit"] == twins

    # the same calibration catches a model whose logits were scaled tenfold
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled[-1].weight.mul_(10)
        scaled[-1].bias.mul_(10)
    flagged = Audit(scaled, tests=["mean_logit"], reference=result.calibration, options={"samples": 16})(data)
    assert flagged.tests["mean_logit"]["flag"] and not record["flag"]


def test_a_registered_test_is_replaced_in_place_and_leaves_when_unregistered(mean_logit):
    with pytest.raises(ValueError, match="already registered"):
        register_test(MeanLogit())
    register_test(AuditTest("last", meaning="m", source="s", run=_row_norm))
    try:
        replaced = AuditTest("mean_logit", meaning="another meaning", source="here", tolerance=1.0, run=_row_norm)
        register_test(replaced, replace=True)
        assert registered_tests()["mean_logit"] is replaced and veneer.audit.TESTS[-2:] == ("mean_logit", "last")
    finally:
        unregister_test("last")
    assert unregister_test("mean_logit") is replaced
    assert "mean_logit" not in registered_tests() and "mean_logit" not in veneer.audit.TESTS
    with pytest.raises(ValueError, match=r"no audit test named 'mean_logit' is registered; registered: \['fragility'"):
        unregister_test("mean_logit")
    register_test(MeanLogit())  # the fixture unregisters it


def test_register_test_decorates_a_subclass():
    @register_test
    class Constant(AuditTest):
        name, meaning, source, tolerance = "constant", "Always one.", "nowhere", 0.1

        def run(self, model, ctx, reference=None):
            return TestResult("constant", {"one": 1.0})

    try:
        assert isinstance(Constant, type) and isinstance(registered_tests()["constant"], Constant)
    finally:
        unregister_test("constant")
    assert "constant" not in registered_tests()


def test_registration_refuses_incomplete_tests():
    with pytest.raises(ValueError, match="needs a non-empty meaning"):
        register_test(AuditTest("bare", source="s", run=_row_norm))
    with pytest.raises(ValueError, match="source must be a string"):
        register_test(AuditTest("bare", meaning="m", source=3, run=_row_norm))
    with pytest.raises(ValueError, match="tolerance must be a finite number > 0"):
        register_test(AuditTest("bare", meaning="m", source="s", tolerance=0, run=_row_norm))
    with pytest.raises(ValueError, match="name must be a non-empty identifier"):
        register_test(AuditTest("two words", meaning="m", source="s", run=_row_norm))
    with pytest.raises(ValueError, match=r"one entry per effort level \['fast', 'full'\]"):
        register_test(AuditTest("bare", meaning="m", source="s", options={"fast": {"a": 1}}, run=_row_norm))
    with pytest.raises(ValueError, match=r"options \['samples'\] are the audit's shared options"):
        register_test(AuditTest("bare", meaning="m", source="s", run=_row_norm,
                                options={"fast": {"samples": 1}, "full": {"samples": 2}}))
    with pytest.raises(ValueError, match="option 'noise_inputs' of test 'bare' is already an option of test "
                                         "'noise_inputs'"):
        register_test(AuditTest("bare", meaning="m", source="s", run=_row_norm,
                                options={"fast": {"noise_inputs": 1}, "full": {"noise_inputs": 2}}))
    with pytest.raises(ValueError, match=r"needs a prior \(mean, sd\)"):
        register_test(AuditTest("bare", meaning="m", source="s", needs_reference=True, run=_row_norm))
    with pytest.raises(TypeError, match="must be an AuditTest instance"):
        register_test("noise_inputs")
    assert "bare" not in registered_tests()


def test_an_unregistered_instance_runs_next_to_registered_tests(task):
    model, data = task
    row_norm = AuditTest("row_norm", meaning="Mean norm of the logit vectors.", source="here", tolerance=0.2,
                         run=_row_norm)
    result = Audit(model, tests=[row_norm, "noise_inputs"], reference=copy.deepcopy(model),
                   options={"samples": 8, "noise_inputs": 4})(data)
    assert list(result.tests) == ["noise_inputs", "row_norm"] and "row_norm" not in registered_tests()
    assert result.calibration.values["row_norm"]["norm"] == [result.tests["row_norm"]["statistic"]]
    assert result.tests["row_norm"]["z"] == 0 and result.tests["row_norm"]["meaning"] == row_norm.meaning

    # a reused calibration without values for a test: skipped, with the reason
    other = AuditTest("other", meaning="m", run=_row_norm)  # no source: allowed
    again = Audit(model, tests=[row_norm, other], reference=result.calibration, options={"samples": 8})(data)
    assert again.config["skipped"] == {"other": "the reused calibration has no reference values for it"}
    assert list(again.tests) == ["row_norm"]

    wrong = AuditTest("wrong", meaning="m", source="s", run=_row_norm)
    with pytest.raises(ValueError, match="audit test 'wrong' must return a TestResult named 'wrong'"):
        Audit(model, tests=[wrong], reference=copy.deepcopy(model), options={"samples": 8})(data)
    with pytest.raises(ValueError, match="no audit test named 'row_norm' is registered"):
        Calibration("reference").score(TestResult("row_norm", {"norm": 1.0}))
    with pytest.raises(ValueError, match=r"tests must name each test once, got \['noise_inputs'\]"):
        Audit(model, tests=["noise_inputs", registered_tests()["noise_inputs"]])


def test_a_test_that_does_not_apply_is_skipped_with_its_reason(task):
    model, data = task

    def never_run(model, ctx, reference=None):
        raise AssertionError("a test that does not apply must not run")

    gpu_only = AuditTest("gpu_only", meaning="m", source="s", run=never_run,
                         applies=lambda model, ctx: None if ctx.x.is_cuda else "needs inputs on a GPU")
    result = Audit(model, tests=[gpu_only, "neuron_balance", "reference_comparison"], reference=copy.deepcopy(model),
                   options={"samples": 8})(data)
    assert result.config["skipped"] == {"gpu_only": "needs inputs on a GPU"}
    assert list(result.tests) == ["neuron_balance", "reference_comparison"] and result.config["tests"] == list(
        result.tests)
    # without a reference model, a test that needs one is skipped
    twinless = Audit(model, tests=["neuron_balance", "reference_comparison"], reference=result.calibration,
                     options={"samples": 8})(data)
    assert twinless.config["skipped"] == {"reference_comparison": "no reference model was given"}
    vague = AuditTest("vague", meaning="m", source="s", run=never_run, applies=lambda model, ctx: False)
    with pytest.raises(TypeError, match="applies must return None or the reason"):
        Audit(model, tests=[vague], reference=copy.deepcopy(model), options={"samples": 8})(data)


def test_budget_is_the_deprecated_name_of_effort(task):
    model, data = task
    with pytest.warns(DeprecationWarning, match="use effort="):
        old = Audit(model, budget="full", tests=["neuron_balance"], reference=copy.deepcopy(model))
    new = Audit(model, effort="full", tests=["neuron_balance"], reference=copy.deepcopy(model))
    assert (old.effort, old.options) == ("full", new.options) and new.options["balance_samples"] == 2048

    def config(audit):
        drop = ("seconds_per_test", "calibration_cost")
        return {k: v for k, v in audit(data).config.items() if k not in drop}

    assert config(old) == config(new) and config(new)["effort"] == "full" and "budget" not in config(new)
    with pytest.raises(TypeError, match="pass effort= only"):
        Audit(model, effort="fast", budget="fast")
    with pytest.warns(DeprecationWarning, match="EFFORTS"):
        budgets = veneer.audit.BUDGETS
    assert budgets is EFFORTS
    with pytest.warns(DeprecationWarning, match="option 'eps_grid' is deprecated: use 'eps_values'"):
        renamed = Audit(model, options={"eps_grid": (0.1,)})
    assert renamed.options["eps_values"] == (0.1,) and "eps_grid" not in renamed.options


def test_unknown_names_are_refused_with_the_valid_ones(task):
    model, _ = task
    with pytest.raises(ValueError, match="tests must be names of registered tests") as error:
        Audit(model, tests=["noise_inputs", "nope"])
    assert "'nope'" in str(error.value) and all(f"'{name}'" in str(error.value) for name in BUILTIN)
    with pytest.raises(ValueError, match=r"options must override keys of EFFORTS\['fast'\] or of a test's "
                                         r"options") as error:
        Audit(model, options={"twinz": 2})
    assert all(f"'{key}'" in str(error.value) for key in ("twins", "eps_values", "balance_samples", "knn_k"))
    with pytest.raises(TypeError, match="tests must be a list"):
        Audit(model, tests="noise_inputs")


def test_every_builtin_test_has_its_own_meaning_a_source_and_a_tolerance():
    tests = {name: registered_tests()[name] for name in BUILTIN}
    assert tuple(registered_tests())[:len(BUILTIN)] == BUILTIN
    for name, test in tests.items():
        assert test.name == name and test.meaning.strip() and test.source.strip() and test.tolerance > 0, name
        assert set(test.options) in (set(), set(EFFORTS)), name
    meanings = [t.meaning for t in tests.values()]
    assert len(set(meanings)) == len(meanings)
    # every option of the effort table before the split is still there, once (eps_grid renamed eps_values), and
    # the tests added since declare only their own
    keys = [k for t in tests.values() for k in t.options.get("fast", {})] + list(EFFORTS["fast"])
    assert len(keys) == len(set(keys)) and "eps_values" in keys
    first = [k for name in BUILTIN[:14] for k in tests[name].options.get("fast", {})] + list(EFFORTS["fast"])
    assert len(first) == 21
    assert tests["reference_comparison"].needs_reference and tests["reference_comparison"].prior == (0.1, 0.0)


def test_fragility_test_reads_eps_values(small_cnn, cnn_inputs):
    """The fragility test's option is named as the attacks name it: ``eps_values``."""
    ctx = veneer.audit.AuditContext(cnn_inputs, torch.zeros(4, dtype=torch.long), cnn_inputs, torch.zeros(4),
                                    None, ("gradient",), {**Audit(small_cnn).options, "eps_values": (0.2,),
                                                          "attack_steps": 2}, 0)
    result = registered_tests()["fragility"].run(small_cnn, ctx)
    direct = fragility_profile(small_cnn, cnn_inputs, Gradient(small_cnn), eps_values=(0.2,), steps=2)
    assert result.components == direct.components and result.evidence["eps"] == [0.2]
