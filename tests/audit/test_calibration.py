"""veneer.audit.calibration: scoring against references, the verdict rule, twins."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from veneer.audit import (Calibration, TestResult, combined_z, nominal_false_positive_rate, registered_tests,
                          reinitialized, train_twins, verdict)
from veneer.audit.calibration import normal_cdf
from veneer.data import as_labeled
from veneer.models.architectures import tabular_mlp


def _scored(*zs: float) -> dict:
    return {f"t{i}": {"z": z, "flag": z > 3.0, "score": normal_cdf(z - 3.0)} for i, z in enumerate(zs)}


def test_verdict_combination():
    assert verdict(_scored(0.0, 1.0, 2.9, -1.0)) == ("clean", normal_cdf(2.9 - 3.0))
    assert verdict(_scored(0.0, 0.0, 0.0, 3.5))[0] == "suspicious"
    assert verdict(_scored(0.0, 3.1, 3.5))[0] == "manipulated"
    assert verdict(_scored(0.0, 0.0, 0.0, 6.5))[0] == "manipulated"  # one very strong test
    assert combined_z([2.5, 0.0, 2.2, 2.6, 1.0]) == pytest.approx(2.4333333333)
    assert verdict(_scored(2.5, 0.0, 2.2, 2.6))[0] == "suspicious"  # several tests moderately off
    assert verdict(_scored(2.9, 3.0, 2.9, 3.2))[0] == "manipulated"
    with pytest.raises(ValueError, match="no test"):
        verdict({})


def test_score_uses_reference_mean_spread_and_tolerance():
    calibration = Calibration("twins")
    for value in (0.1, 0.2, 0.3):
        calibration.add({"noise_inputs": TestResult("noise_inputs", {"gradient": value, "ig": 0.0})})
    scored = calibration.score(TestResult("noise_inputs", {"gradient": 0.8, "ig": 0.0}))
    expected = (0.8 - 0.2) / math.sqrt(0.1 ** 2 + registered_tests()["noise_inputs"].tolerance ** 2)
    assert abs(scored["z"] - expected) < 1e-12 and scored["evidence"]["worst"] == "gradient"
    assert scored["flag"] and scored["score"] > 0.5
    assert not calibration.score(TestResult("noise_inputs", {"gradient": 0.2, "ig": 0.0}))["flag"]
    with pytest.raises(ValueError, match="no reference values"):
        calibration.score(TestResult("hessian", {"x": 1.0}))
    assert Calibration.from_json(calibration.to_json()).values == calibration.values


def test_nominal_false_positive_rate():
    # one test of one component: only the flag rule can fire (the top-3 mean is that z, > 2 at rate 1-Phi(2))
    assert abs(nominal_false_positive_rate([1], draws=200000) - (1 - normal_cdf(2.0))) < 3e-3
    many = nominal_false_positive_rate([5] * 10)
    assert 0 < many < 1 and many > nominal_false_positive_rate([1] * 10)
    with pytest.raises(ValueError, match="components"):
        nominal_false_positive_rate([])


def test_twins_are_reinitialised_trained_copies_and_the_model_is_unchanged():
    torch.manual_seed(0)
    model = tabular_mlp(4, (16,), 2).eval()
    before = copy.deepcopy(model.state_dict())
    fresh = reinitialized(model, seed=5)
    assert not torch.equal(fresh[0].weight, model[0].weight)
    assert torch.equal(reinitialized(model, seed=5)[0].weight, fresh[0].weight)
    x = torch.randn(256, 4, generator=torch.Generator().manual_seed(1))
    data = as_labeled((x, (x[:, 0] > 0).long()))
    twins, details = train_twins(model, data, count=2, steps=160, batch_size=32)
    assert len(twins) == 2 and not torch.equal(twins[0][0].weight, twins[1][0].weight)
    assert min(details["accuracy"]) > 0.8 and details["steps"] == 160
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
