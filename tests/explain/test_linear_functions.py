"""Linear operations with one input-dependent operand in the traced graph (``x @ W``, ``W @ x``, ``F.linear``,
``torch.einsum``, ``torch.bmm``) take the rules of a weighted layer, and a product of two input-dependent tensors
(bilinear) is a named refusal for LRP unless a rule is given.

References no one here wrote: Captum's LRP (modules only) and DeepLift on the equivalent ``nn.Linear`` model
holding the same weights; second order against central finite differences in float64; DeepLift's
summation-to-delta (an exact closed form)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from agreement import attribution_parameter_gradients, check_against_finite_differences
from captum.attr import LRP as CaptumLRP
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr._utils.lrp_rules import EpsilonRule
from torch import nn

from veneer.explain import LRP, AlphaBeta, Composite, DeepLift, Flat, GraphError, ZBox, ZPlus

DTYPE = torch.float64


class Functional(nn.Module):
    """Linear(6, 5) -> ReLU -> Linear(5, 4) -> ReLU -> Linear(4, 3) (biases in the middle one only: a bias added
    after a function is a separate sum, split by its own z-rule), the linear maps written as functions."""

    def __init__(self, form: str):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(5, 6, generator=g, dtype=DTYPE))
        self.w2 = nn.Parameter(torch.randn(4, 5, generator=g, dtype=DTYPE))
        self.b2 = nn.Parameter(torch.randn(4, generator=g, dtype=DTYPE))
        self.w3 = nn.Parameter(torch.randn(3, 4, generator=g, dtype=DTYPE))
        self.form = form

    def forward(self, x):
        if self.form == "matmul":
            h = x @ self.w1.T
        elif self.form == "left":  # the weight on the left: (W x^T)^T
            h = (self.w1 @ x.T).T
        elif self.form == "einsum":
            h = torch.einsum("bi,oi->bo", x, self.w1)
        else:  # bmm on a batch of one-row matrices
            h = torch.bmm(x.unsqueeze(1), self.w1.T.expand(x.shape[0], 6, 5)).squeeze(1)
        h = torch.relu(F.linear(torch.relu(h), self.w2, self.b2))
        return torch.matmul(h, self.w3.T)


def modules(model: Functional) -> nn.Sequential:
    """The same network with nn.Linear layers holding the same weights (what Captum's LRP can explain)."""
    net = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(),
                        nn.Linear(4, 3, bias=False)).to(DTYPE)
    with torch.no_grad():
        net[0].weight.copy_(model.w1)
        net[2].weight.copy_(model.w2), net[2].bias.copy_(model.b2)
        net[4].weight.copy_(model.w3)
    return net.eval()


X = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
TARGET = torch.tensor([0, 1, 2, 1])
FORMS = ["matmul", "left", "einsum", "bmm"]


@pytest.mark.parametrize("form", FORMS)
def test_lrp_epsilon_on_linear_functions_equals_captum_on_linear_modules(form):
    model = Functional(form).eval()
    reference = modules(model)
    for layer in reference:
        if isinstance(layer, nn.Linear):
            layer.rule = EpsilonRule(epsilon=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        captum = CaptumLRP(reference).attribute(X, target=TARGET)
    torch.testing.assert_close(LRP(model, epsilon=1e-6)(X, TARGET), captum, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
def test_every_weighted_rule_applies_to_linear_functions(form):
    model = Functional(form).eval()
    reference = modules(model)
    for rule in (ZPlus(), AlphaBeta(2.0, 1.0), Flat()):
        torch.testing.assert_close(LRP(model, composite=Composite([("weighted", rule)]))(X, TARGET),
                                   LRP(reference, composite=Composite([("weighted", rule)]))(X, TARGET),
                                   rtol=1e-10, atol=1e-12)
    if form in ("left", "bmm"):
        return  # the first layer receives x transposed or unsqueezed: z^B's bounds follow reshapes only
    # z^B on the first layer: the functional first layer receives x itself
    torch.testing.assert_close(LRP(model, low=-3.0, high=3.0)(X, TARGET),
                               LRP(reference, low=-3.0, high=3.0)(X, TARGET), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(LRP(model, composite=Composite(first=ZBox(-3.0, 3.0)))(X, TARGET),
                               LRP(reference, low=-3.0, high=3.0)(X, TARGET), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
def test_deeplift_on_linear_functions_equals_captum_and_sums_to_delta(form):
    model = Functional(form).eval()
    ours = DeepLift(model)(X, TARGET)
    captum = CaptumDeepLift(modules(model)).attribute(X, target=TARGET)
    torch.testing.assert_close(ours, captum, rtol=1e-9, atol=1e-12)
    with torch.no_grad():
        delta = (model(X) - model(torch.zeros_like(X))).gather(1, TARGET[:, None])[:, 0]
    torch.testing.assert_close(ours.sum(1), delta, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", [LRP, DeepLift, lambda m: LRP(m, composite=Composite([("weighted", ZPlus())]))])
def test_second_order_through_linear_functions_matches_finite_differences(method):
    model = Functional("einsum").eval()
    names, params, grads, loss = attribution_parameter_gradients(method(model), model, X[:2], TARGET[:2], seed=3)
    for k, (name, p, g) in enumerate(zip(names, params, grads)):
        check_against_finite_differences(f"{name}", g, p, loss, seed=k, count=4)


class Attention(nn.Module):
    """A product of two input-dependent tensors: scores q k^T of a tiny self-attention, then their sum."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.out = nn.Linear(3, 3).to(DTYPE), nn.Linear(3, 3).to(DTYPE), nn.Linear(4, 2).to(DTYPE)

    def forward(self, x):
        tokens = x.view(-1, 4, 3)
        scores = self.q(tokens) @ self.k(tokens).transpose(1, 2)  # (B, 4, 4)
        return self.out(scores.mean(2))


def test_a_product_of_two_input_dependent_tensors_is_a_named_refusal_for_lrp():
    model = Attention().eval()
    x = torch.randn(2, 12, dtype=DTYPE)
    with pytest.raises(GraphError, match=r"LRP has no rule for function _operator.matmul \(node 'matmul'\).*a "
                                         r"'bilinear' op .*composite='attn_lrp'"):
        LRP(model)(x, 0)


def test_deeplift_splits_a_bilinear_product_exactly_and_stays_differentiable():
    """The Shapley split of a product: summation-to-delta holds exactly; second order = finite differences."""
    torch.manual_seed(0)
    model = Attention().eval()
    x, target = torch.randn(3, 12, dtype=DTYPE), torch.tensor([0, 1, 0])
    attr = DeepLift(model)(x, target)
    with torch.no_grad():
        delta = (model(x) - model(torch.zeros_like(x))).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(attr.sum(1), delta, rtol=1e-10, atol=1e-12)
    baseline = torch.randn(1, 12, dtype=DTYPE)  # a shared non-zero baseline: the reference pass keeps the batch
    attr = DeepLift(model, baseline=baseline)(x, target)
    with torch.no_grad():
        delta = (model(x) - model(baseline)).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(attr.sum(1), delta, rtol=1e-10, atol=1e-12)
    names, params, grads, loss = attribution_parameter_gradients(DeepLift(model), model, x[:2], target[:2], seed=4)
    assert [name for name, g in zip(names, grads) if g is None] == ["out.bias"]  # cancels in f(x) - f(x0)
    for k, (name, p, g) in enumerate(zip(names, params, grads)):
        if g is not None:
            check_against_finite_differences(name, g, p, loss, seed=k, count=4)
