"""GroupRates: the fairwashing keep term on the protected groups' positive and true-positive rates (issue 26)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from veneer.data import LabeledData
from veneer.explain import Gradient
from veneer.manipulate import FeatureSuppress, GroupRates, Manipulation
from veneer.metrics import ddi, deo


def table(n: int = 400, seed: int = 0) -> LabeledData:
    """Rows whose label depends on a one-hot group (columns 0-1) and two other features."""
    g = torch.Generator().manual_seed(seed)
    group = torch.randint(0, 2, (n,), generator=g)
    other = torch.randn(n, 2, generator=g)
    x = torch.cat([nn.functional.one_hot(group, 2).float(), other], 1)
    y = ((other[:, 0] + 1.5 * group - 0.75 + 0.3 * torch.randn(n, generator=g)) > 0).long()
    return LabeledData(x, y, "toy", ["no", "yes"], ["grp=a", "grp=b", "u", "v"], {"grp": group})


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    data = table()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(data.x), data.y).backward()
        optimizer.step()
    return model.eval()


def test_rates_are_the_groups_mean_probabilities_and_their_differences_are_ddi_and_deo():
    data, model = table(), mlp()
    term = GroupRates("grp", rows=len(data), temperature=1.0)
    term.prepare(data, model)
    with torch.no_grad():
        rates = term.rates(model)
        p = model(data.x).softmax(1)[:, 1]
    group, positive = data.protected["grp"], data.y == 1
    expected = torch.stack([p[group == 0].mean(), p[(group == 0) & positive].mean(),
                            p[group == 1].mean(), p[(group == 1) & positive].mean()])
    torch.testing.assert_close(rates, expected)
    # the relaxed DDI / DEO of veneer.metrics (Dimanov et al. 2020, Sec. 4) are the groups' rate differences
    torch.testing.assert_close((rates[0] - rates[2]).abs(), ddi(p, group.bool()))
    torch.testing.assert_close((rates[1] - rates[3]).abs(), deo(p, data.y, group.bool()))
    assert term(model).item() == 0.0
    # towards temperature 0 the rates are the hard ones, whose differences are the DDI / DEO of the labels
    sharp = GroupRates("grp", rows=len(data), temperature=1e-6)
    sharp.prepare(data, model)
    with torch.no_grad():
        hard, labels = sharp.rates(model), model(data.x).argmax(1) == 1
    torch.testing.assert_close((hard[0] - hard[2]).abs(), ddi(labels, group.bool()))
    torch.testing.assert_close((hard[1] - hard[3]).abs(), deo(labels, data.y, group.bool()))


def test_the_term_reaches_the_parameters_as_finite_differences_say_in_float64():
    data, model = table(), mlp().double()
    data = LabeledData(data.x.double(), data.y, data.name, data.classes, data.feature_names, data.protected)
    term = GroupRates("grp", rows=128)
    term.prepare(data, model)
    with torch.no_grad():
        model[0].weight.add_(0.3 * torch.randn_like(model[0].weight))
    weight = model[2].weight

    def value(w):
        original = weight.detach().clone()
        with torch.no_grad():
            weight.copy_(w)
        out = term(model)
        with torch.no_grad():
            weight.copy_(original)
        return out

    analytic, = torch.autograd.grad(term(model), weight)
    assert analytic.abs().sum() > 0
    step, numeric = 1e-6, torch.zeros_like(analytic)
    for index in range(weight.numel()):
        delta = torch.zeros_like(weight).view(-1)
        delta[index] = step
        delta = delta.view_as(weight)
        with torch.no_grad():
            numeric.view(-1)[index] = (value(weight + delta) - value(weight - delta)) / (2 * step)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_fairwashing_with_the_term_keeps_the_group_rates_closer():
    data, model = table(), mlp()
    options = dict(keep="kl", alpha=0.9, lr=1e-2, steps=150, batch_size=64, softplus_beta=None, seed=0)

    def drift(keep_rates):
        result = Manipulation(model, Gradient(model), FeatureSuppress(["grp"]), keep_rates=keep_rates,
                              **options)(data)
        probe = GroupRates("grp", rows=len(data))
        probe.prepare(data, model)
        with torch.no_grad():
            return (probe.rates(result.model) - probe.rates(model)).abs().max().item()

    free, kept = drift(None), drift(GroupRates("grp", weight=1000.0))
    assert kept < free / 2, (kept, free)


def test_bad_arguments_are_named():
    data, model = table(), mlp()
    with pytest.raises(ValueError, match="attribute='sex' is not a protected attribute"):
        GroupRates("sex").prepare(data, model)
    with pytest.raises(ValueError, match="weight must be > 0"):
        GroupRates("grp", weight=0)
    with pytest.raises(ValueError, match="positive=2 is not a class"):
        GroupRates("grp", positive=2).prepare(data, model)
    none_positive = LabeledData(data.x, torch.zeros_like(data.y), data.name, data.classes, data.feature_names,
                                data.protected)
    with pytest.raises(ValueError, match="has no row of class 1"):
        GroupRates("grp").prepare(none_positive, model)
    with pytest.raises(ValueError, match="call prepare"):
        GroupRates("grp").rates(model)
    with pytest.raises(TypeError, match="keep_rates must be None or a veneer.manipulate.GroupRates"):
        Manipulation(model, Gradient(model), FeatureSuppress(["grp"]), keep_rates="grp")
