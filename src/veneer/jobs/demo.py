"""The main job on bundled data, one section per level, into one run directory (``veneer demo``)."""

from __future__ import annotations

from typing import Any, Callable

from veneer.data import mnist
from veneer.jobs import attack, manipulate, neurons
from veneer.jobs.explain import explain_inputs
from veneer.jobs.results import DemoRun
from veneer.models import accuracy, pretrained
from veneer.runs import RunDir


def demo(run_dir: RunDir, say: Callable[[str], Any] = lambda text: None) -> DemoRun:
    """Explanations of 8 MNIST test images by every method, a short input-level sweep, a short model-level
    centre-of-mass manipulation and a short neuron push-down of the bundled MNIST CNN, each level in its own
    folder of ``run_dir``; ``say`` is told what runs. Returns the result: the levels' measures nested under
    ``explanations``, ``attacks``, ``manipulate`` and ``neurons``."""
    model, test = pretrained("mnist-cnn", progress=True), mnist("test")
    metrics = {"model": "mnist-cnn", "test_accuracy": accuracy(model, test.x, test.y)}
    say(f"MNIST CNN test accuracy: {metrics['test_accuracy']:.4f}")
    metrics["explanations"] = explain_inputs(model, test.subset(slice(0, 8)), None, run_dir).metrics()
    say("input-level attacks: short sweep (Ghorbani Fig. 3) ...")
    metrics["attacks"] = attack.demo(run_dir.path / "attacks").metrics()
    say("model-level manipulation: short center-of-mass fine-tune ...")
    metrics["manipulate"] = manipulate.demo(run_dir.path / "manipulate").metrics()
    say("neuron-level attack: short push-down of the last conv layer's top-k images ...")
    metrics["neurons"] = neurons.demo(run_dir.path / "neurons").metrics()
    return DemoRun(metrics)
