"""Explanation throughput: veneer against Captum on the same model and batch (issue 2 benchmark).

Interleaved repeats, medians (Occlusion on the first 32 images of the batch: Captum's default settings
evaluate one window position per forward pass, which takes an hour at batch 256 on 2 cores). Prints a markdown table of images/s and the ratio veneer / Captum, and the
cost of ``create_graph=True`` + backward to the parameters relative to a plain forward+backward, and writes the
rows to ``bench/results/explain.json`` (``explain_graphs_<threads>threads.json`` with ``--graphs``), which
BENCHMARKS.md cites.

    .venv/bin/python bench/explain.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from captum.attr import (DeepLift as CaptumDeepLift, InputXGradient, IntegratedGradients as CaptumIG, LayerAttribution,
                         LayerGradCam, LRP as CaptumLRP, NoiseTunnel, Occlusion as CaptumOcclusion, Saliency)
from captum.attr._utils.lrp_rules import EpsilonRule

from veneer.explain import (LRP, DeepLift, GradCAM, Gradient, GradientXInput, IntegratedGradients, Occlusion,
                            SmoothGrad)
from veneer.models import cifar_vgg, mnist_cnn, mnist_resnet

from record import machine, write_results


def captum_lrp(model):
    """Captum LRP with the epsilon rule; Flatten and Identity, which Captum has no default rule for, pass
    relevance on."""
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.rule = EpsilonRule(epsilon=1e-6)
        elif isinstance(module, (torch.nn.Flatten, torch.nn.Identity)):
            module.rule = EpsilonRule(epsilon=1e-9)
    return CaptumLRP(model)


class CustomForwardCNN(torch.nn.Module):
    """The MNIST CNN written as a plain module whose forward flattens with ``x.flatten(1)`` (not a chain)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu1, self.pool1 = torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)
        self.fc1, self.relu3, self.fc2 = torch.nn.Linear(64 * 7 * 7, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)

    def forward(self, x):
        x = self.pool2(self.relu2(self.conv2(self.pool1(self.relu1(self.conv1(x))))))
        return self.fc2(self.relu3(self.fc1(x.flatten(1))))


def graph_cases(model):
    """LRP and DeepLift only (the rows of issue 10: models that are not chains)."""
    return [("LRP epsilon", LRP(model, composite="epsilon"), lambda x, t: captum_lrp(model).attribute(x, target=t)),
            ("DeepLift", DeepLift(model), lambda x, t: CaptumDeepLift(model).attribute(x, target=t))]


def cases(model, layer, window, stride):
    """(name, veneer call, captum call) for each method both libraries have."""
    c = model[0].in_channels
    lgc = LayerGradCam(model, dict(model.named_modules())[layer])

    def captum_gradcam(x, t):
        cam = lgc.attribute(x, target=t, relu_attributions=True)
        return LayerAttribution.interpolate(cam, x.shape[-2:], interpolate_mode="bilinear")

    return [
        ("Gradient", Gradient(model), lambda x, t: Saliency(model).attribute(x, target=t, abs=False)),
        ("GradientXInput", GradientXInput(model), lambda x, t: InputXGradient(model).attribute(x, target=t)),
        ("IntegratedGradients (32 steps)", IntegratedGradients(model, steps=32),
         lambda x, t: CaptumIG(model).attribute(x, target=t, n_steps=32, method="riemann_right")),
        ("SmoothGrad (16 samples)", SmoothGrad(model, samples=16, seed=0),
         lambda x, t: NoiseTunnel(Saliency(model)).attribute(x, target=t, nt_type="smoothgrad", nt_samples=16,
                                                             stdevs=0.15, abs=False)),
        ("GradCAM", GradCAM(model, layer=layer), captum_gradcam),
        (f"Occlusion {window}x{window}/{stride}", Occlusion(model, window=window, stride=stride),
         lambda x, t: CaptumOcclusion(model).attribute(x, target=t, sliding_window_shapes=(c, window, window),
                                                       strides=(c, stride, stride), baselines=0.0)),
        ("LRP epsilon", LRP(model, composite="epsilon"), lambda x, t: captum_lrp(model).attribute(x, target=t)),
        ("DeepLift", DeepLift(model), lambda x, t: CaptumDeepLift(model).attribute(x, target=t)),
    ]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def second_order_cost(model, explainer, x, t) -> float:
    """(attribution with create_graph + backward to parameters) / (forward + backward), medians of 3."""
    def plain():
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), t).backward()

    def explained():
        model.zero_grad()
        explainer(x, target=t, create_graph=True).pow(2).sum().backward()

    base = statistics.median(timed(plain) for _ in range(3))
    return statistics.median(timed(explained) for _ in range(3)) / base


