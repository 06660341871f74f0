"""Input-level attacks on the correctly classified samples of a data set, every attack x method x eps, with
their files: ``per_image.csv``, ``adversarial.safetensors``, Fig.-1 figures and the Fig.-3 sweep
(``veneer attack-input``; Ghorbani et al. 2019)."""

from __future__ import annotations

import pathlib
from typing import Any

import pandas as pd
import torch

from veneer.attacks import ATTACKS, Outcome, make_attack, saliency_map, sweep
from veneer.checks import check_eval_mode, check_labels
from veneer.data import LabeledData, mnist
from veneer.explain import make_explainers, select_methods
from veneer.jobs.results import AttackInputRun, AttackSweepRun
from veneer.models import pretrained
from veneer.report.attacks import attack_figure, sweep_figure
from veneer.runs import atomic_write_bytes, save_tensors, seed_everything, write_result


FIG3_METHODS = ("gradient", "ig", "deeplift")


def correctly_classified(model: torch.nn.Module, data: LabeledData, device: str, batch_size: int
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, y, index)`` of the samples the model classifies correctly (Ghorbani et al. attack only those)."""
    x, y = data.x.to(device), data.y.to(device)
    with torch.no_grad():
        predicted = torch.cat([model(part).argmax(dim=-1) for part in x.split(batch_size)])
    index = (predicted == y).nonzero().squeeze(1)
    return x[index], y[index], index


def _figure_rows(outcome: Outcome, explainer, x: torch.Tensor, y: torch.Tensor, show: int) -> list[dict[str, Any]]:
    chosen = slice(0, min(show, len(x)))
    clean = saliency_map(explainer, x[chosen], y[chosen]).detach()
    perturbed = saliency_map(explainer, outcome.x_adv[chosen], y[chosen]).detach()
    stats = outcome.per_image
    return [{"index": i, "x_adv": outcome.x_adv[i], "clean_map": clean[i], "adv_map": perturbed[i],
             "title": f"{outcome.method}\nspearman {stats['spearman'][i]:.2f}"
                      f"\ntop-k {stats['topk_intersection'][i]:.2f}\nCOM shift {stats['com_shift'][i]:.1f}"}
            for i in range(len(clean))]


def write_outputs(folder: pathlib.Path, outcomes: list[Outcome], explainers: dict, x: torch.Tensor, y: torch.Tensor,
                  index: torch.Tensor, show: int, with_sweep: bool, metrics: dict[str, Any]) -> AttackInputRun:
    """Write the per-image CSV, the perturbed inputs, ``metrics.json`` (``metrics`` with the summaries under
    ``results``, before any figure: nothing computed is lost if drawing fails), then the Fig.-1 figures of the
    first ``show`` images (none for 0) and the Fig.-3 sweep; return the result (an :class:`AttackSweepRun`
    with the sweep)."""
    frames, tensors = [], {"clean": x, "labels": y, "index": index}
    for outcome in outcomes:
        frame = pd.DataFrame({name: value.detach().cpu().numpy() for name, value in outcome.per_image.items()})
        frame.insert(0, "label", y.cpu().numpy())
        frame.insert(0, "index", index.cpu().numpy())
        for position, (column, value) in enumerate((("attack", outcome.attack), ("method", outcome.method),
                                                    ("eps", outcome.eps))):
            frame.insert(position, column, value)
        frames.append(frame)
        tensors[f"{outcome.attack}/{outcome.method}/eps={outcome.eps:g}"] = outcome.x_adv
    atomic_write_bytes(folder / "per_image.csv", pd.concat(frames).to_csv(index=False).encode())
    save_tensors(folder / "adversarial.safetensors", tensors)
    summaries = [outcome.summary() for outcome in outcomes]
    result = (AttackSweepRun if with_sweep else AttackInputRun)({**metrics, "results": summaries})
    write_result(folder, result)
    if with_sweep:
        atomic_write_bytes(folder / "sweep.csv", pd.DataFrame(summaries).to_csv(index=False).encode())
    for attack, eps in dict.fromkeys((o.attack, o.eps) for o in outcomes if show > 0):
        rows = [row for o in outcomes if (o.attack, o.eps) == (attack, eps)
                for row in _figure_rows(o, explainers[o.method], x, y, show)]
        rows.sort(key=lambda row: row["index"])
        if x.ndim == 4:
            attack_figure(x, rows, folder / f"fig1_{attack}_eps{eps:g}.png")
    if with_sweep:
        sweep_figure(summaries, folder / "sweep.png")
    return result


def attack_inputs(model: torch.nn.Module, data: LabeledData, folder: pathlib.Path, *, methods: list[str] | None,
                  attacks: list[str], eps_values: list[float], with_sweep: bool, ig_steps: int = 32,
                  device: str = "cpu", batch_size: int = 64, show: int = 4, k: int = 100, progress: bool = False,
                  input_range: tuple[Any, Any] = (0.0, 1.0), **attack_options: Any) -> AttackInputRun:
    """Attack the correctly classified samples of ``data`` with every attack x method x eps; write the run's
    files (see the module docstring) into ``folder`` and return its result. ``methods=None`` takes those of
    Ghorbani et al.'s Fig. 3 (Gradient, IG, DeepLift) that apply to the model and data; every argument is checked before any attack runs
    (a method that cannot apply, an eps that is not below the input range's width, counts below 1)."""
    for name, value, least in (("batch_size", batch_size, 1), ("show", show, 0), ("k", k, 1),
                               ("ig_steps", ig_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: this torch build or machine has no CUDA device; use device='cpu'")
    if data.x.ndim != 4:
        raise ValueError(f"input-level attacks need image data (N, C, H, W), got data {data.name!r} of shape "
                         f"{tuple(data.x.shape)}")
    check_eval_mode(model)
    model = model.to(device)
    check_labels(model, data.x.to(device), data.y.to(device))
    methods = select_methods(model, data.x[:1].to(device), methods, FIG3_METHODS, differentiable=True)
    explainers = make_explainers(model, methods, ig_steps=ig_steps)
    for eps in eps_values:  # every radius is checked before the first attack runs
        make_attack(attacks[0], model, explainers[methods[0]], eps, k=k, input_range=input_range)
    x, y, index = correctly_classified(model, data, device, batch_size)
    if len(x) == 0:
        raise ValueError("the model classifies none of the chosen samples correctly; nothing to attack")
    outcomes = sweep(model, explainers, x, y, eps_values, attacks, k=k, batch_size=batch_size, progress=progress,
                     input_range=input_range, **attack_options)
    metrics = {"n_requested": len(data), "n_attacked": len(x), "clean_accuracy": len(x) / len(data), "k": k,
               "methods": list(methods), "dropped_methods": methods.dropped}
    return write_outputs(folder, outcomes, explainers, x, y, index, show, with_sweep, metrics)


def demo(run_dir: pathlib.Path) -> AttackInputRun:
    """A short Fig.-3 sweep on bundled MNIST: 8 test images, eps 0.05 and 0.1, random / top-k / mass-center
    with Gradient, IG (4 steps) and DeepLift, 5 steps each; writes sweep.png among the run files."""
    seed_everything(0)
    return attack_inputs(pretrained("mnist-cnn"), mnist("test").subset(slice(0, 8)), pathlib.Path(run_dir),
                         methods=["gradient", "ig", "deeplift"], attacks=list(ATTACKS), eps_values=[0.05, 0.1],
                         with_sweep=True, ig_steps=4, show=2, steps=5, progress=False)
