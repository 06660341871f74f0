"""The one forward-hook helper: what named modules receive or return during forward passes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from veneer.checks import check_not_torchscript, find_module


class capture:  # noqa: N801 - used as a context manager, like torch.no_grad
    """Context manager recording, for each named module, its output (or its first input with
    ``inputs=True``) at the last forward pass run inside the block, passed through ``transform``.

    ``with capture(model, ["features.3"]) as seen: logits = model(x)`` leaves ``seen["features.3"]``
    attached to the autograd graph. ``seen.take()`` returns the values of the last pass and clears them,
    raising ``RuntimeError`` when a module was not reached.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], inputs: bool = False,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        check_not_torchscript(model, "reading layer activations needs forward hooks")
        self.layers = list(layers)
        self.modules = [find_module(model, name) for name in self.layers]
        self.inputs, self.transform = bool(inputs), transform
        self.values: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            value = inputs[0] if self.inputs else output
            self.values[name] = value if self.transform is None else self.transform(value)

        return record

    def __enter__(self) -> "capture":
        self.values = {}
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in zip(self.layers, self.modules)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def get(self, name: str) -> torch.Tensor | None:
        return self.values.get(name)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.values[name]

    def take(self) -> dict[str, torch.Tensor]:
        """The values of the last forward pass (every module must have been reached); clears them."""
        missing = [n for n in self.layers if n not in self.values]
        if missing:
            raise RuntimeError(f"layers {missing} were not reached by the forward pass")
        values, self.values = self.values, {}
        return values
