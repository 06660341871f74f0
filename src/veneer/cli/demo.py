"""``veneer demo``: the main job on bundled data, step by step into one run directory."""

from __future__ import annotations

import argparse

from veneer.cli import attack, manipulate, neurons
from veneer.cli.explain import explain_inputs
from veneer.data import mnist
from veneer.explain import BACKGROUND_METHODS, METHODS
from veneer.models import accuracy, pretrained
from veneer.runs import RunDir, seed_everything


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the demonstration on bundled MNIST")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    run_dir = RunDir(args.out, {"out": args.out}, args.seed)
    seed_everything(args.seed)
    model, test = pretrained("mnist-cnn"), mnist("test")
    metrics = {"model": "mnist-cnn", "test_accuracy": accuracy(model, test.x, test.y)}
    print(f"MNIST CNN test accuracy: {metrics['test_accuracy']:.4f}")
    methods = [m for m in METHODS if m not in BACKGROUND_METHODS]
    metrics["explanations"] = explain_inputs(model, test.subset(slice(0, 8)), methods, run_dir)
    print("input-level attacks: short sweep (Ghorbani Fig. 3) ...")
    metrics["attacks"] = attack.demo(run_dir.path / "attacks")
    print("model-level manipulation: short center-of-mass fine-tune ...")
    metrics["manipulate"] = manipulate.demo(run_dir.path / "manipulate")
    print("neuron-level attack: short push-down of the last conv layer's top-k images ...")
    metrics["neurons"] = neurons.demo(run_dir.path / "neurons")
    run_dir.write_metrics(metrics)
    print(f"wrote {run_dir.file('explanations.png')} and {run_dir.file('metrics.json')}")
    return 0
