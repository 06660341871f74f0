"""The main job on bundled data, one section per level, into one run directory (``veneer demo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from veneer.data import mnist
from veneer.jobs import attack, manipulate, neurons
from veneer.jobs.explain import explain_inputs
from veneer.models import accuracy, pretrained
from veneer.runs import RunDir, seed_everything


def demo(out: str | Path, seed: int = 0, say: Callable[[str], Any] = lambda text: None,
         overwrite: bool = False) -> dict[str, Any]:
    """Explanations of 8 MNIST test images by every method, a short input-level sweep, a short model-level
    centre-of-mass manipulation and a short neuron push-down of the bundled MNIST CNN; ``say`` is told what
    runs. Returns the metrics written to ``out/metrics.json``; ``out`` holding another run is refused unless
    ``overwrite``."""
    run_dir = RunDir(out, {"command": "demo", "out": str(out)}, seed, overwrite=overwrite)
    seed_everything(seed)
    model, test = pretrained("mnist-cnn", progress=True), mnist("test")
    metrics = {"model": "mnist-cnn", "test_accuracy": accuracy(model, test.x, test.y)}
    say(f"MNIST CNN test accuracy: {metrics['test_accuracy']:.4f}")
    metrics["explanations"] = explain_inputs(model, test.subset(slice(0, 8)), None, run_dir)
    say("input-level attacks: short sweep (Ghorbani Fig. 3) ...")
    metrics["attacks"] = attack.demo(run_dir.path / "attacks")
    say("model-level manipulation: short center-of-mass fine-tune ...")
    metrics["manipulate"] = manipulate.demo(run_dir.path / "manipulate")
    say("neuron-level attack: short push-down of the last conv layer's top-k images ...")
    metrics["neurons"] = neurons.demo(run_dir.path / "neurons")
    run_dir.write_metrics(metrics)
    return metrics
