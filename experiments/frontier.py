"""The manipulation frontier: attack measure against accuracy drop, for an alpha sweep and for budgeted runs
(``min_agreement``), so a reader sees the whole trade-off between changing the explanation and keeping the
model's behaviour (issue 16).

    python experiments/frontier.py [--out runs/frontier] [--steps 600] [--alphas 0.1,0.3,0.5,0.7,0.9]
                                   [--budgets 0.99,0.995] [--objective cross|com|push-down]
                                   [--method gradient|lrp|lrp-zb]
                                   [--validation train|test-half|test-half-swapped]
    python experiments/frontier.py --merge runs/a/frontier.json,runs/b --out runs/merged/frontier

MNIST CNN (bundled), training split (4000 images; budgeted runs hold out 10% for validation, or validate on test
images 500-999 with ``--validation test-half``, every figure then being on test images 0-499; ``test-half-swapped``
validates on 0-499 and measures on 500-999), evaluated on the
test images: the objective's measure (PCC with the target map for ``cross``, centre-of-mass distance in pixels for
``com``; for ``push-down``, the neuron-level attack of Nanfack et al. 2024 Eq. 3 on every channel of the last conv
layer, the mean held-out top-10 overlap) and the test-accuracy drop against the original model, in points.
Writes ``frontier.csv``/``.md``, ``frontier.png`` and one run directory per point (resumed when it exists: the
script can be stopped and run again). ``--merge`` draws the points of earlier runs (their ``frontier.json`` or
their run directories) in one figure and table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from veneer.data import mnist  # noqa: E402
from veneer.explain import LRP, Gradient  # noqa: E402
from veneer.jobs.manipulate import manipulate_and_save  # noqa: E402
from veneer.jobs.neurons import push_down_job  # noqa: E402
from veneer.manipulate import KEEP_LOSSES, CenterOfMass, TargetMap, evaluate  # noqa: E402
from veneer.models import accuracy, predict, pretrained  # noqa: E402
from veneer.report.figures import save_figure  # noqa: E402
from veneer.report.manipulate import write_table  # noqa: E402
from veneer.runs import RunDir, write_json  # noqa: E402

OBJECTIVES = {"cross": (lambda: TargetMap("cross"), "pcc"), "com": (lambda: CenterOfMass((0, 0)), "com_distance")}
METHODS = {"gradient": Gradient, "lrp": lambda m: LRP(m, composite="epsilon_plus"),
           # the thesis' LRP: epsilon_plus with z^B on the first layer (MNIST pixels in [0, 1])
           "lrp-zb": lambda m: LRP(m, composite="epsilon_plus", low=0.0, high=1.0)}


MEASURES = {"cross": "PCC with the cross", "com": "centre-of-mass distance (px)",
            "push-down": "held-out top-10 overlap"}
# the neuron-level settings of experiments/neurons_acceptance.py (push-down, last conv layer "4")
PUSH_DOWN = dict(relative=True, lr=5e-4, temperature=4.0, recalibrate_steps=1000, recalibrate_lr=1e-4)


VALIDATIONS = ("train", "test-half", "test-half-swapped")


def _split(validation: str, options: dict):
    """The test images the figures are measured on; with ``"test-half"`` test images 0-499, and a budgeted run
    validates on 500-999 (never seen by the original model's training); ``"test-half-swapped"`` the other way
    round (figures on 500-999: the images no setting of docs/manipulate.md was chosen on)."""
    test = mnist("test")
    if validation == "train":
        return test
    report, budget = (slice(0, 500), slice(500, 1000)) if validation == "test-half" else \
        (slice(500, 1000), slice(0, 500))
    if "min_agreement" in options:
        options["validation"] = test.subset(budget)
    return test.subset(report)


def _run_dir(out: Path, name: str, config: dict, options: dict, validation: str, seed: int = 0) -> RunDir:
    config = {**config, **{k: v for k, v in options.items() if k != "validation"}, "validation": validation}
    run = RunDir(out / name, config, seed, resume=True)
    run.start()
    return run


def point(out: Path, name: str, original, method, objective_name: str, steps: int, validation: str,
          seed: int = 0, progress: bool = True, **options) -> dict:
    """One manipulation (fine-tune seed ``seed``; resumed when its run directory holds a checkpoint) and its test
    figures."""
    make, measure = OBJECTIVES[objective_name]
    test = _split(validation, options)
    run = _run_dir(out, name, {"command": "manipulate", "objective": objective_name, "method": method,
                               "steps": steps}, options, validation, seed)
    found = manipulate_and_save(original, METHODS[method](original), make(), mnist("train"), out / name,
                                steps=steps, batch_size=64, checkpoint_every=50, resume=True, seed=seed,
                                progress=progress, **options)
    model, train = found.model, found.metrics()
    result = evaluate(original, model, make(), test, {method: METHODS[method](original)}, noise=0, progress=False)
    row = {"run": name, "alpha": options.get("alpha"), "min_agreement": options.get("min_agreement"),
           "measure": result.methods[method]["manipulated"][measure],
           "measure_original": result.methods[method]["original"][measure],
           "success_rate": result.methods[method]["manipulated"]["success_rate"],
           "accuracy_drop_points": 100 * (accuracy(original, test.x, test.y) - accuracy(model, test.x, test.y)),
           "test_agreement": result.predictions["label_agreement"], "test_images": len(test),
           "seconds": train["seconds"]}
    run.write_metrics({"train": train, "frontier": row})
    return row


def push_down_point(out: Path, name: str, original, steps: int, validation: str, pre_activation: bool,
                    seed: int = 0, progress: bool = True, **options) -> dict:
    """One all-channel push-down of the last conv layer (fine-tune seed ``seed``; resumed like :func:`point`) and
    its held-out figures."""
    heldout = _split(validation, options)
    run = _run_dir(out, name, {"command": "neurons push-down", "layer": "4", "pre_activation": pre_activation,
                               "steps": steps, **PUSH_DOWN}, options, validation, seed)
    found = push_down_job(original, "4", mnist("train"), heldout, run, k=10, pre_activation=pre_activation,
                          encoder="none", visualize_channels=0, seed=seed, steps=steps, checkpoint_dir=out / name,
                          resume=True, progress=progress, **PUSH_DOWN, **options)
    attacked, metrics = found.model, found.metrics()
    agreement = (predict(attacked, heldout.x).argmax(1) == predict(original, heldout.x).argmax(1)).float().mean()
    row = {"run": name, "alpha": options.get("alpha"), "min_agreement": options.get("min_agreement"),
           "measure": metrics["heldout"]["summary"]["topk_overlap"], "measure_original": 1.0,
           "accuracy_drop_points": metrics["accuracy_drop_points"], "test_agreement": float(agreement),
           "test_images": len(heldout), "seconds": metrics["fine_tune"]["seconds"]}
    run.write_metrics({**metrics, "frontier": row})
    return row


def plot(rows: list[dict], out: Path, ylabel: str, title: str) -> None:
    """``out``.png: measure against accuracy drop, alpha-sweep and budgeted points apart; ``out``.md/.csv/.json."""
    write_table(rows, out)
    write_json(out.with_suffix(".json"), rows)
    figure, axis = plt.subplots(figsize=(5.5, 4))
    for kind, marker in (("alpha", "o"), ("min_agreement", "s")):
        chosen = [r for r in rows if (r["min_agreement"] is None) == (kind == "alpha")]
        axis.plot([r["accuracy_drop_points"] for r in chosen], [r["measure"] for r in chosen], marker,
                  label="fixed alpha" if kind == "alpha" else "budgeted (min_agreement)")
        for r in chosen:
            axis.annotate(r.get("label") or f"{r[kind]:g}", (r["accuracy_drop_points"], r["measure"]), fontsize=6)
    axis.set_xlabel("test accuracy drop (points)")
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)
    save_figure(figure, out.with_suffix(".png"))


def _label(point: Path, row: dict) -> str:
    """A short name of a point from its run configuration: the budget or alpha, the keep loss, mixup, and the
    learning rate and steps where they are not 1e-3 and 3000."""
    config = json.loads((point / "config.json").read_text())["config"] if (point / "config.json").is_file() else {}
    name = f"min_agreement {row['min_agreement']:g}" if row["min_agreement"] is not None else f"alpha {row['alpha']:g}"
    keep = config.get("keep", "?") + ("+mixup" if config.get("keep_mixup") else "")
    lr = f", lr {config['lr']:g}" if config.get("lr", 1e-3) != 1e-3 else ""
    steps = f", {config['steps']} steps" if config.get("steps", 3000) != 3000 else ""
    return f"{name}, {keep}{lr}{steps}"


def _frontier_rows(source: Path) -> list[dict]:
    """The points of a ``frontier.json`` file, of one point's run directory, or of every point directory in
    a frontier directory, each labelled by :func:`_label`."""
    if source.is_file():
        return [{**row, "label": _label(source.parent / row["run"], row)} for row in json.loads(source.read_text())]
    points = ([source] if (source / "metrics.json").is_file()
              else sorted(found.parent for found in source.glob("*/metrics.json")))
    rows = []
    for point in points:
        row = json.loads((point / "metrics.json").read_text()).get("frontier")
        if row is None:
            raise SystemExit(f"--merge: {point} holds no frontier point (metrics.json has no 'frontier')")
        rows.append({**row, "label": _label(point, row)})
    return rows


def merge(sources: list[str], out: Path, ylabel: str, title: str) -> None:
    """One figure and table of the points of earlier runs (``frontier.json`` files or run directories)."""
    rows = [row for source in sources for row in _frontier_rows(Path(source))]
    plot(rows, out, ylabel, title)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/frontier")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--alphas", default="0.1,0.3,0.5,0.7,0.9")
    parser.add_argument("--budgets", default="0.99,0.995")
    parser.add_argument("--objective", default="cross", choices=sorted(MEASURES))
    parser.add_argument("--method", default="gradient", choices=sorted(METHODS))
    parser.add_argument("--keep", default="ce", choices=sorted(KEEP_LOSSES))
    parser.add_argument("--budget-alpha", type=float, default=0.5, help="starting alpha of the budgeted runs")
    parser.add_argument("--check-every", type=int, default=10, help="steps between budget checks")
    parser.add_argument("--confidence", type=float, default=0.5, help="of the budget's lower bound (0.5: observed)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dual-lr", type=float, default=0.1, help="step of the multiplier's log per check")
    parser.add_argument("--validation", default="train", choices=VALIDATIONS,
                        help="budget validation: 10%% of the training split, or test images 500-999 (then the "
                             "figures are on test images 0-499), or 0-499 (figures on 500-999)")
    parser.add_argument("--keep-mixup", action="store_true", help="keep loss also on mixup blends")
    parser.add_argument("--pre-activation", action="store_true",
                        help="push-down: attack and measure the conv output (the ReLU's input)")
    parser.add_argument("--merge", default=None,
                        help="comma-separated frontier.json files or run directories: draw their points in one "
                             "figure and table (--out names it)")
    parser.add_argument("--title", default=None, help="of the figure")
    options = parser.parse_args()
    out = Path(options.out)
    ylabel = MEASURES[options.objective]
    if options.merge:
        merge(options.merge.split(","), out, ylabel, options.title or out.name)
        print(out.with_suffix(".md").read_text())
        return
    original = pretrained("mnist-cnn")
    alphas = [dict(alpha=float(a)) for a in options.alphas.split(",") if a]
    budgets = [dict(alpha=options.budget_alpha, min_agreement=float(b), check_every=options.check_every,
                    confidence=options.confidence, dual_lr=options.dual_lr) for b in options.budgets.split(",") if b]
    rows = []
    for settings in alphas + budgets:
        name = f"budget{settings['min_agreement']}" if "min_agreement" in settings else f"alpha{settings['alpha']}"
        if options.objective == "push-down":
            rows.append(push_down_point(out, name, original, options.steps, options.validation,
                                        options.pre_activation, keep=options.keep,
                                        keep_mixup=options.keep_mixup, **settings))
        else:
            rows.append(point(out, name, original, options.method, options.objective, options.steps,
                              options.validation, keep=options.keep, keep_mixup=options.keep_mixup, lr=options.lr,
                              **settings))
    layer = "conv output" if options.pre_activation else "post-ReLU"
    what = f"push-down, last conv layer ({layer})" if options.objective == "push-down" else \
        f"{options.method}, {options.objective}"
    mixup = " + mixup" if options.keep_mixup else ""
    plot(rows, out / "frontier", ylabel, f"{what}, {options.steps} steps, keep {options.keep}{mixup}")
    print((out / "frontier.md").read_text())


if __name__ == "__main__":
    main()
