"""GPU against CPU: explanation throughput, a model-level manipulation step and a neuron-attack step.

    python bench/gpu.py [--repeats 5] [--out bench/gpu.md]

One prepared script, under five minutes on a GPU machine: the MNIST CNN (random weights; speed does not depend
on them) at batch 256 for the explainers (Gradient, IntegratedGradients 32 steps, SmoothGrad 16, LRP, DeepLift,
Grad-CAM), one :class:`~veneer.manipulate.Manipulation` step (Gradient, centre of mass, batch 64) and one
:class:`~veneer.neurons.PushDown` step (64 + 64 images), each timed on CUDA and on the CPU in the same run
(medians; CUDA synchronised). Without a CUDA device it says so and exits 0.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from veneer.explain import LRP, DeepLift, GradCAM, Gradient, IntegratedGradients, SmoothGrad
from veneer.manipulate import CenterOfMass, Manipulation
from veneer.models import mnist_cnn
from veneer.neurons import PushDown
from veneer.report.manipulate import markdown_table

from timing import median_seconds  # bench/timing.py (the script's folder is on sys.path)

EXPLAINERS = {"Gradient": Gradient, "IntegratedGradients (32)": lambda m: IntegratedGradients(m, steps=32),
              "SmoothGrad (16)": lambda m: SmoothGrad(m, samples=16, seed=0), "LRP epsilon": LRP,
              "DeepLift": DeepLift, "GradCAM": lambda m: GradCAM(m, "3")}


def measure(device: torch.device, repeats: int) -> dict[str, float]:
    """Seconds per call of each case on ``device``."""
    torch.manual_seed(0)
    model = mnist_cnn().to(device).eval()
    x = torch.rand(256, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (256,), device=device)
    found = {}
    for name, build in EXPLAINERS.items():
        explainer = build(model)
        found[f"explain: {name} (batch 256)"] = median_seconds(lambda: explainer(x, target=y), repeats, device,
                                                               warmup=1)
    steps = (2, 6)
    for name, run in {
        "manipulation step (Gradient, COM, batch 64)":
            lambda n: Manipulation(model, Gradient(model), CenterOfMass((0, 0)), steps=n, batch_size=64)((x, y)),
        "push-down step (64 + 64 images)":
            lambda n: PushDown(model, "4", k=10, steps=n, batch_size=64, attack_batch=64)((x, y)),
    }.items():
        low = median_seconds(lambda: run(steps[0]), max(2, repeats // 2), device, warmup=1)
        high = median_seconds(lambda: run(steps[1]), max(2, repeats // 2), device, warmup=1)
        found[name] = (high - low) / (steps[1] - steps[0])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench/gpu.md")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: bench/gpu.py measures GPU against CPU and has nothing to measure here")
        return
    cpu = measure(torch.device("cpu"), args.repeats)
    gpu = measure(torch.device("cuda"), args.repeats)
    rows = [{"case": case, "CPU ms": 1000 * cpu[case], "GPU ms": 1000 * gpu[case], "GPU speed-up": cpu[case] / gpu[case]}
            for case in cpu]
    text = (f"# GPU against CPU\n\nGPU: {torch.cuda.get_device_name()}; CPU: {platform.processor() or 'x86_64'}, "
            f"{torch.get_num_threads()} threads; torch {torch.__version__}; medians of {args.repeats}.\n\n"
            + markdown_table(rows) + "\n")
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
