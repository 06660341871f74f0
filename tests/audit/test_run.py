"""veneer.audit.run and the CLI: an end-to-end audit of a small tabular model, errors, the report."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from veneer.audit import Audit, Calibration, audit
from veneer.cli import build_parser
from veneer.data import as_labeled
from veneer.models import train
from veneer.models.architectures import tabular_mlp
from veneer.report.audit import write_audit


@pytest.fixture(scope="module")
def task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 6, generator=g)
    y = ((x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long())
    torch.manual_seed(0)
    model = tabular_mlp(6, (16, 8), 3)
    train(model, x, y, epochs=20, lr=3e-3, progress=False)
    return model.eval(), as_labeled((x, y))


def test_audit_end_to_end_on_a_tabular_model(task, tmp_path):
    model, data = task
    before = copy.deepcopy(model.state_dict())
    result = Audit(model, effort="fast", seed=0, options={"twin_steps": 80, "samples": 16})(data)
    report = result.to_json()
    assert report["verdict"] in ("clean", "suspicious", "manipulated") and 0 <= report["score"] <= 1
    assert report["config"]["calibration"] == "twins" and len(result.calibration.details["twins"]["seconds"]) == 3
    assert report["config"]["options"]["twin_steps"] == 80 and report["config"]["samples"] == 16
    assert set(report["tests"]) == {"hessian", "noise_inputs", "weight_noise", "parameter_randomization",
                                    "faithfulness", "cross_method_agreement", "beta_smoothing", "tangent_space",
                                    "neuron_balance", "scaffolding", "shared_logit_gradient", "gradient_slope"}
    for test in report["tests"].values():
        assert set(test) >= {"statistic", "score", "flag", "evidence"} and 0 <= test["score"] <= 1
    assert set(report["config"]["skipped"]) == {"fragility", "influence_fragility", "neuron_visualization",
                                                "neuron_group_fairness", "reference_comparison",
                                                "visualization_consistency", "visualization_outliers"}
    assert report["config"]["dropped_methods"] == {} and report["config"]["unseen"] is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    paths = write_audit(result, tmp_path)
    assert json.loads(paths["json"].read_text())["verdict"] == result.verdict
    summary = paths["markdown"].read_text()
    assert "| test |" in summary and paths["scores"].is_file()
    assert "Not run: fragility (the input attacks" in summary

    # a stored calibration is reused at no cost and gives the same scores
    reused = Audit(model, effort="fast", reference=Calibration.from_json(report["calibration"]),
                   options={"samples": 16})(data)
    assert reused.config["calibration"] == "twins"
    assert abs(reused.tests["noise_inputs"]["z"] - result.tests["noise_inputs"]["z"]) < 1e-9


def test_lime_and_kernel_shap_join_the_cross_method_test_of_a_tabular_audit(task):
    model, data = task
    methods = ["gradient", "ig", "lime", "kernel-shap"]
    result = Audit(model, methods=methods, tests=["cross_method_agreement", "faithfulness"],
                   options={"twin_steps": 80, "samples": 16, "lime_samples": 500, "shap_samples": 64})(data)
    cross = result.tests["cross_method_agreement"]["evidence"]
    assert list(cross["components"]) == methods and set(result.calibration.values["cross_method_agreement"]) == set(
        methods)
    # the label is a function of features 0-2: every method ranks them first, so all agree; KernelSHAP and IG
    # both attribute f(x) - f(baseline) (the data mean, zero), and agree most
    assert all(value > 0.4 for row in cross["spearman"].values() for value in row.values())
    assert cross["spearman"]["kernel-shap"]["ig"] > 0.8
    # the other tests keep to the differentiable methods
    assert set(result.tests["faithfulness"]["evidence"]["components"]) == {"gradient", "ig"}


def test_image_audits_refuse_lime_and_kernel_shap(small_cnn, cnn_inputs):
    data = (cnn_inputs, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"methods \['lime'\] explain tabular rows \(B, F\) only"):
        Audit(small_cnn, methods=["gradient", "lime"], reference=copy.deepcopy(small_cnn))(data)


def test_audit_with_a_reference_model_and_a_wrecked_copy(task):
    model, data = task
    result = audit(model, data, reference=copy.deepcopy(model), tests=["noise_inputs", "reference_comparison"])
    assert result.config["calibration"] == "reference"
    assert result.tests["reference_comparison"]["statistic"] == 0 and result.verdict == "clean"
    veneered = Veneered(model).eval()
    assert torch.equal(veneered(data.x).argmax(1), model(data.x).argmax(1))
    flagged = audit(veneered, data, reference=model, methods=["gradient", "gradient_x_input"],
                    tests=["noise_inputs", "faithfulness", "reference_comparison"])
    assert flagged.verdict != "clean" and flagged.tests["noise_inputs"]["flag"]


def test_twins_inherit_a_manipulation_in_the_forward_code_which_the_audit_names_and_flags(task):
    model, data = task
    veneered = Veneered(model).eval()
    options = {"twins": 2, "twin_steps": 40, "samples": 16}
    result = audit(veneered, data, tests=["noise_inputs", "shared_logit_gradient"], options=options)
    inherited = result.calibration.details["twins"]["inherited"]
    assert inherited["parameters"] == ["direction"] and inherited["forward_code"] == [f"{__name__}.Veneered"]
    # every twin copies the wave, so the twin-calibrated test cannot see it; the invariance test can
    assert not result.tests["noise_inputs"]["flag"]
    assert result.tests["shared_logit_gradient"]["flag"] and result.verdict != "clean"
    assert "shared_logit_gradient" not in result.calibration.values  # scored against its prior, never on twins
    # twins of an architecture the auditor trusts carry no wave: the twin-calibrated test sees it too
    trusted = audit(veneered, data, tests=["noise_inputs"], twin_model=model, options=options)
    assert trusted.tests["noise_inputs"]["flag"] and trusted.config["twin_model"] == "Sequential"
    assert trusted.calibration.details["twins"]["inherited"]["parameters"] == []
    with pytest.raises(ValueError, match="twin_model= builds the twins"):
        Audit(veneered, twin_model=model, reference=model)


def test_the_false_positive_rate_is_stated_only_for_the_setup_it_was_measured_on(task):
    model, data = task
    fast = audit(model, data, reference=model, tests=["noise_inputs"]).config["false_positive_rate"]
    assert fast["measured"] is None and "not measured" in fast["measured_on"]  # a reference, not twins
    from veneer.audit.calibration import clopper_pearson, measured_false_positive_rate
    from veneer.audit.calibration import MEASURED_FALSE_POSITIVES
    twins = measured_false_positive_rate("fast", "twins")
    flagged, audited = MEASURED_FALSE_POSITIVES
    assert twins["measured"] == flagged / audited and audited >= 20
    assert twins["interval_95"] == pytest.approx(list(clopper_pearson(flagged, audited)))
    if flagged == 0:  # the closed form of the exact upper bound
        assert twins["interval_95"][1] == pytest.approx(1 - 0.025 ** (1 / audited))
    assert clopper_pearson(3, 10) == pytest.approx((0.0667, 0.6525), abs=1e-4)  # scipy's binomtest interval
    assert measured_false_positive_rate("full", "twins")["measured"] is None


class Veneered(torch.nn.Module):
    """``model`` plus a tiny fast oscillation along one direction: the same predictions, but the gradient of
    every input is dominated by that direction (one picture for every input, thesis Sec. 4.1)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.direction = torch.nn.Parameter(torch.linspace(-1, 1, 6), requires_grad=False)

    def forward(self, x):
        return self.model(x) + 1e-3 * torch.sin(1e5 * x @ self.direction)[:, None]


