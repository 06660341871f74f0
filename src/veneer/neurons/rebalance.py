"""The rescaling symmetry of ReLU networks: a layer's channels and their downstream gain.

For a positively homogeneous activation (ReLU, LeakyReLU, max/average pooling), multiplying the weights and
bias of channel ``c`` of a layer by ``a_c > 0`` and the weights that read channel ``c`` in the next layer by
``1 / a_c`` leaves the network's function unchanged (Neyshabur et al. 2015, "Path-SGD: Path-Normalized
Optimization in Deep Neural Networks", Sec. 2; Du et al. 2018, "Algorithmic regularization in learning deep
homogeneous models", Sec. 3). It moves the channel's activation scale ``S_c`` by ``a_c`` and the gradient scale
``G_c`` reaching it by ``1 / a_c``: :func:`channel_balance` measures both (what the audit's ``neuron_balance``
test reads), :func:`rebalance` applies the symmetry -- by hand, or so that every channel's balance matches a
reference model's, the post-hoc move of an attacker who knows that test. With powers of two as scales
(``exact=True``) every multiplication is exact in floating point, so the rebalanced model's outputs equal the
original's bit for bit; other scales change them by float rounding only.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from veneer.checks import check_eval_mode, check_tensor, find_module
from veneer.models.capture import channel_balance

# modules between a layer and the next weighted one that commute with a positive per-channel scale
HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
               nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten,
               nn.Dropout, nn.Dropout2d, nn.Identity)
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _chain(model: nn.Module, layer: str) -> tuple[str, nn.Module, list[nn.Module], nn.Module]:
    """``(name, weighted module, homogeneous modules after it, next weighted module)`` for ``layer`` (a
    Conv/Linear, or a homogeneous module after one) inside an ``nn.Sequential``."""
    find_module(model, layer)
    parent_name, _, child = layer.rpartition(".")
    parent = find_module(model, parent_name) if parent_name else model
    if not isinstance(parent, nn.Sequential):
        raise ValueError(f"layer {layer!r} must lie in an nn.Sequential (the modules after it are read in order); "
                         f"its parent is a {type(parent).__name__}")
    names = list(parent._modules)
    start = names.index(child)
    while not isinstance(parent[start], WEIGHTED):
        if start == 0 or not isinstance(parent[start], HOMOGENEOUS):
            raise ValueError(f"layer {layer!r} must be a Conv/Linear layer or a homogeneous activation after one")
        start -= 1
    between = []
    for position in range(start + 1, len(names)):
        module = parent[position]
        if isinstance(module, WEIGHTED):
            prefix = f"{parent_name}." if parent_name else ""
            return f"{prefix}{names[start]}", parent[start], between, module
        if not isinstance(module, HOMOGENEOUS):
            raise ValueError(f"module {names[position]!r} ({type(module).__name__}) after layer {layer!r} does not "
                             f"commute with a per-channel scale; rebalance needs only {[t.__name__ for t in HOMOGENEOUS]} "
                             "between two weighted layers")
        between.append(module)
    raise ValueError(f"layer {layer!r} has no Conv/Linear layer after it whose input weights take the inverse scale")


def _balance_scales(model: nn.Module, layer: str, like: nn.Module, data: torch.Tensor) -> torch.Tensor:
    """``a_c`` that move each channel's balance ``log10(S_c / G_c)`` to the reference model's."""
    mine, theirs = channel_balance(model, data, layer), channel_balance(like, data, layer)
    alive = (mine[0] > 0) & (mine[1] > 0) & (theirs[0] > 0) & (theirs[1] > 0)
    shift = torch.zeros_like(mine[0])
    shift[alive] = (torch.log10(theirs[0][alive] / theirs[1][alive]) - torch.log10(mine[0][alive] / mine[1][alive]))
    return torch.pow(10.0, shift / 2)


def rebalance(model: nn.Module, layer: str, *, scales: torch.Tensor | None = None, like: nn.Module | None = None,
              data: torch.Tensor | None = None, exact: bool = False) -> nn.Module:
    """A copy of ``model`` whose channels of ``layer`` are rescaled by ``a_c`` and whose next weighted layer
    reads them divided by ``a_c``: the same function (the module docstring). ``layer`` is a Conv/Linear layer, or
    an activation right after one (the neuron attacks' layer names), inside an ``nn.Sequential``; only
    homogeneous modules (:data:`HOMOGENEOUS`) may lie between it and the next Conv/Linear layer (a ``Flatten``
    between a conv and a linear layer is followed: each channel's block of input features takes its scale).

    ``scales``: ``(C,)`` positive factors; or ``like`` (a reference model of the same architecture, e.g. the model
    before an attack) with ``data`` (inputs): the factors that give every channel of ``layer`` the reference's
    balance (a channel that never activates on ``data``, in either model, keeps its scale: its balance is
    undefined). ``exact=True`` rounds each factor to the nearest power of two, so the copy's outputs equal
    ``model``'s bit for bit (each balance then lands up to ``log10 2`` decades from the target); otherwise they
    equal them up to float rounding. The model passed in is never changed."""
    if (scales is None) == (like is None):
        raise ValueError("pass exactly one of scales= (a (C,) tensor of factors) or like= (a reference model, "
                         "with data=)")
    name, weighted, _, following = _chain(model, layer)
    channels = weighted.weight.shape[0]
    if like is not None:
        if data is None:
            raise ValueError("like= needs data= (inputs on which the channels' balance is measured)")
        check_eval_mode(like, "like")
        scales = _balance_scales(model, layer, like, data)
    scales = check_tensor("scales", torch.as_tensor(scales, dtype=weighted.weight.dtype), ndim=1)
    if scales.shape != (channels,) or not bool((scales > 0).all()):
        raise ValueError(f"scales must be {channels} positive factors (one per channel of {name!r}), got shape "
                         f"{tuple(scales.shape)}")
    if exact:
        scales = torch.pow(2.0, torch.log2(scales).round()).to(scales.dtype)
    copied = copy.deepcopy(model)
    weighted, following = find_module(copied, name), _chain(copied, layer)[3]
    inputs = following.weight.shape[1]
    if inputs % channels:
        raise ValueError(f"the layer after {name!r} reads {inputs} inputs, not a multiple of its {channels} channels")
    inverse = (1 / scales).repeat_interleave(inputs // channels)  # flatten keeps each channel's block together
    with torch.no_grad():
        weighted.weight.mul_(scales.view(-1, *[1] * (weighted.weight.ndim - 1)))
        if weighted.bias is not None:
            weighted.bias.mul_(scales)
        following.weight.mul_(inverse.view(1, -1, *[1] * (following.weight.ndim - 2)))
    return copied.eval()
