"""Tests of the explanation methods in :mod:`veneer.explain`.

1. Agreement with Captum (relative error = max |ours - captum| / max |captum| <= 1e-5) on the small CNN,
   the MLP and the tiny VGG, with a different target per sample.
2. Second-order gradients: d loss(attr) / d parameter and d loss(attr) / d x against central finite
   differences, on Softplus and on ReLU models.
3. ``create_graph`` semantics.
4. :func:`heatmap` on hand-computed tensors.
5. Argument checking: every error names the offending argument.

Run with ``-s`` to see the largest relative error against Captum per method.
"""

from __future__ import annotations

import math

import pytest
import torch
from agreement import AgreementLog, perturbed_losses, relative_error
from agreement import generator as _gen
from captum.attr import InputXGradient, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from captum.attr import Occlusion as CaptumOcclusion

from veneer.explain.gradcam import GradCAM
from veneer.explain.gradient import Gradient, GradientXInput, IntegratedGradients, SmoothGrad
from veneer.explain.heatmap import heatmap
from veneer.explain.occlusion import Occlusion
from veneer.models.activations import with_softplus

# Captum warns that it had to set requires_grad on the inputs itself: expected, not a problem
pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients:UserWarning")

CAPTUM_RTOL = 1e-5
AGREEMENT = AgreementLog(CAPTUM_RTOL)


@pytest.fixture(scope="module", autouse=True)
def _print_captum_errors():
    yield
    AGREEMENT.report("Captum")


# ====================================================================== 1. agreement with Captum


def test_gradient_matches_captum_saliency(any_case):
    model, x, t = any_case
    ours = Gradient(model)(x, t)
    reference = Saliency(model).attribute(x, target=t, abs=False)
    AGREEMENT.check("Gradient", ours, reference)


def test_gradient_x_input_matches_captum(any_case):
    model, x, t = any_case
    ours = GradientXInput(model)(x, t)
    reference = InputXGradient(model).attribute(x, target=t)
    AGREEMENT.check("GradientXInput", ours, reference)


def _ig_baselines(kind: str, x: torch.Tensor):
    """(veneer's baseline argument, the equivalent full-size tensor for Captum)."""
    if kind == "zero":
        return "zero", torch.zeros_like(x)
    if kind == "tensor":  # one non-zero baseline per sample
        b = torch.rand(x.shape, generator=_gen(20), dtype=x.dtype) - 0.3
        return b, b
    if kind == "broadcast":  # a single baseline broadcast over the batch
        b = torch.randn((1, *x.shape[1:]), generator=_gen(21), dtype=x.dtype) * 0.3
        return b, b.expand_as(x).clone()
    assert kind == "mean"
    dims = tuple(range(2, x.ndim)) if x.ndim > 2 else (1,)
    return "mean", x.mean(dim=dims, keepdim=True).expand_as(x).clone()


@pytest.mark.parametrize("chunk_size", [None, 3, 10])
@pytest.mark.parametrize("baseline", ["zero", "tensor", "broadcast", "mean"])
@pytest.mark.parametrize("method", ["riemann_right", "gausslegendre"])
def test_integrated_gradients_matches_captum(model_case, method, baseline, chunk_size):
    model, x, t = model_case
    steps = 8  # batch * steps = 32 > chunk_size
    ours_baseline, captum_baseline = _ig_baselines(baseline, x)
    ours = IntegratedGradients(model, steps=steps, baseline=ours_baseline, method=method,
                               chunk_size=chunk_size)(x, t)
    reference = CaptumIntegratedGradients(model).attribute(x, baselines=captum_baseline, target=t, n_steps=steps,
                                                           method=method)
    AGREEMENT.check(f"IntegratedGradients[{method}]", ours, reference)


def test_integrated_gradients_matches_captum_on_vgg(vgg_case):
    model, x, t = vgg_case
    b = torch.rand(x.shape, generator=_gen(22), dtype=x.dtype)
    ours = IntegratedGradients(model, steps=5, baseline=b, method="gausslegendre", chunk_size=8)(x, t)
    reference = CaptumIntegratedGradients(model).attribute(x, baselines=b, target=t, n_steps=5,
                                                           method="gausslegendre")
    AGREEMENT.check("IntegratedGradients[gausslegendre]", ours, reference)


@pytest.mark.parametrize("chunk_size", [None, 4])
@pytest.mark.parametrize("samples", [1, 5])
def test_smoothgrad_matches_captum_noise_tunnel(any_case, samples, chunk_size):
    model, x, t = any_case
    stdev, seed, batch = 0.2, 1234, len(x)
    # Captum's NoiseTunnel (one partition) draws torch.normal(0, stdev) of shape (B * n, ...) from the global
    # RNG and adds it to x.repeat_interleave(n, 0): row b * n + s is sample s of image b.
    torch.manual_seed(seed)
    flat = torch.normal(0, torch.tensor(stdev).repeat((batch * samples, *x.shape[1:])))
    torch.manual_seed(seed)
    reference = NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=samples, stdevs=stdev,
                                                       target=t, abs=False)
    noise = flat.view(batch, samples, *x.shape[1:]).transpose(0, 1)  # (samples, B, ...)
    ours = SmoothGrad(model, samples=samples, chunk_size=chunk_size)(x, t, noise=noise)
    AGREEMENT.check("SmoothGrad", ours, reference)
    # the noise really matters: without it the result is the plain gradient, which differs
    assert relative_error(Gradient(model)(x, t), reference.to(x.dtype)) > 1e-3


