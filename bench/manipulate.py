"""Manipulation step time over a plain training step (issue 4's benchmark).

    python bench/manipulate.py [--repeats 10] [--threads 2] [--out bench/manipulate.md]

A plain step is forward, cross-entropy, backward and an Adam step. A manipulation step is what
``veneer.manipulate.manipulate`` does per batch: the explanation with ``create_graph=True`` under
Softplus(20), the centre-of-mass attack loss, the cross-entropy keep loss, the double backward and an Adam step.
Models: the MNIST CNN (batch 64, 1x28x28) and a VGG-11-style network at quarter width (batch 32, 3x32x32),
random weights. Reports the median over ``--repeats`` steps after two warm-up steps, the ratio to the plain
step and samples/s; on CUDA when available.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from veneer.explain import LRP, Gradient, GradientXInput, IntegratedGradients
from veneer.manipulate import CenterOfMass, keep_loss
from veneer.manipulate.train import step_losses
from veneer.models import cifar_vgg, mnist_cnn, softplus_activations
from veneer.report.manipulate import markdown_table

METHODS = {"gradient": Gradient, "gradient_x_input": GradientXInput,
           "ig (8 steps)": lambda m: IntegratedGradients(m, steps=8), "lrp": LRP}


def median_seconds(step, repeats: int, device: torch.device) -> float:
    times = []
    for index in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_model(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> list[dict]:
    device = x.device
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)

    def plain():
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    plain_seconds = median_seconds(plain, repeats, device)
    rows = [{"model": name, "method": "plain training step", "batch": len(x), "ms/step": 1000 * plain_seconds,
             "ratio": 1.0, "samples/s": len(x) / plain_seconds}]
    objective, ce = CenterOfMass((0, 0)), keep_loss("ce")
    empty = torch.zeros(len(x), 0, device=device)
    for method, build in METHODS.items():
        explainer = build(model)

        def manipulation():
            attack, keep = step_losses(model, explainer, explainer, objective, ce, x, y, empty)
            optimizer.zero_grad()
            (0.5 * attack + 0.5 * keep).backward()
            optimizer.step()

        with softplus_activations(model, 20.0):
            seconds = median_seconds(manipulation, repeats, device)
        rows.append({"model": name, "method": method, "batch": len(x), "ms/step": 1000 * seconds,
                     "ratio": seconds / plain_seconds, "samples/s": len(x) / seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="bench/manipulate.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    cases = [("mnist_cnn", mnist_cnn(), (64, 1, 28, 28)), ("vgg11 x0.25", cifar_vgg(11, width=0.25), (32, 3, 32, 32))]
    rows = []
    for name, model, shape in cases:
        model = model.to(device).eval()
        x = torch.rand(shape, device=device)
        y = torch.randint(0, 10, (shape[0],), device=device)
        rows += bench_model(name, model, x, y, args.repeats)
        print(markdown_table(rows[-1 - len(METHODS):]), flush=True)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    text = (f"# Manipulation step vs plain training step\n\nDevice: {where}; torch {torch.__version__}; median of "
            f"{args.repeats} steps. Command: `python bench/manipulate.py --threads {args.threads}`.\n\n"
            + markdown_table(rows))
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
