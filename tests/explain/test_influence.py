"""Influence functions (Koh & Liang 2017, Eq. 2) against Captum's NaiveInfluenceFunction, between solvers, and
their input gradient against central finite differences (float64)."""

from __future__ import annotations

import pytest
import torch
from captum.influence import NaiveInfluenceFunction
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from agreement import generator, relative_error
from veneer.explain import Influence
from veneer.models.architectures import mnist_cnn, tabular_mlp

N_TRAIN = 60


def _case(kind: str):
    """(model, train (x, y), test x, test y, last-layer prefix) in float64 with seeded weights and data."""
    torch.manual_seed(3)
    if kind == "mlp":
        model = tabular_mlp(12, (16, 8), 3).double().eval()
        x = torch.randn(N_TRAIN + 4, 12, generator=generator(0), dtype=torch.float64)
        classes, prefix = 3, "4"
    else:
        model = mnist_cnn(channels=(4, 8), hidden=16).double().eval()
        x = torch.rand(N_TRAIN + 4, 1, 28, 28, generator=generator(0), dtype=torch.float64)
        classes, prefix = 10, "9"
    y = torch.randint(0, classes, (N_TRAIN + 4,), generator=generator(1))
    return model, (x[:N_TRAIN], y[:N_TRAIN]), x[N_TRAIN:], y[N_TRAIN:], prefix


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("damping", [0.0, 0.01])
def test_exact_equals_captum_up_to_minus_one_over_n(kind, damping, tmp_path):
    """Captum returns grad L(z_t)^T (H_sum + reg I)^-1 grad L(z_i), H_sum = N H (summed loss): with
    reg = N * damping that is exactly -1/N times veneer's I_up,loss."""
    model, (x, y), x_test, y_test, prefix = _case(kind)
    checkpoint = tmp_path / "model.pt"
    torch.save(model.state_dict(), checkpoint)
    captum = NaiveInfluenceFunction(
        model, DataLoader(TensorDataset(x, y), batch_size=N_TRAIN), checkpoint=str(checkpoint),
        loss_fn=nn.CrossEntropyLoss(reduction="none"), layers=[prefix], projection_dim=None,
        hessian_reg=N_TRAIN * damping, hessian_inverse_tol=1e-12).influence((x_test, y_test))
    # train_data given as a DataLoader: veneer converts it with as_labeled
    scores = Influence(model, DataLoader(TensorDataset(x, y), batch_size=7), params=[prefix],
                       damping=damping)(x_test, y_test)
    assert scores.shape == (len(x_test), N_TRAIN)
    assert relative_error(scores, -N_TRAIN * captum) < 1e-6


class _Residual(nn.Module):
    """Not a Sequential: a residual body and a last ``nn.Linear`` reached through a custom forward."""

    def __init__(self, scale_output: float = 1.0):
        super().__init__()
        self.body, self.fc, self.scale_output = nn.Linear(12, 12), nn.Linear(12, 3), scale_output

    def forward(self, x):
        return self.fc(torch.tanh(self.body(x)) + x) * self.scale_output


def _residual_case(scale_output: float = 1.0):
    torch.manual_seed(4)
    model = _Residual(scale_output).double().eval()
    x = torch.randn(N_TRAIN + 4, 12, generator=generator(0), dtype=torch.float64)
    y = torch.randint(0, 3, (N_TRAIN + 4,), generator=generator(1))
    return model, (x[:N_TRAIN], y[:N_TRAIN]), x[N_TRAIN:], y[N_TRAIN:]


