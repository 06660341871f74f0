"""Extending LRP and DeepLift from outside the package (docs/explain_graphs.md, "Extending LRP"): layer types
and functions declared with ``register_layer``/``register_function``, rules as objects in a ``Composite``
(``name_map`` > ``first`` > ``layer_map`` > preset > the kinds' defaults), named composites with
``register_composite``, the ``stabilizer`` option and the batch-norm warning.

Every registration a test makes is undone when it ends (fixtures or ``finally`` calling ``unregister_*``).
Float64 throughout.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from agreement import (attribution_parameter_gradients, check_against_finite_differences, generator,
                       randomize_batch_norm)
from torch import nn

from veneer.explain import (COMPOSITES, LRP, AlphaBeta, Composite, DeepLift, Epsilon, Flat, GraphError, Rule, ZBox,
                            ZPlus, make_explainer, register_composite, register_function, register_layer,
                            unregister_composite, unregister_function, unregister_layer)
from veneer.explain.graph import vjp
from veneer.explain.lrp import weighted_forward

DTYPE = torch.float64
TARGETS = torch.tensor([0, 2, 1])


# ====================================================================== user rules, written as a user would


class PositivePart(Rule):
    """A rule for an activation: only the relevance of positive pre-activations passes, ``R_in = R [x > 0]``."""

    kinds = ("pointwise",)

    def __call__(self, step, relevance):
        return relevance * (step.input > 0)


class WSquare(Rule):
    """LRP-w^2 (Montavon et al. 2017): ``R_i = sum_j w_ij^2 / sum_i' w_i'j^2 R_j``, through the documented
    helpers (a modified forward under ``enable_grad``, then ``vjp``)."""

    kinds = ("weighted",)

    def __call__(self, step, relevance):
        ones = torch.ones_like(step.input).requires_grad_(True)
        with torch.enable_grad():
            z = weighted_forward(step.module, ones, step.module.weight ** 2, None)
        return vjp(z, ones, relevance / z)


class LeakyNet(nn.Module):
    """Linear(4, 5) -> LeakyReLU(0.1) (module, or ``F.leaky_relu`` with ``functional``) -> Linear(5, 3)."""

    def __init__(self, functional: bool = False):
        super().__init__()
        torch.manual_seed(40)
        self.fc1, self.act, self.fc2 = nn.Linear(4, 5), nn.LeakyReLU(0.1), nn.Linear(5, 3)
        self.functional = functional

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(F.leaky_relu(h, 0.1) if self.functional else self.act(h))


def _leaky(functional: bool = False) -> nn.Module:
    return LeakyNet(functional).to(DTYPE).eval()


def _x(shape=(3, 4), seed: int = 41) -> torch.Tensor:
    return torch.randn(*shape, generator=generator(seed), dtype=DTYPE)


@pytest.fixture
def leaky_registered():
    register_layer(nn.LeakyReLU, "pointwise")
    yield
    unregister_layer(nn.LeakyReLU)


def _stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    return z + epsilon * (2 * (z >= 0).to(z.dtype) - 1)


def _epsilon_by_hand(layer: nn.Linear, a: torch.Tensor, relevance: torch.Tensor, epsilon: float) -> torch.Tensor:
    """LRP-epsilon through a Linear layer with plain torch ops: ``a * W^T (R / (z + eps sign z))``."""
    return a * ((relevance / _stabilize(layer(a), epsilon)) @ layer.weight)


def _leaky_lrp_by_hand(model: LeakyNet, x: torch.Tensor, epsilon: float, activation_rule) -> torch.Tensor:
    with torch.no_grad():
        h = model.fc1(x)
        a = F.leaky_relu(h, 0.1)
        out = model.fc2(a)
        relevance = torch.zeros_like(out).scatter_(1, TARGETS[:, None], 1.0) * out
        relevance = _epsilon_by_hand(model.fc2, a, relevance, epsilon)
        return _epsilon_by_hand(model.fc1, x, activation_rule(h, relevance), epsilon)


# ====================================================================== (a) a registered layer with a user rule


@pytest.mark.usefixtures("leaky_registered")
@pytest.mark.parametrize("functional", [False, True], ids=["module", "function"])
def test_user_rule_for_a_registered_leaky_relu_equals_the_propagation_by_hand(functional):
    model, x = _leaky(functional), _x()
    if functional:  # a function is declared with register_function and mapped by its kind
        register_function(F.leaky_relu, "pointwise")
    try:
        key = "pointwise" if functional else nn.LeakyReLU
        ours = LRP(model, composite=Composite([(key, PositivePart())]), epsilon=0.01)(x, TARGETS)
        passed = LRP(model, epsilon=0.01)(x, TARGETS)  # the kind's default: the relevance passes through
        explained = DeepLift(model)(x, TARGETS)
    finally:
        if functional:
            unregister_function(F.leaky_relu)
    torch.testing.assert_close(ours, _leaky_lrp_by_hand(model, x, 0.01, lambda h, r: r * (h > 0)),
                               rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(passed, _leaky_lrp_by_hand(model, x, 0.01, lambda h, r: r), rtol=1e-12, atol=1e-14)
    assert not torch.allclose(ours, passed)
    with torch.no_grad():  # DeepLift uses the same registration: the Rescale rule, complete
        delta = (model(x) - model(torch.zeros_like(x))).gather(1, TARGETS[:, None])[:, 0]
    torch.testing.assert_close(explained.sum(1), delta, rtol=1e-10, atol=1e-12)


class MyLinear(nn.Module):
    """A user-defined weighted layer (traced through unless registered): ``x W^T + b``."""

    def __init__(self, source: nn.Linear):
        super().__init__()
        self.weight = nn.Parameter(source.weight.detach().clone())
        self.bias = nn.Parameter(source.bias.detach().clone())

    def forward(self, x):
        return x @ self.weight.T + self.bias


def test_a_registered_weighted_layer_takes_the_rules_of_linear():
    reference = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).to(DTYPE).eval()
    model = nn.Sequential(MyLinear(reference[0]), nn.ReLU(), MyLinear(reference[2])).eval()
    x = _x(seed=42)
    # traced through, its ``x @ weight.T`` is a weighted op itself (veneer.explain.graph.LinearCall) and the bias
    # a sum with its own z-rule: the same map up to the second epsilon
    torch.testing.assert_close(LRP(model, epsilon=1e-12)(x, TARGETS), LRP(reference, epsilon=1e-12)(x, TARGETS),
                               rtol=1e-9, atol=1e-12)
    register_layer(MyLinear, "weighted")
    try:
        for rule in (ZPlus(), AlphaBeta(2.0, 1.0), Flat()):  # re-run with modified weights (functional_call)
            torch.testing.assert_close(LRP(model, composite=Composite([(MyLinear, rule)]))(x, TARGETS),
                                       LRP(reference, composite=Composite([(nn.Linear, rule)]))(x, TARGETS),
                                       rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(LRP(model)(x, TARGETS), LRP(reference)(x, TARGETS), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(DeepLift(model)(x, TARGETS), DeepLift(reference)(x, TARGETS), rtol=1e-12, atol=1e-14)
    finally:
        unregister_layer(MyLinear)


# ====================================================================== (b) layer maps and presets


def _bn_cnn() -> nn.Sequential:
    """(B, 1, 8, 8) -> 3 classes: Conv, BatchNorm2d, ReLU, MaxPool2d, Conv, ReLU, AvgPool2d, Flatten, Linear, ReLU,
    Linear."""
    torch.manual_seed(43)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 3)).to(DTYPE).eval()
    return randomize_batch_norm(model, seed=44)


def _images(seed: int = 45) -> torch.Tensor:
    return torch.rand(3, 1, 8, 8, generator=generator(seed), dtype=DTYPE)


@pytest.mark.parametrize("fold", [False, True])
def test_a_user_layer_map_equals_the_equivalent_preset_bit_for_bit(fold):
    model, x = _bn_cnn(), _images()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the batch-norm advice (tested below)
        mine = Composite([(nn.Conv2d, ZPlus()), (nn.Linear, Epsilon(0.25))], first=ZBox(0.0, 1.0))
        ours = LRP(model, composite=mine, epsilon=0.25, fold_batchnorm=fold)(x, TARGETS)
        preset = LRP(model, composite="epsilon_plus", epsilon=0.25, low=0.0, high=1.0, fold_batchnorm=fold)(x, TARGETS)
        assert torch.equal(ours, preset)
        flat = Composite([(nn.Conv2d, AlphaBeta(1.5, 0.5, stabilizer=1e-6))], first=Flat(stabilizer=1e-6))
        ours = LRP(model, composite=flat, fold_batchnorm=fold)(x, TARGETS)
        preset = LRP(model, composite=Composite([(nn.Conv2d, AlphaBeta(1.5, 0.5, 1e-6))], preset="epsilon_plus_flat"),
                     stabilizer=1e-6, fold_batchnorm=fold)(x, TARGETS)
        assert torch.equal(ours, preset)  # the user's entry comes before the preset's ZPlus; its Flat first stays
    assert not torch.equal(ours, LRP(model, fold_batchnorm=fold)(x, TARGETS))


def test_layer_map_keys_predicates_tuples_and_kinds():
    model, x = _bn_cnn(), _images()
    convolutions = LRP(model, composite="epsilon_plus", fold_batchnorm=True)(x, TARGETS)
    for key in ((nn.Conv1d, nn.Conv2d), lambda module: isinstance(module, nn.Conv2d)):
        assert torch.equal(LRP(model, composite=Composite([(key, ZPlus())]), fold_batchnorm=True)(x, TARGETS),
                           convolutions)
    # a kind name maps every op of that kind; Epsilon with LRP's epsilon is the default of affine ops
    assert torch.equal(LRP(model, composite=Composite([("affine", Epsilon(1e-6))]))(x, TARGETS), LRP(model)(x, TARGETS))
    with pytest.raises(GraphError, match=r"layer_map\[0\] gives '2' \(ReLU\), a 'pointwise' op, the rule ZPlus"):
        LRP(model, composite=Composite([(nn.ReLU, ZPlus())]))(x, TARGETS)


# ====================================================================== (c) name_map first


def test_name_map_overrides_first_and_layer_map(small_cnn, cnn_inputs, cnn_targets):
    """small_cnn's convolutions are '0' and '3'."""
    x, t = cnn_inputs, cnn_targets
    only_first = LRP(small_cnn, composite=Composite([(lambda m: m is small_cnn[0], ZPlus())]))(x, t)
    named = LRP(small_cnn, composite=Composite([(nn.Conv2d, ZPlus())], name_map={"3": Epsilon(1e-6)}))(x, t)
    assert torch.equal(named, only_first)
    assert not torch.equal(named, LRP(small_cnn, composite="epsilon_plus")(x, t))
    assert torch.equal(LRP(small_cnn, composite=Composite(first=Flat(), name_map={"0": ZPlus()}))(x, t),
                       LRP(small_cnn, composite=Composite(first=ZPlus()))(x, t))
    with pytest.raises(ValueError, match="name_map names module 'conv9', which the model does not have"):
        LRP(small_cnn, composite=Composite(name_map={"conv9": ZPlus()}))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Linear(3, 4), nn.Linear(2, 4), nn.Linear(4, 3)

    def forward(self, x, y):
        return self.fc(torch.relu(self.a(x) + self.b(y)))


