"""The manipulation frontier: attack measure against accuracy drop, for an alpha sweep and for budgeted runs
(``min_agreement``), so a reader sees the whole trade-off between changing the explanation and keeping the
model's behaviour (issue 16).

    python experiments/frontier.py [--out runs/frontier] [--steps 600] [--alphas 0.1,0.3,0.5,0.7,0.9]
                                   [--budgets 0.99,0.995] [--objective cross|com] [--method gradient|lrp|lrp-zb]

MNIST CNN (bundled), training split (4000 images; budgeted runs hold out 10% for validation), evaluated on the
1000 test images: the objective's measure (PCC with the target map for ``cross``, centre-of-mass distance in
pixels for ``com``) of the manipulated model's explanations and the test-accuracy drop against the original
model, in points. Writes ``frontier.csv``/``.md``, ``frontier.png`` and one run directory per point (resumed
when it exists: the script can be stopped and run again).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from veneer.data import mnist  # noqa: E402
from veneer.explain import LRP, Gradient  # noqa: E402
from veneer.jobs.manipulate import manipulate_and_save  # noqa: E402
from veneer.manipulate import KEEP_LOSSES, CenterOfMass, TargetMap, evaluate  # noqa: E402
from veneer.models import accuracy, pretrained  # noqa: E402
from veneer.report.figures import save_figure  # noqa: E402
from veneer.report.manipulate import write_table  # noqa: E402
from veneer.runs import RunDir, write_json  # noqa: E402

OBJECTIVES = {"cross": (lambda: TargetMap("cross"), "pcc"), "com": (lambda: CenterOfMass((0, 0)), "com_distance")}
METHODS = {"gradient": Gradient, "lrp": lambda m: LRP(m, composite="epsilon_plus"),
           # the thesis' LRP: epsilon_plus with z^B on the first layer (MNIST pixels in [0, 1])
           "lrp-zb": lambda m: LRP(m, composite="epsilon_plus", low=0.0, high=1.0)}


def point(out: Path, name: str, original, method, objective_name: str, steps: int, validation: str,
          **options) -> dict:
    """One manipulation (resumed when its run directory holds a checkpoint) and its test figures. ``validation``
    (budgeted runs): ``"train"`` holds out 10% of the training split; ``"test-half"`` uses test images 500-999
    (never seen by the original model's training) and evaluates on test images 0-499."""
    make, measure = OBJECTIVES[objective_name]
    directory = out / name
    test = mnist("test")
    if validation == "test-half" and "min_agreement" in options:
        options["validation"], test = test.subset(slice(500, 1000)), test.subset(slice(0, 500))
    config = {k: v for k, v in options.items() if k != "validation"}
    run = RunDir(directory, {"command": "manipulate", "objective": objective_name, "steps": steps, **config,
                             "validation": validation}, 0, resume=True)
    run.start()
    model, train = manipulate_and_save(original, METHODS[method](original), make(), mnist("train"), directory,
                                       steps=steps, batch_size=64, checkpoint_every=50, resume=True,
                                       seed=0, progress=True, **options)
    result = evaluate(original, model, make(), test, {method: METHODS[method](original)}, noise=0, progress=False)
    row = {"run": name, "alpha": options.get("alpha"), "min_agreement": options.get("min_agreement"),
           "measure": result.methods[method]["manipulated"][measure],
           "measure_original": result.methods[method]["original"][measure],
           "accuracy_drop_points": 100 * (accuracy(original, test.x, test.y) - accuracy(model, test.x, test.y)),
           "test_agreement": result.predictions["label_agreement"], "test_images": len(test),
           "seconds": train["seconds"]}
    run.write_metrics({"train": train, "frontier": row})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/frontier")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--alphas", default="0.1,0.3,0.5,0.7,0.9")
    parser.add_argument("--budgets", default="0.99,0.995")
    parser.add_argument("--objective", default="cross", choices=sorted(OBJECTIVES))
    parser.add_argument("--method", default="gradient", choices=sorted(METHODS))
    parser.add_argument("--keep", default="ce", choices=sorted(KEEP_LOSSES))
    parser.add_argument("--budget-alpha", type=float, default=0.5, help="starting alpha of the budgeted runs")
    parser.add_argument("--check-every", type=int, default=10, help="steps between budget checks")
    parser.add_argument("--confidence", type=float, default=0.5, help="of the budget's lower bound (0.5: observed)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dual-lr", type=float, default=0.1, help="step of the multiplier's log per check")
    parser.add_argument("--validation", default="train", choices=("train", "test-half"),
                        help="budget validation: 10%% of the training split, or test images 500-999 (then the "
                             "figures are on test images 0-499)")
    options = parser.parse_args()
    out = Path(options.out)
    original = pretrained("mnist-cnn")
    rows = [point(out, f"alpha{a}", original, options.method, options.objective, options.steps, options.validation,
                  alpha=float(a), keep=options.keep, lr=options.lr) for a in options.alphas.split(",") if a]
    rows += [point(out, f"budget{b}", original, options.method, options.objective, options.steps, options.validation,
                   alpha=options.budget_alpha, min_agreement=float(b), check_every=options.check_every,
                   keep=options.keep, lr=options.lr, confidence=options.confidence, dual_lr=options.dual_lr)
             for b in options.budgets.split(",") if b]
    write_table(rows, out / "frontier")
    write_json(out / "frontier.json", rows)
    figure, axis = plt.subplots(figsize=(5, 4))
    for kind, marker in (("alpha", "o"), ("min_agreement", "s")):
        chosen = [r for r in rows if (r["min_agreement"] is None) == (kind == "alpha")]
        axis.plot([r["accuracy_drop_points"] for r in chosen], [r["measure"] for r in chosen], marker,
                  label="alpha sweep" if kind == "alpha" else "budgeted (min_agreement)")
        for r in chosen:
            axis.annotate(f"{r[kind]:g}", (r["accuracy_drop_points"], r["measure"]), fontsize=7)
    axis.set_xlabel("test accuracy drop (points)")
    axis.set_ylabel(OBJECTIVES[options.objective][1])
    axis.set_title(f"{options.method}, {options.objective}, {options.steps} steps")
    axis.legend(fontsize=8)
    save_figure(figure, out / "frontier.png")
    print((out / "frontier.md").read_text())


if __name__ == "__main__":
    main()
