"""Manipulation step time against a hand-written loop and a plain training step.

    python bench/manipulate.py [--repeats 10] [--threads 2] [--out bench/manipulate.md]

1. **veneer vs a hand-written loop** (same model, batch, objective): ``Manipulation(model, Gradient(model),
   CenterOfMass((0, 0)), keep="ce", alpha=0.5, softplus_beta=20, steps=n)`` against a loop written out by hand
   (Softplus swap, Adam, input gradient with ``create_graph=True``, centre-of-mass loss, cross-entropy, double
   backward). Each side runs ``n1`` and ``n2`` steps, the two interleaved, ``--repeats`` times; the per-step
   time is the slope ``(t(n2) - t(n1)) / (n2 - n1)`` of the medians, so set-up (the model copy, sampler) cancels.
   Goal: veneer <= 1.1x the hand-written loop.
2. **step over a plain training step**: what the engine does per batch (the explanation with
   ``create_graph=True`` under Softplus(20), the attack and keep losses, the double backward, an Adam step) over
   forward, cross-entropy, backward and an Adam step. Models: the MNIST CNN (batch 64, 1x28x28) and a
   VGG-11-style network at quarter width (batch 32, 3x32x32), random weights; medians over ``--repeats`` steps
   after two warm-up steps. Goal <= 3x for Gradient.
On CUDA when available. Writes the tables to ``--out`` and the figures to ``bench/results/manipulate.json``, which
BENCHMARKS.md cites.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from veneer.explain import LRP, Gradient, GradientXInput, IntegratedGradients
from veneer.manipulate import CenterOfMass, Manipulation
from veneer.models import cifar_vgg, mnist_cnn, softplus_activations
from veneer.report.manipulate import markdown_table

from record import machine, write_results
from timing import median_seconds  # bench/timing.py (the script's folder is on sys.path)

METHODS = {"gradient": Gradient, "gradient_x_input": GradientXInput,
           "ig (8 steps)": lambda m: IntegratedGradients(m, steps=8), "lrp": LRP}


def engine_step(model: torch.nn.Module, explainer, x: torch.Tensor, y: torch.Tensor):
    """One step of the engine on the batch ``(x, y)``, without its sampler and bookkeeping: a
    :class:`Manipulation`'s attack loss called on ``model`` itself, as the engine calls it on its copy."""
    attack_loss = Manipulation(model, explainer, CenterOfMass((0, 0)), alpha=0.5).attack_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)

    def step():
        out = attack_loss(model, x, y, None, 0)
        logits = out.logits if out.logits is not None else model(x)
        loss = 0.5 * out.attack + 0.5 * F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


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
    for method, build in METHODS.items():
        step = engine_step(model, build(model), x, y)
        with softplus_activations(model, 20.0):
            seconds = median_seconds(step, repeats, device)
        rows.append({"model": name, "method": method, "batch": len(x), "ms/step": 1000 * seconds,
                     "ratio": seconds / plain_seconds, "samples/s": len(x) / seconds})
    return rows


def center_of_mass_distance(h: torch.Tensor, target: tuple[float, float]) -> torch.Tensor:
    """Hand-written: (B,) distance of each map's centre of mass (maps summing to 1) to ``target``."""
    rows = torch.arange(h.shape[1], dtype=h.dtype, device=h.device)
    cols = torch.arange(h.shape[2], dtype=h.dtype, device=h.device)
    r = (h.sum(2) * rows).sum(1)
    c = (h.sum(1) * cols).sum(1)
    return ((r - target[0]) ** 2 + (c - target[1]) ** 2 + 1e-12).sqrt()


def hand_written_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int) -> None:
    """The manipulation loop as one would write it without veneer (thesis Ch. 3, Gradient, centre of mass)."""
    student = copy.deepcopy(model)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-4)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    with softplus_activations(student, 20.0):
        for step in range(steps):
            index = order[step * batch:(step + 1) * batch]
            xb = x[index].detach().requires_grad_(True)
            yb = y[index]
            logits = student(xb)
            (grad,) = torch.autograd.grad(logits.gather(1, yb[:, None]).sum(), xb, create_graph=True)
            h = grad.abs().sum(1)
            h = h / h.flatten(1).sum(1).clamp_min(1e-12)[:, None, None]
            attack = center_of_mass_distance(h, (0.0, 0.0)).mean()
            loss = 0.5 * attack + 0.5 * F.cross_entropy(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def veneer_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int) -> None:
    Manipulation(model, Gradient(model), CenterOfMass((0, 0)), keep="ce", alpha=0.5, lr=1e-4, steps=steps,
                 batch_size=batch)((x, y))


def against_hand_written(model: torch.nn.Module, batch: int, shape: tuple[int, ...], repeats: int,
                         steps: tuple[int, int] = (4, 16)) -> dict:
    """Per-step time of veneer and of the hand-written loop from the slope between two step counts."""
    device = next(model.parameters()).device
    x = torch.rand((batch * steps[1], *shape), device=device)
    y = torch.randint(0, 10, (len(x),), device=device)
    times = {(side, n): [] for side in ("veneer", "hand") for n in steps}
    loops = {"veneer": veneer_loop, "hand": hand_written_loop}
    for _ in range(repeats):
        for n in steps:
            for side, loop in loops.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                loop(model, x, y, n, batch)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[(side, n)].append(time.perf_counter() - start)
    per_step = {side: (statistics.median(times[(side, steps[1])]) - statistics.median(times[(side, steps[0])]))
                / (steps[1] - steps[0]) for side in loops}
    return {"batch": batch, "steps": f"{steps[0]} vs {steps[1]}", "veneer ms/step": 1000 * per_step["veneer"],
            "hand-written ms/step": 1000 * per_step["hand"], "veneer / hand-written": per_step["veneer"] / per_step["hand"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="bench/manipulate.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = machine()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    cases = [("mnist_cnn", mnist_cnn(), (64, 1, 28, 28)), ("vgg11 x0.25", cifar_vgg(11, width=0.25), (32, 3, 32, 32))]
    torch.manual_seed(0)
    loop = {"model": "mnist_cnn", **against_hand_written(mnist_cnn().to(device).eval(), 64, (1, 28, 28),
                                                         max(3, args.repeats // 2))}
    print(markdown_table([loop]), flush=True)
    rows = []
    for name, model, shape in cases:
        model = model.to(device).eval()
        x = torch.rand(shape, device=device)
        y = torch.randint(0, 10, (shape[0],), device=device)
        rows += bench_model(name, model, x, y, args.repeats)
        print(markdown_table(rows[-1 - len(METHODS):]), flush=True)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    text = (f"# Manipulation step\n\nDevice: {where}; torch {torch.__version__}. Command: "
            f"`python bench/manipulate.py --threads {args.threads} --repeats {args.repeats}`.\n\n"
            "## veneer vs a hand-written loop (Gradient, centre of mass, keep ce; slope between two step counts)\n\n"
            + markdown_table([loop]) + "\n\n## Step over a plain training step (medians)\n\n" + markdown_table(rows))
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    write_results("manipulate", {"repeats": args.repeats, "hand_written_repeats": max(3, args.repeats // 2),
                                 "threads": args.threads, "device": where, "statistic": "median"}, rows, started,
                  hand_written=loop)


if __name__ == "__main__":
    main()