def test_name_map_names_modules_of_the_users_model_with_several_inputs():
    """Several inputs are explained through a wrapper (``base.Packed``); names stay those of the user's model."""
    torch.manual_seed(50)
    model = TwoInputs().to(DTYPE).eval()
    inputs = (_x((3, 3), seed=51), _x((3, 2), seed=52))
    named = LRP(model, composite=Composite(name_map={"fc": ZPlus()}))(inputs, TARGETS)
    matched = LRP(model, composite=Composite([(lambda module: module is model.fc, ZPlus())]))(inputs, TARGETS)
    assert all(torch.equal(a, b) for a, b in zip(named, matched))
    assert not torch.equal(named[0], LRP(model)(inputs, TARGETS)[0])


# ====================================================================== (d) registered composites


def _mine(*, epsilon, alpha, beta, stabilizer):
    return Composite([(nn.Conv2d, AlphaBeta(alpha, beta, stabilizer)), (nn.Linear, Epsilon(10 * epsilon))])


@pytest.fixture
def mine_registered():
    register_composite("mine", _mine)
    yield
    unregister_composite("mine")


@pytest.mark.usefixtures("mine_registered")
def test_a_registered_composite_is_usable_by_name(small_cnn, cnn_inputs, cnn_targets):
    x, t = cnn_inputs, cnn_targets
    options = {"epsilon": 0.01, "alpha": 2.0, "beta": 1.0}
    expected = LRP(small_cnn, composite=_mine(stabilizer=1e-9, **options), **options)(x, t)
    assert torch.equal(LRP(small_cnn, composite="mine", **options)(x, t), expected)
    assert torch.equal(make_explainer("lrp", small_cnn, composite="mine", **options)(x, t), expected)
    assert "mine" in COMPOSITES and set(COMPOSITES) >= {"epsilon", "epsilon_plus", "epsilon_plus_flat", "alpha_beta"}
    with pytest.raises(ValueError, match="already registered"):
        register_composite("mine", _mine)
    with pytest.raises(ValueError, match="alpha - beta = 1"):  # the factory's rules validate LRP's options
        LRP(small_cnn, composite="mine", alpha=2.0, beta=0.5)


