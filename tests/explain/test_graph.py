"""LRP and DeepLift on traced graphs (:mod:`veneer.explain.graph`): residual sums, functional operations,
concatenation and splits, batch norm -- float64, batch of 4, a different target per sample.

1. Identities (Ancona et al. 2018, Prop. 1 and 2): on a bias-free ReLU network with residual additions
   (``+=``), ``torch.cat``, ``chunk``, max/average pooling, ``mean``, functional and in-place ReLUs, LRP-0
   (epsilon -> 0) and DeepLift-Rescale with a zero baseline equal Gradient x Input; LRP conserves relevance.
2. DeepLift's completeness (attributions sum to f(x) - f(x0)) with batch norm and biases.
3. Captum: DeepLift on ResNets (BasicBlocks, batch norm, ReLU modules, residual sums) and LRP on a network
   with functional ReLUs, reshapes, ``permute``, ``chunk`` and ``cat`` between modules (Captum's LRP hooks
   multiply by a module's input the gradient arriving from *all* its uses, so it is not a reference where a
   tensor feeds two operations: residual sums, branches).
4. Second order on a small ResNet: d loss(LRP map)/d params and d loss(DeepLift map)/d params against central
   finite differences.
5. Errors naming the operation and the module; GradCAM, an input attack and a manipulation step on a ResNet.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from agreement import (AgreementLog, attribution_parameter_gradients, central_difference,
                       check_against_finite_differences, generator, randomize_batch_norm)
from captum.attr import LRP as CaptumLRP
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr._utils.lrp_rules import EpsilonRule
from torch import nn

from veneer.attacks import MassCenter
from veneer.data import as_labeled
from veneer.explain import LRP, DeepLift, GradCAM, Gradient, GradientXInput
from veneer.manipulate import CenterOfMass, Manipulation
from veneer.models.architectures import mnist_resnet

# these tests explain batch-norm networks with z+/alpha-beta/flat rules unfolded on purpose (Captum agreement,
# second order, folded vs unfolded); the warning that advises fold_batchnorm=True is tested in test_lrp_registry.py
pytestmark = pytest.mark.filterwarnings("ignore:LRP applies .* fold_batchnorm=False:UserWarning")

DTYPE = torch.float64
AGREEMENT = AgreementLog(1e-6)


@pytest.fixture(scope="module", autouse=True)
def _print_errors():
    yield
    AGREEMENT.report("Captum / Gradient x Input")


class FunctionalResNet(nn.Module):
    """(B, 1, 8, 8) -> 5 classes with a residual ``+=``, functional, in-place and method ReLUs, F.max_pool2d,
    ``chunk``, ``torch.cat`` of three branches, F.avg_pool2d, ``mean``, ``flatten``, ``view``, dropout and
    scaling by constants."""

    def __init__(self, bias: bool = False, batch_norm: bool = False):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=bias)
        self.norm = nn.BatchNorm2d(4) if batch_norm else nn.Identity()
        self.a = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.b = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.left, self.right = nn.Conv2d(4, 3, 1, bias=bias), nn.Conv2d(4, 3, 3, padding=1, bias=bias)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8 + 32, 5, bias=bias)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.norm(self.stem(x))), 2)  # (B, 4, 4, 4)
        out = self.b(torch.relu(self.a(h)))
        out += h
        out = out.relu_()
        u, _ = out.chunk(2, dim=1)
        h = torch.cat([self.left(out), F.relu(self.right(out), inplace=True), u * 0.5], 1)  # (B, 8, 4, 4)
        h = F.avg_pool2d(h, 2)
        z = torch.cat([h.mean((2, 3)), self.drop(h.flatten(1))], 1)
        return self.fc(z.view(x.shape[0], -1)) * 2.0


def _functional(bias: bool = False, batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(20)
    model = FunctionalResNet(bias, batch_norm).to(DTYPE).eval()
    return randomize_batch_norm(model, seed=21)


def _resnet(width: int = 2, blocks=(1, 1, 1)) -> nn.Module:
    torch.manual_seed(22)
    model = mnist_resnet(width=width, blocks=blocks, num_classes=4).to(DTYPE).eval()
    return randomize_batch_norm(model, seed=23)


def _images(size: int = 8, seed: int = 24) -> torch.Tensor:
    return torch.rand(4, 1, size, size, generator=generator(seed), dtype=DTYPE)


TARGETS = torch.tensor([0, 3, 1, 2])


# ====================================================================== 1. identities


def test_lrp0_and_deeplift_equal_gradient_times_input_on_a_bias_free_residual_network():
    model, x = _functional(), _images()
    gxi = GradientXInput(model)(x, TARGETS)
    AGREEMENT.check("LRP-0 = GxI (functional ResNet)", LRP(model, epsilon=1e-12)(x, TARGETS), gxi, rtol=1e-7)
    AGREEMENT.check("DeepLift zero = GxI (functional ResNet)", DeepLift(model)(x, TARGETS), gxi, rtol=1e-7)


def test_lrp_conserves_relevance_on_a_bias_free_residual_network():
    model, x = _functional(), _images()
    relevance = LRP(model, epsilon=1e-12)(x, TARGETS)
    with torch.no_grad():
        logit = model(x).gather(1, TARGETS[:, None])[:, 0]
    torch.testing.assert_close(relevance.flatten(1).sum(1), logit, rtol=1e-9, atol=1e-12)


def test_graph_run_leaves_in_place_modules_as_they_were():
    model = _functional()
    model.stem = nn.Sequential(model.stem, nn.ReLU(inplace=True))
    LRP(model)(_images(), TARGETS)
    assert model.stem[1].inplace


# ====================================================================== 2. completeness


@pytest.mark.parametrize("factory", [lambda: _functional(bias=True, batch_norm=True), _resnet],
                         ids=["functional-bn", "resnet"])
@pytest.mark.parametrize("baseline", ["zero", "random"])
def test_deeplift_completeness_with_batch_norm_and_biases(factory, baseline):
    model, x = factory(), _images()
    base = torch.zeros_like(x) if baseline == "zero" else torch.rand(x.shape, generator=generator(25), dtype=DTYPE)
    attr = DeepLift(model, baseline="zero" if baseline == "zero" else base)(x, TARGETS)
    with torch.no_grad():
        delta = (model(x) - model(base)).gather(1, TARGETS[:, None])[:, 0]
    torch.testing.assert_close(attr.flatten(1).sum(1), delta, rtol=1e-6, atol=1e-10)


class SmoothResidual(nn.Module):
    """Functional Softplus, Sigmoid and Tanh around a residual sum; a constant offset and a division."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = F.softplus(self.fc1(x), beta=3)
        h = torch.tanh(self.fc2(h)) + torch.sigmoid(h) - 0.5
        return self.fc3(h / 2 + 1.0)


