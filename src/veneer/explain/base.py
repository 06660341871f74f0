"""The one call every explanation method shares.

``explainer = Method(model, **options)``; ``attr = explainer(x, target=None, create_graph=False)``.
``attr`` has ``x``'s shape. With ``create_graph=True`` the attribution stays in the autograd graph, so a
loss on it back-propagates to the model's parameters and to ``x`` (second-order gradients).

Multi-input models, as Captum takes them: ``explainer((x1, x2), target=...)`` calls ``model(x1, x2)`` and
returns a tuple of attributions, one per input; ``additional_forward_args=a`` (a value or a tuple) is passed
after the inputs and not attributed; baselines may be tuples with one tensor per input. A model returning
a (B,) score is explained for that score (``target`` None or 0). These cases explain :class:`Packed`, the
model with its inputs flattened into one (B, N) tensor, so every method applies unchanged (SmoothGrad's noise
scale is then each sample's value range over all inputs). Occlusion and GradCAM need each input's own shape:
they override :meth:`Explainer._call_adapted` and run the model through :meth:`Packed.run`.
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

    def __call__(self, x, target=None, create_graph: bool = False, additional_forward_args=None):
        """Attributions of ``x`` for ``target``; see the module docstring for multi-input models."""
        return self.explain_with_output(x, target, create_graph, additional_forward_args)[0]

    def explain_with_output(self, x, target=None, create_graph: bool = False, additional_forward_args=None):
        """``(attr, logits)``: the attribution and, for methods whose pass runs the model once on ``x`` itself
        (Gradient, GradientXInput, GradCAM), that pass's output ``model(x)`` (in the graph when
        ``create_graph``), else ``None`` (always for several inputs or extra forward arguments). A fine-tuning
        loop reuses it for its keep loss instead of running the model again."""
        multi = isinstance(x, (tuple, list))
        inputs = _check_inputs(x, multi)
        extra = _as_tuple(additional_forward_args)
        check_eval_mode(self.model)
        if create_graph and not self.differentiable:
            raise ValueError(f"{type(self).__name__} is not differentiable: create_graph=True is not supported")
        if multi or extra or self._output_shape(inputs[0]) == ():
            return self._call_adapted(inputs, extra, target, create_graph, multi), None
        if target is None:
            with torch.no_grad():
                logits = self.model(x)
        else:  # only the number of classes is needed to check the target
            logits = torch.empty(x.shape[0], self._output_shape(x)[-1], device=x.device)
        target = resolve_target(target, logits)
        attr, output = self.attribute_with_output(x, target, create_graph)
        self.check_finite(attr)
        if not create_graph:
            attr, output = attr.detach(), None if output is None else output.detach()
        return attr, output

    def _output_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """The model's output shape per sample, from one forward pass of one sample, remembered per input shape."""
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        if getattr(self, "_classes_for", None) != key:
            with torch.no_grad():
                self._shape = tuple(self.model(x[:1]).shape[1:])
            self._classes_for = key
        return self._shape

    def check_finite(self, attr: torch.Tensor) -> None:
        """Refuse NaN or infinite attributions (the model's outputs or gradients were not finite)."""
        if not torch.isfinite(attr).all():
            raise ValueError(f"{type(self).__name__} gave NaN or infinite attributions: the model's outputs or "
                             "gradients are not finite for these inputs")

    def _call_adapted(self, inputs, extra, target, create_graph, multi):
        """Several inputs, extra forward arguments or a (B,) output: explain :class:`Packed` (the inputs
        flattened into one (B, N) tensor) with the same method and options, and split the result (a tuple
        with one attribution per input when ``multi``, else the one input's)."""
        packed_model = Packed(self.model, inputs, extra)
        packed = packed_model.pack(inputs)
        clone = self.with_model(packed_model)
        clone._classes_for, clone._shape = (tuple(packed.shape[1:]), packed.dtype, packed.device), \
            packed_model.output_shape
        for name, value in self.packed_options(inputs).items():
            setattr(clone, name, packed_model.pack(value))
        attr = clone(packed, target, create_graph)
        parts = packed_model.unpack(attr)
        return parts if multi else parts[0]

    def packed_options(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, tuple[torch.Tensor, ...]]:
        """Options holding one tensor per input (baselines), as a tuple per option name, for :class:`Packed`."""
        return {}

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


def _as_tuple(args) -> tuple:
    if args is None:
        return ()
    return tuple(args) if isinstance(args, (tuple, list)) else (args,)


