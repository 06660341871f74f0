"""The neuron-level headline figures of docs/neurons.md re-measured over seeds, on images no setting was chosen on
(issue 26; Nanfack et al. 2024, "Adversarial Attacks on the Interpretation of Neuron Activation Maximization",
AAAI, Eq. 2-5).

    nice -n 15 python experiments/neurons_seeds.py --study neurons_push_down_relu [--seeds 0,1,2] [--worker]

The single-run figures of docs/neurons.md (seed 0, ``experiments/neurons_acceptance.py``) were read on the test
images their settings were chosen by. Here each attack is fine-tuned with seeds 0, 1, 2 (the engine's batch order
and the attack's own draws; ``seed`` of :class:`veneer.finetune.FineTuner`) and measured with the runner
(``experiments/runner.py``):

  neurons_push_down_relu  :class:`veneer.neurons.PushDown` (Eq. 3, ``relative=True``) of all 64 channels of the
                          bundled MNIST CNN's module "4" read after the ReLU (what an auditor looks at), k = 10, on
                          the 4000 MNIST training images; ``alpha`` in ``PUSH_DOWN_GRID`` chosen on the validation
                          split (MNIST test images 0-499) by the smallest mean penalised live overlap,
                          ``live_overlap + (1 if accuracy_drop_points > 0.5 else 0)``, reported on the test split
                          (MNIST test images 500-999), which the choice never read.
  neurons_push_up         :class:`veneer.neurons.PushUp` (Eq. 4), decoys the first 100 training images of class 0,
                          the documented setting (no choice), reported on MNIST test images 500-999 and on the
                          training images the decoys compete with.
  neurons_fairwash        :class:`veneer.neurons.Fairwash` (Eq. 5) of the 8 first-hidden-layer pre-activations
                          (module "1") of the bundled Adult MLP with the largest KS distance between women and men
                          on the *training* rows (``fairwash_job`` ranks them on the reported rows), the documented
                          setting, reported on the Adult test rows.

Every fine-tune runs once per (setting, seed): the attacked model is cached under
``runs/neurons_seeds/<study>/<setting>/seed<s>/attacked.safetensors`` (safetensors, with the fine-tune's seconds in
its ``.json``; a killed fine-tune resumes from its checkpoint there), so measuring it on the validation and on the
test split costs one fine-tune; the chosen setting's figures on the validation split (in-sample) are written
too, as ``<study>_validation``. ``--worker`` measures the given seeds (every setting of a grid, on the selection
split) into the study's cache without writing a summary, so that several processes share a study's seeds; a run
without it writes ``experiments/results/<study>.json`` and ``.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from runner import measure_seeds, parse_seeds, print_summary, run_study, seeds_parser
from veneer.data import LabeledData, adult, mnist
from veneer.finetune import FineTuneResult
from veneer.jobs.neurons import fairness_of
from veneer.models import accuracy, load_state, predict, pretrained, save
from veneer.neurons import Fairwash, PushDown, PushUp, activations, compare_activations, label_share, topk_indices
from veneer.neurons.metrics import ranking_tau

OUT = Path(__file__).resolve().parents[1] / "runs" / "neurons_seeds"
K, LAYER = 10, "4"
PUSH_DOWN = {"relative": True, "lr": 5e-4, "steps": 800, "temperature": 4.0, "recalibrate_steps": 1000,
             "recalibrate_lr": 1e-4, "keep": "kl", "batch_size": 64, "attack_batch": 64}
PUSH_DOWN_GRID = [{"alpha": 0.2}, {"alpha": 0.3}, {"alpha": 0.5}]
PUSH_UP = {"alpha": 0.5, "lr": 1e-3, "steps": 200, "recalibrate_steps": 400, "recalibrate_lr": 2e-4, "keep": "kl",
           "margin": 0.1, "batch_size": 64, "attack_batch": 64}
DECOY_CLASS, N_DECOYS = 0, 100
FAIRWASH = {"alpha": 0.5, "lr": 1e-3, "steps": 300, "batch_size": 256, "attack_batch": 256, "keep": "kl"}
FAIR_LAYER, MOST_BIASED, ATTRIBUTE = "1", 8, "sex"
MNIST_SPLITS = {"validation": slice(0, 500), "test": slice(500, 1000)}


def _setting_name(setting: dict[str, Any]) -> str:
    return "_".join(f"{key}{value}" for key, value in sorted(setting.items())) or "documented"


def attacked_model(study: str, setting: dict[str, Any], seed: int, model_name: str,
                   fine_tune: Callable[[Path], FineTuneResult]) -> tuple[nn.Module, float]:
    """The model ``fine_tune(checkpoint_dir)`` returns for (``study``, ``setting``, ``seed``) and its fine-tuning
    seconds: read back from ``runs/neurons_seeds/<study>/<setting>/seed<seed>/attacked.safetensors`` when an
    earlier call wrote it, else fine-tuned (resuming its checkpoint) and written there."""
    folder = OUT / study / _setting_name(setting) / f"seed{seed}"
    path = folder / "attacked.safetensors"
    if path.is_file():
        model = load_state(pretrained(model_name, progress=False), path)
        return model, float(json.loads(path.with_suffix(".json").read_text())["seconds"])
    result = fine_tune(folder / "checkpoint")
    save(result.model, path, {"study": study, "setting": setting, "seed": seed, "seconds": result.seconds})
    return result.model, result.seconds


def _agreement(original: nn.Module, attacked: nn.Module, x: torch.Tensor) -> float:
    """Share of ``x`` whose predicted label the attacked model keeps."""
    return float((predict(original, x).argmax(dim=1) == predict(attacked, x).argmax(dim=1)).float().mean())


def _live(original: nn.Module, train: LabeledData, layer: str, pre_activation: bool = False) -> list[int]:
    """Channels whose activation is not constant over the training images (as in
    :func:`veneer.jobs.neurons.evaluate_attack`: a dead channel's top-k is a tie-break)."""
    before = activations(original, layer, train.x, pre_activation=pre_activation)
    return (before.amax(dim=0) > before.amin(dim=0)).nonzero().flatten().tolist()


def push_down_measure(seed: int, split: str, alpha: float) -> dict[str, float]:
    """Push-down (Eq. 3) of every channel of module "4" after the ReLU with ``alpha``, seed ``seed``; its figures
    on the MNIST test images of ``split``."""
    original, train = pretrained("mnist-cnn", progress=False), mnist("train")
    rows = mnist("test").subset(MNIST_SPLITS[split])

    def fine_tune(checkpoint_dir: Path) -> FineTuneResult:
        attack = PushDown(original, LAYER, k=K, channels=None, pre_activation=False, alpha=alpha, seed=seed,
                          checkpoint_dir=checkpoint_dir, resume=True, **PUSH_DOWN)
        return attack(train)

    attacked, seconds = attacked_model("neurons_push_down_relu", {"alpha": alpha}, seed, "mnist-cnn", fine_tune)
    live = _live(original, train, LAYER)
    before, after = activations(original, LAYER, rows.x), activations(attacked, LAYER, rows.x)
    comparison = compare_activations(before, after, K, rankings=False)
    drop = 100 * (accuracy(original, rows.x, rows.y) - accuracy(attacked, rows.x, rows.y))
    live_overlap = float(comparison.topk_overlap[live].mean())
    return {"live_overlap": live_overlap, "all_overlap": float(comparison.topk_overlap.mean()),
            "live_tau": float(ranking_tau(before[:, live], after[:, live]).mean()),
            "accuracy_drop_points": drop, "agreement": _agreement(original, attacked, rows.x),
            "penalised_live_overlap": live_overlap + (1.0 if drop > 0.5 else 0.0), "live_channels": float(len(live)),
            "seconds": seconds}


def _decoy_filled(original: nn.Module, model: nn.Module, data: LabeledData, live: list[int]) -> float:
    """Share of the ``live`` channels whose top-``K`` of ``data`` under ``model`` is >= 50% decoy class."""
    share = label_share(data.y, topk_indices(activations(model, LAYER, data.x), K), DECOY_CLASS)
    return float((share[live] >= 0.5).float().mean())


def push_up_measure(seed: int, split: str) -> dict[str, float]:
    """Push-up (Eq. 4) of every channel of module "4" with the documented setting, seed ``seed``; decoy shares on
    the training images and on the MNIST test images of ``split``."""
    original, train = pretrained("mnist-cnn", progress=False), mnist("train")
    rows = mnist("test").subset(MNIST_SPLITS[split])
    decoys = train.x[torch.nonzero(train.y == DECOY_CLASS).flatten()[:N_DECOYS]]

    def fine_tune(checkpoint_dir: Path) -> FineTuneResult:
        attack = PushUp(original, LAYER, k=K, channels=None, seed=seed, checkpoint_dir=checkpoint_dir, resume=True,
                        **PUSH_UP)
        return attack(train, decoys)

    attacked, seconds = attacked_model("neurons_push_up", {}, seed, "mnist-cnn", fine_tune)
    live = _live(original, train, LAYER)
    return {"heldout_live_decoy_half_before": _decoy_filled(original, original, rows, live),
            "heldout_live_decoy_half_after": _decoy_filled(original, attacked, rows, live),
            "train_live_decoy_half_before": _decoy_filled(original, original, train, live),
            "train_live_decoy_half_after": _decoy_filled(original, attacked, train, live),
            "accuracy_drop_points": 100 * (accuracy(original, rows.x, rows.y) - accuracy(attacked, rows.x, rows.y)),
            "agreement": _agreement(original, attacked, rows.x), "seconds": seconds}


def most_biased_neurons() -> list[int]:
    """The ``MOST_BIASED`` neurons of the Adult MLP's module "1" (pre-activation) with the largest KS distance
    between the groups of ``ATTRIBUTE`` on the training rows."""
    train = adult("train")
    found = fairness_of(pretrained("adult-mlp", progress=False), FAIR_LAYER, train, train.protected[ATTRIBUTE], K,
                        pre_activation=True)
    return found["ks"].argsort(descending=True)[:MOST_BIASED].sort().values.tolist()


def fairwash_measure(seed: int, split: str) -> dict[str, float]:
    """Fairwash (Eq. 5) of :func:`most_biased_neurons` with the documented setting, seed ``seed``; KS, top-10
    balance, accuracy, DDI and DEO before and after on the Adult ``split`` rows."""
    original, train, rows = pretrained("adult-mlp", progress=False), adult("train"), adult(split)
    channels = most_biased_neurons()

    def fine_tune(checkpoint_dir: Path) -> FineTuneResult:
        attack = Fairwash(original, FAIR_LAYER, channels=channels, pre_activation=True, seed=seed,
                          checkpoint_dir=checkpoint_dir, resume=True, **FAIRWASH)
        return attack(train, ATTRIBUTE)

    attacked, seconds = attacked_model("neurons_fairwash", {}, seed, "adult-mlp", fine_tune)
    group = rows.protected[ATTRIBUTE]
    before, after = (fairness_of(m, FAIR_LAYER, rows, group, K, pre_activation=True) for m in (original, attacked))
    ks_before, ks_after = float(before["ks"][channels].mean()), float(after["ks"][channels].mean())
    return {"ks_before": ks_before, "ks_after": ks_after, "ks_relative_drop": 1 - ks_after / max(ks_before, 1e-12),
            "balance_before": float(before["balance"][channels].mean()),
            "balance_after": float(after["balance"][channels].mean()),
            "accuracy_drop_points": 100 * float(before["accuracy"] - after["accuracy"]),
            "ddi_relative_change": float(abs(after["ddi"] - before["ddi"]) / max(float(before["ddi"]), 1e-12)),
            "deo_relative_change": float(abs(after["deo"] - before["deo"]) / max(float(before["deo"]), 1e-12)),
            "agreement": _agreement(original, attacked, rows.x), "seconds": seconds}


def study(name: str) -> dict[str, Any]:
    """The keywords of :func:`runner.run_study` (less the seeds) of study ``name``."""
    mnist_model = {"model": "mnist-cnn (bundled)", "layer": LAYER, "k": K, "channels": "all 64",
                   "training_images": "MNIST train, 4000"}
    if name == "neurons_push_down_relu":
        return {"measure": push_down_measure, "grid": PUSH_DOWN_GRID, "select_metric": "penalised_live_overlap",
                "goal": "min",
                "config": {**mnist_model, "attack": "PushDown (Eq. 3)", "pre_activation": False, **PUSH_DOWN,
                           "selection": "min mean of live_overlap + (1 if accuracy_drop_points > 0.5 else 0)"},
                "what": "Push-down of every channel of the MNIST CNN's module 4 read after the ReLU: held-out "
                        "top-10 overlap with the original top-10 on the live channels and on all 64, Kendall-tau "
                        "on the live channels, accuracy drop (points), label agreement, fine-tuning seconds",
                "splits": {"validation": "MNIST test images 0-499 (alpha chosen here)",
                           "test": "MNIST test images 500-999 (no setting was chosen on them)"}}
    if name == "neurons_push_up":
        return {"measure": push_up_measure,
                "config": {**mnist_model, "attack": "PushUp (Eq. 4)", "decoys": "first 100 training images of "
                           "class 0", **PUSH_UP},
                "what": "Push-up of every channel of the MNIST CNN's module 4 (post-ReLU) towards 100 class-0 "
                        "decoys: share of the live channels whose top-10 is >= 50% class 0 before/after, on the "
                        "held-out and on the training images, accuracy drop (points), label agreement, seconds",
                "splits": {"test": "MNIST test images 500-999 (the training figures: the 4000 training images)"}}
    if name == "neurons_fairwash":
        return {"measure": fairwash_measure,
                "config": {"model": "adult-mlp (bundled)", "layer": FAIR_LAYER, "pre_activation": True, "k": K,
                           "attribute": ATTRIBUTE, "attack": "Fairwash (Eq. 5)",
                           "attacked_neurons": f"the {MOST_BIASED} largest KS on the Adult training rows",
                           **FAIRWASH},
                "what": "Fairwashing of the Adult MLP's most biased first-layer pre-activations (sex): mean KS of "
                        "the attacked neurons before/after and its relative drop, mean top-10 balance "
                        "(women/men) before/after, accuracy drop (points), relative change of DDI and DEO, "
                        "label agreement, seconds",
                "splits": {"test": "Adult test rows, 15060 (the neurons are chosen on the training rows)"}}
    raise ValueError(f"unknown study {name!r}")


STUDIES = ("neurons_push_down_relu", "neurons_push_up", "neurons_fairwash")


def main() -> None:
    parser = seeds_parser(__doc__)  # --worker measures every setting of a grid, on the selection split
    parser.add_argument("--study", required=True, choices=STUDIES)
    options, seeds = parse_seeds(parser)
    found = study(options.study)
    measure = found.pop("measure")
    if options.worker:
        for setting in found.get("grid") or [{}]:
            split = "validation" if "grid" in found else "test"
            measure_seeds(options.study, measure, seeds, config=found["config"], split=split, setting=setting)
        return
    summary = run_study(options.study, measure, seeds, **found)
    if "chosen" in summary:
        print(f"chosen on the validation split: {summary['chosen']}")
        in_sample = run_study(f"{options.study}_validation", partial(measure, **summary["chosen"]), seeds,
                              config={**found["config"], **summary["chosen"]}, report_split="validation",
                              splits={"validation": found["splits"]["validation"] + ", in-sample"},
                              what=f"The chosen setting {summary['chosen']} on the split that chose it (in-sample): "
                                   + found["what"][0].lower() + found["what"][1:])
        print(f"on the validation split (in-sample): {in_sample['metrics']['accuracy_drop_points']['values']}")
    print_summary(summary)


if __name__ == "__main__":
    main()
