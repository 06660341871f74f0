"""``veneer neurons topk|visualize|push-down|push-up|fairwash``: neuron interpretations and their attacks.

Nanfack et al. (2024), "Adversarial Attacks on the Interpretation of Neuron Activation Maximization"
(AAAI).  Every action writes a run directory: config.json, metrics.json and its figures/tables.
"""

from __future__ import annotations

import argparse

from veneer.cli.common import (add_budget_args, add_model_args, add_run_args, applies_when, budget_options, load_data,
                               load_model, reads_image_folder, run_job)
from veneer.finetune import KEEP_LOSSES
from veneer.jobs.neurons import fairwash_job, push_down_job, push_up_job, topk_job, visualize_job
from veneer.jobs.slingshot import fooling_circuit_job, silent_unit_job, slingshot_job
from veneer.neurons import default_layer
from veneer.runs import RunDir

ACTIONS = ("topk", "visualize", "push-down", "push-up", "fairwash", "slingshot", "silent-unit", "fooling-circuit")


# ----------------------------------------------------------------------------------------- arguments
def _channels(text: str) -> list[int] | None:
    if text == "all":
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or comma-separated ints, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one channel")
    return values


def _common(parser: argparse.ArgumentParser, out: str, model: str = "mnist-cnn", data: str = "mnist",
            resumable: bool = False) -> None:
    add_model_args(parser)
    parser.set_defaults(model=model)
    parser.add_argument("--data", default=data, help="mnist, digits, adult, ... (a load_dataset spec)")
    parser.add_argument("--layer", default=None,
                        help="module name (default: the activation after the last conv layer, e.g. '4')")
    parser.add_argument("--pre-activation", action="store_true",
                        help="record the named module's input (the pre-activation when it is an activation)")
    parser.add_argument("--k", type=int, default=10, help="size of each channel's top-k set")
    parser.add_argument("--n", type=int, default=None,
                        help="use a seeded, class-stratified subset of n samples of each split")
    parser.add_argument("--color", choices=("auto", "gray", "rgb"), default="auto",
                        help="channels of an image folder (auto: what the model's first convolution expects)")
    applies_when(parser, ("color",), reads_image_folder)
    add_run_args(parser, out, resumable)