def test_deeplift_completeness_through_functional_smooth_activations():
    torch.manual_seed(30)
    model, x = SmoothResidual().to(DTYPE).eval(), torch.randn(4, 6, generator=generator(31), dtype=DTYPE)
    t = TARGETS % 3
    attr = DeepLift(model)(x, t)
    with torch.no_grad():
        delta = (model(x) - model(torch.zeros_like(x))).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(attr.sum(1), delta, rtol=1e-10, atol=1e-12)


# ====================================================================== 3. Captum


def _captum_deeplift(model, x, baseline, target):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CaptumDeepLift(model).attribute(x, baselines=baseline, target=target)


@pytest.mark.parametrize("baseline", ["zero", "random"])
@pytest.mark.parametrize("blocks", [(1, 1, 1), (2, 1, 1)])
def test_deeplift_matches_captum_on_resnets(blocks, baseline):
    model, x = _resnet(blocks=blocks), _images()
    base = torch.zeros_like(x) if baseline == "zero" else torch.rand(x.shape, generator=generator(26), dtype=DTYPE)
    ours = DeepLift(model, baseline="zero" if baseline == "zero" else base)(x, TARGETS)
    AGREEMENT.check(f"DeepLift ResNet baseline={baseline}", ours, _captum_deeplift(model, x, base, TARGETS))