def bench(label, model, x, repeats, layer, window, stride, occlusion_batch=32, methods=None):
    model.eval()
    t = torch.arange(len(x)) % 10
    rows = []
    for name, ours, theirs in methods or cases(model, layer, window, stride):
        if isinstance(ours, Occlusion):  # Captum's default runs one forward per window: hours at full batch
            x, t = x[:occlusion_batch], t[:occlusion_batch]
            name = f"{name} (batch {len(x)})"
        ours(x, t), theirs(x, t)  # warm-up
        a, b = [], []
        for _ in range(repeats):  # interleaved
            a.append(timed(lambda: ours(x, target=t)))
            b.append(timed(lambda: theirs(x, t)))
        ma, mb = statistics.median(a), statistics.median(b)
        cost = second_order_cost(model, ours, x, t) if ours.differentiable else float("nan")
        rows.append({"model": label, "method": name, "veneer_img_s": len(x) / ma, "captum_img_s": len(x) / mb,
                     "ratio": mb / ma, "second_order": None if math.isnan(cost) else cost})
        print(f"| {label} | {name} | {len(x) / ma:.0f} | {len(x) / mb:.0f} | {mb / ma:.2f}x | "
              f"{'n/a' if cost != cost else f'{cost:.1f}x'} |", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vgg-width", type=float, default=0.5)
    parser.add_argument("--skip-mnist", action="store_true", help="only the VGG rows")
    parser.add_argument("--graphs", action="store_true",
                        help="only the LRP/DeepLift rows on a ResNet-8 and a custom-forward CNN (issue 10)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = machine()
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} interleaved repeats, medians\n")
    print("| model | method | veneer img/s | Captum img/s | veneer / Captum | create_graph+backward / fwd+bwd |")
    print("|---|---|---|---|---|---|")
    settings = {"repeats": args.repeats, "threads": args.threads, "vgg_width": args.vgg_width}
    if args.graphs:
        resnet = mnist_resnet(width=16).eval()
        rows = bench("ResNet-8 (BN, residual sums) 28x28, batch 64", resnet, torch.rand(64, 1, 28, 28),
                     args.repeats, None, None, None, methods=graph_cases(resnet))
        custom = CustomForwardCNN().eval()
        rows += bench("MNIST CNN with x.flatten(1) in forward, batch 256", custom, torch.rand(256, 1, 28, 28),
                      args.repeats, None, None, None, methods=graph_cases(custom))
        write_results(f"explain_graphs_{args.threads}threads", settings, rows, started)
        return
    rows = []
    if not args.skip_mnist:
        rows += bench("MNIST CNN, batch 256", mnist_cnn(), torch.rand(256, 1, 28, 28), args.repeats, "3", 5, 1)
    rows += bench(f"VGG-11 x{args.vgg_width} 32x32, batch 64", cifar_vgg(11, width=args.vgg_width),
                  torch.rand(64, 3, 32, 32), args.repeats, "18", 8, 4)
    write_results("explain_skip_mnist" if args.skip_mnist else "explain", {**settings, "skip_mnist": args.skip_mnist},
                  rows, started)


if __name__ == "__main__":
    main()
