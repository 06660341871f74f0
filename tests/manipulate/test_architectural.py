"""Manipulations in the architecture (veneer.manipulate.architectural): predictions kept, explanation replaced,
checked against the closed forms of each family's gradient; the registry; what a twin inherits."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

from veneer.audit import inherited_state
from veneer.explain import GradCAM, Gradient, shared_logit_ratio
from veneer.manipulate import (ARCHITECTURAL, Architectural, HighFrequency, Router, SharedTerm, architectural,
                               class_directions, register_architectural, term_cosine, unregister_architectural)
from veneer.models.architectures import mnist_cnn, mnist_resnet, tabular_mlp

FAMILIES = ("wave", "picture", "gate", "high_frequency", "router", "router_add", "router_zero_mean")
MODULE = "veneer.manipulate.architectural"


def _seeded(factory, seed):
    torch.manual_seed(seed)
    return factory().double().eval()


MODELS = {"cnn": (lambda: _seeded(lambda: mnist_cnn(channels=(4, 8), hidden=16), 0), (1, 28, 28)),
          "resnet": (lambda: _seeded(lambda: mnist_resnet(width=4), 1), (1, 28, 28)),
          "mlp": (lambda: _seeded(lambda: tabular_mlp(16, (16, 8), 3), 2), (16,))}


@pytest.fixture(params=sorted(MODELS))
def case(request):
    """(model, x): a tiny random model of each kind (conv, residual, MLP; float64, eval) and 24 inputs."""
    build, shape = MODELS[request.param]
    return build(), torch.rand(24, *shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def _input_gradient(model, x, target):
    return Gradient(model)(x, target=target).flatten(1)


@pytest.mark.parametrize("family", FAMILIES)
def test_predictions_are_kept_and_the_explanation_is_the_terms(case, family):
    model, x = case
    before = copy.deepcopy(model.state_dict())
    manipulated = architectural(model, family, x, seed=3)
    assert not manipulated.training and manipulated.model is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model passed in: unchanged
    with torch.no_grad():
        f, z = model(x), manipulated(x)
    if family.startswith("router"):
        assert torch.equal(z, f)  # g(x) - detach(g(x)) is exactly 0
    elif family == "high_frequency":
        assert manipulated.bound == manipulated.amplitude / manipulated.frequency
        assert 0 < (z - f).abs().max() <= manipulated.bound
        assert torch.equal(z.argmax(1), f.argmax(1))  # random tiny models: no margin below 2 a / w here
    else:  # one term on every logit: softmax is invariant to it
        torch.testing.assert_close(z.softmax(1), f.softmax(1), rtol=0, atol=1e-12)
        assert torch.equal(z.argmax(1), f.argmax(1)) and (z - f).abs().max() > 1e-6
    cosine = term_cosine(manipulated, x)
    if family in ("router", "router_zero_mean"):
        torch.testing.assert_close(cosine, torch.ones_like(cosine))
    else:
        assert cosine.median() > 0.9


def test_the_gradients_are_the_closed_forms_of_each_term(case):
    """grad z_y - grad f_y against each family's analytic term gradient (float64)."""
    model, x = case
    y = model(x).argmax(1)
    own = _input_gradient(model, x, y)
    flat = x.flatten(1)

    wave = architectural(model, "wave", x, seed=1)
    d = torch.randn(flat.shape[1], generator=torch.Generator().manual_seed(1)).double()
    d = d / d.norm()
    torch.testing.assert_close(wave.direction, d)
    expected = wave.scale * torch.cos(50 * flat @ d)[:, None] * d
    torch.testing.assert_close(_input_gradient(wave, x, y) - own, expected)

    high = architectural(model, "high_frequency", x, seed=2, frequency=300.0)
    d_y = high.directions[y]
    expected = high.amplitude * torch.cos(300.0 * (flat * d_y).sum(1))[:, None] * d_y
    torch.testing.assert_close(_input_gradient(high, x, y) - own, expected)

    for route, base in (("all", torch.zeros_like(own)), ("add", own)):
        routed = Router(route=route)(model, x, seed=4)
        torch.testing.assert_close(_input_gradient(routed, x, y), base + routed.decoy.weight[y], rtol=0, atol=1e-12)