class Rearranged(nn.Module):
    """Functional ReLUs, ``chunk`` + ``cat`` (channel swap), ``permute``, ``reshape`` and ``view`` between modules;
    no tensor feeds two operations (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc1, self.fc2 = nn.Linear(64, 10), nn.Linear(10, 4)

    def forward(self, x):
        h = self.pool(F.relu(self.conv(x)))  # (B, 4, 4, 4)
        first, second = h.chunk(2, dim=1)
        h = torch.cat([second, first], 1).permute(0, 1, 3, 2).reshape(x.shape[0], 4, 16)
        return self.fc2(torch.relu(self.fc1(h.view(x.shape[0], -1))))


@pytest.mark.parametrize("epsilon", [1e-6, 0.1])
def test_lrp_matches_captum_on_functional_rearrangements(epsilon):
    """Captum's LRP multiplies the incoming gradient by the input at every hooked module's input, so it is
    correct only where no tensor feeds a module and another operation (not on residual or branching
    networks, where the identities above check ours); on rearrangements between modules it is a reference."""
    torch.manual_seed(27)
    model, x = Rearranged().to(DTYPE).eval(), _images()
    ours = LRP(model, epsilon=epsilon)(x, TARGETS)
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear, nn.AvgPool2d)):
            layer.rule = EpsilonRule(epsilon=epsilon)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = CaptumLRP(model).attribute(x, target=TARGETS)
    AGREEMENT.check(f"LRP epsilon={epsilon} rearranged", ours, reference)


# ====================================================================== 4. second order


SECOND_ORDER = {
    "lrp-epsilon": lambda model: LRP(model, epsilon=0.01),
    "lrp-epsilon_plus": lambda model: LRP(model, composite="epsilon_plus", epsilon=0.01),
    "lrp-alpha_beta": lambda model: LRP(model, composite="alpha_beta", alpha=2.0, beta=1.0),
    "lrp-epsilon_plus_flat": lambda model: LRP(model, composite="epsilon_plus_flat", epsilon=0.01),
    "lrp-zbox": lambda model: LRP(model, composite="epsilon_plus", low=0.0, high=1.0),
    "lrp-zbox-folded": lambda model: LRP(model, composite="epsilon_plus", low=0.0, high=1.0, fold_batchnorm=True),
    "deeplift": lambda model: DeepLift(model),
    "deeplift-random": lambda model: DeepLift(model, baseline=torch.full((1,), 0.3, dtype=DTYPE)),
}


@pytest.mark.parametrize("method", list(SECOND_ORDER))
def test_parameter_gradient_of_attribution_matches_finite_differences_on_a_resnet(method):
    model, x, t = _resnet(), _images(seed=28)[:2], TARGETS[:2]
    names, params, grads, loss = attribution_parameter_gradients(SECOND_ORDER[method](model), model, x, t, seed=29)
    for k, (name, p, g) in enumerate(zip(names, params, grads)):
        if name == "fc.bias" and method.startswith("deeplift"):  # cancels in f(x) - f(x0)
            assert g is None or torch.all(g == 0)
            continue
        if g is None or not g.abs().max() > 1e-14:  # zero up to round-off: the map must not depend on it either
            assert central_difference(loss, p, 0) == pytest.approx(0, abs=1e-7), f"{method}/{name}"
            continue
        check_against_finite_differences(f"{method}/resnet/{name}", g, p, loss, seed=k, count=3)


def test_deeplift_runs_a_shared_baseline_once_with_the_same_attributions():
    model, x = _resnet(), _images(seed=33)
    shared, per_sample = torch.full((1,), 0.3, dtype=DTYPE), torch.full_like(x, 0.3)
    assert DeepLift(model, baseline=shared).reference_input(x, routes=False).shape[0] == 1
    assert DeepLift(model).reference_input(x, routes=False).shape[0] == 1
    assert DeepLift(model, baseline=per_sample).reference_input(x, routes=False).shape[0] == len(x)
    assert DeepLift(model).reference_input(x, routes=True).shape[0] == len(x)  # max pooling routes through it
    torch.testing.assert_close(DeepLift(model, baseline=shared)(x, TARGETS),
                               DeepLift(model, baseline=per_sample)(x, TARGETS), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(DeepLift(model)(x, TARGETS), DeepLift(model, baseline=torch.zeros_like(x))(x, TARGETS),
                               rtol=1e-12, atol=1e-14)


def _fused(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    scale = norm.weight / (norm.running_var + norm.eps).sqrt()
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding).to(DTYPE)
    fused.weight.data = (conv.weight * scale[:, None, None, None]).detach()
    fused.bias.data = (norm.bias - norm.running_mean * scale).detach()
    return fused


def _folded_by_hand(model: nn.Module) -> nn.Module:
    """A copy of an ``mnist_resnet`` with every batch norm folded into its convolution by hand."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential) and len(module) > 1 and isinstance(module[1], nn.BatchNorm2d):
            module[0], module[1] = _fused(module[0], module[1]), nn.Identity()
        for conv, norm in (("conv1", "bn1"), ("conv2", "bn2")):
            if hasattr(module, norm):
                setattr(module, conv, _fused(getattr(module, conv), getattr(module, norm)))
                setattr(module, norm, nn.Identity())
    return model


