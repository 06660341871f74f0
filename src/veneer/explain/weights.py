"""Changed weights that explanation checks compare a model's explanations under: relative Gaussian weight noise
(thesis Sec. 4.2) and cascading re-initialisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps",
Sec. 3.1). One home for the audit's ``weight_noise`` / ``parameter_randomization`` tests (which change copies) and
their evasion surrogates (which run the live model with the changed values, :class:`Reparametrized`, so that
gradients reach its parameters)."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["weight_noise_offsets", "parameterized_modules", "randomize_module", "Reparametrized"]


def weight_noise_offsets(model: nn.Module, sigma: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``{parameter name: offset}``: Gaussian noise of standard deviation ``sigma * std(w)`` (``sigma * |w|`` for
    one-element tensors) for every parameter ``w`` of ``model``, drawn from ``generator`` in parameter order;
    the scale is in the graph of ``w`` when ``w`` requires grad."""
    offsets = {}
    for name, p in model.named_parameters():
        scale = p.std() if p.numel() > 1 else p.abs()
        offsets[name] = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) * sigma * scale
    return offsets


def parameterized_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules holding parameters, in registration order (input to output for a chain)."""
    return [(name, m) for name, m in model.named_modules()
            if len(list(m.children())) == 0 and any(True for _ in m.parameters(recurse=False))]


def randomize_module(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise ``module``'s parameters in place: ``reset_parameters`` under a seed drawn from
    ``generator`` (the layer's own initialisation, Adebayo et al. 2018), else a Gaussian of each tensor's std."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            with torch.no_grad():
                for p in module.parameters(recurse=False):
                    p.normal_(0, float(p.std()) if p.numel() > 1 else 1.0)


class Reparametrized(nn.Module):
    """``model`` run with some of its parameters replaced by ``values`` (``{name: tensor}``, e.g. the live
    parameters plus noise, or re-initialised layers) through :func:`torch.func.functional_call`: the forward code
    and activations are the live model's, and gradients reach the live parameters through ``values`` and through
    those not replaced. An explainer bound to it (``explainer.with_model``) explains the changed model."""

    def __init__(self, model: nn.Module, values: dict[str, torch.Tensor]):
        super().__init__()
        object.__setattr__(self, "live", model)  # not a submodule: no second copy of its parameters
        self.values = values
        self.train(model.training)

    def forward(self, *args, **kwargs):
        return functional_call(self.live, self.values, args, kwargs, strict=False)
