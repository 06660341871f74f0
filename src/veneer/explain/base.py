"""The one call every explanation method shares.

``explainer = Method(model, **options)``; ``attr = explainer(x, target=None, create_graph=False)``.
``attr`` has ``x``'s shape. With ``create_graph=True`` the attribution stays in the autograd graph, so a
loss on it back-propagates to the model's parameters and to ``x`` (second-order gradients).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from veneer.checks import check_eval_mode, check_tensor, resolve_target


class Explainer:
    """Base class. Subclasses implement :meth:`attribute` on checked inputs and resolved (B,) targets.

    ``differentiable`` says whether ``create_graph=True`` is meaningful for the method (attacks and
    manipulations need it); ``name`` is the short name used by the CLI and in reports.
    """

    name = "explainer"
    differentiable = True

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model

    def __call__(self, x: torch.Tensor, target=None, create_graph: bool = False) -> torch.Tensor:
        check_tensor("x", x, ndim=(2, 3, 4, 5))
        check_eval_mode(self.model)
        if create_graph and not self.differentiable:
            raise ValueError(f"{type(self).__name__} is not differentiable: create_graph=True is not supported")
        if target is None:
            with torch.no_grad():
                logits = self.model(x)
        else:  # only the number of classes is needed to check the target
            logits = torch.empty(x.shape[0], self._num_classes(x), device=x.device)
        target = resolve_target(target, logits)
        attr = self.attribute(x, target, create_graph)
        return attr if create_graph else attr.detach()

    def _num_classes(self, x: torch.Tensor) -> int:
        """Output width of the model, from one forward pass of one sample, remembered per input shape."""
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        if getattr(self, "_classes_for", None) != key:
            with torch.no_grad():
                self._classes = self.model(x[:1]).shape[-1]
            self._classes_for = key
        return self._classes

    def attribute(self, x: torch.Tensor, target: torch.Tensor, create_graph: bool) -> torch.Tensor:
        raise NotImplementedError

    def with_model(self, model: nn.Module) -> "Explainer":
        """The same method with the same options, bound to another model (e.g. a Softplus surrogate)."""
        clone = copy.copy(self)
        clone.model, clone._classes_for = model, None
        return clone

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "model" and not k.startswith("_"))
        return f"{type(self).__name__}({options})"


def check_explainer(explainer: object, model: nn.Module, differentiable: bool = False) -> None:
    """Refuse an explainer that is not bound to ``model`` (or not differentiable when ``differentiable``)."""
    if not isinstance(explainer, Explainer):
        raise TypeError(f"explainer must be a veneer.explain.Explainer, got {type(explainer).__name__}")
    if explainer.model is not model:
        raise ValueError("explainer was built for another model: build it on this model, e.g. Gradient(model), "
                         "or pass explainer.with_model(model)")
    if differentiable and not explainer.differentiable:
        raise ValueError(f"explainer {type(explainer).__name__} is not differentiable: this back-propagates "
                         "through the explanation (create_graph=True); use Gradient, GradientXInput, "
                         "IntegratedGradients, SmoothGrad, GradCAM, LRP or DeepLift")


def target_logits(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) logits of the target class, ``target`` repeated to match a batch that tiles the targets."""
    out = model(x)
    repeats = out.shape[0] // target.shape[0]
    return out.gather(1, target.repeat(repeats)[:, None]).squeeze(1)


def input_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """d logit_target / d x for every sample of ``x`` (samples are independent, so the sum's gradient is
    each sample's own gradient). ``x`` may hold several copies of the batch stacked along dim 0."""
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    score = target_logits(model, x, target).sum()
    (grad,) = torch.autograd.grad(score, x, create_graph=create_graph)
    return grad
