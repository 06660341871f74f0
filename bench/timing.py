"""Timing shared by the benchmark scripts: medians of wall time, CUDA synchronised."""

from __future__ import annotations

import statistics
import time

import torch


def median_seconds(step, repeats: int, device: torch.device, warmup: int = 2) -> float:
    """Median wall time of ``step()`` over ``repeats`` calls after ``warmup`` calls (kernels, allocator)."""
    times = []
    for index in range(repeats + warmup):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)
