"""Recording one scalar per channel (or unit) of named layers with forward hooks.

Nanfack et al. (2024), "Adversarial Attacks on the Interpretation of Neuron Activation Maximization"
(AAAI), Eq. 1: the activation of channel ``c`` of a convolutional layer for an input ``x`` is the
squared l2 norm of its feature map over the spatial positions, ``A_c(x) = ||h_c(x)||_2^2``; a unit of
a linear layer contributes its value.  Footnote 1 of the paper records pre-activations instead: here
``pre_activation=True`` records the *input* of the named module, which for an activation module
(``ReLU`` "4" in the bundled MNIST CNN) is the output of the layer before it (the conv "3").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from veneer.checks import check_eval_mode, check_positive, find_module
from veneer.models import capture

__all__ = ["channel_scalar", "ActivationRecorder", "resolve_layers", "default_layer", "iterate_inputs",
           "data_size", "record", "record_batches", "Data"]

Data = torch.Tensor | Dataset | DataLoader
"""What the recording functions stream over: an (N, ...) tensor, a Dataset whose items are
``x`` or ``(x, y, ...)`` (e.g. :class:`veneer.data.LabeledData`), or a DataLoader of such batches."""


def channel_scalar(output: torch.Tensor) -> torch.Tensor:
    """One value per sample and channel, ``(B, C)`` (Nanfack et al. 2024, Eq. 1).

    ``(B, C, *spatial)`` maps give their squared l2 norm over the spatial positions; ``(B, C)``
    outputs (linear units) are returned unchanged.  Differentiable.
    """
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"output must be a torch.Tensor, got {type(output).__name__}")
    if output.ndim == 2:
        return output
    if output.ndim >= 3:
        return output.flatten(2).pow(2).sum(dim=2)
    raise ValueError(f"output must have shape (B, C) or (B, C, ...), got {tuple(output.shape)}")


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> list[str]:
    """``layers`` as a non-empty list of distinct module names of ``model`` (unknown names raise,
    listing the valid ones)."""
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("layers must name at least one module")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"layers must be module names (str), got {name!r}")
        find_module(model, name, "layers" if len(names) > 1 else "layer")
    if len(set(names)) != len(names):
        raise ValueError(f"layers must be distinct, got {names}")
    return names


def default_layer(model: nn.Module) -> str:
    """The layer whose top-k images the paper studies by default: the module right after the last
    ``Conv2d`` when it is an activation (the post-activation feature maps), else that ``Conv2d``; for
    models without convolutions, the same rule with the last hidden ``Linear`` (not the output layer)."""
    named = [(n, m) for n, m in model.named_modules() if n]
    for kind in (nn.Conv2d, nn.Linear):
        positions = [i for i, (_, m) in enumerate(named) if isinstance(m, kind)]
        if kind is nn.Linear:
            positions = positions[:-1]
        if positions:
            i = positions[-1]
            if i + 1 < len(named) and _is_activation(named[i + 1][1]):
                return named[i + 1][0]
            return named[i][0]
    raise ValueError("the model has no Conv2d or hidden Linear layer; pass layer=NAME explicitly")


def _is_activation(module: nn.Module) -> bool:
    return type(module).__module__ == "torch.nn.modules.activation"


class ActivationRecorder(capture):
    """Context manager recording :func:`channel_scalar` of named layers at every forward pass.

    ``with ActivationRecorder(model, ["4"]) as rec: logits = model(x)`` leaves ``rec.values["4"]``
    ``(B, C)``, attached to the autograd graph (the attacks differentiate through it).  With
    ``pre_activation=True`` the module's input is recorded instead of its output (see module doc).
    """

    def __init__(self, model: nn.Module, layers: str | Sequence[str], pre_activation: bool = False):
        super().__init__(model, resolve_layers(model, layers), inputs=pre_activation, transform=channel_scalar)
        self.pre_activation = bool(pre_activation)


def _first(batch: object) -> torch.Tensor:
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"data must yield tensors or (x, ...) tuples, got {type(batch).__name__}")
    return batch


def iterate_inputs(data: Data, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Input batches of ``data`` in order (a tensor is split, a Dataset wrapped in an unshuffled
    DataLoader, a DataLoader iterated as it is: its order defines the sample indices)."""
    check_positive("batch_size", batch_size, integer=True)
    if isinstance(data, torch.Tensor):
        if data.ndim < 2:
            raise ValueError(f"data must be an (N, ...) batch of inputs, got shape {tuple(data.shape)}")
        yield from data.split(batch_size)
        return
    if isinstance(data, Dataset):
        data = DataLoader(data, batch_size=batch_size, shuffle=False)
    if not isinstance(data, Iterable):
        raise TypeError(f"data must be a tensor, a Dataset or a DataLoader, got {type(data).__name__}")
    for batch in data:
        yield _first(batch)


def data_size(data: Data) -> int | None:
    """Number of samples of ``data`` when it can be known without iterating, else None."""
    if isinstance(data, torch.Tensor):
        return data.shape[0]
    if isinstance(data, DataLoader):
        try:
            return len(data.dataset)
        except TypeError:
            return None
    try:
        return len(data)
    except TypeError:
        return None


@torch.no_grad()
def record(model: nn.Module, layers: str | Sequence[str], x: torch.Tensor,
           pre_activation: bool = False) -> dict[str, torch.Tensor]:
    """``{layer: (B, C)}`` activations of one batch ``x`` (no gradient), on the CPU. A model in training mode
    is refused: its activations would depend on dropout and would change batch-norm statistics."""
    check_eval_mode(model)
    with ActivationRecorder(model, layers, pre_activation) as recorder:
        model(x.to(_device(model)))
        return {name: value.detach().cpu() for name, value in recorder.take().items()}


def record_batches(model: nn.Module, layers: Sequence[str], data: Data, batch_size: int = 256,
                   pre_activation: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Per batch of ``data``, ``{layer: (B, C)}`` activations (no gradient), on the CPU."""
    for x in iterate_inputs(data, batch_size):
        yield record(model, layers, x, pre_activation)


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
