"""LRP for transformers after AttnLRP (Achtibat et al., ICML 2024) and the other explainers on a small ViT.

Checked against the definitions, none of them veneer's code:
1. equality with a hand-written implementation of the paper's equations (plain torch ops, below) on one
   pre-norm encoder block: epsilon rule on linear layers and sums, the softmax rule (Prop. 3.1), the uniform rule
   on both attention products (Prop. 3.3), the LayerNorm rule (identity on the division by sigma, epsilon rule on
   the centring and the affine map, Sec. 3.3.3) and the identity rule on GELU;
2. conservation where the rules conserve (bias-free maps, the uniform rule, LayerNorm with beta = 0);
3. second order: d loss(attribution) / d parameters against central finite differences in float64;
4. DeepLift's summation-to-delta through LayerNorm and attention products (exact closed form);
5. on the ViT: every explainer runs; Gradient, GradientXInput and IG equal Captum's.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from agreement import attribution_parameter_gradients, check_against_finite_differences
from captum.attr import InputXGradient, Saliency
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from torch import nn

from veneer.explain import (LRP, METHODS, DeepLift, GradientXInput, GraphError, IntegratedGradients, LayerNormRule,
                            SoftmaxRule, UniformProduct, make_explainers)
from veneer.explain.gradient import Gradient
from veneer.models.architectures import TransformerBlock, ViT

DTYPE = torch.float64
EPS = 1e-12  # the rules' stabiliser: the hand-written version places it once more inside LayerNorm


class OneBlock(nn.Module):
    """Tokens (B, N, D) -> one encoder block -> mean over tokens -> linear head (random weights, non-trivial
    LayerNorm scales and shifts)."""

    def __init__(self, dim: int = 4, heads: int = 2, classes: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.block, self.head = TransformerBlock(dim, heads), nn.Linear(dim, classes)
        with torch.no_grad():
            for norm in (self.block.norm1, self.block.norm2):
                norm.weight.uniform_(0.5, 1.5), norm.bias.normal_(0, 0.2)
        self.to(DTYPE)

    def forward(self, x):
        return self.head(self.block(x).mean(1))


def stab(z):
    return z + torch.where(z >= 0, EPS, -EPS)


def linear_rule(a, weight, relevance, output):
    """Epsilon rule of ``output = a W^T + b``: ``R_a = a * ((R / (z + eps)) W)``."""
    return a * ((relevance / stab(output)) @ weight)


def layer_norm_rule(norm: nn.LayerNorm, x, relevance):
    """AttnLRP's LayerNorm, step by step: epsilon rule on ``y = gamma n + beta``, identity on ``n = c / sigma``,
    epsilon rule on the centring ``c = x - mean(x)`` (the linear map ``I - 1/D``)."""
    c = x - x.mean(-1, keepdim=True)
    n = c / (x.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
    y = norm.weight * n + norm.bias
    r_n = norm.weight * n * relevance / stab(y)
    r_c = r_n
    s = r_c / stab(c)
    return x * (s - s.mean(-1, keepdim=True))


def hand_written_attn_lrp(model: OneBlock, x, target):
    """AttnLRP's equations on OneBlock, in plain torch ops."""
    block, attention = model.block, model.block.attention
    b, n, d = x.shape
    heads, hd = attention.heads, d // attention.heads
    # forward
    n1 = block.norm1(x)
    qkv = n1 @ attention.qkv.weight.T + attention.qkv.bias
    q, k, v = qkv.view(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
    t = q @ k.transpose(-2, -1)
    scores = t * attention.scale
    att = scores.softmax(-1)
    o = att @ v
    merged = o.transpose(1, 2).reshape(b, n, d)
    a = merged @ attention.proj.weight.T + attention.proj.bias
    x1 = x + a
    n2 = block.norm2(x1)
    h = n2 @ block.mlp[0].weight.T + block.mlp[0].bias
    g = F.gelu(h)
    m = g @ block.mlp[2].weight.T + block.mlp[2].bias
    x2 = x1 + m
    pooled = x2.mean(1)
    out = pooled @ model.head.weight.T + model.head.bias
    # backward
    r_out = F.one_hot(target, out.shape[1]).to(out) * out
    r_pooled = linear_rule(pooled, model.head.weight, r_out, out)
    r_x2 = x2 * (r_pooled / stab(pooled))[:, None, :] / n  # the mean: epsilon rule of an average
    r_x1, r_m = x1 * r_x2 / stab(x2), m * r_x2 / stab(x2)  # residual sum
    r_g = linear_rule(g, block.mlp[2].weight, r_m, m)
    r_h = r_g  # GELU: identity rule
    r_n2 = linear_rule(n2, block.mlp[0].weight, r_h, h)
    r_x1 = r_x1 + layer_norm_rule(block.norm2, x1, r_n2)
    r_x, r_a = x * r_x1 / stab(x1), a * r_x1 / stab(x1)
    r_merged = linear_rule(merged, attention.proj.weight, r_a, a)
    r_o = r_merged.view(b, n, heads, hd).transpose(1, 2)
    s_o = r_o / stab(o)
    r_att, r_v = 0.5 * att * (s_o @ v.transpose(-2, -1)), 0.5 * v * (att.transpose(-2, -1) @ s_o)  # uniform rule
    r_scores = scores * (r_att - att * r_att.sum(-1, keepdim=True))  # softmax rule, Prop. 3.1
    r_t = t * attention.scale * r_scores / stab(scores)  # scaling by a constant: epsilon rule (= identity)
    s_t = r_t / stab(t)
    r_q, r_k = 0.5 * q * (s_t @ k), 0.5 * k * (s_t.transpose(-2, -1) @ q)  # uniform rule
    r_qkv = torch.stack([r_q, r_k, r_v]).permute(1, 3, 0, 2, 4).reshape(b, n, 3 * d)
    r_n1 = linear_rule(n1, attention.qkv.weight, r_qkv, qkv)
    return r_x + layer_norm_rule(block.norm1, x, r_n1)


X = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
TARGET = torch.tensor([0, 2, 1])


def attn_lrp(model):
    return LRP(model, composite="attn_lrp", epsilon=EPS)


def test_attn_lrp_equals_the_papers_equations_written_by_hand_on_one_block():
    model = OneBlock().eval()
    with torch.no_grad():
        expected = hand_written_attn_lrp(model, X, TARGET)
    ours = attn_lrp(model)(X, TARGET)
    torch.testing.assert_close(ours, expected, rtol=1e-8, atol=1e-10)
    assert ours.abs().max() > 1e-3


def test_each_rule_is_used_through_the_composite_and_plain_lrp_names_what_it_cannot_do():
    model = OneBlock().eval()
    with pytest.raises(GraphError, match=r"LRP has no rule for '(block\.)?norm1' \(LayerNorm\), a 'normalization' op"):
        LRP(model)(X, TARGET)
    rec_rules = attn_lrp(model)
    from veneer.explain.graph import live_ops, record, trace_graph

    rec = record(model, trace_graph(model, "LRP"), (X,))
    rules = rec_rules.rules(rec, live_ops(model, rec, "LRP"))
    kinds = {type(rule) for rule in rules.values()}
    assert {SoftmaxRule, UniformProduct, LayerNormRule} <= kinds


class Bilinear(nn.Module):
    """Bias-free: q = x Wq, k = x Wk, scores q k^T, then a bias-free LayerNorm-free readout."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.q, self.k = nn.Linear(4, 4, bias=False).to(DTYPE), nn.Linear(4, 4, bias=False).to(DTYPE)
        self.out = nn.Linear(25, 3, bias=False).to(DTYPE)

    def forward(self, x):
        return self.out((self.q(x) @ self.k(x).transpose(1, 2)).flatten(1))


class Normed(nn.Module):
    """Bias-free linear maps around a LayerNorm with beta = 0 (its rule then conserves)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.inner, self.norm = nn.Linear(4, 6, bias=False).to(DTYPE), nn.LayerNorm(6).to(DTYPE)
        self.out = nn.Linear(6, 3, bias=False).to(DTYPE)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5), self.norm.bias.zero_()

    def forward(self, x):
        return self.out(self.norm(self.inner(x)).sum(1))


