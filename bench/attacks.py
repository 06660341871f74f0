"""Benchmark: batched input attacks against a per-image loop of the same code (issue: >= 5x on CPU).

MassCenter with Gradient and with IG (32 steps) on 64 correctly classified MNIST test images, bundled CNN.
The batched run attacks all ``--n`` images in one call; the loop attacks ``--loop-images`` of them one call
each (the per-image runs are independent, so images/s of a subset is the loop's rate). Both run ``--steps``
signed-gradient steps; the issue's 300-step figures follow by scaling the time per step (every step costs
the same). Prints a Markdown table and writes its rows to ``bench/results/attacks.json``, which BENCHMARKS.md cites.

Usage: ``python bench/attacks.py [--steps 20] [--n 64] [--loop-images 8] [--device cpu] [--threads 2]``
"""

from __future__ import annotations

import argparse
import time

import torch

from veneer.attacks import MassCenter
from veneer.data import mnist
from veneer.explain import Gradient, IntegratedGradients
from veneer.models import pretrained

from record import machine, write_results


def images_per_second(attack: MassCenter, x: torch.Tensor, y: torch.Tensor, one_by_one: bool) -> float:
    start = time.perf_counter()
    if one_by_one:
        for i in range(len(x)):
            attack(x[i:i + 1], y[i:i + 1])
    else:
        attack(x, y)
    if x.is_cuda:
        torch.cuda.synchronize()
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--loop-images", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = machine()
    model = pretrained("mnist-cnn", progress=False).to(args.device)
    data = mnist("test")
    x, y = data.x[: 2 * args.n].to(args.device), data.y[: 2 * args.n].to(args.device)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x, y = x[correct][: args.n], y[correct][: args.n]
    print(f"MassCenter, eps 0.1, {args.steps} steps, {args.n} images batched vs {args.loop_images} one by one, "
          f"device {args.device}, {torch.get_num_threads()} threads\n")
    print("| explainer | batched img/s | loop img/s | ratio | batched img/s at 300 steps | loop img/s at 300 steps |")
    print("|---|---|---|---|---|---|")
    rows = []
    for explainer in (Gradient(model), IntegratedGradients(model, steps=32)):
        attack = MassCenter(model, explainer, eps=0.1, steps=args.steps)
        attack(x[:2], y[:2])  # warm-up
        batched = images_per_second(attack, x, y, one_by_one=False)
        loop = images_per_second(attack, x[: args.loop_images], y[: args.loop_images], one_by_one=True)
        scale = args.steps / 300
        rows.append({"explainer": type(explainer).__name__, "batched_img_s": batched, "loop_img_s": loop,
                     "ratio": batched / loop, "batched_img_s_300": batched * scale, "loop_img_s_300": loop * scale})
        print(f"| {type(explainer).__name__} | {batched:.2f} | {loop:.2f} | {batched / loop:.1f}x | "
              f"{batched * scale:.3f} | {loop * scale:.3f} |")
    write_results("attacks", {"steps": args.steps, "n": len(x), "loop_images": args.loop_images, "device": args.device,
                              "threads": args.threads, "repeats": 1}, rows, started)


if __name__ == "__main__":
    main()
