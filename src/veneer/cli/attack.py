"""``veneer attack-input``: perturb inputs so that explanations move while labels stay (Ghorbani et al. 2019).

Writes ``metrics.json`` (per attack, method and eps: label-kept rate, Spearman, top-k intersection, COM
shift, l-inf used, run time), ``per_image.csv``, ``adversarial.safetensors`` (clean inputs, labels, data
indices and every perturbed batch), one Fig.-1-style figure per attack and eps, and with ``--sweep`` the
Fig.-3 curves ``sweep.png`` and their table ``sweep.csv``.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

import pandas as pd
import torch
from safetensors.torch import save_file

from veneer.attacks import ATTACKS, Outcome, saliency_map, sweep
from veneer.cli.common import add_data_args, add_model_args, add_run_args, build_explainers, load_data, load_model
from veneer.cli.influence import add_influence_args, build_influence
from veneer.data import LabeledData, mnist
from veneer.explain import METHODS
from veneer.models import pretrained
from veneer.report.attacks import attack_figure, sweep_figure
from veneer.report.influence import influence_attack_report
from veneer.runs import RunDir, seed_everything

DEFAULTS = {"method": "gradient", "attack": "mass-center", "eps": "0.1"}
SWEEP_DEFAULTS = {"method": "gradient,ig,deeplift", "attack": ",".join(ATTACKS), "eps": "0.02,0.05,0.1"}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "attack-input", help="perturb inputs so that explanations change but labels do not (Ghorbani et al. 2019)")
    add_model_args(parser)
    add_data_args(parser, n=64)
    parser.add_argument("--method", default=None, help="comma-separated explanation methods "
                        "(default: gradient; with --sweep: gradient,ig,deeplift)")
    parser.add_argument("--attack", default=None, help=f"comma-separated attacks from {', '.join(ATTACKS)} "
                        "(default: mass-center; with --sweep: all), or 'influence' alone: Ghorbani et al.'s attack "
                        "on influence functions (Fig. 4) against random sign, steps default 1")
    parser.add_argument("--eps", default=None, help="comma-separated l-inf budgets in the data's units "
                        "(default: 0.1; with --sweep: 0.02,0.05,0.1)")
    parser.add_argument("--sweep", action="store_true",
                        help="Ghorbani Fig. 3: every attack x method over the budgets; writes sweep.csv and sweep.png")
    parser.add_argument("--steps", type=int, default=None,
                        help="signed-gradient steps of the iterative attacks (default 300; --attack influence: 1)")
    parser.add_argument("--alpha", type=float, default=None, help="step size (default 2.5 * eps / steps)")
    parser.add_argument("--surrogate-beta", type=float, default=30.0,
                        help="beta of the Softplus that replaces ReLU for the attack's gradients (0: no surrogate)")
    parser.add_argument("--k", type=int, default=None,
                        help="top-k attack size and top-k intersection size (default 100; --attack influence: 5)")
    parser.add_argument("--ig-steps", type=int, default=32, help="integration steps of integrated gradients")
    parser.add_argument("--input-range", default="0,1", help="valid input values 'low,high' in the data's units")
    parser.add_argument("--batch-size", type=int, default=64, help="images attacked together")
    parser.add_argument("--show", type=int, default=4, help="images per Fig.-1 figure")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--top", type=int, default=3, help="--attack influence: training samples whose influence "
                        "is lowered")
    add_influence_args(parser)
    add_run_args(parser, "runs/attack-input")
    parser.set_defaults(run=run)


def _floats(name: str, text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers, got {text!r}") from None


def _names(name: str, text: str, known) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in known]
    if not names or unknown:
        raise ValueError(f"{name} must be comma-separated names from {sorted(known)}, got {text!r}")
    return names


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
                  index: torch.Tensor, show: int, with_sweep: bool) -> list[dict[str, Any]]:
    """Write the per-image CSV, the perturbed inputs, the Fig.-1 figures (and the Fig.-3 sweep); return summaries."""
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
    pd.concat(frames).to_csv(folder / "per_image.csv", index=False)
    save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()},
              str(folder / "adversarial.safetensors"))
    summaries = [outcome.summary() for outcome in outcomes]
    for attack, eps in dict.fromkeys((o.attack, o.eps) for o in outcomes):
        rows = [row for o in outcomes if (o.attack, o.eps) == (attack, eps)
                for row in _figure_rows(o, explainers[o.method], x, y, show)]
        rows.sort(key=lambda row: row["index"])
        if x.ndim == 4:
            attack_figure(x, rows, folder / f"fig1_{attack}_eps{eps:g}.png")
    if with_sweep:
        pd.DataFrame(summaries).to_csv(folder / "sweep.csv", index=False)
        sweep_figure(summaries, folder / "sweep.png")
    return summaries


def attack_inputs(model: torch.nn.Module, data: LabeledData, folder: pathlib.Path, *, methods: list[str],
                  attacks: list[str], eps_values: list[float], with_sweep: bool, ig_steps: int = 32,
                  device: str = "cpu", batch_size: int = 64, show: int = 4, k: int = 100, progress: bool = True,
                  **attack_options: Any) -> dict[str, Any]:
    """Attack the correctly classified samples of ``data`` with every attack x method x eps; write the run's
    files (see the module docstring) into ``folder`` and return its metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    model = model.to(device).eval()
    x, y, index = correctly_classified(model, data, device, batch_size)
    if len(x) == 0:
        raise ValueError("the model classifies none of the chosen samples correctly; nothing to attack")
    explainers = build_explainers(model, methods, ig_steps=ig_steps)
    outcomes = sweep(model, explainers, x, y, eps_values, attacks, k=k, batch_size=batch_size, progress=progress,
                     **attack_options)
    summaries = write_outputs(folder, outcomes, explainers, x, y, index, show, with_sweep)
    return {"n_requested": len(data), "n_attacked": len(x), "clean_accuracy": len(x) / len(data), "k": k,
            "results": summaries}