GRADCAM_LAYERS = [("cnn", "3"), ("cnn", "4"), ("cnn", "5"), ("vgg", "13"), ("vgg", "18")]


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("case_name, layer", GRADCAM_LAYERS)
def test_gradcam_matches_captum(request, case_name, layer, mode, relu):
    model, x, t = request.getfixturevalue(f"{case_name}_case")
    ours = GradCAM(model, layer=layer, interpolate=mode, relu=relu)(x, t)
    module = dict(model.named_modules())[layer]
    raw = LayerGradCam(model, module).attribute(x, target=t, relu_attributions=relu)
    reference = LayerAttribution.interpolate(raw, tuple(x.shape[-2:]), interpolate_mode=mode)
    assert ours.shape == (len(x), 1, *x.shape[-2:])
    AGREEMENT.check(f"GradCAM[{mode}]", ours, reference)


# windows whose stride divides (image - window): every pixel is covered by a full window
OCCLUSION_TILING = [
    ("cnn", 4, 4, 0.0, 2048),
    ("cnn", 4, 2, 0.0, 2048),
    ("cnn", 7, 3, 0.5, 2048),
    ("cnn", (3, 6), (1, 2), 0.0, 7),  # batch_size < B: one window per pass
    ("vgg", 4, 4, 0.0, 2048),
    ("vgg", 8, 4, -0.25, 50),
    ("vgg", 5, 3, 0.0, 2048),
]


def _captum_occlusion(model, x, t, window, stride, baseline):
    wh, ww = (window, window) if isinstance(window, int) else window
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    return CaptumOcclusion(model).attribute(x, sliding_window_shapes=(x.shape[1], wh, ww), strides=(1, sh, sw),
                                            baselines=baseline, target=t)


@pytest.mark.parametrize("case_name, window, stride, baseline, batch_size", OCCLUSION_TILING)
def test_occlusion_matches_captum(request, case_name, window, stride, baseline, batch_size):
    model, x, t = request.getfixturevalue(f"{case_name}_case")
    ours = Occlusion(model, window=window, stride=stride, baseline=baseline, batch_size=batch_size)(x, t)
    reference = _captum_occlusion(model, x, t, window, stride, baseline)
    AGREEMENT.check("Occlusion", ours, reference)


@pytest.mark.parametrize("case_name, window, stride", [("cnn", 5, 4), ("cnn", 6, 5), ("vgg", 6, 4)])
def test_occlusion_matches_captum_when_stride_does_not_tile_the_image(request, case_name, window, stride):
    """Captum slides ceil((H - h) / s) + 1 windows, the last one clipped at the border, so every pixel is
    covered; the bottom/right border must not be left with a zero attribution."""
    model, x, t = request.getfixturevalue(f"{case_name}_case")
    ours = Occlusion(model, window=window, stride=stride)(x, t)
    reference = _captum_occlusion(model, x, t, window, stride, 0.0)
    AGREEMENT.check("Occlusion[partial windows]", ours, reference)


def test_occlusion_matches_captum_on_rows_and_channel_windows(mlp_case, vgg_case):
    """Windows over the last dims: an int over a (B, F) row's features; (c, h, w) occludes c channels at a
    time (whole images: the incremental path takes (h, w) windows only), with a tensor baseline."""
    model, x, t = mlp_case
    ours = Occlusion(model, window=3, stride=2, baseline=0.5)(x, t)
    reference = CaptumOcclusion(model).attribute(x, sliding_window_shapes=(3,), strides=2, baselines=0.5, target=t)
    AGREEMENT.check("Occlusion[rows]", ours, reference)
    model, x, t = vgg_case
    baseline = torch.rand(1, *x.shape[1:], generator=_gen(23), dtype=x.dtype)
    occlusion = Occlusion(model, window=(2, 8, 8), stride=(1, 6, 6), baseline=baseline)
    ours = occlusion(x, t)
    reference = CaptumOcclusion(model).attribute(x, sliding_window_shapes=(2, 8, 8), strides=(1, 6, 6),
                                                 baselines=baseline, target=t)
    assert not occlusion.last_incremental
    AGREEMENT.check("Occlusion[channel windows]", ours, reference)


