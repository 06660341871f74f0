"""Multi-input models (:class:`veneer.explain.base.Packed`): ``explainer((x1, x2), target, additional_forward_args=)``
returns one attribution per input, baselines per input, as Captum; errors for bad combinations."""

from __future__ import annotations

import warnings

import pytest
import torch
from agreement import AgreementLog, generator
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import NoiseTunnel, Saliency
from torch import nn

from veneer.explain import DeepLift, GradCAM, Gradient, IntegratedGradients, LRP, Occlusion, SmoothGrad

DTYPE = torch.float64
AGREEMENT = AgreementLog(1e-6)


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
    with pytest.raises(ValueError, match="Occlusion takes one input tensor x"):
        Occlusion(model)(x, t)
    with pytest.raises(ValueError, match="GradCAM needs a model that takes one tensor x"):
        GradCAM(model, "conv")(x[0], t, additional_forward_args=(x[1],))
    with pytest.raises(ValueError, match="noise can be given for a single input tensor only"):
        SmoothGrad(model, samples=2)(x, t, noise=torch.zeros(2, 4, 5))
    with pytest.raises(TypeError, match=r"x\[1\] must be a torch.Tensor"):
        Gradient(model)((x[0], "table"), t)
