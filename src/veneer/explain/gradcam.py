"""Grad-CAM (Selvaraju et al. 2017, Eqs. 1-2), upsampled to the input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from veneer.checks import find_module, resolve_target
from veneer.explain.base import Explainer, Packed, pick_target
from veneer.models import capture


class GradCAM(Explainer):
    """ReLU(sum_c a_c A^c) with a_c the spatial mean of d f_target / d A^c at ``layer`` (a module name such as
    ``"3"`` or ``"features.28"``), resized to the input with ``interpolate`` (``"bilinear"`` or ``"nearest"``).

    Returns (B, 1, H, W): Grad-CAM has no channel dimension; the result broadcasts against ``x``.

    Multi-input models (``explainer((x1, x2), target, additional_forward_args=...)``, as Captum's
    ``LayerGradCam`` followed by ``LayerAttribution.interpolate``): the layer's map is computed once and the
    result is a tuple with one entry per input: the map resized to that input for each (B, C, H, W) input the
    layer's activation depends on (followed through autograd), ``None`` for the others. The map's positions
    are the layer's, which correspond to an input's positions only through the branch that computes the
    layer from it; an input the layer does not see, or one without (H, W), has no Grad-CAM map. A layer that
    depends on no image input is refused. Calls with ``additional_forward_args`` or on a model returning a
    (B,) score take this path too (one input: its map, not a tuple). Differentiable (``create_graph``) as
    for one input.
    """

    name = "gradcam"

    def __init__(self, model, layer: str, interpolate: str = "bilinear", relu: bool = True):
        super().__init__(model)
        find_module(model, layer)
        if interpolate not in ("bilinear", "nearest"):
            raise ValueError(f"interpolate must be 'bilinear' or 'nearest', got {interpolate!r}")
        self.layer, self.interpolate, self.relu = layer, interpolate, relu

    def layer_activation(self, forward, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(activation of ``layer``, output) from one pass ``forward(inputs)`` of the model."""
        with capture(self.model, [self.layer]) as captured:
            output = forward(inputs)
        activation = captured.get(self.layer)
        if activation is None or activation.ndim != 4:
            shape = None if activation is None else tuple(activation.shape)
            raise ValueError(f"layer={self.layer!r} must be called once per forward and output (B, C, h, w); "
                             f"got output shape {shape}")
        return activation, output

    def layer_map(self, activation, output, target, create_graph) -> torch.Tensor:
        """(B, 1, h, w): Eqs. 1-2 at the layer, ReLU'd when ``relu``."""
        (grad,) = torch.autograd.grad(pick_target(output, target).sum(), activation, create_graph=create_graph)
        cam = (grad.mean(dim=(2, 3), keepdim=True) * activation).sum(1, keepdim=True)
        return torch.relu(cam) if self.relu else cam

    def resize(self, cam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        align = False if self.interpolate == "bilinear" else None
        return F.interpolate(cam, size=x.shape[-2:], mode=self.interpolate, align_corners=align)

    def attribute_with_output(self, x, target, create_graph):
        if x.ndim != 4:
            raise ValueError(f"x must be an image batch (B, C, H, W) for GradCAM, got shape {tuple(x.shape)}")
        with torch.enable_grad():
            activation, output = self.layer_activation(lambda inputs: self.model(*inputs), (x,))
            cam = self.layer_map(activation, output, target, create_graph)
        return self.resize(cam, x), output

    def _call_adapted(self, inputs, extra, target, create_graph, multi):
        """Several inputs, extra forward arguments or a (B,) output: the model run through :meth:`Packed.run`,
        the map resized to each image input the layer depends on (see the class docstring)."""
        model = Packed(self.model, inputs, extra)
        # image inputs that do not require gradients get a leaf that does, to find what the layer depends on
        inputs = tuple(x.detach().requires_grad_() if x.ndim == 4 and not x.requires_grad else x for x in inputs)
        images = [i for i, x in enumerate(inputs) if x.ndim == 4]
        with torch.enable_grad():
            activation, output = self.layer_activation(model.run, inputs)
            reached = torch.autograd.grad(activation, [inputs[i] for i in images], torch.ones_like(activation),
                                          retain_graph=True, allow_unused=True) \
                if images and activation.requires_grad else [None] * len(images)
            seen = {i for i, grad in zip(images, reached) if grad is not None}
            if not seen:
                shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
                raise ValueError(f"layer={self.layer!r} depends on no image input (B, C, H, W) of x (shapes {shapes}): "
                                 "GradCAM has no input to map it to")
            cam = self.layer_map(activation, output, resolve_target(target, output.detach()), create_graph)
        maps = tuple(self.resize(cam, x) if i in seen else None for i, x in enumerate(inputs))
        for m in maps:
            if m is not None:
                self.check_finite(m)
        if not create_graph:
            maps = tuple(None if m is None else m.detach() for m in maps)
        return maps if multi else maps[0]
