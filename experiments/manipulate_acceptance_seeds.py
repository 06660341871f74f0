"""The model-level acceptance cases of docs/manipulate.md re-measured over fine-tune seeds (issue 26; thesis Ch. 3:
CenterOfMass and TargetMap on Gradient and LRP, Sec. 3.2-3.5; Dimanov et al. 2020, "You Shouldn't Trust Me: Learning
Models Which Conceal Unfairness From Multiple Explanation Methods", ECAI, Sec. 4, for the Adult case).

    nice -n 15 python experiments/manipulate_acceptance_seeds.py --case cross-gradient [--seeds 0,1,2] [--worker]
    nice -n 15 python experiments/manipulate_acceptance_seeds.py --case com --transfer [--seeds 0,1,2] [--worker]

The single-run figures of docs/manipulate.md are seed 0 of ``experiments/manipulate_acceptance.py``. Here each
case of its ``CASES`` is fine-tuned with seeds 0, 1, 2 (``seed`` of :class:`veneer.manipulate.Manipulation`: the
batch order and every other draw of the engine) at the issue's acceptance settings (objective, attacked method,
keep loss, alpha, lr, epochs, batch size, Softplus; none is chosen here, so no validation split is read) and
measured with the runner (``experiments/runner.py``) on the test split, with the attacked method only and no
Gaussian-noise inputs:

  cross-gradient  TargetMap("cross") on Gradient, keep "ce", alpha 0.1, 8 epochs (496 steps)
  cross-lrp       TargetMap("cross") on LRP (composite epsilon_plus), keep "ce", alpha 0.1, 5 epochs (310 steps)
  cross-lrp-zbox  the same with the z^B rule on the first layer (``low=0, high=1``: relevance reaches background pixels)
  com-prob-mse    CenterOfMass((0, 0)) on Gradient, keep "prob_mse", alpha 0.02, 4 epochs (248 steps)
  adult           FeatureSuppress(["sex", "race"]) on Gradient for the Adult MLP, keep "kl", alpha 0.1, 30 epochs
                  (3510 steps), trained with ReLU; also the relative change of DDI and DEO for sex and race
  com             CenterOfMass((0, 0)) on Gradient, keep "ce", alpha 0.1, 20 epochs (1240 steps)

Metrics: the attacked measure of the original and of the manipulated model (mean over the test inputs), the
manipulated model's success rate (the objective's criterion), the accuracy change (manipulated minus original,
points), the probability MSE, the steps and the fine-tuning seconds (wall time on a shared CPU: a load figure);
for ``adult`` also the share fall ``1 - manipulated / original`` of the hidden features' share of |attribution|.
Each fine-tune checkpoints under ``runs/manipulate_acceptance_seeds/<case>/seed<s>`` and resumes there when killed.
``--worker`` measures the given seeds into the study's cache without writing a summary, so that several processes
share a case's seeds; a run without it writes ``experiments/results/manipulate_acceptance_<case>.json`` and ``.md``
(``-`` written ``_``).

``--transfer`` (cases ``com`` and ``adult``; thesis Table 3.1 and Figs. 3.14/3.15) trains nothing: per seed it loads
the finished checkpoint and evaluates it with the transfer methods of ``manipulate_acceptance.transfer_explainers``
(``"all"`` for ``com``: Gradient, GradientXInput, LRP epsilon_plus, LRP epsilon, IG 100 steps, SmoothGrad, Grad-CAM
layer 3; ``"tabular"`` for ``adult``: Gradient, GradientXInput, IG 100 steps, SmoothGrad, LRP) on the test split and
on 100 Gaussian-noise inputs drawn with the seed (explained for the original model's predicted class). Metrics per
method ``<m>``: ``<m>_original``, ``<m>_manipulated`` and ``<m>_success_rate`` on the test split and ``<m>_noise_*``
on the noise inputs, of the attacked measure (``com``: the COM distance in px to (0, 0); ``adult``: the hidden
features' share of |attribution|); for ``adult`` also ``<m>_share_fall``, ``1 - manipulated / original``. Summary
``experiments/results/manipulate_acceptance_<case>_transfer.json`` and ``.md``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from manipulate_acceptance import CASES, transfer_explainers
from runner import measure_seeds, parse_seeds, print_summary, run_study, seeds_parser
from veneer.data import LabeledData, adult, mnist
from veneer.finetune import CHECKPOINT
from veneer.manipulate import Manipulation, evaluate
from veneer.models import pretrained

OUT = Path(__file__).resolve().parents[1] / "runs" / "manipulate_acceptance_seeds"
STUDIED = ("cross-gradient", "cross-lrp", "cross-lrp-zbox", "com-prob-mse", "adult", "com")
TRANSFERRED = {"com": "all", "adult": "tabular"}  # case -> kind of manipulate_acceptance.transfer_explainers
NOISE = 100  # Gaussian-noise inputs of the transfer study (thesis Sec. 4.1)
SPLITS = {"mnist-cnn": "MNIST test split, 1000 images", "adult-mlp": "Adult test rows, 15060"}
ATTRIBUTES = ("sex", "race")


def _data(model: str, split: str) -> LabeledData:
    """The ``split`` of the data set ``model`` was trained on (MNIST for the CNN, Adult for the MLP)."""
    return (mnist if model == "mnist-cnn" else adult)(split)


def _batch_size(model: str) -> int:
    """The fine-tuning batch of ``manipulate_acceptance.run_case``: 64 images, 256 Adult rows."""
    return 64 if model == "mnist-cnn" else 256


def _attack(case: str, seed: int) -> Manipulation:
    """The fine-tune of ``case`` of ``manipulate_acceptance.CASES`` with seed ``seed``, resuming its checkpoint
    under ``OUT/<case>/seed<seed>`` (a finished one is loaded, not trained further)."""
    settings = CASES[case]
    original = pretrained(settings["model"], progress=False)
    return Manipulation(original, settings["method"](original), settings["objective"](), keep=settings["keep"],
                        alpha=settings["alpha"], lr=settings["lr"], epochs=settings["epochs"],
                        batch_size=_batch_size(settings["model"]), softplus_beta=settings.get("softplus_beta", 20.0),
                        checkpoint_dir=OUT / case / f"seed{seed}", checkpoint_every=50, resume=True, seed=seed)


def measure(seed: int, split: str, case: str) -> dict[str, float]:
    """Fine-tune ``case`` of ``manipulate_acceptance.CASES`` with seed ``seed`` (resuming its checkpoint) and
    measure it on ``split`` with the attacked method only (:func:`veneer.manipulate.evaluate`, ``noise=0``)."""
    settings = CASES[case]
    attack = _attack(case, seed)
    original, objective, method = attack.model, attack.objective, settings["method"]
    found = attack(_data(settings["model"], "train"))
    evaluation = evaluate(original, found.model, objective, _data(settings["model"], split),
                          {method.name: method(original)}, noise=0, batch_size=50)
    by_model, predictions = evaluation.methods[method.name], evaluation.predictions
    before, after = by_model["original"][objective.measure], by_model["manipulated"][objective.measure]
    metrics = {"original": before, "manipulated": after, "success_rate": by_model["manipulated"]["success_rate"],
               "accuracy_change_points": -predictions["accuracy_drop_points"],
               "probability_mse": predictions["probability_mse"], "steps": float(found.history[-1]["step"]),
               "train_seconds": found.seconds}
    if evaluation.fairness:
        metrics["share_fall"] = 1 - after / before
        for attribute in ATTRIBUTES:
            for key in ("ddi", "deo"):
                metrics[f"{attribute}_{key}_relative_change"] = evaluation.fairness[attribute][
                    f"{key}_relative_change"]
    return metrics


def measure_transfer(seed: int, split: str, case: str) -> dict[str, float]:
    """Load the finished fine-tune of ``case`` with seed ``seed`` (no training: its checkpoint must exist)
    and evaluate it on ``split`` with the transfer methods (module docstring) and ``NOISE`` Gaussian-noise inputs
    drawn with ``seed`` (:func:`veneer.manipulate.evaluate`; thesis Table 3.1, Figs. 3.14/3.15)."""
    settings = CASES[case]
    attack = _attack(case, seed)
    if not (attack.checkpoint_dir / CHECKPOINT).is_file():
        raise FileNotFoundError(f"no finished fine-tune under {attack.checkpoint_dir}: run --case {case} first")
    found = attack(_data(settings["model"], "train"))
    original, objective = attack.model, attack.objective
    evaluation = evaluate(original, found.model, objective, _data(settings["model"], split),
                          transfer_explainers(original, TRANSFERRED[case]), noise=NOISE, batch_size=50, seed=seed)
    metrics: dict[str, float] = {}
    for name, by_model in evaluation.methods.items():
        before, after = by_model["original"][objective.measure], by_model["manipulated"][objective.measure]
        metrics |= {f"{name}_original": before, f"{name}_manipulated": after,
                    f"{name}_success_rate": by_model["manipulated"]["success_rate"]}
        if evaluation.fairness:
            metrics[f"{name}_share_fall"] = 1 - after / before
    for name, by_model in evaluation.noise.items():
        metrics |= {f"{name}_noise_original": by_model["original"][objective.measure],
                    f"{name}_noise_manipulated": by_model["manipulated"][objective.measure],
                    f"{name}_noise_success_rate": by_model["manipulated"]["success_rate"]}
    return metrics


def study_name(case: str) -> str:
    """The summary's file stem: ``manipulate_acceptance_<case>`` with ``-`` written ``_``."""
    return "manipulate_acceptance_" + case.replace("-", "_")