def run_influence(args: argparse.Namespace) -> int:
    """``--attack influence``: sign attack vs random sign on the influence of ``--train-n`` training samples."""
    eps_values = _floats("--eps", args.eps or DEFAULTS["eps"])
    run_dir = RunDir(args.out, {k: v for k, v in vars(args).items() if k != "run"}, args.seed)
    seed_everything(args.seed)
    model = load_model(args).to(args.device).eval()
    influence, train = build_influence(args, model)
    x, y, index = correctly_classified(model, load_data(args), args.device, args.batch_size)
    if len(x) == 0:
        raise ValueError("the model classifies none of the chosen samples correctly; nothing to attack")
    k = args.k or 5
    metrics = influence_attack_report(model, influence, x, y, train.x, run_dir.path, eps_values, train_y=train.y,
                                      top=args.top, k=k, steps=args.steps or 1, step_size=args.alpha,
                                      input_range=tuple(_floats("--input-range", args.input_range)),
                                      seed=args.seed, batch_size=args.batch_size, show=args.show)
    run_dir.write_metrics(dict(metrics, index=index))
    for row in metrics["results"]:
        print(f"{row['attack']:>9} eps={row['eps']:<6g} label kept {row['label_kept_rate']:.2f}  "
              f"spearman {row['spearman']:.3f}  top-{k} {row[f'top{k}_intersection']:.3f}")
    print(f"wrote {run_dir.path}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.attack is not None and "influence" in args.attack.split(","):
        if args.attack.strip() != "influence" or args.sweep:
            raise ValueError("--attack influence runs alone (its own sweep over --eps against random sign)")
        return run_influence(args)
    defaults = SWEEP_DEFAULTS if args.sweep else DEFAULTS
    methods = _names("--method", args.method or defaults["method"], METHODS)
    attacks = _names("--attack", args.attack or defaults["attack"], ATTACKS)
    eps_values = _floats("--eps", args.eps or defaults["eps"])
    input_range = _floats("--input-range", args.input_range)
    if len(input_range) != 2:
        raise ValueError(f"--input-range must be 'low,high', got {args.input_range!r}")
    run_dir = RunDir(args.out, {k: v for k, v in vars(args).items() if k != "run"}, args.seed)
    seed_everything(args.seed)
    metrics = attack_inputs(
        load_model(args), load_data(args), run_dir.path, methods=methods, attacks=attacks, eps_values=eps_values,
        with_sweep=args.sweep, ig_steps=args.ig_steps, device=args.device, batch_size=args.batch_size,
        show=args.show, k=args.k or 100, steps=args.steps or 300, alpha=args.alpha,
        surrogate_beta=args.surrogate_beta or None, input_range=tuple(input_range), seed=args.seed)
    run_dir.write_metrics(metrics)
    for row in metrics["results"]:
        print(f"{row['attack']:>11} {row['method']:>9} eps={row['eps']:<6g} label kept {row['label_kept_rate']:.2f}  "
              f"top-k {row['topk_intersection']:.3f}  spearman {row['spearman']:.3f}  COM shift {row['com_shift']:.2f}")
    print(f"wrote {run_dir.path}")
    return 0


def demo(run_dir: pathlib.Path) -> dict[str, Any]:
    """A short Fig.-3 sweep on bundled MNIST: 8 test images, eps 0.05 and 0.1, random / top-k / mass-center
    with Gradient, IG (4 steps) and DeepLift, 5 steps each; writes sweep.png among the run files."""
    seed_everything(0)
    return attack_inputs(pretrained("mnist-cnn"), mnist("test").subset(slice(0, 8)), pathlib.Path(run_dir),
                         methods=["gradient", "ig", "deeplift"], attacks=list(ATTACKS), eps_values=[0.05, 0.1],
                         with_sweep=True, ig_steps=4, show=2, steps=5, progress=False)
