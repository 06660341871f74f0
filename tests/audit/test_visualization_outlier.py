"""The twin-free audit test of planted units (veneer.audit.visualization.visualization_outliers)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import median_abs_deviation
from torch import nn

from veneer.audit import EFFORTS, registered_tests
from veneer.audit.visualization import robust_z, visualization_outliers
from veneer.neurons import fooling_circuit, silent_unit, total_variation, visualize


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 6)).eval()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _cross() -> torch.Tensor:
    target = torch.zeros(1, 8, 8)
    target[:, 3:5] = 1.0
    target[:, :, 3:5] = 1.0
    return target


def test_robust_z_is_the_modified_z_score():
    values = torch.tensor([0.3, 1.0, 2.5, 2.0, 40.0, -1.0, 1.7], dtype=torch.float64)
    expected = (values - values.median()) / median_abs_deviation(values.numpy(), scale="normal")
    assert torch.allclose(robust_z(values), expected)
    # one outlier moves neither the median nor the MAD: the other scores stay where they were
    assert torch.allclose(robust_z(values)[:4], robust_z(torch.cat([values[:4], values[5:], values[4:5] * 100]))[:4])


@pytest.mark.parametrize("layer,unit", [("1", 5), ("3", 2)])
def test_off_range_slope_finds_a_silent_unit(layer, unit):
    model, data = _model(), _images(300, 0)
    clean = visualization_outliers(model, data, steps=4)
    silent = visualization_outliers(silent_unit(model, layer, unit, 10.0, target=_cross(), data=data), data, steps=4)
    assert silent.components["off_range_slope"] > clean.components["off_range_slope"] + 6
    assert silent.evidence[layer]["off_range_slope"]["top_units"][0] == unit


class _Smoothness(nn.Module):
    """A detector of visualised inputs: minus the total variation (uniform noise is rough, visualisations smooth)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -total_variation(x)[:, None]


@pytest.mark.parametrize("layer,unit", [("1", 5), ("3", 2)])
def test_gate_jump_finds_a_fooling_circuit(layer, unit):
    model, data = _model(), _images(300, 0)
    visualized = visualize(model, layer, input_shape=(1, 8, 8), steps=16, seed=0)
    # blends a little off the data make the gate a step, as a detector trained on early visualisations does
    calibration = torch.cat([visualized, torch.lerp(data[:20], visualized[:1], 0.3)])
    fooled = fooling_circuit(model, layer, unit, _cross(), _Smoothness().eval(), data=data, visualizations=calibration)
    clean = visualization_outliers(model, data, steps=16)
    result = visualization_outliers(fooled, data, steps=16)
    assert result.components["gate_jump"] > clean.components["gate_jump"] + 20
    assert result.evidence[layer]["gate_jump"]["top_units"][0] == unit


def test_registered_prior_only_with_options_for_every_effort():
    test = registered_tests()["visualization_outliers"]
    assert test.prior_only and len(test.prior) == 2 and test.meaning and test.source
    assert set(test.options) == set(EFFORTS)


def test_bad_arguments_name_what_was_expected():
    model, data = _model(), _images(20, 0)
    with pytest.raises(ValueError, match="x"):
        visualization_outliers(model, data.flatten(1))
    with pytest.raises(ValueError, match="contrast must be > 2"):
        visualization_outliers(model, data, contrast=2.0)
    with pytest.raises(ValueError, match="points must be an int >= 3"):
        visualization_outliers(model, data, points=2)
    with pytest.raises(ValueError, match="steps"):
        visualization_outliers(model, data, steps=0)
    with pytest.raises(ValueError, match="values must hold at least 3 units"):
        robust_z(torch.tensor([1.0, 2.0]))
    narrow = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 64, 4)).eval()
    with pytest.raises(ValueError, match="layer '1' has 2 units"):
        visualization_outliers(narrow, data, steps=2)
