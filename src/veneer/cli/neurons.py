"""``veneer neurons topk|visualize|push-down|push-up|fairwash``: neuron interpretations and their attacks.

Nanfack et al. (2024), "Adversarial Attacks on the Interpretation of Neuron Activation Maximization"
(AAAI).  Every action writes a run directory: config.json, metrics.json and its figures/tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from veneer.cli.common import add_model_args, add_run_args, load_model, report_run
from veneer.data import LabeledData, load_dataset
from veneer.metrics import ddi, deo
from veneer.models import accuracy, load, predict, save
from veneer.neurons import (
    Fairwash, FineTuneResult, PushDown, PushUp, activations, channel_decorrelation, compare_activations,
    default_layer, group_fairness, independent_encoder, label_share, top_k, topk_indices, visualize,
)
from veneer.report.neurons import (
    balance_histogram, ks_plot, topk_grid, visualization_grid, write_table,
)
from veneer.runs import RunDir, seed_everything

ACTIONS = ("topk", "visualize", "push-down", "push-up", "fairwash")


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


def _common(parser: argparse.ArgumentParser, out: str, model: str = "mnist-cnn", data: str = "mnist") -> None:
    add_model_args(parser)
    parser.set_defaults(model=model)
    parser.add_argument("--data", default=data, help="mnist, digits, adult, ... (a load_dataset spec)")
    parser.add_argument("--layer", default=None,
                        help="module name (default: the activation after the last conv layer, e.g. '4')")
    parser.add_argument("--pre-activation", action="store_true",
                        help="record the named module's input (the pre-activation when it is an activation)")
    parser.add_argument("--k", type=int, default=10, help="size of each channel's top-k set")
    parser.add_argument("--n", type=int, default=None, help="use only the first n samples of each split")
    add_run_args(parser, out)


def _attack_options(parser: argparse.ArgumentParser, steps: int, alpha: float, lr: float) -> None:
    parser.add_argument("--channels", type=_channels, default=None,
                        help="'all' (default) or comma-separated channel indices")
    parser.add_argument("--alpha", type=float, default=alpha, help="weight of L_A against L_M (Eq. 2)")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="distillation temperature of L_M (1: the paper's cross-entropy to the softmax)")
    parser.add_argument("--recalibrate-steps", type=int, default=0,
                        help="after the attack, steps of L_M alone on the layers after the attacked ones "
                             "(the attacked activations and their top-k stay unchanged)")
    parser.add_argument("--recalibrate-lr", type=float, default=None, help="learning rate of that phase (default --lr)")
    parser.add_argument("--heldout-split", default="test", help="split for Kendall-tau and held-out metrics")
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
    topk.add_argument("--split", default="train")
    topk.set_defaults(run=run_topk)

    vis = actions.add_parser("visualize", help="synthetic activation maximisation of channels")
    _common(vis, "runs/neurons-visualize")
    vis.add_argument("--channels", type=_channels, default=None, help="'all' (default) or indices")
    vis.add_argument("--steps", type=int, default=256)
    vis.add_argument("--lr", type=float, default=0.05)
    vis.set_defaults(run=run_visualize)

    down = actions.add_parser("push-down", help="remove each channel's top-k interpretation (Eq. 3)")
    _common(down, "runs/neurons-push-down")
    _attack_options(down, steps=300, alpha=0.5, lr=1e-3)
    down.add_argument("--relative", action="store_true",
                      help="divide D_attack's activations by the channel's mean on random training images "
                           "(a channel cannot escape by shrinking as a whole)")
    down.set_defaults(run=run_push_down)

    up = actions.add_parser("push-up", help="put decoy images into every channel's top-k (Eq. 4)")
    _common(up, "runs/neurons-push-up")
    _attack_options(up, steps=400, alpha=0.5, lr=1e-3)
    up.add_argument("--decoy-class", type=int, default=0, help="decoys: training images of this class")
    up.add_argument("--n-decoys", type=int, default=100)
    up.add_argument("--margin", type=float, default=0.1)
    up.set_defaults(run=run_push_up)

    wash = actions.add_parser("fairwash", help="make biased neurons look fair (Eq. 5)")
    _common(wash, "runs/neurons-fairwash", model="adult-mlp", data="adult")
    _attack_options(wash, steps=400, alpha=0.5, lr=1e-3)
    wash.set_defaults(run=run_fairwash, layer="1", batch_size=256, encoder="none", visualize=0)
    wash.add_argument("--attribute", default="sex", help="protected attribute of the data (e.g. sex)")
    wash.add_argument("--most-biased", type=int, default=None,
                      help="attack the N neurons with the largest initial KS (instead of --channels)")


# ----------------------------------------------------------------------------------------- helpers
def _setup(args: argparse.Namespace) -> tuple[RunDir, nn.Module, str]:
    run_dir = RunDir(args.out, {k: v for k, v in vars(args).items() if k != "run"}, args.seed)
    seed_everything(args.seed)
    model = load_model(args)
    layer = args.layer or default_layer(model)
    return run_dir, model, layer


def _split(args: argparse.Namespace, split: str) -> LabeledData:
    data = load_dataset(args.data, split)
    if args.n is not None:
        if args.n < 1:
            raise ValueError(f"--n must be >= 1, got {args.n}")
        data = data.subset(slice(0, args.n))
    return data


def _is_image(data: LabeledData) -> bool:
    return data.x.ndim == 4


def resolve_encoder(spec: str, data: LabeledData) -> nn.Module | None:
    """The embedding encoder named on the command line (see ``--encoder``)."""
    if spec == "none":
        return None
    if spec == "default":
        if not _is_image(data):
            return nn.Flatten()
        if data.name == "mnist":
            return independent_encoder("mnist-cnn", seed=1)
        raise ValueError(f"no default encoder for data {data.name!r}; pass --encoder module:function or none")
    return load(factory=spec)


def _done(args: argparse.Namespace, run_dir: RunDir, metrics: dict) -> int:
    run_dir.write_metrics(metrics)
    print(f"wrote {run_dir.path}/ (metrics.json and figures)")
    report_run(args, run_dir.path)
    return 0


def _mean(x: torch.Tensor) -> float:
    return float(x.float().mean())


# ----------------------------------------------------------------------------------------- actions
def run_topk(args: argparse.Namespace) -> int:
    run_dir, model, layer = _setup(args)
    data = _split(args, args.split)
    start = time.perf_counter()
    found = top_k(model, layer, data.x, args.k, pre_activation=args.pre_activation)
    seconds = time.perf_counter() - start
    save_file({"values": found.values.contiguous(), "indices": found.indices.contiguous()},
              str(run_dir.file("topk.safetensors")))
    if _is_image(data):
        topk_grid(data.x, found.indices, run_dir.file("topk.png"), labels=data.y)
    return _done(args, run_dir, {"layer": layer, "k": args.k, "channels": found.channels, "seconds": seconds,
                           "samples_per_second": len(data) / seconds, "indices": found.indices,
                           "values": found.values})


def run_visualize(args: argparse.Namespace) -> int:
    run_dir, model, layer = _setup(args)
    data = _split(args, "train")
    decorrelation = channel_decorrelation(data.x) if _is_image(data) and data.x.shape[1] > 1 else None
    images = visualize(model, layer, args.channels, input_shape=tuple(data.x.shape[1:]), steps=args.steps,
                       lr=args.lr, decorrelation=decorrelation, pre_activation=args.pre_activation,
                       seed=args.seed, progress=True)
    channels = args.channels if args.channels is not None else list(range(len(images)))
    save_file({"images": images.contiguous()}, str(run_dir.file("visualizations.safetensors")))
    visualization_grid(images, run_dir.file("visualizations.png"), channels=channels)
    response = activations(model, layer, images, pre_activation=args.pre_activation)
    return _done(args, run_dir, {"layer": layer, "channels": channels,
                           "activation_of_own_channel": response[torch.arange(len(channels)), channels]})


def _visual_pair(original: nn.Module, attacked: nn.Module, layer: str, data: LabeledData, channels: list[int],
                 args: argparse.Namespace, run_dir: RunDir) -> None:
    """Fig. 9: synthetic visualisations of ``channels`` before and after, same seed."""
    shape = tuple(data.x.shape[1:])
    decorrelation = channel_decorrelation(data.x) if data.x.shape[1] > 1 else None
    images = [visualize(model, layer, channels, input_shape=shape, decorrelation=decorrelation,
                        pre_activation=args.pre_activation, seed=args.seed) for model in (original, attacked)]
    visualization_grid(images[0], run_dir.file("visualizations.png"), images[1], channels)


def evaluate_attack(original: nn.Module, attacked: nn.Module, layer: str, train: LabeledData,
                    heldout: LabeledData, args: argparse.Namespace, run_dir: RunDir, attack: str,
                    channels: list[int] | None = None, encoder: nn.Module | None = None) -> dict:
    """Metrics of an attack on a layer (Nanfack et al. 2024, Table 1): top-k overlap, label overlap and
    embedding-delta/-W on the training set (where ``D_attack`` lives) and the held-out set, Kendall-tau and
    tau-W on the held-out set, accuracy before/after; top-k grids, visualisations and Table 1 files.
    Means are over the attacked ``channels`` (``summary``) and over those of them that are alive, i.e.
    whose activation is not constant over the training data (``summary_live``: a dead ReLU channel has
    no ranking, its top-k is an arbitrary tie-break no attack can move)."""
    metrics: dict = {"layer": layer, "attack": attack, "k": args.k,
                     "accuracy_before": accuracy(original, heldout.x, heldout.y),
                     "accuracy_after": accuracy(attacked, heldout.x, heldout.y)}
    metrics["accuracy_drop_points"] = 100 * (metrics["accuracy_before"] - metrics["accuracy_after"])
    comparisons, live = {}, None
    for name, data in (("train", train), ("heldout", heldout)):
        before = activations(original, layer, data.x, pre_activation=args.pre_activation)
        after = activations(attacked, layer, data.x, pre_activation=args.pre_activation)
        if live is None:  # channels whose activation varies over the training data: they have a ranking
            live = (before.amax(dim=0) > before.amin(dim=0)).nonzero().flatten().tolist()
            attacked_live = [c for c in (channels if channels is not None else live) if c in set(live)]
            metrics["live_channels"] = live
        comparison = compare_activations(before, after, args.k, labels=data.y, x=data.x, encoder=encoder,
                                         rankings=name == "heldout")
        comparisons[name] = comparison
        metrics[name] = {"summary": comparison.summary(channels), "summary_live": comparison.summary(attacked_live),
                         "per_channel": comparison.per_channel()}
        if _is_image(data):
            topk_grid(data.x, comparison.top_before, run_dir.file(f"topk_{name}.png"), comparison.top_after,
                      channels=None, labels=data.y)
    summary = metrics["heldout"]["summary"]
    row = {"layer": layer, "attack": attack, "accuracy": metrics["accuracy_after"],
           **{key: summary.get(key) for key in ("embedding_delta", "tau", "embedding_w", "tau_w")}}
    write_table([row], run_dir.file("table1"))
    metrics["table1"] = row
    shown = (channels or list(range(len(comparisons["train"].topk_overlap))))[: args.visualize]
    if _is_image(train) and shown:
        _visual_pair(original, attacked, layer, train, shown, args, run_dir)
    return metrics


def _fine_tune_summary(result: FineTuneResult) -> dict:
    return {"seconds": result.seconds, "attack_loss_before": result.attack_loss_before,
            "attack_loss_after": result.attack_loss_after, "history": result.history[:: max(1, len(result.history) // 50)]}


def _options(args: argparse.Namespace) -> dict:
    return {"alpha": args.alpha, "steps": args.steps, "lr": args.lr, "batch_size": args.batch_size,
            "temperature": args.temperature, "recalibrate_steps": args.recalibrate_steps,
            "recalibrate_lr": args.recalibrate_lr,
            "pre_activation": args.pre_activation, "seed": args.seed, "channels": args.channels}


def _attack_run(args: argparse.Namespace, attack: str, run_attack) -> int:
    """Shared body of push-down and push-up: set up, fine-tune, save the model, evaluate."""
    run_dir, model, layer = _setup(args)
    train, heldout = _split(args, "train"), _split(args, args.heldout_split)
    encoder = resolve_encoder(args.encoder, train)
    result, extra = run_attack(model, layer, train)
    save(result.model, run_dir.file("attacked.safetensors"), {"attack": attack, "layer": layer, "seed": args.seed})
    metrics = evaluate_attack(model, result.model, layer, train, heldout, args, run_dir, attack, args.channels,
                              encoder)
    metrics["fine_tune"] = _fine_tune_summary(result)
    for key, compute in extra.items():
        metrics[key] = compute(model, result.model, layer, train, heldout, metrics["live_channels"])
    print(f"{attack}: accuracy {metrics['accuracy_before']:.4f} -> {metrics['accuracy_after']:.4f}, "
          f"held-out tau {metrics['heldout']['summary']['tau']:.3f}, train top-{args.k} overlap "
          f"{metrics['train']['summary']['topk_overlap']:.3f}")
    return _done(args, run_dir, metrics)


def run_push_down(args: argparse.Namespace) -> int:
    def attack(model, layer, train):
        return PushDown(model, layer, k=args.k, relative=args.relative, **_options(args))(train.x), {}

    return _attack_run(args, "push-down", attack)


def decoy_share(original: nn.Module, attacked: nn.Module, layer: str, data: LabeledData, decoy_class: int,
                k: int, pre_activation: bool = False, live: list[int] | None = None) -> dict:
    """Share of the decoy class in each channel's top-k before/after a push-up attack, and the fraction of
    channels where it fills at least half of the top-k; over all channels and over the ``live`` ones (a
    dead channel's top-k is a tie-break, which picks the first samples, possibly of the decoy class)."""
    found = {}
    for when, model in (("before", original), ("after", attacked)):
        share = label_share(data.y, topk_indices(activations(model, layer, data.x, pre_activation=pre_activation), k),
                            decoy_class)
        alive = share[live] if live is not None else share
        found[when] = {"mean_share": _mean(share), "channels_at_least_half": _mean(share >= 0.5),
                       "mean_share_live": _mean(alive), "channels_at_least_half_live": _mean(alive >= 0.5),
                       "per_channel": share.tolist()}
    return found


def run_push_up(args: argparse.Namespace) -> int:
    def attack(model, layer, train):
        members = torch.nonzero(train.y == args.decoy_class).flatten()
        if len(members) == 0:
            raise ValueError(f"--decoy-class {args.decoy_class} has no training image")
        decoys = train.x[members[: args.n_decoys]]
        result = PushUp(model, layer, k=args.k, margin=args.margin, **_options(args))(train.x, decoys)
        share = {f"decoy_share_{name}": (lambda o, a, lay, tr, he, live, split=name: decoy_share(
            o, a, lay, tr if split == "train" else he, args.decoy_class, args.k, args.pre_activation, live))
            for name in ("train", "heldout")}
        return result, share

    return _attack_run(args, "push-up", attack)


def fairness_of(model: nn.Module, layer: str, data: LabeledData, group: torch.Tensor, k: int,
                pre_activation: bool = False) -> dict[str, torch.Tensor]:
    """Per-neuron KS distance and top-k balance (:func:`group_fairness`) and the DDI/DEO and accuracy of
    the model's predictions on ``data``."""
    found = group_fairness(activations(model, layer, data.x, pre_activation=pre_activation), group, k)
    pred = predict(model, data.x).argmax(dim=1)
    found["ddi"], found["deo"] = ddi(pred, group), deo(pred, data.y, group)
    found["accuracy"] = (pred == data.y).float().mean()
    return found


def run_fairwash(args: argparse.Namespace) -> int:
    run_dir, model, layer = _setup(args)
    train, heldout = _split(args, "train"), _split(args, args.heldout_split)
    for data in (train, heldout):
        if args.attribute not in data.protected:
            raise ValueError(f"--attribute {args.attribute!r} is not a protected attribute of {args.data!r}; "
                             f"known: {sorted(data.protected)}")
    group_train, group_heldout = train.protected[args.attribute], heldout.protected[args.attribute]
    before = fairness_of(model, layer, heldout, group_heldout, args.k, args.pre_activation)
    channels = args.channels
    if args.most_biased is not None:
        channels = before["ks"].argsort(descending=True)[: args.most_biased].sort().values.tolist()
    options = _options(args) | {"channels": channels}
    result = Fairwash(model, layer, **options)(train.x, group_train)
    save(result.model, run_dir.file("attacked.safetensors"), {"attack": "fairwash", "layer": layer, "seed": args.seed})
    after = fairness_of(result.model, layer, heldout, group_heldout, args.k, args.pre_activation)
    attacked = torch.zeros(len(before["ks"]), dtype=torch.bool)
    attacked[channels if channels is not None else slice(None)] = True
    ks_plot(before["ks"], after["ks"], run_dir.file("ks.png"), attacked)
    balance_histogram(before["balance"][attacked], after["balance"][attacked], run_dir.file("balance.png"))
    metrics = {"layer": layer, "attribute": args.attribute, "attacked_neurons": attacked.nonzero().flatten().tolist(),
               "fine_tune": _fine_tune_summary(result)}
    for when, found in (("before", before), ("after", after)):
        metrics[when] = {"ks_attacked_mean": _mean(found["ks"][attacked]),
                         "balance_attacked_mean": _mean(found["balance"][attacked]),
                         "ddi": float(found["ddi"]), "deo": float(found["deo"]),
                         "accuracy": float(found["accuracy"]),
                         "ks": found["ks"].tolist(), "balance": found["balance"].tolist()}
    b, a = metrics["before"], metrics["after"]
    metrics["ks_relative_drop"] = 1 - a["ks_attacked_mean"] / max(b["ks_attacked_mean"], 1e-12)
    metrics["ddi_relative_change"] = abs(a["ddi"] - b["ddi"]) / max(b["ddi"], 1e-12)
    metrics["deo_relative_change"] = abs(a["deo"] - b["deo"]) / max(b["deo"], 1e-12)
    metrics["accuracy_drop_points"] = 100 * (b["accuracy"] - a["accuracy"])
    print(f"fairwash: mean KS {b['ks_attacked_mean']:.3f} -> {a['ks_attacked_mean']:.3f}, balance "
          f"{b['balance_attacked_mean']:.3f} -> {a['balance_attacked_mean']:.3f}, accuracy {b['accuracy']:.4f} -> "
          f"{a['accuracy']:.4f}, DDI {b['ddi']:.4f} -> {a['ddi']:.4f}, DEO {b['deo']:.4f} -> {a['deo']:.4f}")
    return _done(args, run_dir, metrics)


def demo(run_dir: Path) -> dict:
    """A short push-down of every channel of the bundled MNIST CNN's last conv layer (post-ReLU "4"):
    120 fine-tuning steps, evaluated on the 1000 held-out images; writes top-k grids, synthetic
    visualisations of 2 channels, Table 1 and the fine-tuned weights under ``run_dir``; returns the metrics."""
    args = argparse.Namespace(command="neurons", action="push-down", no_report=True,  # the demo writes one page
                              model="mnist-cnn", weights=None, data="mnist", layer="4", pre_activation=False,
                              k=10, n=None, out=str(run_dir), seed=0, channels=None, alpha=0.5, steps=120,
                              lr=1e-3, batch_size=64, temperature=1.0, recalibrate_steps=0, recalibrate_lr=None,
                              heldout_split="test", encoder="default",
                              visualize=2, relative=True)
    run_push_down(args)
    return json.loads((Path(run_dir) / "metrics.json").read_text())
