"""Benign controls for the audit (issue 23): the changes every team makes to a clean model must not be flagged.

The bundled MNIST CNN (seed 0) and six benign changes of it, each audited like a suspect (``veneer audit
--effort fast``: three clean twins, no reference, every registered test), on the bundled MNIST training and test
splits. None of the audit's thresholds or tolerances was set on these models (held out):

* ``fine-tune``: cross-entropy on the training images, 3 epochs at lr 1e-3 (about 190 steps: the step count and
  learning rate of the model-level attacks' demo);
* ``distilled``: a fresh CNN of seed 7 trained (8 epochs) on the bundled model's predicted labels (hard-label
  distillation, Hinton et al. 2015, Sec. 2);
* ``pruned``: the 50% smallest-magnitude weights of every Conv/Linear layer set to zero (magnitude pruning, Han
  et al. 2015), no retraining;
* ``int8``: every weight tensor rounded to a symmetric per-tensor int8 grid, kept in float (simulated weight
  quantisation; ``torch.ao`` dynamic quantisation leaves no input gradient, so the gradient methods could not run);
* ``adversarial``: 3 epochs of FGSM adversarial training (eps 0.1, Goodfellow et al. 2015, Eq. 3's mix: half
  clean, half adversarial loss) at lr 1e-3;
* ``augmented``: 3 epochs of fine-tuning with heavier augmentation (shifts of up to 3 pixels plus Gaussian noise
  of sd 0.1).

Writes ``runs/benign_controls/<name>/`` (each a ``veneer audit`` run directory) and the committed summary
``experiments/results/benign_controls.json``. Run: ``nice python experiments/benign_controls.py`` (about a minute
per model on two idle cores).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from veneer.audit import Audit
from veneer.data import mnist
from veneer.models import accuracy, mnist_cnn, pretrained, train
from veneer.report.audit import write_audit
from veneer.runs import seed_everything, versions, write_json

SUMMARY = Path(__file__).parent / "results" / "benign_controls.json"
WEIGHTED = (nn.Conv2d, nn.Linear)


def fine_tuned(model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: float = 0.0, shift: int = 0,
               epochs: int = 3, lr: float = 1e-3, pixels: bool = True) -> nn.Module:
    """Cross-entropy fine-tuning; ``noise``: Gaussian noise of that sd added to the inputs once (clamped to
    [0, 1] when ``pixels``), ``shift``: random shifts of up to that many pixels."""
    inputs = x
    if noise:
        inputs = x + noise * torch.randn_like(x)
        inputs = inputs.clamp(0, 1) if pixels else inputs
    return train(copy.deepcopy(model), inputs, y, epochs=epochs, lr=lr, max_shift=shift, seed=1).model


def distilled(model: nn.Module, x: torch.Tensor, fresh=mnist_cnn, options: dict | None = None) -> nn.Module:
    """A fresh ``fresh()`` (seed 7) trained on ``model``'s predicted labels with ``options`` of
    :func:`veneer.models.train` (default 8 epochs at lr 3e-3)."""
    with torch.no_grad():
        labels = model(x).argmax(1)
    torch.manual_seed(7)
    return train(fresh(), x, labels, **({"epochs": 8, "lr": 3e-3} | (options or {}) | {"seed": 7})).model


def pruned(model: nn.Module, share: float = 0.5) -> nn.Module:
    thinned = copy.deepcopy(model)
    with torch.no_grad():
        for module in thinned.modules():
            if isinstance(module, WEIGHTED):
                weight = module.weight
                cut = weight.abs().flatten().kthvalue(int(share * weight.numel())).values
                weight.mul_((weight.abs() > cut).to(weight.dtype))
    return thinned.eval()


def int8(model: nn.Module) -> nn.Module:
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in rounded.parameters():
            scale = parameter.abs().max() / 127
            parameter.copy_((parameter / scale).round().clamp(-127, 127) * scale)
    return rounded.eval()


def adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 0.1, epochs: int = 3,
                lr: float = 1e-3, pixels: bool = True) -> nn.Module:
    """FGSM adversarial training (the attacked inputs clamped to [0, 1] when ``pixels``)."""
    trained = copy.deepcopy(model).train()
    generator = seed_everything(1)
    optimizer = torch.optim.Adam(trained.parameters(), lr=lr)
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).split(64):
            batch, labels = x[index].clone().requires_grad_(True), y[index]
            (grad,) = torch.autograd.grad(F.cross_entropy(trained(batch), labels), batch)
            attacked = batch + eps * grad.sign()
            attacked = (attacked.clamp(0, 1) if pixels else attacked).detach()
            loss = (F.cross_entropy(trained(batch.detach()), labels) + F.cross_entropy(trained(attacked), labels)) / 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return trained.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/benign_controls")
    options = parser.parse_args()
    train_data, test_data = mnist("train"), mnist("test")
    x, y = train_data.x, train_data.y
    original = pretrained("mnist-cnn")
    models = {"original": lambda: original, "fine-tune": lambda: fine_tuned(original, x, y),
              "distilled": lambda: distilled(original, x), "pruned": lambda: pruned(original),
              "int8": lambda: int8(original), "adversarial": lambda: adversarial(original, x, y),
              "augmented": lambda: fine_tuned(original, x, y, noise=0.1, shift=3)}
    rows = []
    for name, build in models.items():
        model = build()
        start = time.perf_counter()
        found = Audit(model, effort="fast", seed=0, progress=False)(train_data, test_data)
        write_audit(found, Path(options.out) / name)
        zs = {test: round(record["z"], 2) for test, record in found.tests.items()}
        rows.append({"model": name, "verdict": found.verdict, "score": round(found.score, 3),
                     "test_accuracy": round(accuracy(model, test_data.x, test_data.y), 4),
                     "z_max": round(max(zs.values()), 2), "largest": max(zs, key=zs.get), "z": zs,
                     "seconds": round(time.perf_counter() - start, 1)})
        print(rows[-1], flush=True)
    benign = [r for r in rows if r["model"] != "original"]
    write_json(SUMMARY, {
        "what": "veneer audit --effort fast (twins, every registered test) of the bundled MNIST CNN and six benign "
                "changes of it; held out: no threshold was set on them",
        "seed": 0, "rows": rows,
        "benign_flagged": f"{sum(r['verdict'] != 'clean' for r in benign)} of {len(benign)}",
        "versions": versions()})
    print(f"wrote {SUMMARY}")


if __name__ == "__main__":
    main()
