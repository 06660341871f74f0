"""The attack levels on a residual network (issue 10): the bundled ``mnist-resnet`` (ResNet-8 with batch norm)
under an input-level MassCenter attack and model-level centre-of-mass manipulations on Gradient and on LRP.

    python experiments/resnet_levels.py [--out runs/resnet_levels] [--steps 200] [--n 32]

1. Input level: MassCenter against RandomSign on the first ``--n`` correctly classified test images, Gradient and
   LRP (epsilon_plus), eps 0.05 / 0.1, 10 signed steps (the Fig.-3 measures).
2. Model level: ``Manipulation(CenterOfMass((0, 0)))`` on Gradient and on LRP (epsilon_plus; ``lrp-zb``: with
   z^B on the first convolution; ``--fold-batchnorm``: batch norms merged into their convolutions), keep
   ``--keep`` (ce), alpha ``--alpha`` (0.1; with ``--min-agreement`` the starting alpha of the budgeted run), lr
   ``--lr`` (1e-3), ``--steps`` steps of 64 training images; evaluated on 200 test images (centre-of-mass
   distance to the corner, accuracy and label agreement).
Each part writes its own run directory under ``--out``; ``summary.md`` collects the figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from veneer.data import mnist
from veneer.explain import LRP, Gradient
from veneer.jobs.attack import attack_inputs
from veneer.jobs.manipulate import evaluate_and_save, manipulate_and_save
from veneer.manipulate import KEEP_LOSSES, CenterOfMass
from veneer.models import pretrained
from veneer.runs import RunDir, write_json

def methods(lrp_epsilon: float = 1e-6, fold_batchnorm: bool = False) -> dict:
    """The explainers by name; ``lrp_epsilon`` is LRP's stabiliser (also of the batch-norm and residual-sum
    z-rules); ``fold_batchnorm`` merges each batch norm into its convolution (the canonizer)."""
    lrp = {"composite": "epsilon_plus", "epsilon": lrp_epsilon, "fold_batchnorm": fold_batchnorm}
    return {"gradient": Gradient, "lrp": lambda m: LRP(m, **lrp),
            # z^B on the first convolution: relevance can reach the black background (Montavon et al. 2017)
            "lrp-zb": lambda m: LRP(m, **lrp, low=0.0, high=1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/resnet_levels")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--methods", default="gradient,lrp", help="methods of the model-level part: "
                        + ", ".join(methods()))
    parser.add_argument("--lrp-epsilon", type=float, default=1e-6, help="LRP's stabiliser")
    parser.add_argument("--fold-batchnorm", action="store_true",
                        help="LRP: merge each batch norm into the convolution before it (the canonizer)")
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--keep", default="ce", choices=sorted(KEEP_LOSSES))
    parser.add_argument("--min-agreement", type=float, default=None,
                        help="behaviour budget (issue 16): adaptive alpha, best iterate that keeps this agreement")
    parser.add_argument("--skip-input", action="store_true", help="only the model-level part")
    options = parser.parse_args()
    out = Path(options.out)
    model = pretrained("mnist-resnet", progress=True)
    test = mnist("test")
    summary: dict = {"model": "mnist-resnet"}

    summary["input"] = []
    if not options.skip_input:
        attack_dir = RunDir(out / "input", {"command": "attack-input", "model": "mnist-resnet", "n": options.n},
                            0, overwrite=True)
        attack_dir.start()
        attacks = attack_inputs(model, test.subset(slice(0, options.n)), attack_dir.path,
                                methods=["gradient", "lrp"], attacks=["random", "mass-center"], eps_values=[0.05, 0.1],
                                with_sweep=True, steps=10, show=2, progress=True).metrics()
        summary["input"] = [{k: row[k] for k in ("attack", "method", "eps", "label_kept_rate", "com_shift",
                                                "topk_intersection", "spearman")} for row in attacks["results"]]

    objective = CenterOfMass((0, 0))
    names = [m for m in options.methods.split(",") if m]
    for name in names:
        build = methods(options.lrp_epsilon, options.fold_batchnorm)[name]
        directory = out / f"manipulate-{name}"
        # the budget is measured on test images 500-999 (the ResNet was trained on the training split; the
        # figures below use test images 0-199)
        budget = {} if options.min_agreement is None else {"min_agreement": options.min_agreement, "check_every": 10,
                                                            "validation": test.subset(slice(500, 1000))}
        run = RunDir(directory, {"command": "manipulate", "model": "mnist-resnet", "method": name,
                                 "objective": "com", "steps": options.steps, "lr": options.lr, "alpha": options.alpha,
                                 "keep": options.keep, "min_agreement": options.min_agreement,
                                 "lrp_epsilon": options.lrp_epsilon, "fold_batchnorm": options.fold_batchnorm}, 0,
                                resume=True)
        run.start()
        found = manipulate_and_save(model, build(model), objective, mnist("train"), directory,
                                    steps=options.steps, alpha=options.alpha, lr=options.lr, keep=options.keep,
                                    batch_size=64, checkpoint_every=50, resume=True, seed=0, progress=True, **budget)
        manipulated, train = found.model, found.metrics()
        evaluation = evaluate_and_save(model, manipulated, objective, test.subset(slice(0, 200)),
                                       {name: build(model)}, directory, noise=0, progress=False).metrics()
        run.write_metrics({"train": train, "evaluation": evaluation})
        measured = evaluation["methods"][name]
        summary[f"manipulate-{name}"] = {
            "com_distance_before": measured["original"]["com_distance"],
            "com_distance_after": measured["manipulated"]["com_distance"],
            "success_rate": measured["manipulated"]["success_rate"],
            "accuracy_drop_points": evaluation["predictions"]["accuracy_drop_points"],
            "label_agreement": evaluation["predictions"]["label_agreement"], "seconds": train["seconds"]}
    write_json(out / "summary.json", summary)
    lines = ["| part | figure |", "|---|---|"]
    for row in summary["input"]:
        lines.append(f"| input {row['attack']} / {row['method']} eps {row['eps']:g} | COM shift {row['com_shift']:.2f} px,"
                     f" top-k {row['topk_intersection']:.3f}, label kept {row['label_kept_rate']:.2f} |")
    for name in names:
        found = summary[f"manipulate-{name}"]
        lines.append(f"| manipulate COM on {name} | COM distance {found['com_distance_before']:.2f} -> "
                     f"{found['com_distance_after']:.2f} px, fooled {found['success_rate']:.0%}, accuracy drop "
                     f"{found['accuracy_drop_points']:.1f} pt, agreement {found['label_agreement']:.3f}, "
                     f"{found['seconds']:.0f} s |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
