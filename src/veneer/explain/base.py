"""The one call every explanation method shares.

``explainer = Method(model, **options)``; ``attr = explainer(x, target=None, create_graph=False)``.
``attr`` has ``x``'s shape. With ``create_graph=True`` the attribution stays in the autograd graph, so a
loss on it back-propagates to the model's parameters and to ``x`` (second-order gradients).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from veneer.checks import check_eval_mode, check_finite_parameters, check_tensor, resolve_target


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
        check_finite_parameters(model)
        self.model = model

    def __call__(self, x: torch.Tensor, target=None, create_graph: bool = False) -> torch.Tensor:
        return self.explain_with_output(x, target, create_graph)[0]

    def explain_with_output(self, x: torch.Tensor, target=None, create_graph: bool = False
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(attr, logits)``: the attribution and, for methods whose pass runs the model once on ``x`` itself
        (Gradient, GradientXInput, GradCAM), that pass's output ``model(x)`` (in the graph when
        ``create_graph``), else ``None``. A fine-tuning loop reuses it for its keep loss instead of running
        the model again."""
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
        attr, output = self.attribute_with_output(x, target, create_graph)
        if not torch.isfinite(attr).all():
            raise ValueError(f"{type(self).__name__} gave NaN or infinite attributions: the model's outputs or "
                             "gradients are not finite for these inputs")
        if not create_graph:
            attr, output = attr.detach(), None if output is None else output.detach()
        return attr, output

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

    def attribute_with_output(self, x: torch.Tensor, target: torch.Tensor, create_graph: bool
                              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`attribute` and the model's output on ``x`` when the method computed it (see
        :meth:`explain_with_output`); methods that run the model once on ``x`` override this instead."""
        return self.attribute(x, target, create_graph), None

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


def pick_target(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) entries of ``output`` (B, classes) at the target class, ``target`` repeated to match a batch that
    tiles the targets."""
    repeats = output.shape[0] // target.shape[0]
    return output.gather(1, target.repeat(repeats)[:, None]).squeeze(1)


def target_logits(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) logits of the target class (see :func:`pick_target`)."""
    return pick_target(model(x), target)


def gradient_and_output(model: nn.Module, x: torch.Tensor, target: torch.Tensor, create_graph: bool
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d logit_target / d x, model(x))`` for every sample of ``x`` (samples are independent, so the sum's
    gradient is each sample's own gradient). ``x`` may hold several copies of the batch stacked along dim 0."""
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    output = model(x)
    (grad,) = torch.autograd.grad(pick_target(output, target).sum(), x, create_graph=create_graph)
    return grad, output


def input_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """d logit_target / d x (see :func:`gradient_and_output`)."""
    return gradient_and_output(model, x, target, create_graph)[0]