def study(case: str) -> dict[str, Any]:
    """The keywords of :func:`runner.run_study` (less the measure and the seeds) of ``case``."""
    settings = CASES[case]
    config = {"case": case, "model": f"{settings['model']} (bundled)", "objective": repr(settings["objective"]()),
              "method": settings["method"].name, "keep": settings["keep"], "alpha": settings["alpha"],
              "lr": settings["lr"], "epochs": settings["epochs"], "batch_size": _batch_size(settings["model"]),
              "softplus_beta": settings.get("softplus_beta", 20.0), "noise_inputs": 0,
              "training": "MNIST train, 4000 images" if settings["model"] == "mnist-cnn" else "Adult train rows, 30162"}
    fairness = (", the share fall and the relative change of DDI and DEO (sex, race)"
                if settings["model"] == "adult-mlp" else "")
    what = (f"Acceptance case {case} ({config['objective'].split('(')[0]} on {config['method']}, keep "
            f"{settings['keep']}, alpha {settings['alpha']:g}, {settings['epochs']} epochs) fine-tuned per seed: the "
            f"attacked measure of the original and the manipulated model, the success rate, the accuracy change "
            f"(points), the probability MSE, the steps and the fine-tuning seconds{fairness}")
    return {"config": config, "what": what,
            "splits": {"test": SPLITS[settings["model"]] + "; the issue's settings, none chosen here"}}