@pytest.mark.parametrize("make", [Bilinear, Normed])
def test_the_uniform_and_layer_norm_rules_conserve_relevance(make):
    model = make().eval()
    relevance = attn_lrp(model)(X, TARGET)
    with torch.no_grad():
        logits = model(X).gather(1, TARGET[:, None])[:, 0]
    torch.testing.assert_close(relevance.sum((1, 2)), logits, rtol=1e-9, atol=1e-12)


def test_the_softmax_rule_is_its_definition():
    """R_i = x_i (R_i - y_i sum_j R_j) on a softmax (Prop. 3.1), read off a model ending in one."""

    class Soft(nn.Module):
        def forward(self, x):
            return torch.softmax(x, dim=1)

    x = torch.randn(4, 5, dtype=DTYPE)
    relevance = attn_lrp(Soft().eval())(x, torch.tensor([0, 1, 2, 3]))
    y = x.softmax(1)
    r_out = F.one_hot(torch.tensor([0, 1, 2, 3]), 5).to(y) * y
    torch.testing.assert_close(relevance, x * (r_out - y * r_out.sum(1, keepdim=True)), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", ["attn_lrp", "deeplift"])
def test_second_order_through_one_block_matches_finite_differences(method):
    model = OneBlock(dim=4, heads=2, seed=5).eval()
    explainer = attn_lrp(model) if method == "attn_lrp" else DeepLift(model)
    names, params, grads, loss = attribution_parameter_gradients(explainer, model, X[:2], TARGET[:2], seed=6)
    # biases the map does not depend on: a bias after which only sums and linear maps follow cancels in
    # f(x) - f(x0) (DeepLift: no graph at all) and in the epsilon rule's ratios (LRP: only through EPS)
    independent = {"head.bias", "block.mlp.2.bias"}
    for k, (name, p, g) in enumerate(zip(names, params, grads)):
        if name in independent:
            assert g is None or g.abs().max() < 1e-8, name
            continue
        check_against_finite_differences(f"{method}/{name}", g, p, loss, seed=k, count=3)


def test_deeplift_sums_to_the_change_of_the_output_through_layer_norm_and_attention_products():
    """Exact through LayerNorm and both products (no softmax: DeepLift's softmax rule is not complete)."""

    class NoSoftmax(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = OneBlock(seed=7).block
            self.head = nn.Linear(4, 3).to(DTYPE)

        def forward(self, x):
            n = self.block.norm1(x)
            q, k, _ = self.block.attention.qkv(n).chunk(3, dim=-1)
            mixed = (q @ k.transpose(1, 2)) @ n
            return self.head(self.block.mlp(self.block.norm2(mixed + x)).mean(1))

    model = NoSoftmax().eval()
    baseline = torch.randn(1, 5, 4, dtype=DTYPE)
    attr = DeepLift(model, baseline=baseline)(X, TARGET)
    with torch.no_grad():
        delta = (model(X) - model(baseline)).gather(1, TARGET[:, None])[:, 0]
    # GELU's Rescale rule is exact too: every rule here is complete
    torch.testing.assert_close(attr.sum((1, 2)), delta, rtol=1e-9, atol=1e-12)


# ====================================================================== the ViT


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return ViT(image_size=14, patch=7, dim=8, depth=2, heads=2).to(DTYPE).eval()


IMAGES = torch.rand(3, 1, 14, 14, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
CLASSES = torch.tensor([1, 4, 7])


def test_every_explainer_runs_on_the_vit(vit):
    names = [m for m in METHODS if m not in ("lime", "kernel-shap")]
    explainers = make_explainers(vit, names, ig_steps=4)
    explainers["lrp"] = attn_lrp(vit)
    for name, explainer in explainers.items():
        attr = explainer(IMAGES, CLASSES)
        assert attr.shape[0] == 3 and torch.isfinite(attr).all() and attr.abs().sum() > 0, name
    with pytest.raises(GraphError, match="composite='attn_lrp'"):
        LRP(vit)(IMAGES, CLASSES)


def test_gradient_methods_on_the_vit_equal_captum(vit):
    torch.testing.assert_close(Gradient(vit)(IMAGES, CLASSES),
                               Saliency(vit).attribute(IMAGES, target=CLASSES, abs=False), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(GradientXInput(vit)(IMAGES, CLASSES),
                               InputXGradient(vit).attribute(IMAGES, target=CLASSES), rtol=1e-10, atol=1e-12)
    ours = IntegratedGradients(vit, steps=8, method="gausslegendre")(IMAGES, CLASSES)
    reference = CaptumIntegratedGradients(vit).attribute(IMAGES, target=CLASSES, n_steps=8, method="gausslegendre")
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-9)  # Captum's quadrature nodes are float32
    assert math.isfinite(ours.sum().item())
