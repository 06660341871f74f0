"""The one forward-hook helper: what named modules receive or return during forward passes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from veneer.checks import check_eval_mode, check_not_torchscript, check_positive, check_tensor, find_module


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


def _channel_sum_squares(t: torch.Tensor) -> torch.Tensor:
    """``(C,)`` sum over the batch of each channel's squared l2 norm over positions (Nanfack et al. Eq. 1 summed
    over samples); a ``(B, C)`` output counts one position per unit."""
    return t.reshape(t.shape[0], t.shape[1], -1).pow(2).sum((0, 2))


def channel_balance(model: nn.Module, x: torch.Tensor, layer: str, batch_size: int = 256,
                    create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, G)``, each ``(C,)``: per channel of the output of ``layer`` over the inputs ``x``, the root of the
    summed squared activation ``S_c`` (Nanfack et al. 2024, Eq. 1's ``||h_c(x)||^2``) and of the summed squared
    gradient ``G_c`` of each input's predicted-class logit with respect to it. Under the rescaling symmetry
    ``S_c G_c`` is invariant and ``log10(S_c / G_c)`` (the channel's *balance*) moves by ``2 log10 a_c``
    (:mod:`veneer.neurons.rebalance`). ``create_graph=True`` keeps both in the autograd graph of the parameters
    (second order for ``G``: the evasion surrogate of the audit's ``neuron_balance``)."""
    x = check_tensor("x", x, ndim=(2, 3, 4, 5))
    check_eval_mode(model)
    check_positive("batch_size", batch_size, integer=True)
    activation, gradient = 0.0, 0.0
    for chunk in x.split(batch_size):
        chunk = chunk.detach().clone().requires_grad_(True)  # h depends on the input even with frozen weights
        with capture(model, [layer]) as seen:
            logits = model(chunk)
            h = seen.take()[layer]
        score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
        (g,) = torch.autograd.grad(score, h, create_graph=create_graph)
        activation = activation + _channel_sum_squares(h if create_graph else h.detach())
        gradient = gradient + _channel_sum_squares(g)
    return activation.sqrt(), gradient.sqrt()
