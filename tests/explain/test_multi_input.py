"""Multi-input models (:class:`veneer.explain.base.Packed`): ``explainer((x1, x2), target, additional_forward_args=)``
returns one attribution per input, baselines per input, as Captum; errors for bad combinations. Occlusion
(windows per input) and GradCAM (the layer's map resized to the image inputs it depends on) keep each input's
shape and are compared with Captum's ``Occlusion`` and ``LayerGradCam`` + ``LayerAttribution.interpolate``."""

from __future__ import annotations

import warnings

import pytest
import torch
from agreement import AgreementLog, check_against_finite_differences, generator
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

from veneer.explain import DeepLift, GradCAM, Gradient, IntegratedGradients, LRP, Occlusion, SmoothGrad

DTYPE = torch.float64
AGREEMENT = AgreementLog(1e-6)


@pytest.fixture(scope="module", autouse=True)
def _print_captum_errors():
    yield
    AGREEMENT.report("Captum")


class TwoInputs(nn.Module):
    """An image branch and a tabular branch, concatenated; ``scale`` and ``shift`` are extra arguments."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu1 = nn.Conv2d(1, 2, 3), nn.ReLU()
        self.fc_tab, self.relu2 = nn.Linear(5, 4), nn.ReLU()
        self.head = nn.Linear(2 * 4 * 4 + 4, 3)

    def forward(self, image, table, scale=1.0, shift=None):
        h = self.relu1(self.conv(image)).flatten(1)
        t = self.relu2(self.fc_tab(table if shift is None else table + shift))
        return self.head(torch.cat([h, t], 1)) * scale


def _case():
    torch.manual_seed(40)
    model = TwoInputs().to(DTYPE).eval()
    image = torch.rand(4, 1, 6, 6, generator=generator(41), dtype=DTYPE)
    table = torch.randn(4, 5, generator=generator(42), dtype=DTYPE)
    return model, (image, table), torch.tensor([0, 2, 1, 2])


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def test_tuple_in_tuple_out_with_extra_arguments_and_per_input_baselines_match_captum():
    model, x, t = _case()
    shift = torch.randn(4, 5, generator=generator(43), dtype=DTYPE)  # one row per sample: tiled along with IG
    extra = (2.0, shift)
    baselines = (torch.full((1, 1, 6, 6), 0.2, dtype=DTYPE), torch.randn(1, 5, generator=generator(44), dtype=DTYPE))
    pairs = [
        (Gradient(model)(x, t, additional_forward_args=extra),
         _quiet(lambda: Saliency(model).attribute(x, target=t, abs=False, additional_forward_args=extra))),
        (IntegratedGradients(model, steps=8, baseline=baselines)(x, t, additional_forward_args=extra),
         _quiet(lambda: CaptumIG(model).attribute(x, baselines=baselines, target=t, n_steps=8,
                                                  method="riemann_right", additional_forward_args=extra))),
        (DeepLift(model, baseline=baselines)(x, t, additional_forward_args=extra),
         _quiet(lambda: CaptumDeepLift(model).attribute(x, baselines=baselines, target=t,
                                                        additional_forward_args=extra))),
    ]
    for ours, reference in pairs:
        assert isinstance(ours, tuple) and len(ours) == 2
        for a, r, xi in zip(ours, reference, x):
            assert a.shape == xi.shape
            AGREEMENT.check("multi-input", a, r)


def test_smoothgrad_and_lrp_on_two_inputs_and_create_graph_reaches_both_inputs():
    model, x, t = _case()
    noise_free = SmoothGrad(model, samples=3, sigma=0.0)(x, t)
    reference = _quiet(lambda: NoiseTunnel(Saliency(model)).attribute(x, target=t, nt_type="smoothgrad",
                                                                        nt_samples=3, stdevs=0.0, abs=False))
    for a, r in zip(noise_free, reference):
        AGREEMENT.check("SmoothGrad sigma=0 multi-input", a, r)
    xs = tuple(xi.clone().requires_grad_(True) for xi in x)
    relevance = LRP(model)(xs, t, create_graph=True)
    grads = torch.autograd.grad(sum((r ** 2).sum() for r in relevance), xs)
    assert all(g.shape == xi.shape and g.abs().sum() > 0 for g, xi in zip(grads, xs))
    assert all(p.grad is None for p in model.parameters())


def test_single_tensor_path_is_unchanged_and_scalar_outputs_are_explained():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1), nn.Flatten(0)).to(DTYPE).eval()
    x = torch.randn(4, 3, generator=generator(45), dtype=DTYPE)
    for explainer in (Gradient(model), LRP(model), DeepLift(model)):
        attr = explainer(x)
        assert isinstance(attr, torch.Tensor) and attr.shape == x.shape
    with pytest.raises(ValueError, match=r"target must lie in \[0, 0\]"):
        Gradient(model)(x, target=1)


def test_multi_input_errors():
    model, x, t = _case()
    with pytest.raises(ValueError, match=r"same batch size; x\[0\] has 4 samples, x\[1\] has 3"):
        Gradient(model)((x[0], x[1][:3]), t)
    with pytest.raises(ValueError, match="baseline has 1 tensors for 2 inputs"):
        DeepLift(model, baseline=(torch.zeros(1, 1, 6, 6, dtype=DTYPE),))(x, t)
    with pytest.raises(ValueError, match="a tuple of baselines needs a tuple of inputs"):
        IntegratedGradients(model.fc_tab, baseline=(torch.zeros(1),))(x[1], t)
    with pytest.raises(ValueError, match="noise can be given for a single input tensor only"):
        SmoothGrad(model, samples=2)(x, t, noise=torch.zeros(2, 4, 5))
    with pytest.raises(TypeError, match=r"x\[1\] must be a torch.Tensor"):
        Gradient(model)((x[0], "table"), t)


# ---------------------------------------------------------------- Occlusion and GradCAM on several inputs


class TwoImages(nn.Module):
    """Two conv branches on images of different sizes and channels, summed, then a shared convolution."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.conv_b = nn.Conv2d(1, 3, 3), nn.Conv2d(2, 3, 5)
        self.conv_c, self.head = nn.Conv2d(3, 2, 3, padding=1), nn.Linear(2 * 6 * 6, 3)

    def forward(self, a, b, scale=1.0):
        h = torch.relu(self.conv_a(a)) + torch.relu(self.conv_b(b))
        return self.head(torch.relu(self.conv_c(h)).flatten(1)) * scale