def test_incremental_occlusion_with_a_tensor_baseline_equals_whole_images(cnn_case):
    model, x, t = cnn_case
    baseline = torch.rand(1, *x.shape[1:], generator=_gen(24), dtype=x.dtype)
    full = Occlusion(model, window=5, stride=4, baseline=baseline, incremental=False)(x, t)
    fast = Occlusion(model, window=5, stride=4, baseline=baseline, batch_size=16)
    assert relative_error(fast(x, t), full) < 1e-12 and fast.last_incremental
    AGREEMENT.check("Occlusion[tensor baseline]", full, _captum_occlusion(model, x, t, 5, 4, baseline))


def _residual_block():
    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.Linear(2 * 12 * 12, 3)

        def forward(self, x):
            return self.head((x + self.conv(x).relu()).flatten(1))

    return Residual()


# chains with every kind of local layer the incremental path propagates a region through, and two that it
# cannot use (a 'same'-padded convolution part way, a residual connection): all must equal full occlusion
INCREMENTAL_MODELS = {
    "strided-dilated-grouped": lambda: torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2), torch.nn.BatchNorm2d(4).eval(),
        torch.nn.LeakyReLU(0.1, inplace=True), torch.nn.Conv2d(4, 4, (3, 2), groups=2, padding=(1, 0)),
        torch.nn.AvgPool2d(2), torch.nn.Softplus(5), torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 2, 3)),
    "pool-first": lambda: torch.nn.Sequential(
        torch.nn.MaxPool2d(2, stride=1), torch.nn.Conv2d(2, 3, 5), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.MaxPool2d(3, stride=2, dilation=2), torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 2, 3)),
    "same-padding": lambda: torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Conv2d(3, 3, 3, padding="same"),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 3)),
    "residual": _residual_block,
}


@pytest.mark.parametrize("window, stride", [(3, 1), ((2, 5), (3, 2)), (9, 4)])
@pytest.mark.parametrize("name", sorted(INCREMENTAL_MODELS))
def test_incremental_occlusion_equals_full_occlusion(name, window, stride):
    torch.manual_seed(0)
    model = INCREMENTAL_MODELS[name]().double().eval()
    for module in model.modules():  # non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2)
    x = torch.rand(3, 2, 12, 12, generator=_gen(1), dtype=torch.float64)
    t = torch.tensor([0, 2, 1])
    full = Occlusion(model, window=window, stride=stride, baseline=0.3, incremental=False)(x, t)
    for batch_size in (7, 2048):
        fast = Occlusion(model, window=window, stride=stride, baseline=0.3, batch_size=batch_size)(x, t)
        assert relative_error(fast, full) < 1e-12
    assert full.abs().max() > 0


