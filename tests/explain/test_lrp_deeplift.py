"""Tests of LRP and DeepLift (:mod:`veneer.explain.lrp`, :mod:`veneer.explain.deeplift`, :mod:`veneer.explain.graph`).

1. Agreement with Captum (relative error = max |ours - captum| / max |captum| <= 1e-5), batch of 4 with a
   different target per sample: LRP-epsilon (two epsilons), LRP-z+ (composite ``epsilon_plus``), DeepLift with
   a zero and a random baseline, on a CNN with max-pooling, an MLP, a CNN with BatchNorm2d/AvgPool2d/
   AdaptiveAvgPool2d and (LRP) the tiny VGG with Dropout. The rules themselves (z+, alpha-beta, z^beta, flat)
   are also checked against their formulas written out by hand on one layer.
2. Second order: d loss(attr) / d parameter against central finite differences for every composite and for
   DeepLift, on a tiny CNN and a tiny MLP; d loss(attr) / d x on Softplus models.
3. ``create_graph`` semantics.
4. Errors: unsupported layers, bad options, training mode (graphs: tests/explain/test_graph.py).

Captum's DeepLift drops the max-pooling rule (and the Rescale rule) of a hooked nonlinearity whose output
feeds another hooked nonlinearity directly (ReLU -> MaxPool2d): its backward hook records the output gradient
before the next module's hook rewrites it, so its attributions no longer sum to f(x) - f(x0). The Captum
comparison therefore separates them with ``AvgPool2d(1)`` (an identity that Captum leaves unhooked); on the
plain CNN we check summation-to-delta instead.

Run with ``-s`` to see the largest relative error against Captum per method.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from agreement import (AgreementLog, attribution_parameter_gradients, central_difference,
                       check_against_finite_differences, randomize_batch_norm)
from agreement import generator as _gen
from captum.attr import LRP as CaptumLRP
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule
from torch import nn

from veneer.explain.graph import Step
from veneer.explain.deeplift import DeepLift
from veneer.explain.lrp import LRP, AlphaBeta, Flat, ZBox, ZPlus
from veneer.models.activations import with_softplus
from veneer.models.architectures import tabular_mlp

# these tests explain batch-norm networks with z+/alpha-beta/flat rules unfolded on purpose (Captum agreement,
# second order, folded vs unfolded); the warning that advises fold_batchnorm=True is tested in test_lrp_registry.py
pytestmark = pytest.mark.filterwarnings("ignore:LRP applies .* fold_batchnorm=False:UserWarning")

DTYPE = torch.float64
CAPTUM_RTOL = 1e-5
AGREEMENT = AgreementLog(CAPTUM_RTOL)


@pytest.fixture(scope="module", autouse=True)
def _print_captum_errors():
    yield
    AGREEMENT.report("Captum / the hand-written formula")


# ====================================================================== models


def bn_cnn() -> nn.Sequential:
    """(B, 1, 12, 12) -> 5 classes: Conv, BatchNorm2d, ReLU, AvgPool2d, Conv, BatchNorm2d, ReLU,
    AdaptiveAvgPool2d, Flatten, Linear, ReLU, Linear."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 5),
    ).to(DTYPE).eval()
    return randomize_batch_norm(model, seed=4)


def separated(model: nn.Sequential) -> nn.Sequential:
    """``model`` with an identity ``AvgPool2d(1)`` between a ReLU and a MaxPool2d that follows it (see the module
    docstring): same function, same LRP and DeepLift, but Captum's DeepLift hooks no longer interfere."""
    layers = list(model)
    out = []
    for layer, following in zip(layers, layers[1:] + [None]):
        out.append(layer)
        if isinstance(layer, nn.ReLU) and isinstance(following, nn.MaxPool2d):
            out.append(nn.AvgPool2d(1))
    return nn.Sequential(*out).eval()


@pytest.fixture
def bn_case():
    x = torch.rand(4, 1, 12, 12, generator=_gen(13), dtype=DTYPE)
    return bn_cnn(), x, torch.tensor([0, 4, 2, 1])


def tiny_cnn() -> nn.Sequential:
    """(B, 1, 8, 8) -> 3 classes, every supported kind of layer, float64, eval."""
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 3),
    ).to(DTYPE).eval()
    return randomize_batch_norm(model, seed=6)


def tiny_mlp() -> nn.Sequential:
    torch.manual_seed(7)
    return tabular_mlp(5, (7, 6), 3).to(DTYPE).eval()