def _check_inputs(x, multi: bool) -> tuple[torch.Tensor, ...]:
    if not multi:
        return (check_tensor("x", x, ndim=(2, 3, 4, 5)),)
    if len(x) == 0:
        raise ValueError("x must be a tensor or a non-empty tuple of tensors, got an empty tuple")
    for i, xi in enumerate(x):
        check_tensor(f"x[{i}]", xi, ndim=(1, 2, 3, 4, 5))
        if xi.shape[0] != x[0].shape[0]:
            raise ValueError(f"every input must have the same batch size; x[0] has {x[0].shape[0]} samples, "
                             f"x[{i}] has {xi.shape[0]}")
    return tuple(x)


class Packed(nn.Module):
    """``model`` taking its inputs packed into one (B, N) tensor: ``Packed(model, inputs, extra)(pack(inputs))``
    is ``model(*inputs, *extra)``, and a (B,) output becomes (B, 1). Tensor ``extra`` arguments are buffers
    (so ``torch.fx`` sees them as constants), other values plain attributes."""

    def __init__(self, model: nn.Module, inputs: tuple[torch.Tensor, ...], extra: tuple = ()):
        super().__init__()
        self.model = model
        self.shapes = [tuple(x.shape[1:]) for x in inputs]
        self.sizes = [max(1, int(torch.Size(shape).numel())) for shape in self.shapes]
        self.count, batch = len(extra), inputs[0].shape[0]
        # tensor arguments with one row per sample are tiled along with the inputs (IG, SmoothGrad stack copies)
        self.tiled = [isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == batch for v in extra]
        for i, value in enumerate(extra):
            if isinstance(value, torch.Tensor):
                self.register_buffer(f"extra{i}", value, persistent=False)
            else:
                setattr(self, f"extra{i}", value)
        with torch.no_grad():
            out = model(*inputs, *extra)
        self.scalar = out.ndim == 1
        self.output_shape = (1,) if self.scalar else tuple(out.shape[1:])
        self.training = model.training

    def pack(self, tensors) -> torch.Tensor:
        """(B, N): each tensor (B, ...) broadcast to its input's shape and flattened, concatenated."""
        batch = max(t.shape[0] if t.ndim == len(s) + 1 else 1 for t, s in zip(tensors, self.shapes))
        return torch.cat([torch.broadcast_to(t, (batch, *s) if t.ndim == len(s) + 1 else s).reshape(batch, -1)
                          for t, s in zip(tensors, self.shapes)], dim=1)

    def unpack(self, packed: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = packed.split(self.sizes, dim=1)
        return tuple(p.reshape(p.shape[0], *s) for p, s in zip(parts, self.shapes))

    def forward(self, packed):
        parts = packed.split(self.sizes, dim=1)
        return self.run([parts[i].reshape(packed.shape[0], *self.shapes[i]) for i in range(len(self.shapes))])

    def run(self, inputs) -> torch.Tensor:
        """``model(*inputs, *extra)`` on unpacked inputs whose batch is a multiple of the original one (tensor
        extra arguments with one row per sample are tiled to match), a (B,) output as (B, 1)."""
        batch = inputs[0].shape[0]
        extra = [getattr(self, f"extra{i}") for i in range(self.count)]
        extra = [e.repeat(batch // e.shape[0], *[1] * (e.ndim - 1)) if tiled else e
                 for e, tiled in zip(extra, self.tiled)]
        out = self.model(*inputs, *extra)
        return out[:, None] if self.scalar else out


def check_baseline(baseline) -> None:
    """A baseline option: a string (checked by the method), a tensor, or a tuple with one tensor per input."""
    if isinstance(baseline, tuple):
        if not baseline:
            raise ValueError("baseline must not be an empty tuple")
        for i, b in enumerate(baseline):
            check_tensor(f"baseline[{i}]", b)
    elif not isinstance(baseline, str):
        check_tensor("baseline", baseline)


def per_input_baselines(baseline, inputs: tuple[torch.Tensor, ...], baseline_for) -> tuple[torch.Tensor, ...]:
    """One baseline per input: the tuple given (its length checked) or ``baseline_for(x_i)`` for each input."""
    if not isinstance(baseline, tuple):
        return tuple(baseline_for(x) for x in inputs)
    if len(baseline) != len(inputs):
        raise ValueError(f"baseline has {len(baseline)} tensors for {len(inputs)} inputs")
    return baseline
