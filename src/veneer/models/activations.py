"""ReLU -> Softplus(beta) replacement (thesis 3.2.2: ReLU has no useful second derivative).

Both ReLU modules and ReLUs called as functions inside ``forward`` (``F.relu``, ``torch.relu``,
``Tensor.relu`` and their in-place forms) are replaced: modules by swapping them, functions by a
``TorchFunctionMode`` active during the model's forward pass. A TorchScript model exposes neither, so no
surrogate can be built for it: the functions here warn and leave it as it is.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

RELU_FUNCTIONS = frozenset({torch.relu, torch.relu_, F.relu, F.relu_, torch.Tensor.relu, torch.Tensor.relu_})


class FunctionalSoftplus(TorchFunctionMode):
    """Inside the block, every functional ReLU computes ``Softplus(beta)`` instead (out of place: code that
    uses an in-place ReLU's return value, as ``x = F.relu(x, inplace=True)`` does, sees the same result).
    ``replaced`` counts the calls it replaced."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta, self.replaced = float(beta), 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in RELU_FUNCTIONS:
            self.replaced += 1
            return F.softplus(args[0], beta=self.beta)
        return func(*args, **(kwargs or {}))


def _relu_slots(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    return [(parent, name, child) for parent in model.modules()
            for name, child in parent.named_children() if isinstance(child, nn.ReLU)]


def _check_beta(beta: float) -> None:
    if not beta > 0 or beta == float("inf"):
        raise ValueError(f"softplus_beta must be a finite number > 0, got {beta!r}")


def is_torchscript(model: nn.Module) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


def _warn_torchscript(model: nn.Module, beta: float) -> None:
    warnings.warn(f"{type(model).__name__} is a TorchScript model: its ReLUs cannot be replaced by "
                  f"Softplus({beta:g}), so the model itself is differentiated; ReLU has zero second derivative, "
                  "so gradients of gradient explanations vanish and the attack may leave them unchanged. Pass "
                  "the model as a Python nn.Module to use the surrogate.", stacklevel=3)


def _functional_hooks(model: nn.Module, beta: float) -> list:
    """Forward hooks on the root module that run each forward pass inside :class:`FunctionalSoftplus`."""
    active: list[FunctionalSoftplus] = []

    def enter(module, args):
        mode = FunctionalSoftplus(beta)
        mode.__enter__()
        active.append(mode)

    def leave(module, args, output):
        if active:
            active.pop().__exit__(None, None, None)

    return [model.register_forward_pre_hook(enter), model.register_forward_hook(leave, always_call=True)]


class softplus_activations:  # noqa: N801 - used as a context manager, like torch.no_grad
    """Swap every ``nn.ReLU`` module (inplace ones too) for ``Softplus(beta)`` in place and replace functional
    ReLUs during the model's forward passes, restoring both on exit. Parameters are untouched, so gradients
    computed inside the block reach the model's own weights. The object can be entered again after it was
    left (e.g. to measure the ReLU model in the middle of a fine-tune: ``with swap.paused(): ...``)."""

    def __init__(self, model: nn.Module, beta: float = 20.0):
        _check_beta(beta)
        self.model, self.beta = model, beta
        self._slots: list = []
        self._handles: list = []

    def __enter__(self) -> nn.Module:
        if is_torchscript(self.model):
            _warn_torchscript(self.model, self.beta)
            return self.model
        self._slots = _relu_slots(self.model)
        for parent, name, _ in self._slots:
            setattr(parent, name, nn.Softplus(beta=self.beta))
        self._handles = _functional_hooks(self.model, self.beta)
        return self.model

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        for parent, name, relu in self._slots:
            setattr(parent, name, relu)
        self._slots, self._handles = [], []

    @contextmanager
    def paused(self) -> Iterator[nn.Module]:
        """The model's own activations inside the block, the Softplus ones again after it."""
        self.__exit__(None, None, None)
        try:
            yield self.model
        finally:
            self.__enter__()


def with_softplus(model: nn.Module, beta: float = 20.0) -> nn.Module:
    """A copy of ``model`` whose ReLUs (modules and functional calls) are Softplus(beta); same weights, same
    module names. A TorchScript model is returned as it is, with a warning saying so."""
    _check_beta(beta)
    if is_torchscript(model):
        _warn_torchscript(model, beta)
        return model
    clone = copy.deepcopy(model)
    for parent, name, _ in _relu_slots(clone):
        setattr(parent, name, nn.Softplus(beta=beta))
    _functional_hooks(clone, beta)
    return clone
