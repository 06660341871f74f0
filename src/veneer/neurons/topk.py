"""Dataset-based feature visualisation: the k inputs that activate each channel most.

Nanfack et al. (2024), Sec. 2 ("Activation maximization"): a channel is interpreted through the
top-k images of a dataset ranked by its activation (Eq. 1).  :func:`top_k` streams over the data and
keeps, per channel, only the k best values seen so far: memory O(k x channels), whatever the data size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from veneer.checks import check_positive
from veneer.neurons.record import Data, data_size, record_batches, resolve_layers

__all__ = ["ChannelTopK", "top_k", "top_k_layers", "activations"]


@dataclass(frozen=True)
class ChannelTopK:
    """Per channel, the ``k`` largest activations (``values`` ``(C, k)``, descending) and the indices
    of their samples in the data's order (``indices`` ``(C, k)`` long)."""

    layer: str
    values: torch.Tensor
    indices: torch.Tensor

    @property
    def k(self) -> int:
        return self.indices.shape[1]

    @property
    def channels(self) -> int:
        return self.indices.shape[0]


def _check_k(k: int, size: int | None) -> None:
    check_positive("k", k, integer=True)
    if size is not None and k > size:
        raise ValueError(f"k={k} is larger than the number of samples in data ({size})")


def top_k_layers(model: nn.Module, layers: str | list[str], data: Data, k: int, *, batch_size: int = 256,
                 pre_activation: bool = False) -> dict[str, ChannelTopK]:
    """:func:`top_k` of several layers in one pass over ``data``: ``{layer: ChannelTopK}``."""
    names = resolve_layers(model, layers)
    _check_k(k, data_size(data))
    best: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    seen = 0
    for batch in record_batches(model, names, data, batch_size, pre_activation):
        size = next(iter(batch.values())).shape[0]
        index = torch.arange(seen, seen + size)
        for name, values in batch.items():
            new_values = values.T  # (C, B)
            new_index = index.expand_as(new_values)
            if name in best:
                new_values = torch.cat([best[name][0], new_values], dim=1)
                new_index = torch.cat([best[name][1], new_index], dim=1)
            keep = new_values.topk(min(k, new_values.shape[1]), dim=1)
            best[name] = (keep.values, new_index.gather(1, keep.indices))
        seen += size
    if seen < k:
        raise ValueError(f"k={k} is larger than the number of samples in data ({seen})")
    return {name: ChannelTopK(name, values, index) for name, (values, index) in best.items()}


def top_k(model: nn.Module, layer: str, data: Data, k: int = 10, *, batch_size: int = 256,
          pre_activation: bool = False) -> ChannelTopK:
    """The ``k`` samples of ``data`` that activate each channel of ``layer`` most (Nanfack et al. 2024,
    Sec. 2, with the per-channel activation of Eq. 1), streamed batch by batch with O(k x C) memory.

    ``data`` is an (N, ...) tensor, a Dataset or an unshuffled DataLoader; indices count samples in
    its order.  Ties are broken by ``torch.topk``.
    """
    return top_k_layers(model, layer, data, k, batch_size=batch_size, pre_activation=pre_activation)[layer]


def activations(model: nn.Module, layer: str, data: Data, *, batch_size: int = 256,
                pre_activation: bool = False) -> torch.Tensor:
    """``(N, C)`` activations (Eq. 1 of Nanfack et al. 2024) of every sample of ``data`` at ``layer``,
    for ranking metrics (Kendall-tau, KS distance) that need the whole ranking."""
    resolve_layers(model, layer)
    chunks = [batch[layer] for batch in record_batches(model, [layer], data, batch_size, pre_activation)]
    if not chunks:
        raise ValueError("data holds no sample")
    return torch.cat(chunks)
