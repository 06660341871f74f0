"""LRP rules for transformers after AttnLRP (Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance
Propagation for Transformers", ICML 2024), and the ``"attn_lrp"`` composite that applies them.

The traced graph (:mod:`veneer.explain.graph`) classifies a softmax as ``"softmax"``, a product of two
input-dependent tensors (``q @ k^T``, ``attention @ v``) as ``"bilinear"`` and ``nn.LayerNorm`` as
``"normalization"``; LRP has no default rule for these kinds. The rules here (notation: ``R`` the relevance at
the op's output, ``s = R / (z + eps sign z)`` with ``z`` the op's output):

* :class:`SoftmaxRule`, AttnLRP Prop. 3.1 (the softmax linearised at its input, bias-free):
  ``R_i = x_i (R_i - y_i sum_j R_j)`` along the softmax's dim, ``y = softmax(x)``.
* :class:`UniformProduct`, AttnLRP Prop. 3.3 (the uniform rule for a bilinear ``O = A V``): each factor gets half
  of the epsilon rule with the other factor held as weights, ``R_A = 1/2 A (J_A^T s)``, ``R_V = 1/2 V (J_V^T s)``;
  as the map is homogeneous of degree one in each factor, each half sums to ``R / 2``: it conserves.
* :class:`LayerNormRule`, AttnLRP Sec. 3.3.3 (the identity rule on the normalization): the division by the
  standard deviation passes relevance unchanged, the centring and the elementwise affine map take the epsilon
  rule. Together this is the epsilon rule of the map with ``sigma`` held constant,
  ``R = x (u - mean(u))``, ``u = gamma s / sigma``, which conserves where ``beta = 0``.
* GELU (and the other element-wise activations) keep the identity rule :class:`~veneer.explain.lrp.Pass`
  (AttnLRP Sec. 3.3.2), the default of ``"pointwise"`` ops.

Every rule is computed with differentiable torch operations on the recorded tensors (``sigma`` is not detached:
it is held constant in the rule's Jacobian only), so second-order gradients stay exact.
"""

from __future__ import annotations

from veneer.explain.graph import Op, Step, softmax_dim, stabilize, z_rule
from veneer.explain.lrp import Composite, Rule, register_composite


class SoftmaxRule(Rule):
    """AttnLRP's softmax rule (Achtibat et al. 2024, Prop. 3.1): ``R_i = x_i (R_i - y_i sum_j R_j)`` along the
    softmax's ``dim``; not conservative (the linearisation's bias term keeps the rest)."""

    kinds = ("softmax",)

    def propagate(self, op: Op, relevance):
        dim = softmax_dim(op.node, op.module)
        return (op.inputs[0] * (relevance - op.output * relevance.sum(dim, keepdim=True)),)


class _StabilizedRule(Rule):
    """A rule whose denominators are stabilised by ``epsilon`` (> 0), as the epsilon rule's."""

    def __init__(self, epsilon: float = 1e-6):
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
        self.epsilon = epsilon


class UniformProduct(_StabilizedRule):
    """AttnLRP's uniform rule for a product of two input-dependent tensors (Achtibat et al. 2024, Prop. 3.3):
    half of the epsilon rule to each factor, ``R_A = 1/2 A (J_A^T (R / (O + eps sign O)))``, likewise ``R_V``.
    Where both factors are the same tensor (``x @ x.T``) its two halves add up."""

    kinds = ("bilinear",)

    def propagate(self, op: Op, relevance):
        return tuple(part / 2 for part in z_rule(op, relevance, self.epsilon))


class LayerNormRule(_StabilizedRule):
    """AttnLRP's LayerNorm rule (Achtibat et al. 2024, Sec. 3.3.3): the identity rule on the division by
    ``sigma = sqrt(var(x) + eps_ln)`` and the epsilon rule on the centring and on ``gamma * n + beta``; i.e. the
    epsilon rule of ``y = gamma (x - mean x) / sigma + beta`` with ``sigma`` held constant:
    ``R_x = x (u - mean(u))``, ``u = gamma R / (sigma (y + eps sign y))``, over the normalized dims."""

    kinds = ("normalization",)

    def __call__(self, step: Step, relevance):
        module, x = step.module, step.input
        dims = tuple(range(-len(module.normalized_shape), 0))
        sigma = (x.var(dims, unbiased=False, keepdim=True) + module.eps).sqrt()
        u = relevance / stabilize(step.output, self.epsilon) / sigma
        if module.weight is not None:
            u = u * module.weight
        return x * (u - u.mean(dims, keepdim=True))


def _attn_lrp(*, epsilon, alpha, beta, stabilizer) -> Composite:
    """AttnLRP (Achtibat et al. 2024): the epsilon rule on linear layers (the kinds' defaults), the softmax,
    uniform product and LayerNorm rules, the identity rule on GELU and other activations."""
    return Composite([("softmax", SoftmaxRule()), ("bilinear", UniformProduct(epsilon)),
                      ("normalization", LayerNormRule(epsilon))])


register_composite("attn_lrp", _attn_lrp)