def _two_images():
    torch.manual_seed(46)
    model = TwoImages().to(DTYPE).eval()
    x = (torch.rand(4, 1, 8, 8, generator=generator(47), dtype=DTYPE),
         torch.rand(4, 2, 10, 10, generator=generator(48), dtype=DTYPE))
    return model, x, torch.tensor([1, 0, 2, 1])


# Captum 0.9 divides the summed drops by the window counts in float32 (``single_attrib.float() / weight``,
# feature_ablation.py), hence ~5e-8 relative error in float64
OCCLUSION_RTOL = 1e-6


def _check_occlusion(ours, reference, x, name):
    assert isinstance(ours, tuple) and len(ours) == len(x)
    for a, r, xi in zip(ours, reference, x):
        assert a.shape == xi.shape
        AGREEMENT.check(name, a, r, rtol=OCCLUSION_RTOL)


@pytest.mark.parametrize("batch_size", [7, 256])  # 7: one window of the batch of 4 per pass
def test_occlusion_of_an_image_and_a_vector_with_per_input_windows_and_baselines_matches_captum(batch_size):
    model, x, t = _case()
    shift = torch.randn(4, 5, generator=generator(49), dtype=DTYPE)  # one row per sample: tiled with the windows
    extra = (2.0, shift)
    baselines = (torch.rand(1, 1, 6, 6, generator=generator(50), dtype=DTYPE), 0.3)
    ours = Occlusion(model, window=((2, 3), (2,)), stride=((2, 1), 1), baseline=baselines,
                     batch_size=batch_size)(x, t, additional_forward_args=extra)
    reference = _quiet(lambda: CaptumOcclusion(model).attribute(
        x, sliding_window_shapes=((1, 2, 3), (2,)), strides=((1, 2, 1), 1), baselines=baselines, target=t,
        additional_forward_args=extra))
    _check_occlusion(ours, reference, x, "Occlusion[image + vector]")


