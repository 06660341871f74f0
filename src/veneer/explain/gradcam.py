"""Grad-CAM (Selvaraju et al. 2017, Eqs. 1-2), upsampled to the input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from veneer.checks import find_module
from veneer.explain.base import Explainer, pick_target
from veneer.models import capture


class GradCAM(Explainer):
    """ReLU(sum_c a_c A^c) with a_c the spatial mean of d f_target / d A^c at ``layer`` (a module name such as
    ``"3"`` or ``"features.28"``), resized to the input with ``interpolate`` (``"bilinear"`` or ``"nearest"``).

    Returns (B, 1, H, W): Grad-CAM has no channel dimension; the result broadcasts against ``x``.
    """

    name = "gradcam"
    accepts_several_inputs = False

    def __init__(self, model, layer: str, interpolate: str = "bilinear", relu: bool = True):
        super().__init__(model)
        find_module(model, layer)
        if interpolate not in ("bilinear", "nearest"):
            raise ValueError(f"interpolate must be 'bilinear' or 'nearest', got {interpolate!r}")
        self.layer, self.interpolate, self.relu = layer, interpolate, relu

    def layer_activation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(activation of ``layer``, model output) from one forward pass."""
        with capture(self.model, [self.layer]) as captured:
            output = self.model(x)
        activation = captured.get(self.layer)
        if activation is None or activation.ndim != 4:
            shape = None if activation is None else tuple(activation.shape)
            raise ValueError(f"layer={self.layer!r} must be called once per forward and output (B, C, h, w); "
                             f"got output shape {shape}")
        return activation, output

    def attribute_with_output(self, x, target, create_graph):
        if x.ndim != 4:
            raise ValueError(f"x must be an image batch (B, C, H, W) for GradCAM, got shape {tuple(x.shape)}")
        with torch.enable_grad():
            activation, output = self.layer_activation(x)
            (grad,) = torch.autograd.grad(pick_target(output, target).sum(), activation, create_graph=create_graph)
        cam = (grad.mean(dim=(2, 3), keepdim=True) * activation).sum(1, keepdim=True)
        if self.relu:
            cam = torch.relu(cam)
        align = False if self.interpolate == "bilinear" else None
        return F.interpolate(cam, size=x.shape[-2:], mode=self.interpolate, align_corners=align), output
