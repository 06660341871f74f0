"""Data parallelism under ``torchrun`` for the fine-tuning engine: the process group and gradient averaging."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

def distributed_context() -> tuple[int, int]:
    """``(world_size, rank)``; initialises the default process group from the environment (``torchrun``)
    when ``WORLD_SIZE`` > 1 and none exists yet: nccl when CUDA is available, gloo otherwise."""
    if not dist.is_available():
        return 1, 0
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 1, 0
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_world_size(), dist.get_rank()


def _all_reduce_mean(flat: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(flat)
        flat /= world
    return flat


def average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Replace every gradient by its mean over the ranks (one coalesced all-reduce)."""
    if world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _all_reduce_mean(torch.cat([g.flatten() for g in grads]), world)
    for p, part in zip(params, flat.split([g.numel() for g in grads])):
        p.grad = part.view_as(p).clone()
