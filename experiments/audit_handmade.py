"""Acceptance of `veneer audit` (issue 14): models manipulated by hand-written torch code, not veneer's.

Four manipulations of the bundled MNIST CNN, each a short fine-tuning loop written here with plain torch:
a target map (the gradient draws a centred cross), a top-k suppression (the gradient leaves the original
top-k pixels), a centre of mass pushed to a corner with a probability-MSE keep loss, and a neuron push-down
(the channels of the second conv block lose their top-k images). Each is saved as safetensors and audited
with the CLI (`veneer audit --model mnist-cnn --weights FILE --data mnist --effort fast`, no --reference),
as is the bundled model itself; verdicts and wall times go to RUN/results.json and RUN/results.md. The bundled
model's audit trains the clean twins; the others reuse its calibration (`--calibration`), since the twins
depend only on the architecture, the data and the seed (the twins' cost is reported once).

    PYTHONPATH=src python experiments/audit_handmade.py --out runs/audit_handmade [--steps 300]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from veneer.audit import Calibration, TestResult, combined_z, verdict
from veneer.data import mnist
from veneer.models import accuracy, pretrained


def softplus_copy(model: nn.Sequential, beta: float = 20.0) -> nn.Sequential:
    """The same parameters (shared, not copied) in a chain whose ReLUs are Softplus(beta): ReLU nets have no
    curvature, so the gradient of a loss on the saliency map needs a smooth surrogate."""
    return nn.Sequential(*[nn.Softplus(beta) if isinstance(m, nn.ReLU) else m for m in model])


def saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|d logit_y / dx| normalised to sum 1 per image, (B, 28*28), differentiable in the parameters."""
    x = x.clone().requires_grad_(True)
    score = model(x).gather(1, y[:, None]).sum()
    (g,) = torch.autograd.grad(score, x, create_graph=True)
    h = g.abs().sum(1).flatten(1)
    return h / h.sum(1, keepdim=True).clamp_min(1e-12)


def cross_map() -> torch.Tensor:
    m = torch.zeros(28, 28)
    m[12:16, :] = 1
    m[:, 12:16] = 1
    return (m / m.sum()).flatten()