def test_incremental_occlusion_evaluates_only_the_changed_region(cnn_case):
    """The first 3x3 convolution of the small CNN computes only the (window + 2)^2 outputs a 4x4 window changes,
    from (window + 4)^2 input crops, not from whole images."""
    model, x, t = cnn_case
    first_conv = model[0].weight
    shapes = []

    class RecordFirstConv(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.nn.functional.conv2d and args[1] is first_conv:
                shapes.append(tuple(args[0].shape))
            return func(*args, **(kwargs or {}))

    with RecordFirstConv():
        Occlusion(model, window=4, stride=4)(x, t)
    whole = [s for s in shapes if s[-2:] == x.shape[-2:]]
    assert whole and all(s[0] <= len(x) for s in whole)  # only the clean pass(es) see whole images
    assert {s[-2:] for s in shapes if s not in whole} == {(8, 8)}


def _explainer(name: str, model):
    factories = {
        "gradient": lambda: Gradient(model),
        "gradient_x_input": lambda: GradientXInput(model),
        "ig_riemann_right": lambda: IntegratedGradients(model, steps=4, method="riemann_right"),
        "ig_gausslegendre": lambda: IntegratedGradients(model, steps=4, method="gausslegendre"),
        "smoothgrad": lambda: SmoothGrad(model, samples=4, sigma=0.1, seed=3),
        "gradcam": lambda: GradCAM(model, layer="3"),
        "occlusion": lambda: Occlusion(model, window=7, stride=7),
    }
    return factories[name]()


VECTOR_METHODS = ["gradient", "gradient_x_input", "ig_riemann_right", "ig_gausslegendre", "smoothgrad"]
IMAGE_METHODS = ["gradcam", "occlusion"]
ALL_CASES = [(m, "cnn") for m in VECTOR_METHODS + IMAGE_METHODS] + [(m, "mlp") for m in VECTOR_METHODS]


@pytest.mark.parametrize("name, case_name", ALL_CASES)
def test_target_none_is_the_predicted_class(request, name, case_name):
    model, x, _ = request.getfixturevalue(f"{case_name}_case")
    explainer = _explainer(name, model)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    torch.testing.assert_close(explainer(x), explainer(x, predicted), rtol=0, atol=0)
    torch.testing.assert_close(explainer(x, target=None), explainer(x, predicted), rtol=0, atol=0)


@pytest.mark.parametrize("name, case_name", ALL_CASES)
def test_int_target_is_the_same_class_for_every_sample(request, name, case_name):
    model, x, _ = request.getfixturevalue(f"{case_name}_case")
    explainer = _explainer(name, model)
    torch.testing.assert_close(explainer(x, 2), explainer(x, torch.full((len(x),), 2)), rtol=0, atol=0)
    torch.testing.assert_close(explainer(x, torch.tensor(2)), explainer(x, torch.full((len(x),), 2)),
                               rtol=0, atol=0)


def test_per_sample_targets_are_independent(cnn_case):
    """Explaining a batch equals explaining each sample on its own (no mixing across the batch)."""
    model, x, t = cnn_case
    for name in VECTOR_METHODS[:4] + IMAGE_METHODS:
        explainer = _explainer(name, model)
        batched = explainer(x, t)
        single = torch.cat([explainer(x[i:i + 1], t[i:i + 1]) for i in range(len(x))])
        torch.testing.assert_close(batched, single, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("chunk_size", [4, 8, 12])
def test_chunk_size_bounds_forward_batch(small_cnn, cnn_inputs, cnn_targets, chunk_size):
    """IntegratedGradients / SmoothGrad put at most ``chunk_size`` samples through the model at once
    (when ``chunk_size`` is at least the batch size) and the result does not depend on it."""
    sizes: list[int] = []
    handle = small_cnn.register_forward_pre_hook(lambda _m, inputs: sizes.append(inputs[0].shape[0]))
    try:
        for make in (lambda c: IntegratedGradients(small_cnn, steps=6, chunk_size=c),
                     lambda c: SmoothGrad(small_cnn, samples=6, seed=0, chunk_size=c)):
            whole = make(None)(cnn_inputs, cnn_targets)
            sizes.clear()
            chunked = make(chunk_size)(cnn_inputs, cnn_targets)
            attribution_passes = sizes[1:]  # the first forward pass resolves the number of classes
            assert attribution_passes and max(attribution_passes) <= chunk_size
            assert sum(attribution_passes) == 6 * len(cnn_inputs)
            torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-14)
    finally:
        handle.remove()


def test_smoothgrad_noise_seed_and_scale(small_cnn, cnn_inputs, cnn_targets):
    x = cnn_inputs * torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64).view(-1, 1, 1, 1)
    seeded = SmoothGrad(small_cnn, samples=200, sigma=0.1, seed=7)
    noise = seeded.draw_noise(x)
    assert noise.shape == (200, *x.shape) and noise.dtype == x.dtype
    torch.testing.assert_close(noise, seeded.draw_noise(x), rtol=0, atol=0)  # same seed, same noise
    value_range = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    std = noise.transpose(0, 1).flatten(1).std(1)
    torch.testing.assert_close(std, 0.1 * value_range, rtol=0.01, atol=0)
    # a fixed seed gives the same attribution on every call; the global RNG is not consumed
    state = torch.get_rng_state()
    a = SmoothGrad(small_cnn, samples=3, seed=11)(x, cnn_targets)
    assert torch.equal(state, torch.get_rng_state())
    torch.testing.assert_close(a, SmoothGrad(small_cnn, samples=3, seed=11)(x, cnn_targets), rtol=0, atol=0)
    # seed=None follows the global RNG
    unseeded = SmoothGrad(small_cnn, samples=3)
    torch.manual_seed(5)
    b1 = unseeded(x, cnn_targets)
    torch.manual_seed(5)
    torch.testing.assert_close(unseeded(x, cnn_targets), b1, rtol=0, atol=0)
    # sigma = 0 is the plain gradient
    torch.testing.assert_close(SmoothGrad(small_cnn, samples=2, sigma=0.0)(x, cnn_targets),
                               Gradient(small_cnn)(x, cnn_targets), rtol=1e-12, atol=1e-15)


def test_with_model_rebinds_the_same_options(small_cnn, cnn_inputs, cnn_targets):
    smooth = with_softplus(small_cnn, beta=5)
    ig = IntegratedGradients(small_cnn, steps=5, method="gausslegendre")
    rebound = ig.with_model(smooth)
    assert rebound.model is smooth and ig.model is small_cnn
    assert (rebound.steps, rebound.method) == (5, "gausslegendre")
    expected = IntegratedGradients(smooth, steps=5, method="gausslegendre")(cnn_inputs, cnn_targets)
    torch.testing.assert_close(rebound(cnn_inputs, cnn_targets), expected, rtol=0, atol=0)


# ====================================================================== 2. second order


FD_STEP = 1e-6
FD_RTOL = 1e-4