@pytest.mark.parametrize("options", [{"composite": "epsilon"}, {"composite": "epsilon_plus", "low": 0.0, "high": 1.0},
                                     {"composite": "alpha_beta", "alpha": 2.0, "beta": 1.0},
                                     {"composite": "epsilon_plus_flat"}])
def test_lrp_fold_batchnorm_equals_the_model_folded_by_hand(options):
    model, x = _resnet(), _images(seed=30)
    by_hand = _folded_by_hand(model)
    torch.testing.assert_close(by_hand(x), model(x))
    folded = LRP(model, fold_batchnorm=True, **options)(x, TARGETS)
    AGREEMENT.check(f"LRP fold_batchnorm {options['composite']} = folded by hand", folded,
                    LRP(by_hand, **options)(x, TARGETS), rtol=1e-10)
    assert not torch.allclose(folded, LRP(model, **options)(x, TARGETS), rtol=1e-3)


def test_lrp_fold_batchnorm_keeps_a_batch_norm_that_follows_no_layer():
    """A batch norm on the input (nothing to fold into) keeps the z-rule: the relevance is the same as unfolded."""
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(64, 4)).to(DTYPE).eval()
    randomize_batch_norm(model, seed=31)
    x = _images(seed=32)
    torch.testing.assert_close(LRP(model, fold_batchnorm=True)(x, TARGETS), LRP(model)(x, TARGETS))


# ====================================================================== 5. errors and other tools


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(4, 4))
        self.gate = Gate()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.gate(self.block(x)))


class Gate(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


class Product(nn.Module):
    """``fc2(fc1(x) * x)``, or ``fc2(fc1(x) ** 2)`` written ``h * h`` with ``square=True``: not linear."""

    def __init__(self, square: bool = False):
        super().__init__()
        self.square = square
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h * (h if self.square else x))


class Exp(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 4))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.exp(self.inner(x)))


@pytest.mark.parametrize("model, message", [
    (DataDependent(), r"cannot trace the model with torch.fx in module 'gate' \(Gate\)"),
    (Product(), r"cannot propagate through function _operator.mul \(node 'mul'\) in the model's forward: a product"),
    (Product(square=True), r"cannot propagate through function _operator.mul \(node 'mul'\) in the model's forward: a product"),
    (Exp(), r"cannot propagate through function torch.exp \(node 'exp'\) in the model's forward: not a supported"),
])
def test_unsupported_graphs_name_the_operation_and_module(model, message):
    for explainer in (LRP(model.eval()), DeepLift(model.eval())):
        with pytest.raises(ValueError, match=message):
            explainer(torch.randn(3, 4), target=0)


def test_unsupported_function_inside_a_submodule_names_it():
    class Inner(nn.Module):
        def forward(self, x):
            return torch.exp(x)

    model = nn.Sequential(nn.Linear(4, 4), Inner(), nn.Linear(4, 2)).eval()
    with pytest.raises(ValueError, match=r"torch.exp \(node 'exp'\) in module '1' \(Inner\)"):
        LRP(model)(torch.randn(3, 4), target=0)


def test_gradcam_attack_and_manipulation_step_run_on_a_resnet():
    model, x = _resnet(width=2), _images(size=12)
    original = copy.deepcopy(model.state_dict())
    cam = GradCAM(model, layer="layer2.0.act2")(x, TARGETS)
    assert cam.shape == (4, 1, 12, 12) and cam.abs().sum() > 0
    for explainer in (Gradient(model), LRP(model), DeepLift(model)):
        x_adv = MassCenter(model, explainer, eps=0.05, steps=2)(x, TARGETS)
        assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 0.05 + 1e-12 and not torch.equal(x_adv, x)
    for explainer in (Gradient(model), LRP(model)):  # one model-level manipulation step each
        result = Manipulation(model, explainer, CenterOfMass((0, 0)), max_steps=1, batch_size=4,
                              lr=1e-2)(as_labeled((x, TARGETS)))
        assert len(result.history) == 1 and all(torch.isfinite(torch.tensor(v)).all()
                                                for row in result.history for v in row.values()
                                                if isinstance(v, float))
        assert any(not torch.equal(a, b) for a, b in zip(result.model.state_dict().values(), original.values()))
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