def test_a_router_leaves_grad_cam_to_the_model():
    """route="all" detaches the model's input, not its layers: Grad-CAM, read inside the model, is its own."""
    model = MODELS["cnn"][0]()
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    routed = architectural(model, "router", x, seed=0)
    torch.testing.assert_close(GradCAM(routed, layer="model.3")(x), GradCAM(model, layer="3")(x), rtol=0, atol=0)


def test_each_term_is_scaled_to_factor_times_the_models_own_gradient(case):
    model, x = case
    logits = model(x)
    y = logits.argmax(1)
    own = _input_gradient(model, x, y).norm(dim=1).mean()
    for family in FAMILIES:
        manipulated = architectural(model, family, x, seed=0, factor=2.0)
        with torch.enable_grad():
            probe = x.clone().requires_grad_(True)
            term = manipulated.term(probe)
            term = term.gather(1, y[:, None]) if term.ndim == 2 else term
            drawn = torch.autograd.grad(term.sum(), probe)[0].flatten(1).norm(dim=1).mean()
        assert drawn / own == pytest.approx(2.0, rel=1e-9), family


def test_a_router_disagrees_with_the_finite_differences_of_its_own_values():
    """The detached model has zero gradient: the explanation is g's, while the values are f's."""
    model = MODELS["mlp"][0]()
    x = torch.rand(6, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    high = architectural(model, "high_frequency", x, seed=0)
    point = x[:1].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(high, (point,))
    routed = architectural(model, "router", x, seed=0)
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(routed, (point,))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_model_trains_through_the_wrapper_and_second_order_gradients_match_finite_differences(family):
    """A loss on the outputs reaches every parameter of the model (twins and fine-tunes train it); the input
    gradient's derivative in a weight agrees with finite differences (float64), except for the routers whose
    input gradient is the decoy's alone (``route="all"``): it does not depend on the model's weights."""
    model = MODELS["mlp"][0]()
    x = torch.rand(6, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    manipulated = architectural(model, family, x, seed=0)
    loss = torch.nn.functional.cross_entropy(manipulated(x), torch.tensor([0, 1, 2, 0, 1, 2]))
    grads = torch.autograd.grad(loss, list(manipulated.model.parameters()))
    assert all(g.abs().sum() > 0 for g in grads)

    def explanation(weight):
        probe = x.clone().requires_grad_(True)
        logits = torch.func.functional_call(manipulated, {"model.0.weight": weight}, (probe,))
        return torch.autograd.grad(logits[:, 0].sum(), probe, create_graph=True)[0]

    weight = manipulated.model[0].weight.detach().clone().requires_grad_(True)
    if family in ("router", "router_zero_mean"):
        assert not explanation(weight).requires_grad
    else:
        assert torch.autograd.gradcheck(explanation, (weight,))


def test_a_zero_mean_router_gives_the_mean_logit_no_gradient(case):
    """The shared-logit ratio ||grad mean_k z_k|| / ||grad z_y|| of the audit test: ~1/sqrt(C) for random
    per-class decoys, 0 once they sum to zero over the classes."""
    model, x = case
    routed = architectural(model, "router", x, seed=0)
    hidden = architectural(model, "router_zero_mean", x, seed=0)
    assert shared_logit_ratio(routed, x).median() > 0.2
    torch.testing.assert_close(shared_logit_ratio(hidden, x), torch.zeros(len(x), dtype=x.dtype), rtol=0,
                               atol=1e-12)
    with pytest.raises(ValueError, match=r"zero_mean=True: the map of classes \[0, 1, 2"):
        Router(map="cross", zero_mean=True)(model, x)
    with pytest.raises(TypeError, match="zero_mean must be a bool"):
        Router(zero_mean=1)


def test_picture_maps_and_per_class_maps():
    model = MODELS["cnn"][0]()
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    routed = Router(map="cross")(model, x)
    assert routed.decoy.weight.shape == (10, 784) and (routed.decoy.weight[0] > 0).sum() == 2 * 2 * 28 - 4
    assert torch.equal(routed.decoy.weight[0], routed.decoy.weight[9])
    own = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    directions = class_directions(own, x, 10, torch.Generator())
    torch.testing.assert_close(directions, (own.flatten(1) / own.flatten(1).norm(dim=1, keepdim=True)).double())
    # an input that is neither an image nor a square: every other feature
    stripes = class_directions("cross", torch.zeros(2, 6), 3, torch.Generator())
    torch.testing.assert_close(stripes[0], torch.tensor([1, 0, 1, 0, 1, 0.]) / math.sqrt(3))


@pytest.mark.parametrize("family, storage", [
    ("wave", ("buffers", "direction", "SharedTermModel")),
    ("high_frequency", ("buffers", "directions", "HighFrequencyModel")),
    ("router", ("parameters", "decoy.weight", "RouterModel")),
])
def test_inherited_state_names_where_each_family_lives(family, storage):
    model = MODELS["cnn"][0]()
    kind, name, wrapper = storage
    inherited = inherited_state(architectural(model, family, torch.rand(4, 1, 28, 28, dtype=torch.float64)))
    assert inherited[kind] == [name] and f"{MODULE}.{wrapper}" in inherited["forward_code"]
    if family == "router":
        assert f"{MODULE}.DecoyMap" in inherited["forward_code"]


def test_the_registry_builds_by_name_and_takes_a_users_family():
    assert set(FAMILIES) <= set(ARCHITECTURAL)
    model = MODELS["mlp"][0]()
    x = torch.rand(4, 16, dtype=torch.float64)

    class Doubled(Architectural):
        def build(self, model, x, classes, generator):
            return torch.nn.Sequential(model, torch.nn.Identity())

    register_architectural("doubled", Doubled)
    try:
        built = architectural(model, "doubled", x)
        assert built[0] is not model and not built.training
        with pytest.raises(ValueError, match="'doubled' is already registered"):
            register_architectural("doubled", Doubled)
        register_architectural("doubled", lambda: "not a family", replace=True)
        with pytest.raises(TypeError, match="must return an Architectural"):
            architectural(model, "doubled", x)
    finally:
        unregister_architectural("doubled")
    assert "doubled" not in ARCHITECTURAL
    with pytest.raises(ValueError, match="no architectural manipulation named 'doubled' is registered"):
        unregister_architectural("doubled")
    with pytest.raises(ValueError, match=r"name must be one of the registered .*got 'nope'"):
        architectural(model, "nope", x)
    with pytest.raises(TypeError, match="factory must be callable"):
        register_architectural("x", 3)
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        register_architectural("", HighFrequency)


def test_bad_arguments_are_named():
    model = MODELS["mlp"][0]()
    x = torch.rand(4, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="training mode"):
        architectural(copy.deepcopy(model).train(), "wave", x)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        SharedTerm()("model", x)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        architectural(model, "wave", x.tolist())
    with pytest.raises(ValueError, match=r"x must be a non-empty batch"):
        architectural(model, "wave", x[0])
    with pytest.raises(ValueError, match="x contains NaN"):
        architectural(model, "wave", x * float("nan"))
    with pytest.raises(TypeError, match="seed must be an int"):
        architectural(model, "wave", x, seed=1.5)
    with pytest.raises(ValueError, match=r"kind must be one of \['wave', 'picture', 'gate'\]"):
        SharedTerm(kind="sine")
    with pytest.raises(ValueError, match="factor must be > 0"):
        architectural(model, "high_frequency", x, factor=0.0)
    with pytest.raises(ValueError, match="frequency must be > 0"):
        HighFrequency(frequency=-1.0)
    with pytest.raises(ValueError, match=r"route must be one of \['all', 'add'\]"):
        Router(route="some")
    with pytest.raises(ValueError, match="map must be None, one of"):
        architectural(model, "router", x, map="circle")
    with pytest.raises(ValueError, match=r"map must have one input's shape \(16,\) or \(3, \*\(16,\)\)"):
        architectural(model, "router", x, map=torch.ones(5))
    with pytest.raises(ValueError, match="map must not be zero"):
        architectural(model, "high_frequency", x, map=torch.zeros(16))
    with pytest.raises(ValueError, match="x: the term has no input gradient"):
        architectural(model, "gate", torch.zeros(4, 16, dtype=torch.float64))
    with pytest.raises(TypeError, match="manipulated must be built by an Architectural"):
        term_cosine(model, x)