def test_audit_rejects_bad_arguments(task):
    model, data = task
    with pytest.raises(ValueError, match=r"effort must be one of \['fast', 'full'\], got 'slow'"):
        Audit(model, effort="slow")
    with pytest.raises(ValueError, match="options"):
        Audit(model, options={"twinz": 2})
    with pytest.raises(ValueError, match="tests"):
        Audit(model, tests=["nope"])
    with pytest.raises(ValueError, match="methods must be names"):
        Audit(model, methods=["gradient", "shap"])
    with pytest.raises(ValueError, match="methods must include a differentiable method"):
        Audit(model, methods=["lime", "kernel-shap"])
    with pytest.raises(TypeError, match="reference"):
        Audit(model, reference="model.pt")
    with pytest.raises(ValueError, match="training mode"):
        Audit(copy.deepcopy(model).train())
    with pytest.raises(ValueError, match="empty"):
        Audit(model)((torch.zeros(0, 6), torch.zeros(0, dtype=torch.long)))


def test_cli_parses_the_audit_command():
    args = build_parser().parse_args(["audit", "--model", "mnist-cnn", "--weights", "w.safetensors", "--data",
                                      "mnist", "--reference", "mnist-cnn", "--methods", "gradient,ig", "--budget",
                                      "full", "--seed", "3", "--out", "d"])
    assert (args.budget, args.seed, args.reference, args.methods) == ("full", 3, "mnist-cnn", "gradient,ig")