TINY = {
    "cnn": (tiny_cnn, lambda: torch.randn(2, 1, 8, 8, generator=_gen(30), dtype=DTYPE), torch.tensor([0, 2])),
    "mlp": (tiny_mlp, lambda: torch.randn(2, 5, generator=_gen(31), dtype=DTYPE), torch.tensor([1, 2])),
}


# ====================================================================== 1. agreement with Captum


def captum_lrp(model: nn.Module, x: torch.Tensor, target: torch.Tensor, epsilon: float, zplus: bool = False):
    """Captum's LRP with EpsilonRule(epsilon) on every weighted/pooling/BN layer (Alpha1_Beta0_Rule on Conv2d
    if ``zplus``); max-pooling and Flatten (which Captum has no default for) get EpsilonRule(1e-9)."""
    for layer in model.modules():
        if isinstance(layer, nn.Conv2d) and zplus:
            layer.rule = Alpha1_Beta0_Rule()
        elif isinstance(layer, (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm2d)):
            layer.rule = EpsilonRule(epsilon=epsilon)
        elif isinstance(layer, (nn.MaxPool2d, nn.Flatten)):
            layer.rule = EpsilonRule(epsilon=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CaptumLRP(model).attribute(x, target=target)


LRP_CASES = ["cnn", "mlp", "bn", "vgg"]


@pytest.mark.parametrize("epsilon", [1e-6, 0.1])
@pytest.mark.parametrize("case_name", LRP_CASES)
def test_lrp_epsilon_matches_captum(request, case_name, epsilon):
    model, x, t = request.getfixturevalue(f"{case_name}_case")
    ours = LRP(model, composite="epsilon", epsilon=epsilon)(x, t)
    AGREEMENT.check(f"LRP epsilon={epsilon}", ours, captum_lrp(model, x, t, epsilon))


def _nonnegative_conv_biases(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Conv2d):
                layer.bias.abs_()
    return model


@pytest.mark.parametrize("case_name", ["cnn", "bn", "vgg"])
def test_lrp_zplus_matches_captum_alpha1_beta0(request, case_name):
    """Captum's Alpha1_Beta0_Rule clamps the weights but keeps the inputs' sign and the raw bias; on inputs in
    [0, 1] (and post-ReLU activations) with non-negative conv biases it is the z+ rule."""
    model, x, t = request.getfixturevalue(f"{case_name}_case")
    model = _nonnegative_conv_biases(model)
    assert x.min() >= 0
    ours = LRP(model, composite="epsilon_plus", epsilon=1e-6)(x, t)
    AGREEMENT.check("LRP epsilon_plus (z+)", ours, captum_lrp(model, x, t, 1e-6, zplus=True))
    same = LRP(model, composite="alpha_beta", alpha=1.0, beta=0.0)(x, t)
    torch.testing.assert_close(same, ours, rtol=1e-12, atol=1e-15)


def _captum_deeplift(model, x, baseline, target):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CaptumDeepLift(model).attribute(x, baselines=baseline, target=target)


def _deeplift_baseline(kind: str, x: torch.Tensor):
    if kind == "zero":
        return "zero", torch.zeros_like(x)
    b = torch.rand(x.shape, generator=_gen(40), dtype=x.dtype) - 0.5
    return b, b


@pytest.mark.parametrize("baseline", ["zero", "random"])
@pytest.mark.parametrize("case_name, softplus", [("cnn", False), ("mlp", False), ("mlp", True), ("bn", False)])
def test_deeplift_matches_captum(request, case_name, softplus, baseline):
    model, x, t = request.getfixturevalue(f"{case_name}_case")
    if softplus:
        model = with_softplus(model, beta=5)
    if case_name == "cnn":
        model = separated(model)
    ours_baseline, captum_baseline = _deeplift_baseline(baseline, x)
    ours = DeepLift(model, baseline=ours_baseline)(x, t)
    AGREEMENT.check(f"DeepLift baseline={baseline}", ours, _captum_deeplift(model, x, captum_baseline, t))


@pytest.mark.parametrize("baseline", ["zero", "random"])
@pytest.mark.parametrize("case_name", ["cnn", "mlp", "bn", "vgg"])
def test_deeplift_sums_to_the_output_difference(request, case_name, baseline):
    """Summation-to-delta (Shrikumar et al. 2017, Eq. 1), also where Captum's DeepLift misses it (ReLU ->
    MaxPool2d in the CNN and the VGG); and the AvgPool2d(1) separation leaves our attributions unchanged."""
    model, x, t = request.getfixturevalue(f"{case_name}_case")
    ours_baseline, b = _deeplift_baseline(baseline, x)
    attr = DeepLift(model, baseline=ours_baseline)(x, t)
    with torch.no_grad():
        delta = model(x).gather(1, t[:, None])[:, 0] - model(b).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(attr.flatten(1).sum(1), delta, rtol=1e-10, atol=1e-10)
    if case_name in ("cnn", "vgg"):
        torch.testing.assert_close(DeepLift(separated(model), baseline=ours_baseline)(x, t), attr,
                                   rtol=1e-12, atol=1e-14)


def test_deeplift_broadcast_baseline(cnn_case):
    model, x, t = cnn_case
    b = torch.rand(1, *x.shape[1:], generator=_gen(41), dtype=DTYPE)
    torch.testing.assert_close(DeepLift(model, baseline=b)(x, t), DeepLift(model, baseline=b.expand_as(x))(x, t))


# ---------------------------------------------------------------- the rules against their formulas


def _one_layer(seed: int):
    """A Linear(5, 3) step with mixed-sign inputs, weights and biases, and a relevance at its output."""
    g = _gen(seed)
    layer = nn.Linear(5, 3).to(DTYPE)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(3, 5, generator=g, dtype=DTYPE))
        layer.bias.copy_(torch.tensor([0.3, -0.4, 0.2], dtype=DTYPE))
    a = torch.randn(2, 5, generator=g, dtype=DTYPE).requires_grad_(True)  # as in a traced step
    relevance = torch.randn(2, 3, generator=g, dtype=DTYPE)
    return layer, a, relevance


