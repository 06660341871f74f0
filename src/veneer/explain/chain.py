"""The mechanism LRP and DeepLift share: trace a chain of modules once, then sweep a signal backward.

:func:`trace_chain` runs the model once with hooks on its leaf modules (modules without children) and records
each leaf's input and output. The tensors stay in the autograd graph, so everything computed from them later
is differentiable with respect to the input and to the live parameters. It also checks that the model is a
*chain*: each leaf receives exactly the previous leaf's output (the first one the model's input) and the
model returns the last leaf's output. Residual connections, functional operations between modules, modules
called twice and unsupported module types are refused with a ``ValueError`` naming the module.

:func:`sweep` then maps a signal (relevance for LRP, multipliers for DeepLift) from the model's output back
to its input, one module at a time, with a per-module *rule* chosen by the method.

Linear-type steps are vector-Jacobian products, :func:`vjp`, computed with ``create_graph=True``: the result
stays differentiable with respect to the signal, the inputs and the parameters, which is what makes
second-order gradients (a loss on the explanation, back-propagated to the model) exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

Signal = torch.Tensor


@dataclass(frozen=True)
class Step:
    """One leaf module's call: its dotted ``name`` in the model, the ``module``, its ``input`` and ``output``."""

    name: str
    module: nn.Module
    input: torch.Tensor
    output: torch.Tensor

    def describe(self) -> str:
        return f"'{self.name}' ({type(self.module).__name__})"


@dataclass(frozen=True)
class Trace:
    """The recorded forward pass: ``input`` (the tensor the first step received), ``steps``, ``output``."""

    input: torch.Tensor
    steps: tuple[Step, ...]
    output: torch.Tensor


def lookup(table: Mapping[type, object], module: nn.Module) -> object | None:
    """The entry of ``table`` for ``module``'s type or its nearest base class in ``table``, else ``None``."""
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls]
    return None


def _leaf_names(model: nn.Module) -> dict[int, str]:
    names = {}
    for name, module in model.named_modules():
        if next(module.children(), None) is None:
            names[id(module)] = name or type(module).__name__
    return names


def _not_a_chain(method: str, what: str) -> ValueError:
    return ValueError(f"{method} needs a model whose modules form a chain, e.g. nn.Sequential; {what}")


def trace_chain(model: nn.Module, x: torch.Tensor, method: str, supported: Sequence[type]) -> Trace:
    """Run ``model`` on ``x`` once, recording every leaf module's input and output, and check it is a chain.

    ``supported`` lists the module types the caller has rules for; another leaf type raises ``ValueError``
    before it runs. If ``x`` does not require grad, a detached copy that does is used, so that every recorded
    tensor is in the graph (``trace.input`` is that copy). Modules with ``inplace=True`` are run out of place
    for the duration of the trace (an in-place ReLU would overwrite the recorded output of the previous layer).
    Batch-norm layers must use running statistics, so that every sample is mapped independently.
    """
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    names = _leaf_names(model)
    supported = tuple(supported)
    steps: list[Step] = []
    seen: set[int] = set()

    def pre_hook(module, args):
        name = names[id(module)]
        label = f"'{name}' ({type(module).__name__})"
        if not any(isinstance(module, cls) for cls in supported):
            allowed = ", ".join(cls.__name__ for cls in supported)
            raise ValueError(f"layer '{name}' of type {type(module).__name__} is not supported by {method}; "
                             f"supported: {allowed}")
        if id(module) in seen:
            raise ValueError(f"{method} needs every module to be called once per forward pass; module {label} "
                             f"is called more than once")
        expected, source = (steps[-1].output, f"the output of the previous module {steps[-1].describe()}") \
            if steps else (x, "the model's input")
        if len(args) != 1 or args[0] is not expected:
            received = (f"{len(args)} positional arguments" if len(args) != 1
                        else "a tensor that is not " + source)
            raise _not_a_chain(method, f"module {label} received {received}")
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is None:
            raise ValueError(f"{method}: batch-norm layer {label} has no running statistics, so it mixes the "
                             f"samples of a batch; build it with track_running_stats=True")
        seen.add(id(module))

    def post_hook(module, args, output):
        if not isinstance(output, torch.Tensor):
            raise _not_a_chain(method, f"module '{names[id(module)]}' ({type(module).__name__}) returned a "
                                       f"{type(output).__name__}, not a tensor")
        steps.append(Step(names[id(module)], module, args[0], output))

    handles, inplace = [], []
    try:
        for module in model.modules():
            if id(module) in names:
                handles.append(module.register_forward_pre_hook(pre_hook))
                handles.append(module.register_forward_hook(post_hook))
                if getattr(module, "inplace", False) is True:
                    inplace.append(module)
                    module.inplace = False
        with torch.enable_grad():
            output = model(x)
    finally:
        for handle in handles:
            handle.remove()
        for module in inplace:
            module.inplace = True
    if not steps:
        raise _not_a_chain(method, "the forward pass called no module")
    if output is not steps[-1].output:
        raise _not_a_chain(method, f"the model's output is not the output of its last module "
                                   f"{steps[-1].describe()}")
    return Trace(x, tuple(steps), output)


def sweep(rules: Sequence[Callable[[Signal], Signal]], signal: Signal) -> Signal:
    """Apply ``rules`` (one per step, in forward order, each bound to its step) from the last to the first."""
    for rule in reversed(rules):
        signal = rule(signal)
    return signal


def vjp(outputs, inputs, grads):
    """Vector-Jacobian product(s) ``grads^T d outputs / d inputs``, kept in the graph (``create_graph=True``).

    ``outputs``/``grads`` and ``inputs`` may be tensors or sequences of tensors; returns a tensor when
    ``inputs`` is a tensor, else a tuple.
    """
    single = isinstance(inputs, torch.Tensor)
    with torch.enable_grad():
        result = torch.autograd.grad(outputs, inputs, grads, create_graph=True)
    return result[0] if single else result


def reshape_to_input(step: Step, signal: Signal) -> Signal:
    """The rule of shape-only and identity modules (Flatten, Identity, Dropout in eval mode)."""
    return signal.reshape(step.input.shape)


def one_hot_like(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C) zeros with a one at each sample's target class, ``output``'s dtype and device."""
    if output.ndim != 2:
        raise ValueError(f"the model must return (B, classes) logits, got shape {tuple(output.shape)}")
    return torch.zeros_like(output).scatter_(1, target[:, None], 1.0)
