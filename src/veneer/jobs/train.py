"""Training a bundled model on its bundled dataset (``veneer train``)."""

from __future__ import annotations

from typing import Any

from veneer.jobs.results import TrainRun
from veneer.models import train_bundled
from veneer.runs import RunDir


def train_job(name: str, run_dir: RunDir, *, seed: int = 0, progress: bool = False, **overrides: Any) -> TrainRun:
    """Train the bundled model ``name`` (its recipe's options, ``overrides`` replacing them, e.g. ``epochs``);
    write ``model.safetensors`` (+ ``model.json``); return train/test accuracy and seconds."""
    weights = run_dir.file("model.safetensors")
    _, metadata = train_bundled(name, weights, seed=seed, progress=progress, **overrides)
    return TrainRun({k: metadata[k] for k in ("train_accuracy", "test_accuracy", "train_seconds")}, name=name,
                    weights=weights)