def _ratio_rule(contributions: torch.Tensor, denominators: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """R_j = sum_k c_jk / d_k R_k for contributions (B, j, k) and denominators (B, k)."""
    return (contributions / denominators[:, None, :] * relevance[:, None, :]).sum(-1)


@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (2.0, 1.0), (1.5, 0.5)])
def test_alpha_beta_rule_formula(alpha, beta):
    """Montavon et al. 2019, Sec. 10.2.3 with the bias in the j = 0 term of the sums."""
    layer, a, relevance = _one_layer(0)
    rule = ZPlus() if beta == 0 else AlphaBeta(alpha, beta)
    ours = rule(Step("0", layer, a, layer(a)), relevance)
    z = a[:, :, None] * layer.weight.T[None]  # (B, j, k)
    pos, neg = z.clamp(min=0), z.clamp(max=0)
    expected = (alpha * _ratio_rule(pos, pos.sum(1) + layer.bias.clamp(min=0), relevance)
                - beta * _ratio_rule(neg, neg.sum(1) + layer.bias.clamp(max=0), relevance))
    AGREEMENT.check(f"AlphaBeta({alpha}, {beta}) formula", ours, expected, rtol=1e-8)


def test_zbox_rule_formula():
    """Montavon et al. 2017/2019: z^B with per-feature bounds."""
    layer, a, relevance = _one_layer(1)
    low, high = a.min(0).values - 0.5, a.max(0).values + 0.3
    ours = ZBox(low, high)(Step("0", layer, a, layer(a)), relevance)
    w = layer.weight.T[None]
    c = a[:, :, None] * w - low[None, :, None] * w.clamp(min=0) - high[None, :, None] * w.clamp(max=0)
    AGREEMENT.check("ZBox formula", ours, _ratio_rule(c, c.sum(1), relevance), rtol=1e-8)


def test_flat_rule_spreads_relevance_over_the_receptive_field():
    conv = nn.Conv2d(2, 3, 3, padding=1).to(DTYPE)
    a = torch.randn(1, 2, 4, 4, dtype=DTYPE, requires_grad=True)
    relevance = torch.zeros(1, 3, 4, 4, dtype=DTYPE)
    relevance[0, 1, 0, 0] = 6.0  # a corner: its receptive field is 2 channels x 2 x 2 pixels
    ours = Flat()(Step("0", conv, a, conv(a)), relevance)
    expected = torch.zeros_like(a)
    expected[0, :, :2, :2] = 6.0 / 8
    torch.testing.assert_close(ours, expected)


