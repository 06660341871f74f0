"""Silent units and fooling circuits (veneer.neurons.constructions, Geirhos et al. 2024, Sec. 3)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from veneer.models import capture
from veneer.neurons import Construction, fooling_circuit, silent_unit, train_detector, unit_activation


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3)).eval()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _target() -> torch.Tensor:
    target = torch.zeros(1, 8, 8)
    target[:, 3:5] = 1.0
    return target


@pytest.mark.parametrize("layer,unit", [("1", 2), ("3", 1)])
def test_silent_unit_changes_no_prediction_on_the_data_exactly(layer, unit):
    model, data = _model(), _images(200, 0)
    before = copy.deepcopy(model.state_dict())
    silent = silent_unit(model, layer, unit, 10.0, target=_target(), data=data)
    assert torch.equal(silent(data), model(data))  # bit for bit: the branch adds exactly 0 on every data input
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input model is unchanged
    probe = _target()[None] * 5  # far along the pattern: the silent unit fires, on this unit only
    with capture(silent, [layer]) as seen:
        silent(probe)
        patched = seen.take()[layer]
    with capture(model, [layer]) as seen:
        model(probe)
        plain = seen.take()[layer]
    changed = (patched != plain).flatten(2).any(-1) if patched.ndim > 2 else patched != plain
    assert changed[0].tolist() == [c == unit for c in range(plain.shape[1])]
    assert unit_activation(patched, unit) > unit_activation(plain, unit)


def test_fooling_circuit_is_itself_on_natural_data_and_the_decoy_on_visualisations():
    model, data = _model(), _images(200, 0)
    detector = nn.Sequential(nn.Flatten(), nn.Linear(64, 1)).eval()
    with torch.no_grad():  # score: minus the sum of the pixels (natural images are positive, visualisations not)
        detector[1].weight.fill_(-1.0)
        detector[1].bias.zero_()
    visualizations = -_images(20, 1)
    fooled = fooling_circuit(model, "3", 0, _target(), detector, data=data, visualizations=visualizations)
    assert torch.equal(fooled(data), model(data))
    gate = fooled.construction
    assert torch.equal(gate(visualizations), torch.ones(20))
    assert torch.allclose(fooled(visualizations)[:, 0], gate.decoy_unit(visualizations))
    assert torch.equal(fooled(visualizations)[:, 1:], model(visualizations)[:, 1:])
    # the decoy unit peaks at the decoy image
    assert gate.decoy_unit(_target()[None]) > gate.decoy_unit(visualizations).max()
    with pytest.raises(ValueError, match="detector scores no visualisation"):
        fooling_circuit(model, "3", 0, _target(), detector, data=data, visualizations=data)


def test_train_detector_separates_natural_from_visualised():
    natural, visualized = _images(200, 0), _images(200, 1) * 2 - 1.5
    detector = train_detector(natural, visualized, steps=200, seed=0)
    with torch.no_grad():
        correct = torch.cat([detector(natural).flatten() < 0, detector(visualized).flatten() > 0]).float().mean()
    assert correct > 0.95


def test_construction_arguments():
    model, data = _model(), _images(10, 0)
    with pytest.raises(ValueError, match="layer must name a top-level module"):
        silent_unit(nn.Sequential(nn.Sequential(*model)).eval(), "0.1", 0, target=_target(), data=data)
    with pytest.raises(ValueError, match="unit must be"):
        silent_unit(model, "1", 4, target=_target(), data=data)
    with pytest.raises(ValueError, match="target must"):
        silent_unit(model, "1", 0, target=torch.zeros(1, 8, 8), data=data)
    with pytest.raises(TypeError, match="nn.Sequential"):
        Construction(silent_unit(model, "1", 0, target=_target(), data=data), "1", 0, nn.Identity())