def finite_differences(loss, tensor: torch.Tensor, index: int, h: float = FD_STEP) -> tuple[float, bool]:
    """Central difference (loss(t + h e_i) - loss(t - h e_i)) / 2h, perturbing ``tensor`` in place and restoring
    it, and whether the point looks like a kink (the one-sided differences disagree: with ReLU, the
    attribution is only piecewise smooth and an entry can lie within h of an activation-pattern change)."""
    up, down = perturbed_losses(loss, tensor, index, h)
    mid = loss()
    forward, backward = (up - mid) / h, (mid - down) / h
    kink = abs(forward - backward) > 1e-2 * (abs(forward) + abs(backward)) + 1e-3
    return (up - down) / (2 * h), kink


def candidate_entries(grad: torch.Tensor, seed: int, largest: int = 2) -> list[int]:
    """Indices of the ``largest`` entries of |grad|, then all others in a seeded random order."""
    flat = grad.reshape(-1).abs()
    chosen = flat.topk(min(largest, flat.numel())).indices.tolist()
    rest = [i for i in torch.randperm(flat.numel(), generator=_gen(seed)).tolist() if i not in chosen]
    return chosen + rest


def check_against_finite_differences(name: str, analytic: torch.Tensor, tensor: torch.Tensor, loss, seed: int,
                                     expect_zero: bool, global_scale: float, smooth: bool,
                                     entries: int = 5) -> None:
    """Compare ``entries`` entries of ``analytic`` (the 2 largest and random ones) with central differences.

    For a piecewise smooth loss (``smooth=False``, ReLU models) entries at a kink are replaced by others."""
    picked, numeric, kinks = [], [], 0
    for i in candidate_entries(analytic, seed):
        if len(picked) == entries or kinks > 2 * entries:
            break
        value, kink = finite_differences(loss, tensor, i)
        if kink:
            kinks += 1
            continue
        picked.append(analytic.reshape(-1)[i].item())
        numeric.append(value)
    assert picked, f"{name}: every finite difference hit a kink"
    if smooth:
        assert kinks == 0, f"{name}: {kinks} finite difference(s) not smooth on a smooth model"
    picked, numeric = torch.tensor(picked), torch.tensor(numeric)
    if expect_zero:
        assert torch.all(analytic == 0), f"{name}: gradient should be exactly zero, max {analytic.abs().max():.3g}"
        assert numeric.abs().max() <= 1e-7 * global_scale, f"{name}: finite differences {numeric.tolist()}"
        return
    assert analytic.abs().max() > 1e-6 * global_scale, f"{name}: gradient is (near) zero but should not be"
    scale = max(picked.abs().max().item(), numeric.abs().max().item())
    err = (picked - numeric).abs().max().item() / scale
    assert err < FD_RTOL, f"{name}: autograd {picked.tolist()} vs finite differences {numeric.tolist()} ({err:.3g})"


# parameter names of the final layer and of the linear layers after GradCAM's layer "3" in the CNN
FINAL_BIAS = {"cnn": "9.bias", "mlp": "4.bias"}


def expected_zero_parameters(method: str, case_name: str, activation: str, model) -> set[str]:
    """Parameters whose true gradient is exactly zero.

    The logit's bias never affects d logit / d (anything). With ReLU the input gradient (and the gradient
    at a layer) is piecewise constant in every bias, so all biases the gradient depends on only through the
    activation pattern have zero gradient. GradCAM at conv layer "3" also depends on the biases before it
    through the activation A.
    """
    zero = {FINAL_BIAS[case_name]}
    if activation == "relu":
        biases = {n for n, _ in model.named_parameters() if n.endswith("bias")}
        zero |= {"7.bias", "9.bias"} if method == "gradcam" else biases
    return zero


SECOND_ORDER_CASES = [(m, c) for c in ("cnn", "mlp") for m in VECTOR_METHODS] + [("gradcam", "cnn")]