def transfer_study(case: str) -> dict[str, Any]:
    """The keywords of :func:`runner.run_study` (less the measure and the seeds) of ``case``'s transfer study."""
    found = study(case)
    methods = ", ".join(transfer_explainers(pretrained(CASES[case]["model"], progress=False), TRANSFERRED[case]))
    noise = NOISE if CASES[case]["objective"]().noise_inputs else 0
    config = {**found["config"], "transfer": TRANSFERRED[case], "methods": methods, "noise_inputs": noise,
              "noise_seed": "the fine-tune seed" if noise else None, "training": "none: the finished checkpoint"}
    share = "the share fall 1 - manipulated / original, " if CASES[case]["model"] == "adult-mlp" else ""
    on_noise = f" and on {noise} Gaussian-noise inputs" if noise else ""
    what = (f"Transfer of acceptance case {case} (attacked: {config['method']}) per fine-tune seed: per method "
            f"({methods}) the attacked measure of the original and the manipulated model, {share}and the success "
            f"rate, on the test split{on_noise}")
    return {"config": config, "what": what, "splits": found["splits"]}


def main() -> None:
    parser = seeds_parser(__doc__)
    parser.add_argument("--case", required=True, choices=STUDIED)
    parser.add_argument("--transfer", action="store_true",
                        help=f"evaluate the finished fine-tunes with the transfer methods ({', '.join(TRANSFERRED)})")
    options, seeds = parse_seeds(parser)
    if options.transfer and options.case not in TRANSFERRED:
        parser.error(f"--transfer needs --case {' or '.join(TRANSFERRED)}, got {options.case!r}")
    if options.transfer:
        found, name = transfer_study(options.case), study_name(options.case) + "_transfer"
        measured = partial(measure_transfer, case=options.case)
    else:
        found, name, measured = study(options.case), study_name(options.case), partial(measure, case=options.case)
    if options.worker:
        for row in measure_seeds(name, measured, seeds, config=found["config"]):
            print(row, flush=True)
        return
    summary = run_study(name, measured, seeds, **found)
    print_summary(summary)


if __name__ == "__main__":
    main()