def test_composite_registry_errors(small_cnn):
    with pytest.raises(ValueError, match=r"composite must be one of the registered names \['alpha_beta', "
                                         r"'attn_lrp', 'epsilon', 'epsilon_plus', 'epsilon_plus_flat'\] or a "
                                         r"Composite, got 'mine'"):
        LRP(small_cnn, composite="mine")
    with pytest.raises(TypeError):
        COMPOSITES["mine"] = _mine  # read-only: register_composite adds
    with pytest.raises(ValueError, match="built-in composite 'epsilon' cannot be unregistered"):
        unregister_composite("epsilon")
    register_composite("broken", lambda **options: "not a composite")
    try:
        with pytest.raises(TypeError, match="factory of composite 'broken' must return a Composite, got str"):
            LRP(small_cnn, composite="broken")
    finally:
        unregister_composite("broken")
    with pytest.raises(TypeError, match=r"layer_map\[0\]'s rule must be a veneer.explain.Rule"):
        Composite([(nn.Conv2d, "zplus")])
    with pytest.raises(TypeError, match=r"layer_map\[0\]: a key must be"):
        Composite([(3, ZPlus())])
    with pytest.raises(ValueError, match=r"layer_map\[0\]: a kind must be one of"):
        Composite([("attention", ZPlus())])
    with pytest.raises(ValueError, match="preset must be None or a registered composite"):
        Composite(preset="gamma")
    with pytest.raises(ValueError, match=r"cannot be combined with composite=Composite\(first=Flat"):
        LRP(small_cnn, composite=Composite(first=Flat()), low=0.0, high=1.0)


