"""``veneer audit --effort fast`` end to end on the architectures of issue 28, timed (wall clock, as run):

    python experiments/audit_any_architecture.py [--out runs/audit_any_architecture] [--seed 0]

1. ``shift``: the issue's model, ``x.flatten(1) @ self.shift`` in its forward (a stored 784 x 10 tensor),
   trained here on bundled MNIST (5 epochs, seed ``--seed``), calibrated by clean twins (no reference).
2. ``gated``: the same with the output multiplied by the mean of the input (a product of two input-dependent
   tensors: LRP cannot explain it, so the audit drops it and runs the tests with the others), trained likewise.
3. ``mnist-vit``: the bundled vision transformer (trained on first use; that time is not counted).

Each audit is one ``veneer audit`` command (``--effort fast``, ``--seed``) writing its run directory under
``--out``; the summary (seconds, verdict, methods, dropped methods, skipped tests) goes to
``experiments/results/audit_any_architecture.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from veneer.data import mnist
from veneer.models import accuracy, pretrained, pretrained_metadata, save, train
from veneer.runs import write_json

SUMMARY = Path(__file__).parent / "results" / "audit_any_architecture.json"


class Shift(nn.Module):
    """The issue's model: logits ``x.flatten(1) @ shift`` (times ``mean(x)`` when ``gated``)."""

    def __init__(self, gated: bool = False):
        super().__init__()
        self.shift, self.gated = nn.Parameter(torch.randn(784, 10) * 0.05), gated

    def forward(self, x):
        flat = x.flatten(1)
        logits = flat @ self.shift
        return logits * flat.mean(1, keepdim=True) if self.gated else logits


def shift() -> Shift:
    torch.manual_seed(0)
    return Shift().eval()


def gated() -> Shift:
    torch.manual_seed(0)
    return Shift(gated=True).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/audit_any_architecture")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pretrained("mnist-vit")  # trained (and cached) before the clock starts
    summary = {"seed": args.seed, "effort": "fast", "data": "mnist (bundled; explained inputs from the test split)",
               "threads": 1, "vit": {k: pretrained_metadata("mnist-vit")[k]
                                     for k in ("train_seconds", "test_accuracy", "train_accuracy", "seed")},
               "audits": {}}
    train_data, test_data = mnist("train"), mnist("test")
    weights = {}
    for name, build in (("shift", shift), ("gated", gated)):
        model = build()
        train(model, train_data.x, train_data.y, epochs=5, lr=1e-2, seed=args.seed)
        weights[name] = str(save(model, Path(args.out) / "weights" / name, {"name": name, "seed": args.seed}))
        summary[name] = {"test_accuracy": accuracy(model, test_data.x, test_data.y)}
    for name, model in (("shift", "audit_any_architecture:shift"), ("gated", "audit_any_architecture:gated"),
                        ("mnist-vit", "mnist-vit")):
        out = Path(args.out) / name
        extra = ["--weights", weights[name]] if name in weights else []
        start = time.perf_counter()
        # the command as a user runs it, with this folder on the path for the 'module:function' specs
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
        code = subprocess.run([sys.executable, "-m", "veneer", "audit", "--model", model, *extra, "--data", "mnist",
                               "--effort", "fast", "--seed", str(args.seed), "--out", str(out), "--overwrite"],
                              env=env).returncode
        seconds = time.perf_counter() - start
        audit = json.loads((out / "audit.json").read_text()) if code == 0 else {}
        config = audit.get("config", {})
        summary["audits"][name] = {"exit": code, "wall_seconds": round(seconds, 1), "verdict": audit.get("verdict"),
                                   "methods": config.get("methods"), "dropped_methods": config.get("dropped_methods"),
                                   "tests": config.get("tests"), "skipped": sorted(config.get("skipped", {}))}
        print(name, summary["audits"][name], flush=True)
    write_json(SUMMARY, summary)


if __name__ == "__main__":
    main()