@pytest.mark.parametrize("case", ["cnn-last", "residual-fc", "residual-fc-weight", "residual-scaled-output"])
def test_linear_head_closed_form_is_used_only_where_exact_and_matches_autograd(case, tmp_path):
    """A final nn.Linear's closed-form Hessian (no Hessian-vector products) is taken only when the layer's output
    is the model's output (not when the output is scaled after it); either way the scores equal Captum's (its
    autograd Hessian) after its constant."""
    if case.startswith("residual"):
        model, (x, y), x_test, y_test = _residual_case(2.0 if case.endswith("scaled-output") else 1.0)
        layers = {"residual-fc": ["fc"], "residual-fc-weight": ["fc.weight"], "residual-scaled-output": ["fc"]}[case]
    else:
        model, (x, y), x_test, y_test, layers = *_case("cnn")[:4], ["9"]
    influence = Influence(model, (x, y), params=layers, damping=0.01)
    scores = influence(x_test, y_test)
    assert (influence._linear is not None) == (case in ("cnn-last", "residual-fc", "residual-fc-weight"))
    checkpoint = tmp_path / "model.pt"
    torch.save(model.state_dict(), checkpoint)
    captum = NaiveInfluenceFunction(
        model, DataLoader(TensorDataset(x, y), batch_size=N_TRAIN), checkpoint=str(checkpoint),
        loss_fn=nn.CrossEntropyLoss(reduction="none"), layers=[name.split(".")[0] for name in layers],
        projection_dim=None, hessian_reg=N_TRAIN * 0.01, hessian_inverse_tol=1e-12)
    if case == "residual-fc-weight":  # Captum selects whole layers: Koh & Liang's Eq. 2 by plain autograd
        weight = model.fc.weight.detach()

        def loss(w, inputs, labels):
            return nn.functional.cross_entropy(torch.func.functional_call(model, {"fc.weight": w}, (inputs,)), labels)

        def per_sample(inputs, labels):
            return torch.stack([torch.autograd.functional.jacobian(lambda w: loss(w, i[None], l[None]), weight)
                                .flatten() for i, l in zip(inputs, labels)])

        hessian = torch.autograd.functional.hessian(lambda w: loss(w, x, y), weight).reshape(weight.numel(), -1)
        damped = hessian + 0.01 * torch.eye(len(hessian), dtype=hessian.dtype)
        expected = -per_sample(x_test, y_test) @ torch.linalg.solve(damped, per_sample(x, y).T)
    else:
        expected = -N_TRAIN * captum.influence((x_test, y_test))
    assert relative_error(scores, expected) < 1e-6


def test_linear_head_hessian_and_products_equal_autograd_hessian():
    """LinearHead.hessian (closed form) equals the Hessian from autograd Hessian-vector products, and
    hessian_vector_products equals that matrix times the vectors (float64, bias and weight-only)."""
    from veneer.explain.influence import LinearHead
    model, (x, y), _, _ = _residual_case()
    for names in (["fc.weight", "fc.bias"], ["fc.weight"]):
        theta = {n: p.detach() for n, p in model.named_parameters() if n in names}

        def loss(*flat):
            params = dict(zip(names, flat))
            return nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

        blocks = torch.autograd.functional.hessian(loss, tuple(theta.values()))
        expected = torch.cat([torch.cat([blocks[i][j].reshape(theta[a].numel(), theta[b].numel())
                                         for j, b in enumerate(names)], 1) for i, a in enumerate(names)])
        head = LinearHead.find(model, theta, x)
        h, logits = head.features(model, x)
        hessian = head.hessian(h.detach(), logits.softmax(1).detach(), chunk=7)
        assert relative_error(hessian, expected) < 1e-12
        vectors = torch.randn(5, len(expected), generator=generator(2), dtype=torch.float64)
        products = head.hessian_vector_products(h.detach(), logits.softmax(1).detach(), vectors, chunk=7)
        assert relative_error(products, vectors @ expected) < 1e-12


@pytest.mark.parametrize("kind", ["mlp", "cnn", "residual-scaled-output"])
def test_cg_matches_exact(kind):
    """On the closed-form linear head (mlp, cnn) and on the autograd path (an output scaled after the layer)."""
    if kind == "residual-scaled-output":
        (model, train, x_test, y_test), prefix = _residual_case(2.0), "fc"
    else:
        model, train, x_test, y_test, prefix = _case(kind)
    exact = Influence(model, train, params=[prefix])(x_test, y_test)
    cg = Influence(model, train, params=[prefix], method="cg")(x_test, y_test)
    assert _correlation(exact, cg) >= 0.9999


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_lissa_correlates_with_exact_at_its_defaults(kind):
    model, train, x_test, y_test, prefix = _case(kind)
    exact = Influence(model, train, params=[prefix], damping=0.01)(x_test, y_test)
    lissa = Influence(model, train, params=[prefix], damping=0.01, method="lissa")(x_test, y_test)
    assert _correlation(exact, lissa) >= 0.95


def test_lissa_on_minibatches_correlates_with_exact():
    model, train, x_test, y_test, prefix = _case("mlp")
    exact = Influence(model, train, params=[prefix], damping=0.01)(x_test, y_test)
    lissa = Influence(model, train, params=[prefix], damping=0.01, method="lissa", lissa_batch_size=20,
                      depth=500)(x_test, y_test)
    assert _correlation(exact, lissa) >= 0.95