def test_lrp_epsilon_is_conservative_without_biases():
    """With zero biases (and a tiny epsilon) epsilon and z+ conserve relevance: sum R_input = f_target(x).
    (Alpha-beta does not where an output has no negative contribution: its beta share is lost.)"""
    model = tiny_cnn()
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                layer.bias.zero_()
            if isinstance(layer, nn.BatchNorm2d):
                layer.bias.copy_(layer.weight * layer.running_mean / (layer.running_var + layer.eps).sqrt())
    x, t = TINY["cnn"][1](), TINY["cnn"][2]
    for composite in ("epsilon", "epsilon_plus"):
        relevance = LRP(model, composite=composite, epsilon=1e-12)(x.abs(), t)
        torch.testing.assert_close(relevance.flatten(1).sum(1), model(x.abs()).gather(1, t[:, None])[:, 0])


def test_zbox_bounds_apply_to_a_flattened_first_layer(cnn_case):
    model, x, t = cnn_case
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 6), nn.ReLU(), nn.Linear(6, 10)).to(DTYPE).eval()
    full = LRP(mlp, low=torch.zeros_like(x[:1]), high=torch.ones(1, 1, 28, 1, dtype=DTYPE))(x, t)
    scalar = LRP(mlp, low=0.0, high=1.0)(x, t)
    torch.testing.assert_close(full, scalar)
    assert full.shape == x.shape


# ====================================================================== 2. second order


def _explainer(method: str, model: nn.Module):
    if method == "deeplift":
        return DeepLift(model)
    if method == "deeplift_random":
        return DeepLift(model, baseline=torch.full((1,), 0.3, dtype=DTYPE))
    if method == "zbox":  # z^beta on the first layer, epsilon_plus elsewhere
        return LRP(model, composite="epsilon_plus", low=-4.0, high=4.0)
    if method == "alpha_beta":
        return LRP(model, composite="alpha_beta", alpha=2.0, beta=1.0)
    return LRP(model, composite=method, epsilon=0.01)


SECOND_ORDER_METHODS = ["epsilon", "epsilon_plus", "epsilon_plus_flat", "alpha_beta", "zbox", "deeplift",
                        "deeplift_random"]


@pytest.mark.parametrize("method", SECOND_ORDER_METHODS)
@pytest.mark.parametrize("case_name", ["cnn", "mlp"])
def test_parameter_gradient_of_attribution_matches_finite_differences(case_name, method):
    factory, make_x, t = TINY[case_name]
    model, x = factory(), make_x()
    assert x.abs().max() < 4
    names, params, grads, loss = attribution_parameter_gradients(_explainer(method, model), model, x, t, seed=99)
    # DeepLift's attribution does not depend on the logit's bias: it cancels in f(x) - f(x0)
    final_bias = names[-1] if method.startswith("deeplift") else None
    for k, (name, p, g) in enumerate(zip(names, params, grads)):
        if name == final_bias:
            assert g is None or torch.all(g == 0), f"{method}/{case_name}/{name}: should not be used"
            assert central_difference(loss, p, 0) == pytest.approx(0, abs=1e-8)
            continue
        assert g is not None, f"{method}/{case_name}/{name}: not in the graph"
        check_against_finite_differences(f"{method}/{case_name}/{name}", g, p, loss, seed=k)


@pytest.mark.parametrize("method", ["epsilon", "alpha_beta", "deeplift", "deeplift_random"])
@pytest.mark.parametrize("case_name", ["cnn", "mlp"])
def test_input_gradient_of_attribution_matches_finite_differences(case_name, method):
    factory, make_x, t = TINY[case_name]
    model, x = with_softplus(factory(), beta=5), make_x()
    explainer = _explainer(method, model)
    w = torch.randn(x.shape, generator=_gen(98), dtype=DTYPE)
    x_var = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((explainer(x_var, t, create_graph=True) * w).sum(), x_var)

    def loss() -> float:
        return (explainer(x, t) * w).sum().item()

    check_against_finite_differences(f"{method}/{case_name}/x", grad, x, loss, seed=5, count=10)


# ====================================================================== 3. create_graph

ALL_METHODS = SECOND_ORDER_METHODS


@pytest.mark.parametrize("method", ALL_METHODS)
def test_create_graph_false_is_detached_and_equal(method):
    model, x, t = tiny_cnn(), TINY["cnn"][1](), TINY["cnn"][2]
    explainer = _explainer(method, model)
    plain = explainer(x, t)
    assert plain.grad_fn is None and not plain.requires_grad and plain.shape == x.shape
    x_var = x.clone().requires_grad_(True)
    detached = explainer(x_var, t)
    assert detached.grad_fn is None and not detached.requires_grad
    graph = explainer(x_var, t, create_graph=True)
    assert graph.grad_fn is not None
    assert torch.equal(graph.detach(), plain) and torch.equal(detached, plain)
    assert all(p.grad is None for p in model.parameters())