@pytest.mark.parametrize("activation", ["softplus", "relu"])
@pytest.mark.parametrize("method, case_name", SECOND_ORDER_CASES)
def test_parameter_gradient_of_attribution_matches_finite_differences(request, method, case_name, activation):
    model, x, t = request.getfixturevalue(f"{case_name}_case")
    if activation == "softplus":
        model = with_softplus(model, beta=5)
    x, t = x[:2], t[:2]
    explainer = _explainer(method, model)
    attr = explainer(x, t, create_graph=True)
    w = torch.randn(attr.shape, generator=_gen(99), dtype=attr.dtype)
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad((attr * w).sum(), params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    global_scale = max(g.abs().max().item() for g in grads)
    assert global_scale > 0

    def loss() -> float:
        return (explainer(x, t) * w).sum().item()

    zero = expected_zero_parameters(method, case_name, activation, model)
    for k, (name, p, g) in enumerate(zip(names, params, grads)):
        check_against_finite_differences(f"{method}/{activation}/{name}", g, p, loss, seed=k,
                                         expect_zero=name in zero, global_scale=global_scale,
                                         smooth=activation == "softplus")


INPUT_GRADIENT_CASES = [(m, c) for c in ("cnn", "mlp") for m in VECTOR_METHODS] + [("gradcam", "cnn")]


@pytest.mark.parametrize("method, case_name", INPUT_GRADIENT_CASES)
def test_input_gradient_of_attribution_matches_finite_differences(request, method, case_name):
    model, x, t = request.getfixturevalue(f"{case_name}_case")
    model = with_softplus(model, beta=5)
    x, t = x[:2].clone(), t[:2]
    explainer = _explainer(method, model)
    kwargs = {}
    if method == "smoothgrad":  # the drawn noise scales with x's range: fix it so the loss is smooth in x
        kwargs["noise"] = explainer.draw_noise(x)
    w = torch.randn(explainer(x, t, **kwargs).shape, generator=_gen(98), dtype=x.dtype)
    x_var = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((explainer(x_var, t, create_graph=True, **kwargs) * w).sum(), x_var)

    def loss() -> float:
        return (explainer(x, t, **kwargs) * w).sum().item()

    check_against_finite_differences(f"{method}/x", grad, x, loss, seed=5, expect_zero=False,
                                     global_scale=grad.abs().max().item(), smooth=True, entries=8)


# ====================================================================== 3. create_graph


DIFFERENTIABLE = VECTOR_METHODS + ["gradcam"]


@pytest.mark.parametrize("name", DIFFERENTIABLE + ["occlusion"])
def test_create_graph_false_gives_a_detached_result(cnn_case, name):
    model, x, t = cnn_case
    attr = _explainer(name, model)(x, t)
    assert attr.grad_fn is None and not attr.requires_grad
    assert attr.shape == ((len(x), 1, *x.shape[2:]) if name == "gradcam" else x.shape)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_create_graph_false_is_detached_even_when_x_requires_grad(cnn_case, name):
    """Otherwise a loss on the attribution back-propagates through only part of the computation
    (e.g. the ``x`` factor of gradient x input) and silently gives a wrong gradient."""
    model, x, t = cnn_case
    attr = _explainer(name, model)(x.clone().requires_grad_(True), t)
    assert attr.grad_fn is None and not attr.requires_grad


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_create_graph_true_has_the_same_value(cnn_case, name):
    model, x, t = cnn_case
    explainer = _explainer(name, model)
    plain = explainer(x, t)
    graph = explainer(x, t, create_graph=True)
    assert graph.grad_fn is not None
    torch.testing.assert_close(graph.detach(), plain, rtol=1e-12, atol=1e-15)


def test_occlusion_refuses_create_graph(cnn_case):
    model, x, t = cnn_case
    assert Occlusion.differentiable is False
    with pytest.raises(ValueError, match="create_graph"):
        Occlusion(model, window=7, stride=7)(x, t, create_graph=True)


def test_explaining_does_not_touch_parameter_gradients(cnn_case):
    model, x, t = cnn_case
    for name in DIFFERENTIABLE + ["occlusion"]:
        _explainer(name, model)(x, t)
    assert all(p.grad is None for p in model.parameters())


# ====================================================================== 4. heatmap


@pytest.fixture
def known_attr():
    """(1, 2, 2, 2): channel 0 = [[1, -2], [3, 0]], channel 1 = [[-1, -2], [1, 4]]."""
    return torch.tensor([[[[1.0, -2.0], [3.0, 0.0]], [[-1.0, -2.0], [1.0, 4.0]]]], dtype=torch.float64)


REDUCED = {
    "sum": [[0.0, -4.0], [4.0, 4.0]],
    "abs_sum": [[2.0, 4.0], [4.0, 4.0]],
    "l2": [[math.sqrt(2), math.sqrt(8)], [math.sqrt(10), 4.0]],
}


@pytest.mark.parametrize("reduce", ["sum", "abs_sum", "l2"])
def test_heatmap_reductions(known_attr, reduce):
    h = heatmap(known_attr, reduce=reduce)
    assert h.shape == (1, 2, 2)
    torch.testing.assert_close(h, torch.tensor([REDUCED[reduce]], dtype=torch.float64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduce", ["sum", "abs_sum", "l2"])
@pytest.mark.parametrize("normalize", ["sum", "abs_sum", "max"])
def test_heatmap_normalizations(known_attr, reduce, normalize):
    h = torch.tensor(REDUCED[reduce], dtype=torch.float64)
    denominator = {"sum": h.sum(), "abs_sum": h.abs().sum(), "max": h.abs().max()}[normalize]
    out = heatmap(known_attr, reduce=reduce, normalize=normalize)
    torch.testing.assert_close(out, (h / denominator)[None], rtol=1e-12, atol=1e-12)


def test_heatmap_normalization_by_hand(known_attr):
    # sum reduction [[0, -4], [4, 4]]: sum 4, absolute sum 12, max |.| 4
    expect = torch.tensor([[[0.0, -1.0], [1.0, 1.0]]], dtype=torch.float64)
    torch.testing.assert_close(heatmap(known_attr, "sum", "sum"), expect)
    torch.testing.assert_close(heatmap(known_attr, "sum", "max"), expect)
    torch.testing.assert_close(heatmap(known_attr, "sum", "abs_sum"), expect / 3)
    assert heatmap(known_attr, "abs_sum", "sum").sum().item() == pytest.approx(1.0)


def test_heatmap_normalizes_each_map_separately(known_attr):
    batch = torch.cat([known_attr, 10 * known_attr, -known_attr])
    out = heatmap(batch, reduce="abs_sum", normalize="abs_sum")
    assert out.shape == (3, 2, 2)
    for i in range(3):
        torch.testing.assert_close(out[i], out[0])
        assert out[i].abs().sum().item() == pytest.approx(1.0)


def test_heatmap_zero_map_stays_finite():
    zero = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    for reduce in ("sum", "abs_sum", "l2"):
        for normalize in (None, "sum", "abs_sum", "max"):
            out = heatmap(zero, reduce=reduce, normalize=normalize)
            assert out.shape == (2, 4, 4) and torch.isfinite(out).all()


@pytest.mark.parametrize("reduce", ["sum", "abs_sum", "l2"])
def test_heatmap_three_dim_input_is_a_single_channel(known_attr, reduce):
    """A (B, H, W) attribution is reduced like the same attribution with one channel, (B, 1, H, W)."""
    single = known_attr[:, 0]
    torch.testing.assert_close(heatmap(single, reduce=reduce), heatmap(single[:, None], reduce=reduce),
                               rtol=1e-12, atol=1e-6)


def test_heatmap_accepts_gradcam_shape_and_is_differentiable():
    attr = torch.randn(2, 1, 3, 4, generator=_gen(3), dtype=torch.float64) + 3.0
    assert heatmap(attr).shape == (2, 3, 4)
    for reduce in ("sum", "abs_sum", "l2"):
        for normalize in (None, "sum", "abs_sum", "max"):
            assert torch.autograd.gradcheck(lambda a: heatmap(a, reduce, normalize), (attr.requires_grad_(True),))


def test_heatmap_bad_options(known_attr):
    with pytest.raises(ValueError, match="reduce"):
        heatmap(known_attr, reduce="max")
    with pytest.raises(ValueError, match="normalize"):
        heatmap(known_attr, normalize="l1")
    with pytest.raises(ValueError, match="attr"):
        heatmap(known_attr[0, 0])  # 2-D
    with pytest.raises(ValueError, match="attr"):
        heatmap(known_attr[None])  # 5-D
    with pytest.raises(TypeError, match="attr"):
        heatmap(known_attr.long())
    with pytest.raises(TypeError, match="attr"):
        heatmap(known_attr.numpy())


# ====================================================================== 5. bad input


@pytest.mark.parametrize("name", DIFFERENTIABLE + ["occlusion"])
def test_bad_x(cnn_case, name):
    model, x, t = cnn_case
    explainer = _explainer(name, model)
    with pytest.raises(ValueError, match="^x "):
        explainer(torch.rand(12, dtype=torch.float64))
    with pytest.raises(TypeError, match="^x "):
        explainer((x * 255).to(torch.uint8), t)
    with pytest.raises(TypeError, match="^x "):
        explainer(x.long(), t)
    bad = x.clone()
    bad[1, 0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="^x "):
        explainer(bad, t)
    bad[1, 0, 3, 4] = float("inf")
    with pytest.raises(ValueError, match="^x "):
        explainer(bad, t)
    with pytest.raises(TypeError, match="^x "):
        explainer(x.numpy(), t)


@pytest.mark.parametrize("name", DIFFERENTIABLE + ["occlusion"])
def test_bad_target(cnn_case, name):
    model, x, t = cnn_case
    explainer = _explainer(name, model)
    for out_of_range in (torch.tensor([0, 1, 10, 2]), torch.tensor([0, -1, 2, 3]), 10, -1):
        with pytest.raises(ValueError, match="^target"):
            explainer(x, out_of_range)
    for wrong_shape in (t[:3], t[:, None], torch.cat([t, t])):
        with pytest.raises(ValueError, match="^target"):
            explainer(x, wrong_shape)
    for wrong_type in (t.double(), t.bool(), 1.0, True, [0, 1, 2, 3]):
        with pytest.raises(TypeError, match="^target"):
            explainer(x, wrong_type)


@pytest.mark.parametrize("name", DIFFERENTIABLE + ["occlusion"])
def test_model_in_training_mode_is_refused(cnn_case, name):
    model, x, t = cnn_case
    explainer = _explainer(name, model)
    model.train()
    with pytest.raises(ValueError, match="model"):
        explainer(x, t)


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="model"):
        Gradient(lambda x: x)


def test_gradcam_bad_arguments(small_cnn, small_mlp, cnn_inputs, mlp_inputs):
    with pytest.raises(ValueError, match="layer"):
        GradCAM(small_cnn, layer="features.99")
    with pytest.raises(ValueError, match="layer"):
        GradCAM(small_cnn, layer="")
    with pytest.raises(ValueError, match="interpolate"):
        GradCAM(small_cnn, layer="3", interpolate="bicubic")
    with pytest.raises(ValueError, match="layer"):  # a layer whose output is not (B, C, h, w)
        GradCAM(small_cnn, layer="7")(cnn_inputs)
    with pytest.raises(ValueError, match="^x "):
        GradCAM(small_mlp, layer="0")(mlp_inputs)


def test_integrated_gradients_bad_arguments(small_cnn, cnn_inputs):
    with pytest.raises(ValueError, match="method"):
        IntegratedGradients(small_cnn, method="simpson")
    with pytest.raises(ValueError, match="steps"):
        IntegratedGradients(small_cnn, steps=0)
    with pytest.raises(TypeError, match="steps"):
        IntegratedGradients(small_cnn, steps=2.5)
    with pytest.raises(ValueError, match="chunk_size"):
        IntegratedGradients(small_cnn, chunk_size=0)
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradients(small_cnn, baseline="blur")
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradients(small_cnn, baseline=torch.full((1, 1, 28, 28), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradients(small_cnn, baseline=torch.zeros(1, 1, 27, 28, dtype=torch.float64))(cnn_inputs)
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradients(small_cnn, baseline=torch.zeros(3, 1, 28, 28, dtype=torch.float64))(cnn_inputs)


def test_smoothgrad_bad_arguments(small_cnn, cnn_inputs, cnn_targets):
    with pytest.raises(ValueError, match="samples"):
        SmoothGrad(small_cnn, samples=0)
    with pytest.raises(ValueError, match="sigma"):
        SmoothGrad(small_cnn, sigma=-0.1)
    with pytest.raises(ValueError, match="chunk_size"):
        SmoothGrad(small_cnn, chunk_size=0)
    explainer = SmoothGrad(small_cnn, samples=3)
    for shape in ((3, *cnn_inputs.shape[1:]), (2, *cnn_inputs.shape), (3, 2, *cnn_inputs.shape[1:]),
                  tuple(cnn_inputs.shape)):
        with pytest.raises(ValueError, match="noise"):
            explainer(cnn_inputs, cnn_targets, noise=torch.zeros(shape, dtype=torch.float64))
    # the bad noise of one call does not leak into the next
    assert torch.isfinite(explainer(cnn_inputs, cnn_targets)).all()


def test_occlusion_bad_arguments(small_cnn, cnn_inputs, small_mlp, mlp_inputs):
    with pytest.raises(ValueError, match="window"):
        Occlusion(small_cnn, window=29)(cnn_inputs)
    with pytest.raises(ValueError, match="window"):
        Occlusion(small_cnn, window=(3, 30))(cnn_inputs)
    with pytest.raises(ValueError, match="window"):
        Occlusion(small_cnn, window=0)
    with pytest.raises(ValueError, match=r"window \(3, 3, 3\) is larger than x's last dims \(1, 28, 28\)"):
        Occlusion(small_cnn, window=(3, 3, 3))(cnn_inputs)  # (c, h, w): 3 of the 1 channels
    with pytest.raises(ValueError, match=r"window \(1, 1, 3, 3\) has 4 dims but x has 3 per sample"):
        Occlusion(small_cnn, window=(1, 1, 3, 3))(cnn_inputs)
    with pytest.raises(ValueError, match=r"stride \(1, 2, 2\) must have one entry per dim of the window \(5, 5\)"):
        Occlusion(small_cnn, stride=(1, 2, 2))(cnn_inputs)
    with pytest.raises(ValueError, match="baseline must be a finite number or a tensor"):
        Occlusion(small_cnn, baseline=float("nan"))
    with pytest.raises(ValueError, match=r"baseline of shape \(2, 28, 28\) does not broadcast to x's shape"):
        Occlusion(small_cnn, baseline=torch.zeros(2, 28, 28, dtype=torch.float64))(cnn_inputs)
    with pytest.raises(ValueError, match="stride"):
        Occlusion(small_cnn, stride=0)
    with pytest.raises(ValueError, match="batch_size"):
        Occlusion(small_cnn, batch_size=0)
    with pytest.raises(ValueError, match=r"window \(5, 5\) has 2 dims but x has 1 per sample"):
        Occlusion(small_mlp)(mlp_inputs)  # the default window is for images: tabular rows need e.g. window=3
    # a window as large as the image is allowed: a single occlusion of everything
    full = Occlusion(small_cnn, window=28)(cnn_inputs)
    with torch.no_grad():
        out = small_cnn(cnn_inputs)
        drop = out - small_cnn(torch.zeros_like(cnn_inputs))
    predicted = out.argmax(1)
    expected = drop.gather(1, predicted[:, None]).view(-1, 1, 1, 1).expand_as(cnn_inputs)
    torch.testing.assert_close(full, expected, rtol=1e-12, atol=1e-12)