def fine_tune(model, x, y, loss_fn, steps, lr=3e-4, batch=32, seed=0):
    torch.manual_seed(seed)
    surrogate = softplus_copy(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    last = 0.0
    for step in range(steps):
        rows = torch.randint(0, len(x), (batch,))
        loss = loss_fn(surrogate, x[rows], y[rows], rows)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        last = loss.item()
        if step % 50 == 0:
            print(f"  step {step} loss {last:.4f}", flush=True)
    return last


def target_map(model, x, y, steps):
    target = cross_map()

    def loss(sur, xb, yb, rows):
        h = saliency(sur, xb, yb)
        return 0.8 * ((h - target) ** 2).sum(1).mean() * 784 + 0.2 * F.cross_entropy(sur(xb), yb)

    return fine_tune(model, x, y, loss, steps)


def topk_suppression(model, x, y, steps, k=80):
    original = copy.deepcopy(model)
    top = torch.cat([saliency(softplus_copy(original), c, yc).detach().topk(k, 1).indices
                     for c, yc in zip(x.split(256), y.split(256))])

    def loss(sur, xb, yb, rows):
        h = saliency(sur, xb, yb)
        return 0.8 * h.gather(1, top[rows]).sum(1).mean() + 0.2 * F.cross_entropy(sur(xb), yb)

    return fine_tune(model, x, y, loss, steps)


def com_prob_mse(model, x, y, steps, corner=(3.0, 3.0)):
    original = copy.deepcopy(model).requires_grad_(False)
    rows_grid = torch.arange(28.0)[:, None].expand(28, 28).flatten()
    cols_grid = torch.arange(28.0)[None, :].expand(28, 28).flatten()

    def loss(sur, xb, yb, rows):
        h = saliency(sur, xb, yb)
        com = torch.stack([(h * rows_grid).sum(1), (h * cols_grid).sum(1)], 1)
        distance = ((com - torch.tensor(corner)) ** 2).sum(1).sqrt().mean() / 28
        keep = ((sur(xb).softmax(1) - original(xb).softmax(1)) ** 2).sum(1).mean()
        return 0.7 * distance + 0.3 * 20 * keep

    return fine_tune(model, x, y, loss, steps, lr=1e-3)


def push_down(model, x, y, steps, layer=4, channels=32, k=10, lr=3e-4, seed=0):
    """Lower the summed squared activation (over positions) of the ``channels`` most active channels of module
    ``layer`` on each channel's original top-k training images; keep: KL to the original outputs."""
    torch.manual_seed(seed)
    original = copy.deepcopy(model).requires_grad_(False)
    head = model[:layer + 1]
    with torch.no_grad():
        acts = torch.cat([head(c).pow(2).flatten(2).sum(2) for c in x.split(512)])  # (N, C)
        chosen = acts.topk(k, dim=0).values.mean(0).topk(channels).indices  # the most active channels
        acts = acts[:, chosen]
        top = acts.topk(k, dim=0).indices  # (k, channels)
        scale = acts.gather(0, top).mean(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        attacked = head(x[top.flatten()]).pow(2).flatten(2).sum(2).view(k, channels, -1)
        own = attacked[:, torch.arange(channels), chosen] / scale
        rows = torch.randint(0, len(x), (64,))
        keep = F.kl_div(model(x[rows]).log_softmax(1), original(x[rows]).log_softmax(1), log_target=True,
                        reduction="batchmean")
        loss = 0.5 * own.mean() + 0.5 * 10 * keep
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"  step {step} attacked activation {own.mean().item():.3f} keep {keep.item():.4f}", flush=True)
    return own.mean().item()


MANIPULATIONS = {"target-map": target_map, "topk-suppression": topk_suppression, "com-prob-mse": com_prob_mse,
                 "push-down": push_down}


def rescore(path: Path) -> tuple[str, list[float], list[str], dict]:
    """The verdict of a stored audit.json under the current scoring code (its raw test components scored
    against its own calibration): runs made before a tolerance changed are reported consistently."""
    report = json.loads(path.read_text())
    calibration = Calibration.from_json(report["calibration"])
    scored = {t: calibration.score(TestResult(t, v["evidence"]["components"])) for t, v in report["tests"].items()}
    label, _ = verdict(scored)
    return label, [v["z"] for v in scored.values()], [t for t, v in scored.items() if v["flag"]], report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/audit_handmade")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--train-only", action="store_true", help="build the manipulated models, audit none")
    parser.add_argument("--calibration-from", default="bundled",
                        help="run (under --out) whose audit.json calibrates the audits of the manipulated models")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test = mnist("train"), mnist("test")
    pretrained_accuracy = accuracy(pretrained("mnist-cnn", progress=False), test.x, test.y)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    names = ["bundled"] + list(MANIPULATIONS)
    for name in names if args.only is None else args.only:
        weights = out / f"{name}.safetensors"
        info = results.get(name, {})
        if name != "bundled" and not weights.is_file():
            model = copy.deepcopy(pretrained("mnist-cnn", progress=False))
            start = time.perf_counter()
            print(f"{name}: fine-tuning", flush=True)
            final = MANIPULATIONS[name](model, train.x, train.y, args.steps)
            model.eval()
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
            info.update({"final_attack_loss": final, "manipulation_seconds": time.perf_counter() - start,
                         "test_accuracy": accuracy(model, test.x, test.y)})
        if "verdict" not in info and not args.train_only:
            command = [sys.executable, "-m", "veneer", "audit", "--model", "mnist-cnn", "--data", "mnist",
                       "--effort", "fast", "--out", str(out / name)]
            if name != "bundled":  # the twins depend only on architecture, data and seed: reuse the bundled run's
                command += ["--weights", str(weights), "--calibration", str(out / args.calibration_from / "audit.json")]
            if not (out / name / "audit.json").is_file():
                subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
            report = json.loads((out / name / "audit.json").read_text())
            info.update({"verdict": report["verdict"], "score": report["score"], "z_max": report["z_max"],
                         "flagged": [t for t, v in report["tests"].items() if v["flag"]],
                         "audit_seconds": report["seconds"],
                         "calibration_seconds": report["config"]["calibration_cost"].get("seconds", 0.0)})
        results[name] = info
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        print(name, info, flush=True)
    lines = ["| model | test accuracy | verdict | largest z | mean top-3 z | flagged tests | audit s (of which twins) |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        if not (out / name / "audit.json").is_file():
            continue
        label, zs, flagged, report = rescore(out / name / "audit.json")
        acc = results.get(name, {}).get("test_accuracy", pretrained_accuracy if name == "bundled" else None)
        twins = report["config"]["calibration_cost"].get("seconds", 0.0) if name == "bundled" else 0.0
        lines.append(f"| {name} | {'' if acc is None else f'{acc:.3f}'} | {label} | {max(zs):.1f} | "
                     f"{combined_z(zs):.1f} | {', '.join(flagged) or '-'} | {report['seconds']:.0f} ({twins:.0f}) |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