def test_works_under_no_grad_and_restores_inplace(cnn_case):
    model, x, t = cnn_case
    inplace = nn.Sequential(*[nn.ReLU(inplace=True) if isinstance(m, nn.ReLU) else m for m in model]).eval()
    expected = LRP(model)(x, t), DeepLift(model)(x, t)
    with torch.no_grad():
        got = LRP(inplace)(x, t), DeepLift(inplace)(x, t)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(m.inplace for m in inplace if isinstance(m, nn.ReLU))


def test_target_none_is_the_predicted_class(cnn_case):
    model, x, _ = cnn_case
    predicted = model(x).argmax(1)
    for explainer in (LRP(model), DeepLift(model)):
        torch.testing.assert_close(explainer(x), explainer(x, predicted))


# ====================================================================== 4. errors


def _both(model):
    return [LRP(model), DeepLift(model)]


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.fc = nn.LSTM(4, 4, batch_first=True), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.lstm(x)[0][:, -1])


@pytest.mark.parametrize("layer, type_name", [(nn.ELU(), "ELU"), (nn.LeakyReLU(), "LeakyReLU")])
def test_unsupported_layer_is_named(layer, type_name):
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Identity(), layer), nn.Linear(4, 2)).eval()
    for explainer, method in zip(_both(model), ("LRP", "DeepLift")):
        with pytest.raises(ValueError, match=rf"layer '1\.1' of type {type_name} is not supported by {method}; "
                                             rf"supported: .*Conv2d"):
            explainer(torch.randn(3, 4), target=0)


def test_recurrent_layer_is_named():
    for explainer, method in zip(_both(Recurrent().eval()), ("LRP", "DeepLift")):
        with pytest.raises(ValueError, match=rf"layer 'lstm' of type LSTM is not supported by {method}"):
            explainer(torch.randn(3, 5, 4), target=1)


def test_batch_norm_without_running_statistics_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False), nn.Flatten(),
                          nn.Linear(8, 2)).eval()
    for explainer in _both(model):
        with pytest.raises(ValueError, match="running statistics"):
            explainer(torch.randn(3, 1, 4, 4), target=0)


def test_bad_lrp_options(small_cnn):
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        LRP(small_cnn, composite="alpha_beta", alpha=2.0, beta=0.5)
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        AlphaBeta(1.0, 1.0)
    with pytest.raises(ValueError, match="beta >= 0"):
        AlphaBeta(0.5, -0.5)
    with pytest.raises(ValueError, match="composite must be one of"):
        LRP(small_cnn, composite="gamma")
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        LRP(small_cnn, epsilon=0.0)
    with pytest.raises(ValueError, match="low and high must be given together"):
        LRP(small_cnn, low=0.0)
    with pytest.raises(ValueError, match="epsilon_plus_flat"):
        LRP(small_cnn, composite="epsilon_plus_flat", low=0.0, high=1.0)


def test_bad_zbox_placement_and_bounds(small_cnn, cnn_inputs):
    pooled_first = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(196, 3)).to(DTYPE)
    with pytest.raises(ValueError, match=r"first weighted layer '2' \(Linear\) receives the output of '0' "
                                         r"\(MaxPool2d\)"):
        LRP(pooled_first.eval(), low=0.0, high=1.0)(cnn_inputs, target=0)
    with pytest.raises(ValueError, match="does not broadcast"):
        LRP(small_cnn, low=torch.zeros(3), high=1.0)(cnn_inputs, target=0)


def test_bad_deeplift_baseline(small_cnn, cnn_inputs):
    with pytest.raises(ValueError, match="baseline must be 'zero', a tensor or a tuple of tensors"):
        DeepLift(small_cnn, baseline="mean")
    with pytest.raises(ValueError, match="does not broadcast"):
        DeepLift(small_cnn, baseline=torch.zeros(3, 5))(cnn_inputs, target=0)


def test_model_in_training_mode_is_refused(small_cnn, cnn_inputs):
    small_cnn.train()
    for explainer in _both(small_cnn):
        with pytest.raises(ValueError, match="training mode"):
            explainer(cnn_inputs, target=0)
