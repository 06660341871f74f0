"""Benchmark of veneer.neurons on the bundled MNIST CNN (last conv layer, post-ReLU "4", 64 channels).

1. Top-k over the training set: streaming :func:`veneer.neurons.top_k` (keeps (C, k + batch) values)
   against store-everything-then-sort (:func:`veneer.neurons.activations` then ``topk``, keeps (N, C));
   images/s and the bytes of activation state each keeps (exact, from the tensor sizes), on the 4000
   training images and on a 40000-image set (the training set tiled 10 times).
2. One fine-tuning step of :class:`veneer.neurons.PushDown` (64 training + 64 attack images, teacher
   forward, hooks, distillation) against a plain cross-entropy training step on 128 images.

Writes bench/neurons.md (table) and prints it, and writes the figures to ``bench/results/neurons.json``, which
BENCHMARKS.md cites.  ``python bench/neurons.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from veneer.data import mnist
from veneer.models import pretrained
from veneer.neurons import PushDown, activations, top_k

from record import machine, write_results

LAYER, K, BATCH = "4", 10, 256


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_topk(model, x: torch.Tensor, repeats: int) -> list[dict]:
    channels = activations(model, LAYER, x[:2]).shape[1]
    stream = _best(lambda: top_k(model, LAYER, x, K, batch_size=BATCH), repeats)
    store = _best(lambda: activations(model, LAYER, x, batch_size=BATCH).topk(K, dim=0), repeats)
    return [
        {"method": "streaming top_k", "n": len(x), "images_per_s": len(x) / stream,
         "state_bytes": channels * (K + BATCH) * 4 * 2},  # values (float32) + indices, (C, k + batch) each
        {"method": "store all, then sort", "n": len(x), "images_per_s": len(x) / store,
         "state_bytes": len(x) * channels * 4},
    ]


def bench_steps(model, x: torch.Tensor, y: torch.Tensor, steps: int, repeats: int) -> dict:
    attack = PushDown(model, LAYER, k=K, steps=steps, batch_size=64, attack_batch=64, relative=True, progress=False)
    attack_seconds = min(attack(x).seconds for _ in range(repeats)) / steps
    plain = pretrained("mnist-cnn", progress=False)
    optimizer = torch.optim.Adam(plain.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)

    def train_steps():
        for _ in range(steps):
            rows = torch.randperm(len(x), generator=generator)[:128]
            loss = torch.nn.functional.cross_entropy(plain(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    plain_seconds = _best(train_steps, repeats) / steps
    return {"attack_step_ms": 1000 * attack_seconds, "plain_step_ms": 1000 * plain_seconds,
            "ratio": attack_seconds / plain_seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).with_name("neurons.md")))
    options = parser.parse_args()
    started = machine()
    model = pretrained("mnist-cnn", progress=False)
    train = mnist("train")
    rows = bench_topk(model, train.x, options.repeats)
    rows += bench_topk(model, train.x.repeat(10, 1, 1, 1), max(1, options.repeats - 1))
    steps = bench_steps(model, train.x, train.y, options.steps, options.repeats)
    lines = [
        f"# veneer.neurons benchmark ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; shared machine, best of {options.repeats})",
        "", "Top-k (k=10) of the MNIST CNN's last conv layer (64 channels, post-ReLU):", "",
        "| method | images | images/s | activation state kept |", "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['method']} | {row['n']} | {row['images_per_s']:.0f} | {row['state_bytes'] / 1024:.1f} KiB |")
    lines += ["", "Fine-tuning step (push-down: 64 training + 64 D_attack images, teacher forward, hooks; plain: "
              "cross-entropy on 128 images):", "",
              "| step | ms/step |", "|---|---|",
              f"| push-down (relative) | {steps['attack_step_ms']:.1f} |",
              f"| plain training | {steps['plain_step_ms']:.1f} |",
              f"| ratio | {steps['ratio']:.2f}x |", "",
              "Both top-k methods are dominated by the forward pass; the streaming one keeps C x (k + batch) "
              "values and indices whatever the data size, store-all keeps N x C. Wall times on the shared "
              "2-core machine vary 2-6x with the other jobs' load; compare rows of one run only.", ""]
    text = "\n".join(lines)
    Path(options.out).write_text(text)
    print(text)
    write_results("neurons", {"repeats": options.repeats, "steps": options.steps, "threads": torch.get_num_threads(),
                              "layer": LAYER, "k": K, "batch": BATCH, "statistic": "best"}, rows, started,
                  step=steps)


if __name__ == "__main__":
    main()
