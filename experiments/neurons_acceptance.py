"""Acceptance figures of the neuron-level attacks (issue 5; Nanfack et al. 2024, AAAI).

MNIST CNN (bundled, ~97.3% test accuracy), last conv layer post-ReLU (module "4"), all 64 channels:

* push-down (Eq. 3): target mean top-10 overlap with the original top-10 <= 20%, accuracy drop <= 0.5 pt;
  Kendall-tau / tau-W per channel on the 1000 held-out images;
* push-up (Eq. 4), decoys = 100 training images of class 0: target the decoy class fills >= 50% of the
  top-10 in >= 50% of the channels, accuracy drop <= 0.5 pt;

Adult MLP (bundled), first hidden layer pre-activations (module "1", input of the ReLU), the most
biased neurons w.r.t. sex:

* fairwash (Eq. 5): target mean KS over the attacked neurons falls >= 50%, top-k balance rises,
  accuracy within 0.5 pt, DDI/DEO within 5% relative.

Each attack runs through :mod:`veneer.jobs.neurons` (the code behind ``veneer neurons ...``; the equivalent
command is recorded) into runs/neurons_acceptance/<attack>/;
a summary with pass/fail per target is written to runs/neurons_acceptance/summary.md and .json.
Run (CPU, shared machine): ``nice python experiments/neurons_acceptance.py [--attacks push-down,...]``;
the summary covers every attack whose run directory exists (``--summarize-only`` just rebuilds it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from veneer.data import adult, mnist
from veneer.finetune import KEEP_LOSSES
from veneer.jobs.neurons import fairwash_job, push_down_job, push_up_job
from veneer.models import pretrained
from veneer.runs import RunDir, write_json

JOBS = {
    "push-down": (push_down_job, "mnist-cnn", mnist, "4",
                  dict(relative=True, steps=800, alpha=0.3, lr=5e-4, temperature=4.0, recalibrate_steps=1000,
                       recalibrate_lr=1e-4)),
    "push-up": (push_up_job, "mnist-cnn", mnist, "4",
                dict(steps=200, alpha=0.5, lr=1e-3, decoy_class=0, n_decoys=100, recalibrate_steps=400,
                     recalibrate_lr=2e-4)),
    "fairwash": (fairwash_job, "adult-mlp", adult, "1",
                 dict(pre_activation=True, most_biased=8, steps=300, alpha=0.5, lr=1e-3, batch_size=256,
                      attack_batch=256)),
}


def _run(attack: str, out: Path, seed: int, min_agreement: float | None = None, **overrides) -> None:
    job, model, data, layer, options = JOBS[attack]
    options = {**options, **overrides}
    run_dir = RunDir(out, {"command": "neurons", "action": attack, "model": model, "layer": layer, "k": 10,
                           **options, "min_agreement": min_agreement}, seed)
    start = time.perf_counter()
    heldout, budget = data("test"), {}
    if min_agreement is not None:  # the budget on test images 500-999, every figure on test images 0-499
        budget = {"min_agreement": min_agreement, "check_every": 10, "validation": heldout.subset(slice(500, 1000))}
        heldout = heldout.subset(slice(0, 500))
    metrics = job(pretrained(model), layer, data("train"), heldout, run_dir, k=10, seed=seed, progress=True,
                  **options, **budget).metrics()
    run_dir.write_metrics(metrics)
    write_json(out / "wall_seconds.json", {"seconds": time.perf_counter() - start})


def _load(out: Path, attack: str) -> tuple[dict, float]:
    metrics = json.loads((out / attack / "metrics.json").read_text())
    wall = out / attack / "wall_seconds.json"
    return metrics, json.loads(wall.read_text())["seconds"] if wall.is_file() else float("nan")


def summarize_push_down(metrics: dict) -> dict:
    overlap = metrics["train"]["summary"]["topk_overlap"]
    overlap_live = metrics["train"]["summary_live"]["topk_overlap"]
    heldout = metrics["heldout"]["summary"]
    return {
        "train_top10_overlap_all": overlap, "train_top10_overlap_live": overlap_live,
        "heldout_top10_overlap_all": heldout["topk_overlap"],
        "heldout_top10_overlap_live": metrics["heldout"]["summary_live"]["topk_overlap"],
        "heldout_tau": heldout["tau"], "heldout_tau_w": heldout["tau_w"],
        "heldout_tau_live": metrics["heldout"]["summary_live"]["tau"],
        "heldout_tau_w_live": metrics["heldout"]["summary_live"]["tau_w"],
        "heldout_embedding_delta": heldout.get("embedding_delta"), "heldout_embedding_w": heldout.get("embedding_w"),
        "accuracy_before": metrics["accuracy_before"], "accuracy_after": metrics["accuracy_after"],
        "live_channels": len(metrics["live_channels"]),
        "pass_overlap_all": overlap <= 0.20, "pass_overlap_live": overlap_live <= 0.20,
        "pass_accuracy": metrics["accuracy_drop_points"] <= 0.5,
    }


def summarize_push_up(metrics: dict) -> dict:
    live = metrics["live_channels"]

    def filled(split: str, when: str = "after") -> dict:
        per_channel = metrics[f"decoy_share_{split}"][when]["per_channel"]
        alive = [per_channel[c] for c in live]
        return {"all": sum(v >= 0.5 for v in per_channel) / len(per_channel),
                "live": sum(v >= 0.5 for v in alive) / len(alive), "mean_share_live": sum(alive) / len(alive)}

    train_after, heldout_after, train_before = filled("train"), filled("heldout"), filled("train", "before")
    return {
        "train_channels_decoy_at_least_half_all": train_after["all"],
        "train_channels_decoy_at_least_half_live": train_after["live"],
        "train_channels_decoy_at_least_half_live_before": train_before["live"],
        "train_mean_decoy_share_live": train_after["mean_share_live"],
        "heldout_channels_decoy_at_least_half_all": heldout_after["all"],
        "heldout_channels_decoy_at_least_half_live": heldout_after["live"],
        "heldout_tau": metrics["heldout"]["summary"]["tau"], "heldout_tau_w": metrics["heldout"]["summary"]["tau_w"],
        "accuracy_before": metrics["accuracy_before"], "accuracy_after": metrics["accuracy_after"],
        "pass_decoys_all": train_after["all"] >= 0.5, "pass_decoys_live": train_after["live"] >= 0.5,
        "pass_accuracy": metrics["accuracy_drop_points"] <= 0.5,
    }


def summarize_fairwash(metrics: dict) -> dict:
    b, a = metrics["before"], metrics["after"]
    return {
        "attacked_neurons": metrics["attacked_neurons"],
        "ks_before": b["ks_attacked_mean"], "ks_after": a["ks_attacked_mean"],
        "ks_relative_drop": metrics["ks_relative_drop"],
        "balance_before": b["balance_attacked_mean"], "balance_after": a["balance_attacked_mean"],
        "accuracy_before": b["accuracy"], "accuracy_after": a["accuracy"],
        "ddi_before": b["ddi"], "ddi_after": a["ddi"], "deo_before": b["deo"], "deo_after": a["deo"],
        "ddi_relative_change": metrics["ddi_relative_change"], "deo_relative_change": metrics["deo_relative_change"],
        "pass_ks": metrics["ks_relative_drop"] >= 0.5,
        "pass_balance": a["balance_attacked_mean"] > b["balance_attacked_mean"],
        "pass_accuracy": abs(metrics["accuracy_drop_points"]) <= 0.5,
        "pass_ddi_deo": metrics["ddi_relative_change"] <= 0.05 and metrics["deo_relative_change"] <= 0.05,
    }


SUMMARIES = {"push-down": summarize_push_down, "push-up": summarize_push_up, "fairwash": summarize_fairwash}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/neurons_acceptance")
    parser.add_argument("--attacks", default="push-down,push-up,fairwash")
    parser.add_argument("--summarize-only", action="store_true", help="rebuild the summary from existing runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-agreement", type=float, default=None,
                        help="behaviour budget (issue 16), measured on test images 500-999; the held-out figures "
                             "are then on test images 0-499")
    parser.add_argument("--pre-activation", action="store_true",
                        help="push-down/push-up: attack and measure the conv output (the ReLU's input)")
    parser.add_argument("--keep", default=None, choices=sorted(KEEP_LOSSES),
                        help="push-down/push-up: the keep loss (default kl)")
    options = parser.parse_args()
    out = Path(options.out)
    commands = {
        "push-down": ["neurons", "push-down", "--layer", "4", "--relative", "--steps", "800", "--alpha", "0.3",
                      "--lr", "5e-4", "--temperature", "4", "--recalibrate-steps", "1000", "--recalibrate-lr", "1e-4"],
        "push-up": ["neurons", "push-up", "--layer", "4", "--steps", "200", "--alpha", "0.5", "--lr", "1e-3",
                    "--decoy-class", "0", "--n-decoys", "100", "--recalibrate-steps", "400", "--recalibrate-lr", "2e-4"],
        "fairwash": ["neurons", "fairwash", "--model", "adult-mlp", "--data", "adult", "--layer", "1",
                     "--pre-activation", "--most-biased", "8", "--steps", "300", "--alpha", "0.5", "--lr", "1e-3",
                     "--attack-batch", "256"],
    }
    attacks = options.attacks.split(",")
    unknown = sorted(set(attacks) - set(commands))
    if unknown:
        raise SystemExit(f"--attacks: unknown {unknown}; choose from {sorted(commands)}")
    if not options.summarize_only:
        for attack in attacks:
            overrides = {}
            if attack != "fairwash" and options.pre_activation:
                overrides["pre_activation"] = True
                commands[attack].append("--pre-activation")
            if attack != "fairwash" and options.keep:
                overrides["keep"] = options.keep
                commands[attack] += ["--keep", options.keep]
            _run(attack, out / attack, options.seed, options.min_agreement, **overrides)
    summary = {}
    for attack in commands:
        if (out / attack / "metrics.json").is_file():
            metrics, wall = _load(out, attack)
            summary[attack] = {"wall_seconds": wall, "fine_tune_seconds": metrics["fine_tune"]["seconds"],
                               "command": "veneer " + " ".join(commands[attack]), **SUMMARIES[attack](metrics)}
    write_json(out / "summary.json", summary)
    lines = ["| attack | measure | value |", "|---|---|---|"]
    for attack, values in summary.items():
        for key, value in values.items():
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"| {attack} | {key} | {shown} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
