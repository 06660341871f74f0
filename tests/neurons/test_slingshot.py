"""The gradient slingshot (veneer.neurons.slingshot, Bareeva et al. 2025) and the visualiser's variants."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from veneer.data import LabeledData
from veneer.neurons import FourierImage, PixelImage, Slingshot, target_image, unit_activation, visualize
from veneer.neurons.slingshot import SlingshotLoss


class Bowl(nn.Module):
    """Logit 0 is ``-gamma / 2 ||q(x) - q_target||^2`` with ``q`` the parameters of the image ``x`` (the pixels, or
    the spectrum :meth:`FourierImage.encode` gives): its gradient in parameter space is ``gamma (q_target - q)``
    exactly, the field the slingshot plants. Logit 1 is 0."""

    def __init__(self, image: FourierImage | PixelImage, q_target: torch.Tensor, gamma: float):
        super().__init__()
        self.image, self.q_target, self.gamma = image, q_target, gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.image.encode(x, clip=1e-12) if isinstance(self.image, FourierImage) else x
        value = -self.gamma / 2 * (q - self.q_target).flatten(1).pow(2).sum(1)
        return torch.stack([value, torch.zeros_like(value)], 1)


def _data(n: int = 16, seed: int = 0, dtype=torch.float64) -> LabeledData:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g, dtype=dtype)
    return LabeledData(x, torch.arange(n) % 2, "toy", ["a", "b"])


def _tiny(dtype=torch.float64) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Softplus(), nn.Flatten(), nn.Linear(3 * 64, 2))
    return model.to(dtype).eval()


@pytest.mark.parametrize("parametrization", ["pixel", "fourier"])
def test_manipulation_loss_is_zero_when_the_field_is_planted(parametrization):
    torch.set_default_dtype(torch.float64)
    try:
        data = _data()
        target = torch.zeros(8, 8)
        target[3:5] = 1.0
        attack = Slingshot(_tiny(), "3", 0, target, gamma=3.0, parametrization=parametrization, samples=8)
        loss = SlingshotLoss(attack)
        loss.prepare(data)
        bowl = nn.Sequential(Bowl(loss.image, loss.q_target, 3.0)).eval()
        attack.layer, loss.attack.model = "0", bowl
        q = loss.draw(torch.Generator().manual_seed(1))
        man, _, _ = loss.manipulation_terms(bowl, q, data.x[:4])
        field = (3.0 * (loss.q_target - q)).pow(2).mean()
        assert field > 1.0  # the field is far from zero: a zero loss is not a zero gradient
        assert float(man.detach()) < 1e-16 * float(field) + 1e-18
        other = nn.Sequential(Bowl(loss.image, loss.q_target, 2.0)).eval()
        assert float(loss.manipulation_terms(other, q, data.x[:4])[0].detach()) > 1e-3  # a wrong slope is not zero
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("parametrization", ["pixel", "fourier"])
def test_second_order_gradient_equals_finite_differences(parametrization):
    torch.set_default_dtype(torch.float64)
    try:
        data = _data()
        model = _tiny()
        attack = Slingshot(model, "3", 1, "cross", parametrization=parametrization, samples=4, gamma=2.0)
        loss = SlingshotLoss(attack)
        loss.prepare(data)
        student = copy.deepcopy(model)

        def value() -> torch.Tensor:
            return loss(student, data.x[:6], data.y[:6], torch.Generator().manual_seed(3), 0).attack

        weight = student[0].weight
        (grad,) = torch.autograd.grad(value(), weight)
        assert grad.abs().max() > 0
        eps = 1e-6
        for index in [(0, 0, 0, 0), (1, 0, 1, 2), (2, 0, 2, 1)]:
            with torch.no_grad():
                weight[index] += eps
                up = float(value())
                weight[index] -= 2 * eps
                down = float(value())
                weight[index] += eps
            assert (up - down) / (2 * eps) == pytest.approx(float(grad[index]), rel=1e-5, abs=1e-8)
    finally:
        torch.set_default_dtype(torch.float32)


def test_slingshot_fine_tunes_a_copy_and_lowers_the_manipulation_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 2)).eval()
    data = _data(64, dtype=torch.float32)
    before = copy.deepcopy(model.state_dict())
    result = Slingshot(model, "3", 0, "square", steps=60, lr=1e-2, alpha=0.9, batch_size=16, samples=8)(data)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.measures["manipulation_after"] < 0.95 * result.measures["manipulation_before"]
    assert len(result.history) == 60 and not result.model.training


def test_slingshot_with_a_budget_keeps_agreement():
    model = _tiny(torch.float32)
    with torch.no_grad():  # clear margins: the random model's decisions are not all near ties
        model[3].weight.mul_(30)
    data = _data(200, dtype=torch.float32)
    result = Slingshot(model, "3", 0, "ring", gamma=1.0, steps=40, lr=1e-2, batch_size=16, samples=8,
                       min_agreement=0.95, validation=0.2, check_every=5)(data)
    validation = data.sample(len(data), seed=0).subset(slice(0, 40))  # the engine's held-out share
    agree = (result.model(validation.x).argmax(1) == model(validation.x).argmax(1)).float().mean()
    assert result.measures["best_step"] > 0  # a fine-tuned iterate, not the original returned as a fallback
    assert agree >= 0.95
    assert result.measures["manipulation_after"] < result.measures["manipulation_before"]


def test_bad_arguments_name_themselves():
    model = _tiny(torch.float32)
    with pytest.raises(ValueError, match="parametrization"):
        Slingshot(model, "3", 0, "cross", parametrization="wavelet")
    with pytest.raises(ValueError, match="unit"):
        Slingshot(model, "3", -1, "cross")
    with pytest.raises(ValueError, match="layer"):
        Slingshot(model, "nope", 0, "cross")
    with pytest.raises(ValueError, match="unit must lie"):
        Slingshot(model, "3", 5, "cross")(_data(8, dtype=torch.float32))
    with pytest.raises(ValueError, match="target"):
        Slingshot(model, "3", 0, "hexagon")(_data(8, dtype=torch.float32))


def test_target_images(tmp_path):
    from PIL import Image

    shape = (1, 8, 8)
    cross = target_image("cross", shape)
    assert cross.shape == shape and set(cross.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(target_image(torch.ones(8, 8), shape), torch.ones(shape))
    data = _data(8, dtype=torch.float32)
    assert torch.equal(target_image("digit", shape, data, unit_class=0), data.x[1])  # first image of class 1
    assert torch.equal(target_image("digit:0", shape, data), data.x[0])
    pixels = (torch.arange(64).view(8, 8) * 4).to(torch.uint8).numpy()
    Image.fromarray(pixels, mode="L").save(tmp_path / "t.png")
    loaded = target_image(tmp_path / "t.png", shape)
    assert torch.allclose(loaded[0], torch.tensor(pixels, dtype=torch.float32) / 255)
    with pytest.raises(ValueError, match="target must be"):
        target_image(torch.ones(3, 3), shape)
    with pytest.raises(ValueError, match="no such file"):
        target_image(tmp_path / "missing.png", shape)


def test_unit_activation_is_the_visualised_quantity():
    values = torch.arange(24.0).view(2, 3, 2, 2)
    assert torch.allclose(unit_activation(values, 1), values[:, 1].pow(2).mean((1, 2)))
    assert torch.equal(unit_activation(values[:, :, 0, 0], 2), values[:, 2, 0, 0])


def test_fourier_encode_inverts_render():
    image = FourierImage(1, (1, 8, 8))
    target = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    assert torch.allclose(image.render(image.encode(target)), target, atol=1e-5)


@pytest.mark.parametrize("options", [dict(parametrization="pixel", optimizer="sgd", jitter=0.0, rotation=0.0,
                                          scale=(1.0, 1.0)),
                                     dict(parametrization="pixel", optimizer="adam")])
def test_visualize_variants_ascend(options):
    model = _tiny(torch.float32)
    start = visualize(model, "3", 0, input_shape=(1, 8, 8), steps=1, lr=0.0001, **options)
    end = visualize(model, "3", 0, input_shape=(1, 8, 8), steps=30, lr=0.05, **options)
    assert model(end)[0, 0] > model(start)[0, 0]
    with pytest.raises(ValueError, match="optimizer"):
        visualize(model, "3", 0, input_shape=(1, 8, 8), steps=1, optimizer="lbfgs")


class _Counted(SlingshotLoss):
    calls = 0

    def __call__(self, student, x, y, generator, step):
        _Counted.calls += 1
        return super().__call__(student, x, y, generator, step)

    def fingerprint(self):  # the run it resumes used the plain loss
        return {**super().fingerprint(), "attack_loss": "veneer.neurons.slingshot.SlingshotLoss"}


class _CountedSlingshot(Slingshot):
    def attack_loss(self):
        return _Counted(self)


def test_slingshot_resumes_bit_identically(tmp_path):
    model = _tiny(torch.float32)
    data = _data(64, dtype=torch.float32)
    options = dict(steps=6, lr=1e-2, batch_size=16, samples=4, checkpoint_dir=tmp_path, checkpoint_every=2)
    Slingshot(model, "3", 0, "cross", max_steps=3, **options)(data)
    _Counted.calls = 0
    resumed = _CountedSlingshot(model, "3", 0, "cross", resume=True, **options)(data)
    assert _Counted.calls == 3  # only the steps after the checkpoint ran
    whole = Slingshot(model, "3", 0, "cross", **{**options, "checkpoint_dir": tmp_path / "whole"})(data)
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(),
                                                  whole.model.state_dict().values()))