@pytest.mark.parametrize("kind,params,method", [("cnn", ["9"], "exact"), ("mlp", ["2", "4"], "exact"),
                                                ("mlp", ["4"], "cg")])
def test_input_gradient_equals_central_finite_differences(kind, params, method):
    model, train, x_test, y_test, _ = _case(kind)
    # two layers: a non-convex loss, H is indefinite and exact inverts it as it is; cg is run to tight tolerance
    influence = Influence(model, train, params=params, method=method, tol=1e-13, max_iter=500)
    weights = torch.randn(len(x_test), N_TRAIN, generator=generator(5), dtype=torch.float64)
    direction = torch.randn(x_test.shape, generator=generator(6), dtype=torch.float64)
    x = x_test.clone().requires_grad_(True)
    scores = influence(x, y_test, create_graph=True)
    (gradient,) = torch.autograd.grad((scores * weights).sum(), x)
    h = 1e-6
    plus = (influence(x_test + h * direction, y_test) * weights).sum()
    minus = (influence(x_test - h * direction, y_test) * weights).sum()
    numeric = (plus - minus) / (2 * h)
    analytic = (gradient * direction).sum()
    assert analytic.abs() > 1e-8
    assert abs((analytic - numeric) / analytic).item() < 1e-5


def test_top_returns_most_helpful_and_harmful():
    model, train, x_test, y_test, prefix = _case("mlp")
    influence = Influence(model, train, params=[prefix])
    scores = influence(x_test, y_test)
    top = influence.top(x_test, y_test, k=3)
    order = scores.argsort(dim=1)
    assert torch.equal(top.helpful, order[:, :3])
    assert torch.equal(top.harmful, order.flip(1)[:, :3])
    assert (scores.gather(1, top.helpful) < 0).all()  # helpful: upweighting lowers the test loss
    helpful, harmful = top
    assert helpful.shape == harmful.shape == (len(x_test), 3)


def test_cache_follows_the_model_state_and_model_is_unchanged():
    model, train, x_test, y_test, prefix = _case("cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    influence = Influence(model, train, params=[prefix])
    first = influence(x_test, y_test)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    assert torch.equal(influence(x_test, y_test), first)
    with torch.no_grad():
        model[9].weight.mul_(1.5)  # an in-place change of the weights invalidates the cache
    changed = influence(x_test, y_test)
    assert not torch.allclose(changed, first)
    assert torch.allclose(changed, Influence(model, train, params=[prefix])(x_test, y_test))


def test_explainer_conventions():
    model, train, x_test, _, prefix = _case("mlp")
    influence = Influence(model, train, params=[prefix])
    assert influence.name == "influence" and influence.differentiable
    predicted = model(x_test).argmax(1)
    assert torch.equal(influence(x_test), influence(x_test, predicted))  # target None: the predicted class
    assert not influence(x_test).requires_grad
    assert repr(influence).startswith(f"Influence(train_data=<{N_TRAIN} samples>, params=['4'], method='exact'")


def test_bad_inputs_name_the_argument():
    model, train, x_test, y_test, prefix = _case("mlp")
    with pytest.raises(ValueError, match="params: 'nope'"):
        Influence(model, train, params=["nope"])
    with pytest.raises(ValueError, match="method"):
        Influence(model, train, method="newton")
    with pytest.raises(ValueError, match="damping"):
        Influence(model, train, damping=-1.0)
    with pytest.raises(ValueError, match="train_data is empty"):
        Influence(model, (train[0][:0], train[1][:0]))
    with pytest.raises(ValueError, match="train_data: y holds class"):
        Influence(model, (train[0], train[1] + 5), params=[prefix])(x_test, y_test)
    influence = Influence(model, train, params=[prefix])
    with pytest.raises(ValueError, match="x must have shape"):
        influence(x_test[:, :5], y_test)
    with pytest.raises(ValueError, match="target must lie"):
        influence(x_test, y_test + 10)
    with pytest.raises(ValueError, match="k must be at most"):
        influence.top(x_test, y_test, k=N_TRAIN + 1)
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        Influence(model, train)
    with pytest.raises(ValueError, match="training mode"):
        influence(x_test, y_test)
