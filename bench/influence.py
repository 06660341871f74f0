"""Influence scores: veneer's ``Influence`` against Captum's ``NaiveInfluenceFunction`` (issue 12 benchmark).

The bundled MNIST CNN (``mnist-cnn``), parameters of its last layer (``"9"``, 1290), ``--train`` training images
(a seeded random subset of the train split) and 100 test images, in float32 (the model's own dtype) and in
float64 (where both libraries' results agree to rounding). Each repeat builds each library's object from scratch (training gradients, Hessian and
its inverse) and scores the 100 test images; the libraries alternate within each repeat (interleaved timing).
Prints the median seconds, the ratio Captum / veneer and the largest relative difference of the scores after
Captum's constant (``captum = -I_up,loss / N``), and writes the rows to ``bench/results/influence.json``, which
BENCHMARKS.md cites. One untimed warm-up call of each comes first (veneer's first
``torch.func`` call in a process imports ``torch._dynamo``, ~5-10 s once).

    .venv/bin/python bench/influence.py [--train 1000] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from captum.influence import NaiveInfluenceFunction
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from veneer.data import mnist
from veneer.explain import Influence
from veneer.models import pretrained

from record import machine, write_results

DAMPING = 0.001


def measure(model, x, y, x_test, y_test, repeats: int) -> tuple[float, float, float]:
    """Median seconds of veneer and Captum (interleaved, after one warm-up call each) and the largest relative
    difference of their scores after Captum's constant."""
    n = len(x)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "model.pt"
        torch.save(model.state_dict(), checkpoint)

        def veneer() -> torch.Tensor:
            return Influence(model, (x, y), params=["9"], damping=DAMPING)(x_test, y_test)

        def captum() -> torch.Tensor:
            # Captum adds hessian_reg to the Hessian of the summed loss, N * H: N * damping is the same damping
            return NaiveInfluenceFunction(
                model, DataLoader(TensorDataset(x, y), batch_size=256), checkpoint=str(checkpoint),
                loss_fn=nn.CrossEntropyLoss(reduction="none"), layers=["9"], projection_dim=None,
                hessian_reg=n * DAMPING, hessian_inverse_tol=0.0, batch_size=256).influence((x_test, y_test))

        times: dict[str, list[float]] = {"veneer": [], "captum": []}
        results = {"veneer": veneer(), "captum": captum()}  # warm-up: the first torch.func call imports torch._dynamo
        for _ in range(repeats):
            for name, call in (("veneer", veneer), ("captum", captum)):
                start = time.perf_counter()
                results[name] = call()
                times[name].append(time.perf_counter() - start)
    reference = -n * results["captum"].double()
    error = ((results["veneer"].double() - reference).abs().max() / reference.abs().max()).item()
    return statistics.median(times["veneer"]), statistics.median(times["captum"]), error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = machine()
    train, test = mnist("train"), mnist("test")
    chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:args.train]
    print(f"mnist-cnn last layer (1290 parameters), {len(chosen)} training x {args.test} test images, damping "
          f"{DAMPING}, {args.threads} thread(s), median of {args.repeats}")
    print("| dtype | veneer exact (s) | Captum NaiveInfluenceFunction (s) | Captum / veneer | max rel. difference |")
    print("|---|---|---|---|---|")
    rows = []
    for dtype in (torch.float32, torch.float64):
        model = copy.deepcopy(pretrained("mnist-cnn", progress=False)).to(dtype).eval()
        v, c, error = measure(model, train.x[chosen].to(dtype), train.y[chosen], test.x[:args.test].to(dtype),
                              test.y[:args.test], args.repeats)
        name = str(dtype).replace("torch.", "")
        rows.append({"dtype": name, "veneer_s": v, "captum_s": c, "ratio": c / v, "max_rel_difference": error})
        print(f"| {name} | {v:.2f} | {c:.2f} | {c / v:.1f}x | {error:.1e} |", flush=True)
    write_results("influence", {"train": len(chosen), "test": args.test, "repeats": args.repeats,
                                "threads": args.threads, "damping": DAMPING}, rows, started)


if __name__ == "__main__":
    main()
