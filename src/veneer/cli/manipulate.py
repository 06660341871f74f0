"""``veneer manipulate`` (fine-tune a model so its explanations lie) and ``veneer evaluate`` (measure it).

``veneer manipulate --model mnist-cnn --data mnist --method gradient --objective com --target 0,0 --keep ce
--alpha 0.1 --lr 1e-3 --epochs 5 --out runs/com`` writes ``model.safetensors`` (+ ``model.json``), ``checkpoint.safetensors``,
``history.csv``, ``config.json`` and ``metrics.json`` into ``--out``; ``--resume`` continues an interrupted run
there. Under ``torchrun --nproc_per_node=N -m veneer manipulate ...`` every process takes its share of each
batch and rank 0 writes the files.

``veneer evaluate --original mnist-cnn --manipulated runs/com --out runs/com/eval`` reads the objective from
the run's ``config.json`` (flags override it) and writes ``metrics.json``, ``transfer.md/.csv`` (thesis
Tables 3.1/3.2), ``transfer_noise.md/.csv``, ``heatmaps.png`` (thesis Fig. 3.3) and, for tabular data,
``feature_attribution.png`` and ``fairness.md/.csv``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from veneer.cli.common import (add_budget_args, add_data_args, add_model_args, add_run_args, applies_when,
                               budget_options, load_data, load_model, run_job)
from veneer.data import load_dataset
from veneer.explain import make_explainers, select_methods
from veneer.finetune import distributed_context
from veneer.jobs.manipulate import evaluate_and_save, manipulate_and_save, manipulated_run, scaffolding_job
from veneer.manipulate import KEEP_LOSSES, OBJECTIVES, PICTURES, Objective, make_objective
from veneer.manipulate.scaffolding import EXPLAINED_BY

OBJECTIVE_FLAGS = ("objective", "target", "map", "region", "thickness", "k", "classes", "features")
# The objectives each objective option applies to (config.json records it only for them, see applies_when).
OBJECTIVE_OPTIONS = {"target": ("com",), "map": ("target-map",), "region": ("location",),
                     "thickness": ("target-map", "location"), "k": ("topk",), "classes": ("class-swap",),
                     "features": ("feature-suppress", "scaffolding")}
# What only the scaffolding attack uses, and what only the fine-tuning objectives use.
SCAFFOLDING_OPTIONS = ("perturbation", "innocuous", "biased", "invert", "explain_n")
FINE_TUNE_OPTIONS = ("split", "color", "method", "ig_steps", "keep", "alpha", "epochs", "lr", "batch_size",
                     "trainable", "softplus_beta", "checkpoint_every", "max_steps", "min_agreement", "validation",
                     "check_every", "confidence", "keep_mixup", "resume")


def _numbers(text: str, name: str, kind=float) -> list:
    try:
        return [kind(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated numbers, got {text!r}") from None


def _objective_options(args: argparse.Namespace) -> dict[str, Any]:
    name = args.objective
    if name == "com":
        target = _numbers(args.target or "0,0", "target")
        if len(target) != 2:
            raise ValueError(f"--target must be 'row,col', got {args.target!r}")
        return {"target": tuple(target)}
    if name in ("target-map", "location"):
        key, default = ("map", "cross") if name == "target-map" else ("region", "border")
        return {key: getattr(args, key) or default, "thickness": args.thickness}
    if name == "topk":
        return {"k": args.k or 50}
    if name == "class-swap":
        classes = _numbers(args.classes or "", "classes", int) if args.classes else []
        if len(classes) != 2:
            raise ValueError(f"--classes must be 'a,b' for class-swap, got {args.classes!r}")
        return {"a": classes[0], "b": classes[1]}
    if name == "feature-suppress":
        if not args.features:
            raise ValueError("--features (comma-separated feature names, e.g. sex,race) is required for "
                             "feature-suppress")
        return {"features": args.features.split(",")}
    return {}


def objective_from_args(args: argparse.Namespace) -> Objective:
    """The objective named by ``--objective`` with its options (unknown names raise ``ValueError``)."""
    return make_objective(args.objective, **_objective_options(args))


def add_objective_args(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument("--objective", default=default,
                        help=f"one of {', '.join(OBJECTIVES)}; `veneer manipulate` also takes scaffolding "
                             "(Slack et al. 2020: hide a biased model from LIME/KernelSHAP)")
    parser.add_argument("--target", default=None, help="com: target point 'row,col' (default 0,0)")
    parser.add_argument("--map", default=None, help=f"target-map: {', '.join(p for p in PICTURES if p != 'border')}")
    parser.add_argument("--region", default=None, help=f"location: {', '.join(PICTURES)} (default border)")
    parser.add_argument("--thickness", type=int, default=None, help="line width of the map/region in pixels")
    parser.add_argument("--k", type=int, default=None, help="topk: number of pixels (default 50)")
    parser.add_argument("--classes", default=None, help="class-swap: 'a,b'")
    parser.add_argument("--features", default=None, help="feature-suppress: comma-separated names, e.g. sex,race; "
                        "scaffolding: the sensitive column, e.g. race=African-American")
    for option, objectives in OBJECTIVE_OPTIONS.items():
        applies_when(parser, (option,), lambda args, objectives=objectives: args.objective in objectives)


def register(subparsers) -> None:
    parser = subparsers.add_parser("manipulate", help="fine-tune a model so its explanations meet an objective")
    add_model_args(parser)
    add_data_args(parser, n=None, target_alias=False)  # --target: the objective's
    parser.set_defaults(split="train")
    parser.add_argument("--method", default="gradient", help="explanation method attacked during training")
    parser.add_argument("--ig-steps", type=int, default=8,
                        help="integration steps when --method ig (default 8, fewer than the 32 of the explainers "
                             "elsewhere: IG runs, differentiated, inside every training step)")
    add_objective_args(parser, "com")
    parser.add_argument("--keep", default="ce", choices=sorted(KEEP_LOSSES),
                        help="keep loss L_keep that holds the behaviour: ce (the true labels), kl (distillation "
                             "from the original model), argmax_ce (the original model's labels), prob_mse")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="weight of the attack loss (lambda/(1+lambda)); default 0.5, Manipulation's (the "
                             "README's MNIST example passes --alpha 0.1 --lr 1e-3)")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the training data")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam's learning rate (default 1e-4, Manipulation's)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--trainable", default=None, help="comma-separated module-name prefixes (default: all)")
    parser.add_argument("--softplus-beta", type=float, default=20.0, help="Softplus beta in training; 0: keep ReLU")
    parser.add_argument("--checkpoint-every", type=int, default=100,
                        help="steps between checkpoints in --out (--resume continues from the last)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (--resume later)")
    parser.add_argument("--perturbation", default="lime", choices=sorted(EXPLAINED_BY),
                        help="scaffolding: whose perturbations the detector learns (lime, shap, both)")
    parser.add_argument("--innocuous", type=int, default=1, choices=(1, 2),
                        help="scaffolding: random features of the innocuous model")
    parser.add_argument("--biased", default="rule", choices=("rule", "model"),
                        help="scaffolding: the biased model is the rule on --features (Slack et al.) or --model")
    parser.add_argument("--invert", action="store_true", help="scaffolding rule: class 1 when the column is 0")
    parser.add_argument("--explain-n", type=int, default=100,
                        help="scaffolding: test rows explained (default 100, half of slack_case's 200: LIME and "
                             "KernelSHAP query the models thousands of times per row)")
    add_budget_args(parser)
    add_run_args(parser, "runs/manipulate", resumable=True)
    applies_when(parser, SCAFFOLDING_OPTIONS, lambda args: args.objective == "scaffolding")
    applies_when(parser, FINE_TUNE_OPTIONS, lambda args: args.objective != "scaffolding")
    applies_when(parser, ("model", "weights"), lambda args: args.objective != "scaffolding" or args.biased == "model")
    applies_when(parser, ("ig_steps",), lambda args: args.method == "ig")
    parser.set_defaults(run=run_manipulate)

    parser = subparsers.add_parser("evaluate", help="compare an original and a manipulated model's explanations")
    add_model_args(parser, "--original")
    parser.add_argument("--manipulated", required=True, help="run directory of `veneer manipulate` or weights file")
    add_data_args(parser, n=None, target_alias=False)  # --target: the objective's
    parser.add_argument("--methods", default=None, help="comma-separated methods (default: all that apply)")
    parser.add_argument("--ig-steps", type=int, default=100,
                        help="integration steps of IG (default 100, not make_explainers' 32: the evaluation "
                             "measures the maps themselves, so IG's integral is approximated more closely)")
    parser.add_argument("--noise", type=int, default=None, help="Gaussian-noise inputs (default: as many as --n)")
    parser.add_argument("--batch-size", type=int, default=32, help="inputs explained together")
    parser.add_argument("--examples", type=int, default=4, help="example inputs in heatmaps.png")
    add_objective_args(parser, None)
    add_run_args(parser, None)
    parser.set_defaults(run=run_evaluate)


def run_scaffolding(args: argparse.Namespace) -> int:
    """``--objective scaffolding``: Slack et al. 2020 on a tabular data set (train split: detector, test split:
    fidelity and explanations); writes metrics.json and ranks.png."""
    if not args.features or "," in args.features:
        raise ValueError("--features must name one sensitive column for scaffolding, e.g. race=African-American")

    def job(run_dir):
        train, test = load_data(args, "train"), load_dataset(args.data, "test")
        biased = load_model(args) if args.biased == "model" else None
        return scaffolding_job(train, test, args.features, run_dir, biased=biased, perturbation=args.perturbation,
                               innocuous=args.innocuous, invert=args.invert, n=args.explain_n, seed=args.seed)

    return run_job(args, job)


def run_manipulate(args: argparse.Namespace) -> int:
    if args.objective == "scaffolding":
        return run_scaffolding(args)
    world, rank = distributed_context()
    if world > 1 and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))

    def job(run_dir):
        model = load_model(args)
        data = load_data(args, model=model)
        if world > 1 and torch.cuda.is_available():
            model = model.cuda()
        explainer = make_explainers(model, [args.method], ig_steps=args.ig_steps)[args.method]
        objective = objective_from_args(args)
        objective.prepare(data)  # every argument is checked before the run directory is written
        if run_dir is not None:
            run_dir.start()
        result = manipulate_and_save(
            model, explainer, objective, data, Path(args.out), rank == 0, keep=args.keep, alpha=args.alpha,
            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, softplus_beta=args.softplus_beta or None,
            trainable=args.trainable.split(",") if args.trainable else None, checkpoint_every=args.checkpoint_every,
            resume=args.resume, seed=args.seed, max_steps=args.max_steps, progress=True, **budget_options(args))
        result.values["world_size"] = world
        return result

    return run_job(args, job, write=rank == 0, world_size=world)


def run_evaluate(args: argparse.Namespace) -> int:
    if args.out is None:  # an evaluation of a run lives in that run, next to what it measures
        args.out = str(Path(args.manipulated) / "evaluation") if Path(args.manipulated).is_dir() else "runs/evaluate"
    manipulated, config = manipulated_run(args.manipulated, args.original)
    for key in OBJECTIVE_FLAGS:  # the objective of the run evaluated, unless a flag overrides it
        if getattr(args, key) is None:
            setattr(args, key, config.get(key))
    if args.objective is None:
        raise ValueError("--objective is required when --manipulated is a weights file")

    def job(run_dir):
        original = load_model(args, "original")
        data = load_data(args, model=original)
        requested = [m for m in args.methods.split(",") if m] if args.methods else None
        methods = select_methods(original, data.x[:1], requested)
        explainers = make_explainers(original, methods, ig_steps=args.ig_steps)
        objective = objective_from_args(args)
        objective.prepare(data)
        run_dir.start()
        return evaluate_and_save(original, manipulated, objective, data, explainers, run_dir.path,
                                 dropped_methods=methods.dropped, noise=args.noise, batch_size=args.batch_size,
                                 examples=args.examples, seed=args.seed, progress=True)

    return run_job(args, job)
