"""Tests of :mod:`veneer.models.activations` (ReLU -> Softplus swap) and :mod:`veneer.models.architectures`."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from veneer.models.activations import softplus_activations, with_softplus
from veneer.models.architectures import cifar_vgg, digits_mlp, make_activation, mnist_cnn, tabular_mlp


def nested_model() -> nn.Module:
    """ReLUs at the top level, inplace, and nested two levels deep in sub-Sequentials; plus a non-ReLU."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8), nn.ReLU(),
        nn.Sequential(nn.Linear(8, 8), nn.ReLU(inplace=True), nn.Sequential(nn.Linear(8, 8), nn.ReLU())),
        nn.Linear(8, 8), nn.Tanh(),
        nn.Linear(8, 3),
    ).double().eval()


def relu_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.ReLU)]


def softplus_modules(model: nn.Module) -> dict[str, nn.Softplus]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Softplus)}


def softplus_reference(x: torch.Tensor, model: nn.Module, beta: float) -> torch.Tensor:
    """Forward of ``model`` with every ReLU computed as Softplus(beta), by hand (no module swapping)."""
    def run(module, h):
        if isinstance(module, nn.Sequential):
            for child in module:
                h = run(child, h)
            return h
        if isinstance(module, nn.ReLU):
            return torch.nn.functional.softplus(h, beta=beta)
        return module(h)
    return run(model, x)


# ---------------------------------------------------------------- with_softplus


@pytest.mark.parametrize("beta", [1.0, 5.0, 20.0])
def test_with_softplus_replaces_every_relu(beta):
    model = nested_model()
    names = relu_names(model)
    assert len(names) == 3 and "2.1" in names and "2.2.1" in names
    smooth = with_softplus(model, beta=beta)
    assert relu_names(smooth) == []
    swapped = softplus_modules(smooth)
    assert sorted(swapped) == sorted(names)  # same module names, same places
    assert all(m.beta == beta for m in swapped.values())
    assert isinstance(smooth[4], nn.Tanh)  # other activations untouched
    x = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(smooth(x), softplus_reference(x, model, beta))


def test_with_softplus_keeps_weights_and_leaves_original_untouched():
    model = nested_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 6, dtype=torch.float64)
    out_before = model(x)
    smooth = with_softplus(model, beta=5)
    # same weights (values), but not shared: the copy is independent
    assert smooth.state_dict().keys() == model.state_dict().keys()
    for key, value in smooth.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])
    assert all(p is not q for p, q in zip(smooth.parameters(), model.parameters()))
    # original still has its ReLUs and computes the same function
    assert len(relu_names(model)) == 3 and softplus_modules(model) == {}
    torch.testing.assert_close(model(x), out_before, rtol=0, atol=0)
    with torch.no_grad():
        next(smooth.parameters()).add_(1.0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert smooth.training == model.training


def test_with_softplus_on_architectures_preserves_dtype_and_mode(small_cnn, tiny_vgg):
    for model in (small_cnn, tiny_vgg):
        smooth = with_softplus(model, beta=5)
        assert not smooth.training
        assert all(p.dtype == torch.float64 for p in smooth.parameters())
        assert len(softplus_modules(smooth)) == len(relu_names(model)) > 0


@pytest.mark.parametrize("beta", [0.0, -1.0])
def test_with_softplus_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        with_softplus(nested_model(), beta=beta)
    with pytest.raises(ValueError, match="beta"):
        with softplus_activations(nested_model(), beta=beta):
            pass


# ---------------------------------------------------------------- softplus_activations


def test_softplus_activations_swaps_in_place_and_restores():
    model = nested_model()
    relus = {name: m for name, m in model.named_modules() if isinstance(m, nn.ReLU)}
    params = list(model.parameters())
    x = torch.randn(4, 6, dtype=torch.float64)
    relu_out = model(x)
    with softplus_activations(model, beta=3.0) as swapped:
        assert swapped is model
        assert relu_names(model) == []
        assert sorted(softplus_modules(model)) == sorted(relus)
        assert all(p is q for p, q in zip(model.parameters(), params))  # same parameters, in place
        torch.testing.assert_close(model(x), softplus_reference(x, model, 3.0))
        torch.testing.assert_close(model(x), with_softplus(nested_model(), beta=3.0)(x))
        # gradients computed inside reach the model's own weights
        model(x).sum().backward()
        assert all(p.grad is not None for p in params)
    restored = dict(model.named_modules())
    assert all(restored[name] is relu for name, relu in relus.items())  # the very same ReLU objects
    assert softplus_modules(model) == {}
    torch.testing.assert_close(model(x), relu_out, rtol=0, atol=0)


def test_softplus_activations_restores_after_an_exception():
    model = nested_model()
    relus = {name: m for name, m in model.named_modules() if isinstance(m, nn.ReLU)}

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with softplus_activations(model, beta=10.0):
            assert relu_names(model) == []
            raise Boom
    restored = dict(model.named_modules())
    assert all(restored[name] is relu for name, relu in relus.items())
    assert softplus_modules(model) == {}


def test_softplus_activations_on_model_without_relu_is_a_no_op():
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh())
    with softplus_activations(model) as m:
        assert isinstance(m[1], nn.Tanh)
    assert isinstance(model[1], nn.Tanh)