def test_occlusion_of_two_images_with_one_window_or_one_per_input_matches_captum():
    model, x, t = _two_images()
    occlusion = Occlusion(model, window=(3, 3), stride=2, baseline=-0.2)
    ours = occlusion(x, t, additional_forward_args=2.0)
    assert occlusion.last_incremental is False  # several inputs: whole occluded inputs, as documented
    reference = _quiet(lambda: CaptumOcclusion(model).attribute(
        x, sliding_window_shapes=((1, 3, 3), (2, 3, 3)), strides=((1, 2, 2), (1, 2, 2)), baselines=(-0.2, -0.2),
        target=t, additional_forward_args=2.0))
    _check_occlusion(ours, reference, x, "Occlusion[two images]")
    # (c, h, w) windows on the second image occlude one channel at a time
    ours = Occlusion(model, window=((4, 4), (1, 3, 3)), stride=((4, 4), (1, 3, 2)))(x, t)
    reference = _quiet(lambda: CaptumOcclusion(model).attribute(
        x, sliding_window_shapes=((1, 4, 4), (1, 3, 3)), strides=((1, 4, 4), (1, 3, 2)), target=t))
    _check_occlusion(ours, reference, x, "Occlusion[two images]")


class Score(nn.Module):
    """One image and a (B,) score: explained for that score, through the (B,) output path."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2 * 4 * 4, 1)

    def forward(self, x, scale=1.0):
        return self.fc(torch.relu(self.conv(x)).flatten(1)).squeeze(1) * scale


def test_occlusion_and_gradcam_with_extra_arguments_or_a_scalar_output_on_one_input_match_captum():
    model, x, t = _two_images()
    ours = Occlusion(model, window=2, stride=2)(x[0], t, additional_forward_args=(x[1], 0.5))
    reference = _quiet(lambda: CaptumOcclusion(model).attribute(x[0], sliding_window_shapes=(1, 2, 2), strides=2,
                                                                target=t, additional_forward_args=(x[1], 0.5)))
    assert isinstance(ours, torch.Tensor)
    AGREEMENT.check("Occlusion[extra args]", ours, reference, rtol=OCCLUSION_RTOL)
    torch.manual_seed(51)
    score = Score().to(DTYPE).eval()
    image = x[0][:, :, :6, :6]
    ours = Occlusion(score, window=2, stride=1)(image, additional_forward_args=3.0)
    reference = _quiet(lambda: CaptumOcclusion(score).attribute(image, sliding_window_shapes=(1, 2, 2),
                                                                additional_forward_args=3.0))
    AGREEMENT.check("Occlusion[scalar output]", ours, reference, rtol=OCCLUSION_RTOL)
    ours = GradCAM(score, "conv", relu=False)(image)
    raw = _quiet(lambda: LayerGradCam(score, score.conv).attribute(image))
    AGREEMENT.check("GradCAM[scalar output]", ours, LayerAttribution.interpolate(raw, (6, 6), "bilinear"))


def _captum_gradcam(model, layer, x, t, extra, mode, relu):
    raw = _quiet(lambda: LayerGradCam(model, dict(model.named_modules())[layer]).attribute(
        x, target=t, additional_forward_args=extra, relu_attributions=relu))
    return [LayerAttribution.interpolate(raw, tuple(xi.shape[-2:]), interpolate_mode=mode) for xi in x]


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("layer, sees", [("conv_a", (0,)), ("conv_b", (1,)), ("conv_c", (0, 1))])
def test_gradcam_on_two_images_maps_the_layer_to_the_inputs_it_depends_on(layer, sees, mode, relu):
    model, x, t = _two_images()
    ours = GradCAM(model, layer, interpolate=mode, relu=relu)(x, t, additional_forward_args=(2.0,))
    reference = _captum_gradcam(model, layer, x, t, (2.0,), mode, relu)
    assert isinstance(ours, tuple) and len(ours) == 2
    for i, (a, r, xi) in enumerate(zip(ours, reference, x)):
        if i in sees:
            assert a.shape == (4, 1, *xi.shape[-2:])
            AGREEMENT.check(f"GradCAM[{mode}] two images", a, r)
        else:  # the layer does not see this input: no map for it
            assert a is None


def test_gradcam_on_an_image_and_a_vector_matches_captum_and_is_differentiable():
    model, x, t = _case()
    shift = torch.randn(4, 5, generator=generator(52), dtype=DTYPE)
    extra = (2.0, shift)
    ours = GradCAM(model, "conv")(x, t, additional_forward_args=extra)
    assert ours[1] is None
    AGREEMENT.check("GradCAM image + vector", ours[0], _captum_gradcam(model, "conv", x, t, extra, "bilinear", True)[0])
    # create_graph: the same map, in the graph; d loss / d parameters and d loss / d image equal central differences
    image = x[0].clone().requires_grad_(True)
    explainer = GradCAM(model, "conv")
    w = torch.randn(4, 1, 6, 6, generator=generator(53), dtype=DTYPE)

    def loss() -> float:
        return (explainer((image.detach(), x[1]), t, additional_forward_args=extra)[0] * w).sum().item()

    maps = explainer((image, x[1]), t, create_graph=True, additional_forward_args=extra)
    assert maps[0].grad_fn is not None and maps[1] is None
    torch.testing.assert_close(maps[0].detach(), ours[0], rtol=1e-12, atol=1e-15)
    tensors = [model.conv.weight, model.head.weight, image]
    grads = torch.autograd.grad((maps[0] * w).sum(), tensors)
    for name, tensor, grad in zip(["conv.weight", "head.weight", "image"], tensors, grads):
        check_against_finite_differences(f"GradCAM multi-input d/d {name}", grad, tensor, loss, seed=55, count=4)
    assert all(p.grad is None for p in model.parameters())


class FromVector(nn.Module):
    """A convolution on a map computed from the vector input only."""

    def __init__(self):
        super().__init__()
        self.up, self.conv, self.head = nn.Linear(5, 16), nn.Conv2d(1, 2, 3), nn.Linear(8 + 1, 3)

    def forward(self, image, table):
        maps = self.conv(self.up(table).view(-1, 1, 4, 4))
        return self.head(torch.cat([maps.flatten(1), image.mean((1, 2, 3))[:, None]], 1))


def test_occlusion_and_gradcam_multi_input_errors():
    model, x, t = _case()
    with pytest.raises(ValueError, match="window has 3 entries for 2 inputs"):
        Occlusion(model, window=((2, 2), (2,), (1,)))(x, t)
    with pytest.raises(ValueError, match="stride has 1 entries for 2 inputs"):
        Occlusion(model, window=((2, 2), (2,)), stride=((1, 1),))(x, t)
    with pytest.raises(ValueError, match="baseline has 1 entries for 2 inputs"):
        Occlusion(model, window=((2, 2), (2,)), baseline=(0.0,))(x, t)
    with pytest.raises(ValueError, match=r"window=\(2, 2\) is one shape for inputs with different numbers of dims "
                                         r"\(\(4, 1, 6, 6\), \(4, 5\)\); give one per input"):
        Occlusion(model, window=(2, 2))(x, t)
    with pytest.raises(ValueError, match=r"window\[1\] \(2, 2\) has 2 dims but x\[1\] has 1 per sample"):
        Occlusion(model, window=((2, 2), (2, 2)))(x, t)
    with pytest.raises(ValueError, match=r"window\[1\] \(6,\) is larger than x\[1\]'s last dims \(5,\)"):
        Occlusion(model, window=((2, 2), 6))(x, t)
    with pytest.raises(ValueError, match=r"stride\[0\] \(1, 1, 1\) must have one entry per dim of the window"):
        Occlusion(model, window=((2, 2), 2), stride=((1, 1, 1), 1))(x, t)
    with pytest.raises(ValueError, match=r"baseline\[0\] of shape \(2, 6, 6\) does not broadcast to x\[0\]'s shape"):
        Occlusion(model, window=((2, 2), 2), baseline=(torch.zeros(2, 6, 6, dtype=DTYPE), 0.0))(x, t)
    with pytest.raises(ValueError, match=r"baseline\[1\] must be a finite number or a tensor, got 'zero'"):
        Occlusion(model, baseline=(0.0, "zero"))
    with pytest.raises(ValueError, match=r"window\[1\] must be a positive int or a tuple of positive ints"):
        Occlusion(model, window=((2, 2), (0,)))
    with pytest.raises(ValueError, match="target must lie in"):
        Occlusion(model, window=((2, 2), 2))(x, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"layer='fc_tab' must be called once per forward and output \(B, C, h, w\)"):
        GradCAM(model, "fc_tab")(x, t)
    torch.manual_seed(54)
    with pytest.raises(ValueError, match=r"layer='conv' depends on no image input \(B, C, H, W\) of x"):
        GradCAM(FromVector().to(DTYPE).eval(), "conv")(x, t)