# ====================================================================== (e) the batch-norm warning


def _recorded(call) -> list:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if "fold_batchnorm" in str(w.message)]


def test_batch_norm_warning_for_unfolded_zplus_once_per_explainer():
    model, x = _bn_cnn(), _images()
    explainer = LRP(model, composite="epsilon_plus")
    with pytest.warns(UserWarning, match=r"ZPlus.* to '0' \(Conv2d\), followed by batch norm '1' \(BatchNorm2d\).*"
                                         r"pass fold_batchnorm=True"):
        explainer(x, TARGETS)
    assert _recorded(lambda: explainer(x, TARGETS)) == []  # once per explainer
    for quiet in (LRP(model, composite="epsilon_plus", fold_batchnorm=True), LRP(model, composite="epsilon"),
                  LRP(model, composite=Composite([(nn.Linear, ZPlus())]))):  # no z+ layer before the batch norm
        assert _recorded(lambda: quiet(x, TARGETS)) == []
    for loud in (LRP(model, composite="alpha_beta", alpha=2.0, beta=1.0), LRP(model, composite="epsilon_plus_flat"),
                 LRP(model, composite=Composite([(nn.Conv2d, AlphaBeta(1.5, 0.5))]))):
        assert len(_recorded(lambda: loud(x, TARGETS))) == 1


# ====================================================================== (f) the stabilizer


def test_stabilizer_enters_the_alpha_beta_denominators_as_expected():
    """One layer (a convolution covering its whole input: a linear map), ``R = f_t(x)`` at the target:
    ``R_j = (alpha p_j / (P + s) - beta n_j / (N - s)) R`` with ``p``/``n`` the positive/negative contributions
    and ``P``/``N`` their sums with the bias's positive/negative part (N < 0)."""
    torch.manual_seed(46)
    model = nn.Sequential(nn.Conv2d(1, 3, 4), nn.Flatten()).to(DTYPE).eval()
    x = torch.randn(3, 1, 4, 4, generator=generator(47), dtype=DTYPE)
    default = LRP(model, composite="alpha_beta", alpha=2.0, beta=1.0)(x, TARGETS)
    assert torch.equal(LRP(model, composite="alpha_beta", alpha=2.0, beta=1.0, stabilizer=1e-9)(x, TARGETS), default)
    w, b = model[0].weight[TARGETS].flatten(1), model[0].bias[TARGETS]  # (B, 16), (B,)
    contributions = x.flatten(1) * w
    pos, neg = contributions.clamp(min=0), contributions.clamp(max=0)
    total_pos, total_neg = pos.sum(1) + b.clamp(min=0), neg.sum(1) + b.clamp(max=0)
    relevance = (contributions.sum(1) + b).detach()
    for s in (1e-9, 0.5):
        ours = LRP(model, composite="alpha_beta", alpha=2.0, beta=1.0, stabilizer=s)(x, TARGETS).flatten(1)
        expected = (2.0 * pos / (total_pos + s)[:, None] - neg / (total_neg - s)[:, None]) * relevance[:, None]
        torch.testing.assert_close(ours, expected.detach(), rtol=1e-10, atol=1e-13)
    assert not torch.allclose(ours, default.flatten(1), rtol=1e-3)
    with pytest.raises(ValueError, match="stabilizer must be a number > 0, got 0"):
        LRP(model, stabilizer=0)


