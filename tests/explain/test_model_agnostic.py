"""LIME and KernelSHAP (veneer.explain.model_agnostic) against the packages' own per-row API and closed forms."""

import itertools
import math

import pytest
import torch
from torch import nn

from veneer.data import LabeledData
from veneer.explain import KernelShap, Lime, make_explainer
from veneer.explain.model_agnostic import lime_samples, shap_samples
from veneer.models.architectures import tabular_mlp

F = 4


def _model(kind: str) -> nn.Module:
    torch.manual_seed(3)
    model = nn.Linear(F, 3) if kind == "linear" else tabular_mlp(F, (8,), 3)
    return model.double().eval()


@pytest.fixture
def background():
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    return torch.randn(60, F, generator=gen, dtype=torch.float64) * scale + 1.0


@pytest.fixture
def rows():
    return torch.randn(5, F, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def exact_shapley(model, x, background, target, output):
    """Shapley values by enumerating every coalition: v(S) = E_b[f(x_S, b_rest)] (Lundberg & Lee 2017, Eq. 9)."""
    def value(mask):
        mixed = torch.where(mask, x[:, None, :], background[None])  # (B, N, F)
        out = model(mixed.reshape(-1, F))
        out = out.softmax(-1) if output == "probability" else out
        return out.view(len(x), len(background), -1).mean(1).gather(1, target[:, None]).squeeze(1)

    phi = torch.zeros_like(x)
    for i in range(F):
        others = [j for j in range(F) if j != i]
        for size in range(F):
            weight = math.factorial(size) * math.factorial(F - size - 1) / math.factorial(F)
            for subset in itertools.combinations(others, size):
                mask = torch.zeros(F, dtype=torch.bool)
                mask[list(subset)] = True
                with_i = mask.clone()
                with_i[i] = True
                phi[:, i] += weight * (value(with_i) - value(mask))
    return phi


def test_kernel_shap_of_a_linear_model_is_w_times_centred_input(background, rows):
    model = _model("linear")
    target = torch.tensor([0, 1, 2, 0, 1])
    attr = KernelShap(model, background, background_size=None, output="logit")(rows, target=target)
    expected = model.weight.detach()[target] * (rows - background.mean(0))
    torch.testing.assert_close(attr, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("output", ["probability", "logit"])
def test_kernel_shap_of_an_mlp_equals_enumerated_shapley_values(background, rows, output):
    model = _model("mlp")
    target = torch.tensor([2, 0, 1, 1, 0])
    bg = background[:12]
    attr = KernelShap(model, bg, background_size=None, output=output)(rows, target=target)
    with torch.no_grad():
        expected = exact_shapley(model, rows, bg, target, output)
    torch.testing.assert_close(attr, expected, rtol=1e-7, atol=1e-9)
    # efficiency: the values add up to f(x) - E[f(b)]
    with torch.no_grad():
        out = model(rows) if output == "logit" else model(rows).softmax(-1)
        base = model(bg) if output == "logit" else model(bg).softmax(-1)
    gap = out.gather(1, target[:, None]).squeeze(1) - base.mean(0)[target]
    torch.testing.assert_close(attr.sum(1), gap, rtol=1e-7, atol=1e-9)


def test_kernel_shap_summarises_a_large_background_with_kmeans(background, rows):
    import shap

    model = _model("linear")
    attr = KernelShap(model, background, background_size=5, output="logit")(rows, target=0)
    summary = shap.kmeans(background.numpy(), 5)
    mean = torch.from_numpy(summary.weights @ summary.data)
    torch.testing.assert_close(attr, model.weight.detach()[0] * (rows - mean), rtol=1e-9, atol=1e-9)


def test_lime_of_a_linear_model_recovers_weight_times_std(background, rows):
    """LIME fits on standardised samples: with a kernel so wide that every sample weighs the same, lime's
    ridge regression (alpha 1 over 4000 samples) returns w_i * std_i of the background."""
    model = _model("linear")
    attr = Lime(model, background, num_samples=4000, kernel_width=1e4, output="logit")(rows, target=1)
    expected = model.weight.detach()[1] * background.std(0, unbiased=False)
    torch.testing.assert_close(attr, expected.expand_as(attr), rtol=2e-3, atol=0)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_lime_equals_the_packages_explain_instance(background, rows, kind):
    """The batched path (lime's sampler for every row, one forward, lime's ridge fit per row) gives what
    ``LimeTabularExplainer.explain_instance`` gives row by row with the same random state."""
    from lime.lime_tabular import LimeTabularExplainer

    model = _model(kind)
    target = torch.tensor([0, 2, 1, 1, 2])
    attr = Lime(model, background, num_samples=300, seed=7)(rows, target=target)
    reference = LimeTabularExplainer(background.numpy(), discretize_continuous=False, feature_selection="none",
                                     random_state=7)

    def predict(z):
        with torch.no_grad():
            return model(torch.from_numpy(z)).softmax(-1).numpy()

    expected = torch.zeros_like(attr)
    for i, (row, label) in enumerate(zip(rows.numpy(), target.tolist())):
        exp = reference.explain_instance(row, predict, labels=(label,), num_features=F, num_samples=300)
        for j, value in exp.local_exp[label]:
            expected[i, j] = value
    torch.testing.assert_close(attr, expected, rtol=1e-10, atol=1e-12)


def test_lime_runs_one_forward_for_all_rows(background, rows):
    calls = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = _model("mlp")

        def forward(self, x):
            calls.append(len(x))
            return self.inner(x)

    Lime(Counting().eval(), background, num_samples=100)(rows, target=0)
    assert calls == [1, len(rows) * 100]  # one row to count the classes, then all samples of all rows


def test_explanations_are_seeded_and_accept_any_background_form(background, rows):
    model = _model("mlp")
    y = torch.zeros(len(background), dtype=torch.long)
    forms = [background, background.numpy(), (background, y),
             LabeledData(background, y, "bg", ["a", "b"], [f"f{i}" for i in range(F)])]
    for method in (Lime, KernelShap):
        options = {"num_samples": 200}
        results = [method(model, form, seed=3, **options)(rows, target=1) for form in forms]
        assert results[0].abs().sum() > 0
        for other in results[1:]:
            torch.testing.assert_close(other, results[0], rtol=0, atol=0)
        again = method(model, background, seed=3, **options)(rows, target=1)
        torch.testing.assert_close(again, results[0], rtol=0, atol=0)
    # LIME samples at random (KernelSHAP enumerates all 2^4 coalitions here, so its seed has no effect)
    lime = {seed: Lime(model, background, seed=seed, num_samples=200)(rows, target=1) for seed in (3, 4)}
    assert not torch.equal(lime[3], lime[4])


def test_model_is_not_changed_and_methods_are_not_differentiable(background, rows):
    model = _model("mlp")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for explainer in (make_explainer("lime", model, background=background, num_samples=50),
                      make_explainer("kernel-shap", model, background=background, num_samples=50)):
        assert explainer.differentiable is False
        assert explainer(rows).shape == rows.shape
        with pytest.raises(ValueError, match="not differentiable"):
            explainer(rows, create_graph=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not model.training


def test_bad_inputs_are_refused(background, rows):
    model = _model("mlp")
    with pytest.raises(ValueError, match="output must be one of"):
        Lime(model, background, output="proba")
    with pytest.raises(ValueError, match="num_samples"):
        KernelShap(model, background, num_samples=0)
    with pytest.raises(ValueError, match="background must have 2 dimensions"):
        Lime(model, background[None])
    with pytest.raises(ValueError, match="at least 2 rows"):
        KernelShap(model, background[:1])
    with pytest.raises(ValueError, match=r"x must be \(B, 4\) rows"):
        Lime(model, background)(torch.randn(2, F + 1, dtype=torch.float64), target=0)
    with pytest.raises(ValueError, match="NaN"):
        Lime(model, background.clone().fill_(float("nan")))


def test_perturbation_samples_are_those_the_explainers_draw(background, rows):
    lime_x = lime_samples(background, rows, num_samples=50, seed=0)
    assert lime_x.shape == (len(rows), 49, F)
    # without discretisation lime samples N(mean, std) of the background, independently of the row
    pooled = lime_x.reshape(-1, F)
    assert torch.allclose(pooled.mean(0), background.mean(0), atol=0.4 * background.std(0).max())
    shap_x = shap_samples(background, rows, num_samples=40, background_size=None, seed=0)
    assert shap_x.shape == (len(rows), 40, F)
    from_row = shap_x == rows[:, None, :]
    kept = from_row.sum(-1)
    assert ((kept >= 1) & (kept <= F - 1)).all()  # never the empty or the full coalition
    # the other features all come from one background row
    matches = (shap_x[:, :, None, :] == background[None, None]) | from_row[:, :, None, :]
    assert matches.all(-1).any(-1).all()
