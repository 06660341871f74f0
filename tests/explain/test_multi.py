"""MultiExplainer: several methods seen as one explainer (Dimanov et al. 2020), for attacks and manipulations."""

import copy

import pytest
import torch

from veneer.data import LabeledData
from veneer.explain import LRP, Gradient, GradientXInput, IntegratedGradients, Lime, MultiExplainer
from veneer.manipulate import FeatureSuppress, Manipulation
from veneer.models.architectures import tabular_mlp


def test_stacks_the_methods_and_backpropagates_through_all(mlp_case):
    model, x, target = mlp_case
    methods = [Gradient(model), GradientXInput(model), IntegratedGradients(model, steps=8)]
    multi = MultiExplainer(methods)
    attr = multi(x, target=target)
    assert attr.shape == (3 * len(x), x.shape[1])
    for k, method in enumerate(methods):
        torch.testing.assert_close(attr[k * len(x):(k + 1) * len(x)], method(x, target=target))
    # the parameter gradient of a loss on the stacked attributions is the sum of the per-method gradients
    weight = model[0].weight
    (stacked,) = torch.autograd.grad(multi(x, target, create_graph=True).pow(2).sum(), weight)
    parts = sum(torch.autograd.grad(m(x, target, create_graph=True).pow(2).sum(), weight)[0] for m in methods)
    torch.testing.assert_close(stacked, parts)


def test_with_model_rebinds_every_method(small_mlp, mlp_inputs):
    other = copy.deepcopy(small_mlp)
    with torch.no_grad():
        other[0].weight.mul_(2)
    multi = MultiExplainer({"gradient": Gradient(small_mlp), "lrp": LRP(small_mlp)})
    moved = multi.with_model(other)
    assert moved.model is other and all(e.model is other for e in moved.explainers)
    assert all(e.model is small_mlp for e in multi.explainers)
    torch.testing.assert_close(moved(mlp_inputs, target=0),
                               torch.cat([Gradient(other)(mlp_inputs, target=0), LRP(other)(mlp_inputs, target=0)]))


def test_refuses_mixed_models_and_flags_non_differentiable(small_mlp, mlp_inputs):
    other = copy.deepcopy(small_mlp)
    with pytest.raises(ValueError, match="same model"):
        MultiExplainer([Gradient(small_mlp), Gradient(other)])
    with pytest.raises(TypeError, match="non-empty list"):
        MultiExplainer([])
    mixed = MultiExplainer([Gradient(small_mlp), Lime(small_mlp, mlp_inputs, num_samples=20)])
    assert mixed.differentiable is False


def test_manipulation_suppresses_a_feature_for_every_method():
    """FeatureSuppress over Gradient and GradientXInput at once (the engine sees one explainer)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 5, generator=gen)
    y = ((0.5 * x[:, 0] + x[:, 1] + x[:, 2]) > 0).long()
    torch.manual_seed(0)
    model = tabular_mlp(5, (16,), 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    data = LabeledData(x, y, "toy", ["0", "1"], ["s", "a", "b", "c", "d"])
    objective = FeatureSuppress(["s"])
    objective.prepare(data)
    methods = lambda m: [Gradient(m), GradientXInput(m)]  # noqa: E731
    manipulated = Manipulation(model, MultiExplainer(methods(model)), objective, keep="kl", alpha=0.8, lr=1e-2,
                               epochs=30, batch_size=64, softplus_beta=None)(data).model
    for before, after in zip(methods(model), methods(manipulated)):
        share = {k: objective.measures(e(x, target=y), None, before(x, target=y))["protected_share"].mean()
                 for k, e in (("before", before), ("after", after))}
        assert share["after"] < 0.4 * share["before"]
    with torch.no_grad():
        assert (manipulated(x).argmax(1) == model(x).argmax(1)).float().mean() >= 0.9