# ====================================================================== (g) unknown layers


def test_unknown_layers_and_functions_say_how_to_register_them():
    model = nn.Sequential(nn.Linear(4, 4), nn.ELU(), nn.Linear(4, 3)).to(DTYPE).eval()
    x = _x()
    message = r"layer '1' of type ELU is not supported by {}; .*register_layer\(ELU, kind\)"
    for explainer, method in ((LRP(model), "LRP"), (DeepLift(model), "DeepLift")):
        with pytest.raises(GraphError, match=message.format(method)):
            explainer(x, TARGETS)
    register_layer(nn.ELU, "pointwise")
    try:
        assert LRP(model)(x, TARGETS).shape == x.shape and DeepLift(model)(x, TARGETS).shape == x.shape
        with pytest.raises(ValueError, match="already registered as 'pointwise'"):
            register_layer(nn.ELU, "affine")
    finally:
        unregister_layer(nn.ELU)
    with pytest.raises(GraphError, match=message.format("LRP")):  # unregistered again
        LRP(model)(x, TARGETS)
    with pytest.raises(ValueError, match=r"kind must be one of \('weighted', 'affine', 'route', 'maxpool', "
                                         r"'pointwise'\), got 'softmax'"):
        register_layer(nn.ELU, "softmax")
    with pytest.raises(TypeError, match="module_type must be a torch.nn.Module subclass"):
        register_layer(F.elu, "pointwise")
    with pytest.raises(KeyError):
        unregister_layer(nn.ELU)


# ====================================================================== (h) second order through user rules


@pytest.mark.usefixtures("leaky_registered")
def test_parameter_gradient_through_user_rules_matches_finite_differences():
    model, x = _leaky(), _x(seed=48)
    explainer = LRP(model, composite=Composite([(nn.LeakyReLU, PositivePart())], first=WSquare()), epsilon=0.01)
    w2 = model.fc1.weight ** 2
    with torch.no_grad():  # WSquare on fc1 by hand: the relevance at fc1's output spread by w^2 / sum_i w^2
        out = model(x)
        h = model.fc1(x)
        relevance = _epsilon_by_hand(model.fc2, F.leaky_relu(h, 0.1),
                                     torch.zeros_like(out).scatter_(1, TARGETS[:, None], 1.0) * out, 0.01) * (h > 0)
        torch.testing.assert_close(explainer(x, TARGETS), (relevance / w2.sum(1)) @ w2, rtol=1e-12, atol=1e-14)
    names, params, grads, loss = attribution_parameter_gradients(explainer, model, x, TARGETS, seed=49)
    for k, (name, p, g) in enumerate(zip(names, params, grads)):
        assert g is not None, f"{name}: not in the graph"
        check_against_finite_differences(f"user rules/{name}", g, p, loss, seed=k)


# ====================================================================== renamed names


def test_renamed_names_warn_and_still_work(small_cnn, cnn_inputs):
    import veneer.explain.graph as graph
    import veneer.explain.lrp as lrp
    with pytest.warns(DeprecationWarning, match="use veneer.explain.graph.Propagate"):
        assert graph.Rule is graph.Propagate
    with pytest.warns(DeprecationWarning, match="use veneer.explain.lrp.weighted_forward"):
        assert lrp.affine is weighted_forward
    explainer = LRP(small_cnn, composite="epsilon_plus")
    rec = graph.record(small_cnn, graph.trace_graph(small_cnn, "LRP"), (cnn_inputs,))
    ops = graph.live_ops(small_cnn, rec, "LRP", supported=lrp.LRP_KINDS)
    with pytest.warns(DeprecationWarning, match="use LRP.rules"):
        weighted = explainer.weighted_rules(rec, ops)
    assert [type(rule).__name__ for rule in weighted.values()] == ["ZPlus", "ZPlus", "Epsilon", "Epsilon"]