# ---------------------------------------------------------------- Softplus approximates ReLU


@pytest.mark.parametrize("beta", [50.0, 1000.0])
def test_large_beta_softplus_is_close_to_relu(small_cnn, cnn_inputs, small_mlp, mlp_inputs, beta):
    for model, x in ((small_cnn, cnn_inputs), (small_mlp, mlp_inputs)):
        with torch.no_grad():
            relu_out = model(x)
            smooth_out = with_softplus(model, beta=beta)(x)
        # softplus_beta(z) - relu(z) lies in (0, log(2)/beta]; it propagates through Lipschitz layers
        err = (smooth_out - relu_out).abs().max().item()
        assert err < 50 * math.log(2) / beta * max(1.0, relu_out.abs().max().item())
    # and the error shrinks with beta
    with torch.no_grad():
        errors = [(with_softplus(small_mlp, beta=b)(mlp_inputs) - small_mlp(mlp_inputs)).abs().max().item()
                  for b in (5.0, 50.0, 500.0)]
    assert errors[0] > errors[1] > errors[2]


def test_softplus_gradient_approaches_relu_gradient(small_mlp, mlp_inputs):
    def input_grad(model):
        x = mlp_inputs.clone().requires_grad_(True)
        model(x)[:, 0].sum().backward()
        return x.grad

    relu_grad = input_grad(small_mlp)
    smooth_grad = input_grad(with_softplus(small_mlp, beta=1e4))
    torch.testing.assert_close(smooth_grad, relu_grad, rtol=1e-2, atol=1e-3)


# ---------------------------------------------------------------- architectures


def test_mnist_cnn_shapes():
    for activation in ("relu", "softplus"):
        model = mnist_cnn(activation=activation).eval()
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    small = mnist_cnn(channels=(4, 8), hidden=16, num_classes=3).eval()
    assert small(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    assert isinstance(mnist_cnn(activation="softplus")[1], nn.Softplus)


@pytest.mark.parametrize("depth", [11, 13, 16])
def test_cifar_vgg_shapes(depth):
    model = cifar_vgg(depth, width=1 / 16).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == {11: 8, 13: 10, 16: 13}[depth]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5


def test_cifar_vgg_options():
    model = cifar_vgg(11, width=1 / 16, batch_norm=True, num_classes=4, in_channels=1, activation="softplus").eval()
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.Softplus) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_full_width_vgg_channels():
    model = cifar_vgg(16)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and convs[0].out_channels == 64 and convs[-1].out_channels == 512


@pytest.mark.parametrize("depth", [8, 19, 0, "11"])
def test_cifar_vgg_bad_depth(depth):
    with pytest.raises(ValueError, match="depth"):
        cifar_vgg(depth)


@pytest.mark.parametrize("activation", ["tanh", "ReLU", "", None])
def test_bad_activation(activation):
    with pytest.raises(ValueError, match="activation"):
        make_activation(activation)
    with pytest.raises(ValueError, match="activation"):
        mnist_cnn(activation=activation)
    with pytest.raises(ValueError, match="activation"):
        cifar_vgg(11, activation=activation)
    with pytest.raises(ValueError, match="activation"):
        tabular_mlp(4, (3,), 2, activation=activation)
    with pytest.raises(ValueError, match="activation"):
        digits_mlp(activation=activation)


def test_mlp_shapes():
    assert tabular_mlp(12, (16, 8), 3).eval()(torch.randn(5, 12)).shape == (5, 3)
    assert tabular_mlp(7, (), 2).eval()(torch.randn(5, 7)).shape == (5, 2)
    assert digits_mlp().eval()(torch.rand(5, 1, 8, 8)).shape == (5, 10)
    softplus = tabular_mlp(4, (3, 3), 2, activation="softplus")
    assert sum(isinstance(m, nn.Softplus) for m in softplus) == 2


def test_fixtures_are_seeded_float64_eval(small_cnn, small_mlp, tiny_vgg, cnn_inputs, mlp_inputs, vgg_inputs):
    for model, x, classes in ((small_cnn, cnn_inputs, 10), (small_mlp, mlp_inputs, 3), (tiny_vgg, vgg_inputs, 10)):
        assert not model.training
        assert all(p.dtype == torch.float64 for p in model.parameters())
        assert x.dtype == torch.float64 and len(x) == 4
        assert model(x).shape == (4, classes)
