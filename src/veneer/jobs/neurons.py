"""Neuron interpretations and their attacks with their files (``veneer neurons ...``; Nanfack et al. 2024,
"Adversarial Attacks on the Interpretation of Neuron Activation Maximization", AAAI): top-k grids, synthetic
visualisations, Table 1, KS/balance plots and the fine-tuned weights."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import nn

from veneer.checks import check_labels
from veneer.data import LabeledData, mnist
from veneer.finetune import FineTuneResult
from veneer.jobs.results import FairwashRun, PushDownRun, PushUpRun, TopkRun, VisualizeRun, budget_measures
from veneer.metrics import ddi, deo
from veneer.models import accuracy, load, predict, pretrained, save
from veneer.neurons import (
    Fairwash, PushDown, PushUp, activations, channel_decorrelation, compare_activations, group_fairness,
    independent_encoder, label_share, top_k, topk_indices, visualize,
)
from veneer.report.neurons import balance_histogram, ks_plot, topk_grid, visualization_grid, write_table
from veneer.runs import RunDir, save_tensors


def _is_image(data: LabeledData) -> bool:
    return data.x.ndim == 4


def _mean(x: torch.Tensor) -> float:
    return float(x.float().mean())


def resolve_encoder(spec: str, data: LabeledData) -> nn.Module | None:
    """The embedding encoder named ``spec``: ``"none"``, ``"default"`` (an independently seeded bundled CNN for
    MNIST, raw features for tabular data) or ``"module:function"`` returning an ``nn.Module``."""
    if spec == "none":
        return None
    if spec == "default":
        if not _is_image(data):
            return nn.Flatten()
        if data.name == "mnist":
            return independent_encoder("mnist-cnn", seed=1)
        raise ValueError(f"no default encoder for data {data.name!r}; pass encoder='module:function' or 'none'")
    return load(factory=spec)


def topk_job(model: nn.Module, layer: str, data: LabeledData, run_dir: RunDir, k: int = 10,
             pre_activation: bool = False) -> TopkRun:
    """Each channel's top-``k`` samples of ``data`` (dataset-based visualisation): ``topk.safetensors`` and, for
    images, ``topk.png``; returns the result."""
    check_labels(model, data.x, data.y)
    start = time.perf_counter()
    found = top_k(model, layer, data.x, k, pre_activation=pre_activation)
    seconds = time.perf_counter() - start
    save_tensors(run_dir.file("topk.safetensors"), {"values": found.values, "indices": found.indices})
    if _is_image(data):
        topk_grid(data.x, found.indices, run_dir.file("topk.png"), labels=data.y)
    return TopkRun({"layer": layer, "k": k, "channels": found.channels, "seconds": seconds,
                    "samples_per_second": len(data) / seconds, "indices": found.indices, "values": found.values})


def visualize_job(model: nn.Module, layer: str, data: LabeledData, run_dir: RunDir, channels: list[int] | None = None,
                  steps: int = 256, lr: float = 0.05, pre_activation: bool = False, seed: int = 0,
                  progress: bool = False) -> VisualizeRun:
    """Synthetic activation maximisation of ``channels`` (``visualizations.png`` / ``.safetensors``)."""
    decorrelation = channel_decorrelation(data.x) if _is_image(data) and data.x.shape[1] > 1 else None
    images = visualize(model, layer, channels, input_shape=tuple(data.x.shape[1:]), steps=steps, lr=lr,
                       decorrelation=decorrelation, pre_activation=pre_activation, seed=seed, progress=progress)
    channels = channels if channels is not None else list(range(len(images)))
    save_tensors(run_dir.file("visualizations.safetensors"), {"images": images})
    visualization_grid(images, run_dir.file("visualizations.png"), channels=channels)
    response = activations(model, layer, images, pre_activation=pre_activation)
    return VisualizeRun({"layer": layer, "channels": channels,
                         "activation_of_own_channel": response[torch.arange(len(channels)), channels]})


def evaluate_attack(original: nn.Module, attacked: nn.Module, layer: str, train: LabeledData,
                    heldout: LabeledData, run_dir: RunDir, attack: str, k: int = 10,
                    channels: list[int] | None = None, encoder: nn.Module | None = None,
                    pre_activation: bool = False, visualize_channels: int = 4, seed: int = 0) -> dict[str, Any]:
    """Metrics of an attack on a layer (Nanfack et al. 2024, Table 1): top-k overlap, label overlap and
    embedding-delta/-W on the training set (where ``D_attack`` lives) and the held-out set, Kendall-tau and
    tau-W on the held-out set, accuracy before/after; top-k grids, visualisations of the first
    ``visualize_channels`` channels before/after (Fig. 9) and Table 1 files.
    Means are over the attacked ``channels`` (``summary``) and over those of them that are alive, i.e.
    whose activation is not constant over the training data (``summary_live``: a dead ReLU channel has
    no ranking, its top-k is an arbitrary tie-break no attack can move)."""
    metrics: dict = {"layer": layer, "attack": attack, "k": k,
                     "accuracy_before": accuracy(original, heldout.x, heldout.y),
                     "accuracy_after": accuracy(attacked, heldout.x, heldout.y)}
    metrics["accuracy_drop_points"] = 100 * (metrics["accuracy_before"] - metrics["accuracy_after"])
    comparisons, live = {}, None
    for name, data in (("train", train), ("heldout", heldout)):
        before = activations(original, layer, data.x, pre_activation=pre_activation)
        after = activations(attacked, layer, data.x, pre_activation=pre_activation)
        if live is None:  # channels whose activation varies over the training data: they have a ranking
            live = (before.amax(dim=0) > before.amin(dim=0)).nonzero().flatten().tolist()
            attacked_live = [c for c in (channels if channels is not None else live) if c in set(live)]
            metrics["live_channels"] = live
        comparison = compare_activations(before, after, k, labels=data.y, x=data.x, encoder=encoder,
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
    shown = (channels or list(range(len(comparisons["train"].topk_overlap))))[:visualize_channels]
    if _is_image(train) and shown:
        decorrelation = channel_decorrelation(train.x) if train.x.shape[1] > 1 else None
        images = [visualize(model, layer, shown, input_shape=tuple(train.x.shape[1:]), decorrelation=decorrelation,
                            pre_activation=pre_activation, seed=seed) for model in (original, attacked)]
        visualization_grid(images[0], run_dir.file("visualizations.png"), images[1], shown)
    return metrics


def fine_tune_summary(result: FineTuneResult) -> dict[str, Any]:
    """Wall time, the attack's measures and every ~50th history record of a fine-tuning run."""
    return {"seconds": result.seconds, **result.measures,
            "history": result.history[:: max(1, len(result.history) // 50)]}


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


def _attack_job(model: nn.Module, layer: str, train: LabeledData, heldout: LabeledData, run_dir: RunDir,
                attack: str, fine_tune: Callable[[], FineTuneResult], k: int, channels: list[int] | None,
                encoder: str, pre_activation: bool, visualize_channels: int, seed: int
                ) -> tuple[dict[str, Any], FineTuneResult]:
    """Shared body of push-down and push-up: fine-tune, save the model, evaluate; ``(measures, fine-tune)``."""
    result = fine_tune()
    save(result.model, run_dir.file("attacked.safetensors"), {"attack": attack, "layer": layer, "seed": seed})
    metrics = evaluate_attack(model, result.model, layer, train, heldout, run_dir, attack, k, channels,
                              resolve_encoder(encoder, train), pre_activation, visualize_channels, seed)
    metrics["fine_tune"] = fine_tune_summary(result)
    return metrics, result


def push_down_job(model: nn.Module, layer: str, train: LabeledData, heldout: LabeledData, run_dir: RunDir, *,
                  k: int = 10, relative: bool = False, channels: list[int] | None = None, encoder: str = "default",
                  pre_activation: bool = False, visualize_channels: int = 4, seed: int = 0,
                  **fine_tune: Any) -> PushDownRun:
    """:class:`~veneer.neurons.PushDown` on ``train`` (options in ``fine_tune``), evaluated; returns the result
    (the attacked model is ``result.model``)."""
    attack = PushDown(model, layer, k=k, relative=relative, channels=channels, pre_activation=pre_activation,
                      seed=seed, **fine_tune)
    metrics, result = _attack_job(model, layer, train, heldout, run_dir, "push-down", lambda: attack(train), k,
                                  channels, encoder, pre_activation, visualize_channels, seed)
    return PushDownRun(metrics, model=result.model, budget=budget_measures(result))


def push_up_job(model: nn.Module, layer: str, train: LabeledData, heldout: LabeledData, run_dir: RunDir, *,
                decoy_class: int = 0, n_decoys: int = 100, k: int = 10, margin: float = 0.1,
                channels: list[int] | None = None, encoder: str = "default", pre_activation: bool = False,
                visualize_channels: int = 4, seed: int = 0, **fine_tune: Any) -> PushUpRun:
    """:class:`~veneer.neurons.PushUp` with the first ``n_decoys`` training images of ``decoy_class`` as
    decoys, evaluated, with the decoy share of every top-k before and after."""
    members = torch.nonzero(train.y == decoy_class).flatten()
    if len(members) == 0:
        raise ValueError(f"decoy_class={decoy_class} has no training image")
    decoys = train.x[members[:n_decoys]]
    attack = PushUp(model, layer, k=k, margin=margin, channels=channels, pre_activation=pre_activation, seed=seed,
                    **fine_tune)
    metrics, result = _attack_job(model, layer, train, heldout, run_dir, "push-up", lambda: attack(train, decoys),
                                  k, channels, encoder, pre_activation, visualize_channels, seed)
    for name, data in (("train", train), ("heldout", heldout)):
        metrics[f"decoy_share_{name}"] = decoy_share(model, result.model, layer, data, decoy_class, k,
                                                     pre_activation, metrics["live_channels"])
    return PushUpRun(metrics, model=result.model, budget=budget_measures(result))


def fairness_of(model: nn.Module, layer: str, data: LabeledData, group: torch.Tensor, k: int,
                pre_activation: bool = False) -> dict[str, torch.Tensor]:
    """Per-neuron KS distance and top-k balance (:func:`group_fairness`) and the DDI/DEO and accuracy of
    the model's predictions on ``data``."""
    found = group_fairness(activations(model, layer, data.x, pre_activation=pre_activation), group, k)
    pred = predict(model, data.x).argmax(dim=1)
    found["ddi"], found["deo"] = ddi(pred, group), deo(pred, data.y, group)
    found["accuracy"] = (pred == data.y).float().mean()
    return found


def fairwash_job(model: nn.Module, layer: str, train: LabeledData, heldout: LabeledData, run_dir: RunDir, *,
                 attribute: str = "sex", k: int = 10, channels: list[int] | None = None,
                 most_biased: int | None = None, pre_activation: bool = False, seed: int = 0,
                 **fine_tune: Any) -> FairwashRun:
    """:class:`~veneer.neurons.Fairwash` on the protected ``attribute``, on ``channels`` or the
    ``most_biased`` neurons (largest initial KS); KS and balance plots, DDI/DEO before and after."""
    for data in (train, heldout):
        if attribute not in data.protected:
            raise ValueError(f"attribute={attribute!r} is not a protected attribute of {data.name!r}; "
                             f"known: {sorted(data.protected)}")
    group_heldout = heldout.protected[attribute]
    before = fairness_of(model, layer, heldout, group_heldout, k, pre_activation)
    if most_biased is not None:
        channels = before["ks"].argsort(descending=True)[:most_biased].sort().values.tolist()
    result = Fairwash(model, layer, channels=channels, pre_activation=pre_activation, seed=seed,
                      **fine_tune)(train, attribute)
    save(result.model, run_dir.file("attacked.safetensors"), {"attack": "fairwash", "layer": layer, "seed": seed})
    after = fairness_of(result.model, layer, heldout, group_heldout, k, pre_activation)
    attacked = torch.zeros(len(before["ks"]), dtype=torch.bool)
    attacked[channels if channels is not None else slice(None)] = True
    ks_plot(before["ks"], after["ks"], run_dir.file("ks.png"), attacked)
    balance_histogram(before["balance"][attacked], after["balance"][attacked], run_dir.file("balance.png"))
    metrics = {"layer": layer, "attribute": attribute, "attacked_neurons": attacked.nonzero().flatten().tolist(),
               "fine_tune": fine_tune_summary(result)}
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
    return FairwashRun(metrics, model=result.model, budget=budget_measures(result))


def demo(run_dir) -> PushDownRun:
    """A short push-down of every channel of the bundled MNIST CNN's last conv layer (post-ReLU "4"):
    120 fine-tuning steps, evaluated on the 1000 held-out images; writes top-k grids, synthetic
    visualisations of 2 channels, Table 1 and the fine-tuned weights under ``run_dir``; returns the result."""
    run = RunDir(run_dir, {"command": "neurons", "action": "push-down", "demo": True, "layer": "4", "steps": 120},
                 0, overwrite=True)  # a part of the demo's own run
    result = push_down_job(pretrained("mnist-cnn"), "4", mnist("train"), mnist("test"), run, relative=True,
                           visualize_channels=2, alpha=0.5, steps=120, lr=1e-3, progress=True)
    run.write_result(result)
    return result
