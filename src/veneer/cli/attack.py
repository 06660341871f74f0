"""``veneer attack-input``: perturb inputs so that explanations move while labels stay (Ghorbani et al. 2019).

Writes ``metrics.json`` (per attack, method and eps: label-kept rate, Spearman, top-k intersection, COM
shift, l-inf used, run time), ``per_image.csv``, ``adversarial.safetensors`` (clean inputs, labels, data
indices and every perturbed batch), one Fig.-1-style figure per attack and eps, and with ``--sweep`` the
Fig.-3 curves ``sweep.png`` and their table ``sweep.csv``.
"""

from __future__ import annotations

import argparse

from veneer.attacks import ATTACKS
from veneer.cli.common import (add_data_args, add_model_args, add_run_args, applies_when, load_data, load_model,
                               run_job)
from veneer.cli.influence import add_influence_args, build_influence
from veneer.explain import METHODS
from veneer.jobs.attack import attack_inputs, correctly_classified
from veneer.jobs.influence import influence_attack_report

DEFAULTS = {"method": "gradient", "attack": "mass-center", "eps": "0.1"}
SWEEP_DEFAULTS = {"attack": ",".join(ATTACKS), "eps": "0.02,0.05,0.1"}
# The options only ``--attack influence`` uses, and those only the attacks on explanation maps use.
INFLUENCE_OPTIONS = ("train_n", "params", "influence_method", "damping", "top")
MAP_ATTACK_OPTIONS = ("method", "softplus_beta", "ig_steps")


def attacks_influence(args: argparse.Namespace) -> bool:
    return args.attack is not None and args.attack.strip() == "influence"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "attack-input", help="perturb inputs so that explanations change but labels do not (Ghorbani et al. 2019)")
    add_model_args(parser)
    add_data_args(parser, n=64)
    parser.add_argument("--method", default=None, help="comma-separated explanation methods "
                        "(default: gradient; with --sweep: those of gradient,ig,deeplift that apply to the model)")
    parser.add_argument("--attack", default=None, help=f"comma-separated attacks from {', '.join(ATTACKS)} "
                        "(default: mass-center; with --sweep: all), or 'influence' alone: Ghorbani et al.'s attack "
                        "on influence functions (Fig. 4) against random sign, steps default 1")
    parser.add_argument("--eps", default=None, help="comma-separated l-inf radii eps in the data's units "
                        "(default: 0.1; with --sweep: 0.02,0.05,0.1)")
    parser.add_argument("--sweep", action="store_true",
                        help="Ghorbani Fig. 3: every attack x method over the radii; writes sweep.csv and sweep.png")
    parser.add_argument("--steps", type=int, default=None,
                        help="signed-gradient steps of the iterative attacks (default 300; --attack influence: 1)")
    parser.add_argument("--step-size", type=float, default=None, help="step size (default 2.5 * eps / steps)")
    parser.add_argument("--softplus-beta", type=float, default=30.0,
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
    applies_when(parser, INFLUENCE_OPTIONS, attacks_influence)
    applies_when(parser, MAP_ATTACK_OPTIONS, lambda args: not attacks_influence(args))
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


def run_influence(args: argparse.Namespace) -> int:
    """``--attack influence``: sign attack vs random sign on the influence of ``--train-n`` training samples."""
    eps_values = _floats("--eps", args.eps or DEFAULTS["eps"])

    def job(run_dir):
        model = load_model(args).to(args.device)
        influence, train = build_influence(args, model)
        x, y, index = correctly_classified(model, load_data(args, model=model), args.device, args.batch_size)
        if len(x) == 0:
            raise ValueError("the model classifies none of the chosen samples correctly; nothing to attack")
        run_dir.start()
        return influence_attack_report(model, influence, x, y, train.x, run_dir.path, eps_values, train_y=train.y,
                                       top=args.top, k=args.k or 5, steps=args.steps or 1, step_size=args.step_size,
                                       input_range=tuple(_floats("--input-range", args.input_range)),
                                       seed=args.seed, batch_size=args.batch_size, show=args.show, index=index)

    return run_job(args, job)


def run(args: argparse.Namespace) -> int:
    if args.attack is not None and "influence" in args.attack.split(","):
        if args.attack.strip() != "influence" or args.sweep:
            raise ValueError("--attack influence runs alone (its own sweep over --eps against random sign)")
        return run_influence(args)
    defaults = SWEEP_DEFAULTS if args.sweep else DEFAULTS
    methods = None if args.method is None and args.sweep else _names("--method", args.method or defaults["method"],
                                                                      METHODS)
    attacks = _names("--attack", args.attack or defaults["attack"], ATTACKS)
    eps_values = _floats("--eps", args.eps or defaults["eps"])
    input_range = _floats("--input-range", args.input_range)
    if len(input_range) != 2:
        raise ValueError(f"--input-range must be 'low,high', got {args.input_range!r}")

    def job(run_dir):
        model = load_model(args)
        data = load_data(args, model=model)
        run_dir.start()
        return attack_inputs(
            model, data, run_dir.path, methods=methods, attacks=attacks, eps_values=eps_values,
            with_sweep=args.sweep, ig_steps=args.ig_steps, device=args.device, batch_size=args.batch_size,
            show=args.show, k=args.k or 100, steps=args.steps or 300, step_size=args.step_size,
            softplus_beta=args.softplus_beta or None, input_range=tuple(input_range), seed=args.seed, progress=True)

    return run_job(args, job)