def _attack_options(parser: argparse.ArgumentParser, note: str = "") -> None:
    """The options of a neuron attack; their defaults are the attack classes' (``note``: why one differs)."""
    parser.add_argument("--channels", type=_channels, default=None,
                        help="'all' (default) or comma-separated channel indices")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of L_A against L_M (Eq. 2)")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    parser.add_argument("--batch-size", type=int, default=64, help="training rows per step" + note)
    parser.add_argument("--attack-batch", type=int, default=64,
                        help="the attack's own rows per step (D_attack images, decoys, group samples)" + note)
    parser.add_argument("--keep", default="kl", choices=sorted(KEEP_LOSSES),
                        help="L_M: kl (the paper's, distillation), argmax_ce (the original labels), ce, prob_mse")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="distillation temperature of L_M (1: the paper's, up to a constant)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (--resume later)")
    parser.add_argument("--recalibrate-steps", type=int, default=0,
                        help="after the attack, steps of L_M alone on the layers after the attacked ones "
                             "(the attacked activations and their top-k stay unchanged)")
    parser.add_argument("--recalibrate-lr", type=float, default=None, help="learning rate of that phase (default --lr)")
    parser.add_argument("--heldout-split", default="test", help="split for Kendall-tau and held-out metrics")
    add_budget_args(parser)
    parser.add_argument("--encoder", default="default",
                        help="'default' (independent bundled CNN for MNIST, raw features for tabular data), "
                             "'none', or 'module:function' returning an nn.Module mapping inputs to vectors")
    parser.add_argument("--visualize", type=int, default=4,
                        help="synthetic visualisations of this many channels before/after (0: none; images only)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("neurons", help="top-k / synthetic neuron visualisation and attacks on it")
    actions = parser.add_subparsers(dest="action", required=True)

    topk = actions.add_parser("topk", help="each channel's top-k samples (dataset-based visualisation)")
    _common(topk, "runs/neurons-topk")
    topk.add_argument("--split", default="train", help="split whose samples are ranked (train, test or all)")
    topk.set_defaults(run=run_topk)

    vis = actions.add_parser("visualize", help="synthetic activation maximisation of channels")
    _common(vis, "runs/neurons-visualize")
    vis.add_argument("--channels", type=_channels, default=None, help="'all' (default) or indices")
    vis.add_argument("--steps", type=int, default=256, help="gradient-ascent steps per channel")
    vis.add_argument("--lr", type=float, default=0.05, help="learning rate of the gradient ascent")
    vis.set_defaults(run=run_visualize)

    down = actions.add_parser("push-down", help="remove each channel's top-k interpretation (Eq. 3)")
    _common(down, "runs/neurons-push-down", resumable=True)
    _attack_options(down)
    down.add_argument("--relative", action="store_true",
                      help="divide D_attack's activations by the channel's mean on random training images "
                           "(a channel cannot escape by shrinking as a whole)")
    down.set_defaults(run=run_push_down)

    up = actions.add_parser("push-up", help="put decoy images into every channel's top-k (Eq. 4)")
    _common(up, "runs/neurons-push-up", resumable=True)
    _attack_options(up)
    up.add_argument("--decoy-class", type=int, default=0, help="decoys: training images of this class")
    up.add_argument("--n-decoys", type=int, default=100, help="decoy images pushed into the top-k")
    up.add_argument("--margin", type=float, default=0.1,
                    help="hinge margin by which a decoy's activation must exceed a data sample's, in units of the "
                         "channel's mean top-k activation (Eq. 4)")
    up.set_defaults(run=run_push_up)

    wash = actions.add_parser("fairwash", help="make biased neurons look fair (Eq. 5)")
    _common(wash, "runs/neurons-fairwash", model="adult-mlp", data="adult", resumable=True)
    _attack_options(wash, note=" (fairwash: default 256, not the attack classes' 64: tabular rows are cheap and "
                               "each step estimates both groups' activation moments from them)")
    wash.set_defaults(run=run_fairwash, layer="1", batch_size=256, attack_batch=256, encoder="none", visualize=0)
    wash.add_argument("--attribute", default="sex", help="protected attribute of the data (e.g. sex)")
    wash.add_argument("--most-biased", type=int, default=None,
                      help="attack the N neurons with the largest initial KS (instead of --channels)")

    sling = actions.add_parser("slingshot", help="make one unit's synthetic visualisation converge to a target "
                               "(gradient slingshot, Bareeva et al. 2025)")
    _lying_visualization_args(sling, "runs/neurons-slingshot", resumable=True)
    sling.add_argument("--gamma", type=float, default=10.0, help="slope of the planted gradient field")
    sling.add_argument("--noise", type=float, default=0.1, help="half-width of the uniform noise around the tunnel")
    sling.add_argument("--no-tunnel", action="store_true", help="sample the start and the target only")
    sling.add_argument("--parametrization", choices=("pixel", "fourier"), default="pixel",
                       help="the space the field is planted in")
    sling.add_argument("--alpha", type=float, default=0.5, help="weight of the attack loss against the keep loss")
    sling.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    sling.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    sling.add_argument("--batch-size", type=int, default=64, help="natural training rows per step")
    sling.add_argument("--samples", type=int, default=32, help="manipulation samples per step")
    sling.add_argument("--keep", default="kl", choices=sorted(KEEP_LOSSES), help="the keep loss on the outputs")
    sling.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (--resume later)")
    add_budget_args(sling)
    sling.set_defaults(run=run_slingshot)

    silent = actions.add_parser("silent-unit", help="add a silent unit whose visualisation is the target "
                                "(Geirhos et al. 2024, Sec. 3.2)")
    _lying_visualization_args(silent, "runs/neurons-silent-unit")
    silent.add_argument("--scale", type=float, default=10.0, help="gain of the silent unit")
    silent.set_defaults(run=run_silent_unit)

    fool = actions.add_parser("fooling-circuit", help="gate the unit by a natural-vs-visualisation detector "
                              "(Geirhos et al. 2024, Sec. 3.1)")
    _lying_visualization_args(fool, "runs/neurons-fooling-circuit")
    fool.set_defaults(run=run_fooling_circuit)


def _lying_visualization_args(parser: argparse.ArgumentParser, out: str, resumable: bool = False) -> None:
    """The options of the manipulations of one unit's synthetic visualisation."""
    _common(parser, out, resumable=resumable)
    parser.add_argument("--unit", type=int, required=True, help="the unit: a channel of --layer, or a logit")
    parser.add_argument("--target", default="cross",
                        help="cross, square, ring, digit (another class's image), digit:N, or an image file")
    parser.add_argument("--heldout-split", default="test", help="split for accuracy, AUROC and activations")


# ----------------------------------------------------------------------------------------- helpers
def _run(args: argparse.Namespace, job) -> int:
    """:func:`run_job` with the model of ``--model``, its ``--layer`` (default: the activation after the last conv
    layer) and the splits of ``--data``: ``job(model, layer, split, run_dir)``, ``split(name)`` loading one."""
    def with_inputs(run_dir: RunDir):
        model = load_model(args)
        return job(model, args.layer or default_layer(model), lambda name: load_data(args, split=name, model=model),
                   run_dir)

    return run_job(args, with_inputs)


def _fine_tune_options(args: argparse.Namespace) -> dict:
    return {"alpha": args.alpha, "steps": args.steps, "lr": args.lr, "batch_size": args.batch_size,
            "attack_batch": args.attack_batch, "keep": args.keep, "temperature": args.temperature,
            "recalibrate_steps": args.recalibrate_steps, "recalibrate_lr": args.recalibrate_lr,
            "checkpoint_dir": args.out, "resume": args.resume, "max_steps": args.max_steps, "progress": True,
            **budget_options(args)}


def _evaluation_options(args: argparse.Namespace) -> dict:
    return {"k": args.k, "channels": args.channels, "encoder": args.encoder, "pre_activation": args.pre_activation,
            "visualize_channels": args.visualize, "seed": args.seed}


# ----------------------------------------------------------------------------------------- actions
def run_topk(args: argparse.Namespace) -> int:
    return _run(args, lambda model, layer, split, run_dir: topk_job(model, layer, split(args.split), run_dir, args.k,
                                                                    args.pre_activation))


def run_visualize(args: argparse.Namespace) -> int:
    return _run(args, lambda model, layer, split, run_dir: visualize_job(
        model, layer, split("train"), run_dir, args.channels, args.steps, args.lr, args.pre_activation, args.seed,
        progress=True))


def run_push_down(args: argparse.Namespace) -> int:
    return _run(args, lambda model, layer, split, run_dir: push_down_job(
        model, layer, split("train"), split(args.heldout_split), run_dir, relative=args.relative,
        **_evaluation_options(args), **_fine_tune_options(args)))


def run_push_up(args: argparse.Namespace) -> int:
    return _run(args, lambda model, layer, split, run_dir: push_up_job(
        model, layer, split("train"), split(args.heldout_split), run_dir, decoy_class=args.decoy_class,
        n_decoys=args.n_decoys, margin=args.margin, **_evaluation_options(args), **_fine_tune_options(args)))


def run_fairwash(args: argparse.Namespace) -> int:
    return _run(args, lambda model, layer, split, run_dir: fairwash_job(
        model, layer, split("train"), split(args.heldout_split), run_dir, attribute=args.attribute, k=args.k,
        channels=args.channels, most_biased=args.most_biased, pre_activation=args.pre_activation, seed=args.seed,
        **_fine_tune_options(args)))


def _lying_options(args: argparse.Namespace) -> dict:
    return {"target": args.target, "seed": args.seed}


def run_slingshot(args: argparse.Namespace) -> int:
    return _run(args, lambda model, layer, split, run_dir: slingshot_job(
        model, layer, args.unit, split("train"), split(args.heldout_split), run_dir, gamma=args.gamma,
        noise=args.noise, tunnel=not args.no_tunnel, parametrization=args.parametrization, alpha=args.alpha,
        steps=args.steps, lr=args.lr, batch_size=args.batch_size, samples=args.samples, keep=args.keep,
        max_steps=args.max_steps, checkpoint_dir=args.out, resume=args.resume, progress=True,
        pre_activation=args.pre_activation, **budget_options(args), **_lying_options(args)))


def run_silent_unit(args: argparse.Namespace) -> int:
    return _run(args, lambda model, layer, split, run_dir: silent_unit_job(
        model, layer, args.unit, split("train"), split(args.heldout_split), run_dir, scale=args.scale,
        **_lying_options(args)))


def run_fooling_circuit(args: argparse.Namespace) -> int:
    return _run(args, lambda model, layer, split, run_dir: fooling_circuit_job(
        model, layer, args.unit, split("train"), split(args.heldout_split), run_dir, **_lying_options(args)))
