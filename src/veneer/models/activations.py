"""ReLU -> Softplus(beta) replacement (thesis 3.2.2: ReLU has no useful second derivative)."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

from torch import nn


def _relu_slots(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    return [(parent, name, child) for parent in model.modules()
            for name, child in parent.named_children() if isinstance(child, nn.ReLU)]


@contextmanager
def softplus_activations(model: nn.Module, beta: float = 20.0) -> Iterator[nn.Module]:
    """Swap every ``nn.ReLU`` module (inplace ones too) for ``Softplus(beta)`` in place, restoring them on exit.

    Parameters are untouched, so gradients computed inside the block reach the model's own weights.
    ReLUs called functionally inside ``forward`` cannot be seen and are not replaced.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    slots = _relu_slots(model)
    for parent, name, _ in slots:
        setattr(parent, name, nn.Softplus(beta=beta))
    try:
        yield model
    finally:
        for parent, name, relu in slots:
            setattr(parent, name, relu)


def with_softplus(model: nn.Module, beta: float = 20.0) -> nn.Module:
    """A copy of ``model`` whose ReLU modules are Softplus(beta); same weights, same module names."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    clone = copy.deepcopy(model)
    for parent, name, _ in _relu_slots(clone):
        setattr(parent, name, nn.Softplus(beta=beta))
    return clone
