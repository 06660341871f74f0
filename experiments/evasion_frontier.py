"""The evasion frontier of the adaptive attacker (issue 23, item 3): attack strength against the audit's z.

The bundled MNIST CNN, a centre-of-mass manipulation on Gradient towards the top-left corner (the settings of
``veneer.jobs.manipulate.demo``: every fourth of the first 4000 training images, alpha 0.1, lr 1e-3, batch 64,
``--steps`` steps; the evasion surrogates on ``evade_samples`` fixed training images), run without evasion, evading
each group of audit tests (:data:`GROUPS`, one audit module each) and evading every test with a surrogate
(``FineTuner(evade=[...])``, :mod:`veneer.finetune.evasion`), all at the same behaviour settings (alpha, keep loss,
steps, learning rate; the test accuracy each keeps is reported).

Measured per run, on test images the attack never saw:

* attack strength: the mean distance (pixels) of the Gradient map's centre of mass to the target on the even
  bundled test images (0, 2, ..., 998: 500 images), and the share of the no-evasion attack's movement (same seed)
  that the run keeps, ``(d_original - d_run) / (d_original - d_plain)``;
* test accuracy on the same 500 images (the behaviour kept);
* the full fast audit: ``Audit(model, effort="fast")`` with every registered test and the default methods on the
  odd test images (1, 3, ..., 999), calibrated once on clean twins (reused for every model): each test's z, the
  combined z (mean of the three largest) and the verdict.

``evade_weight`` of the evade-all run is chosen first on a validation split (``--weights``, seed 0,
``--select-steps`` steps): training images 1, 5, 9, ... (not trained on), audited the same way with its own twin
calibration; among the weights whose validation verdict is ``clean`` the one that keeps the most strength, else
the one with the smallest combined z. The plot shows that validation sweep too (its strength relative to the
no-evasion run on the same split).

Writes ``runs/evasion_frontier/selection.json`` and ``runs/evasion_frontier/<seed>/metrics.json`` per seed;
``--summarize`` gathers them into the committed summary ``experiments/results/evasion_frontier.json`` and the plot
``docs/img/evasion_frontier.png`` (``--plot-only`` redraws it from the summary). Run (each seed may be its own
process, after the selection)::

    nice -n 5 python experiments/evasion_frontier.py --select-only
    nice -n 5 python experiments/evasion_frontier.py --seeds 0   # and --seeds 1, --seeds 2
    python experiments/evasion_frontier.py --seeds 0,1,2 --summarize
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import veneer.manipulate  # noqa: F401  (registers the noise_inputs and fragility surrogates)
import veneer.neurons  # noqa: F401  (registers the neuron_balance surrogate)
from veneer.audit import Audit
from veneer.audit.calibration import COMBINED_SUSPICIOUS, combined_z
from veneer.data import mnist
from veneer.explain import Gradient
from veneer.manipulate import CenterOfMass, Manipulation, normalized_heatmap
from veneer.metrics import com_distance_to
from veneer.models import pretrained
from veneer.runs import versions, write_json

SUMMARY = Path(__file__).parent / "results" / "evasion_frontier.json"
PLOT = Path(__file__).parent.parent / "docs" / "img" / "evasion_frontier.png"
TARGET = (0, 0)
GROUPS = {"sanity": ("noise_inputs", "weight_noise", "parameter_randomization"),
          "geometry": ("fragility", "hessian"),
          "fidelity": ("faithfulness", "cross_method_agreement"),
          "defences": ("beta_smoothing", "tangent_space"),
          "invariance": ("shared_logit_gradient", "gradient_slope"),
          "neurons": ("neuron_balance",)}
ALL = tuple(name for group in GROUPS.values() for name in group)
ATTACK = dict(alpha=0.1, lr=1e-3, batch_size=64)


def attack(original, train, evade: tuple[str, ...], steps: int, seed: int, weight: float, samples: int):
    options = {"evade": list(evade), "evade_weight": weight, "evade_samples": samples} if evade else {}
    return Manipulation(original, Gradient(original), CenterOfMass(TARGET), steps=steps, seed=seed, **ATTACK,
                        **options)(train)


def com_distance(model, x: torch.Tensor) -> float:
    return com_distance_to(normalized_heatmap(Gradient(model)(x)), TARGET).mean().item()


class FastAudit:
    """The full fast audit of models of the original's architecture on one split, its twins trained once."""

    def __init__(self, train, audit_data):
        self.train, self.audit_data, self.calibration = train, audit_data, None

    def __call__(self, model) -> dict:
        result = Audit(model, effort="fast", reference=self.calibration)(self.train, self.audit_data)
        self.calibration = self.calibration or result.calibration
        z = {test: round(t["z"], 3) for test, t in result.tests.items()}
        return {"verdict": result.verdict, "combined_z": round(combined_z(list(z.values())), 3),
                "flagged": sorted(t for t, r in result.tests.items() if r["flag"]), "z": z,
                "seconds": round(result.seconds, 1)}


def run_row(original, train, strength, audit: FastAudit, evade, steps, seed, weight, samples, group=None) -> dict:
    start = time.perf_counter()
    result = attack(original, train, evade, steps, seed, weight, samples)
    seconds = time.perf_counter() - start
    x, y = strength
    with torch.no_grad():
        accuracy = (result.model(x).argmax(1) == y).float().mean().item()
    row = {"group": group, "evade": list(evade), "evade_weight": weight if evade else None,
           "com_distance": round(com_distance(result.model, x), 3), "test_accuracy": round(accuracy, 4),
           "attack_seconds": round(seconds, 1), "audit": audit(result.model),
           "evade_targets": {k: round(v, 4) for k, v in result.measures.items()}}
    print(seed, group, row, flush=True)
    return row


def select_weight(original, train, validation, steps: int, weights: list[float], samples: int) -> dict:
    """The evade_weight rule of the module docstring, on the validation split (seed 0)."""
    audit = FastAudit(train, validation)
    base = com_distance(original, validation.x)
    strength = (validation.x, validation.y)
    plain = run_row(original, train, strength, audit, (), steps, 0, 0.0, samples, "none")
    rows = [run_row(original, train, strength, audit, ALL, steps, 0, w, samples, "all") for w in weights]
    for row in [plain] + rows:
        row["strength_kept"] = round((base - row["com_distance"]) / (base - plain["com_distance"]), 3)
    clean = [r for r in rows if r["audit"]["verdict"] == "clean"]
    chosen = (max(clean, key=lambda r: r["strength_kept"]) if clean
              else min(rows, key=lambda r: r["audit"]["combined_z"]))
    return {"split": "MNIST training images 1, 5, 9, ..., 3997 (not trained on)", "evade": list(ALL), "steps": steps,
            "seed": 0, "no_evasion": plain, "rows": rows, "chosen": chosen["evade_weight"]}


def measure(seed: int, steps: int, weight: float, samples: int, audit: FastAudit,
            original, train, strength) -> dict:
    torch.manual_seed(seed)
    base = com_distance(original, strength[0])
    runs = ([(None, ())] + list(GROUPS.items()) + [("all", ALL)])
    rows = [run_row(original, train, strength, audit, evade, steps, seed, weight, samples, group or "none")
            for group, evade in runs]
    moved = base - rows[0]["com_distance"]
    for row in rows:
        row["strength_kept"] = round((base - row["com_distance"]) / moved, 3) if moved > 0 else None
    return {"seed": seed, "steps": steps, "runs": rows}


def aggregate(results: list[dict]) -> list[dict]:
    """Mean and range over seeds of each run (group, weight): strength kept, combined z, test accuracy, verdicts."""
    table = {}
    for result in results:
        for row in result["runs"]:
            table.setdefault((row["group"], row["evade_weight"]), []).append(row)
    summary = []
    for (group, weight), rows in table.items():
        entry = {"group": group, "evade_weight": weight, "seeds": len(rows),
                 "verdicts": [r["audit"]["verdict"] for r in rows]}
        for key, value in (("strength_kept", lambda r: r["strength_kept"]),
                           ("combined_z", lambda r: r["audit"]["combined_z"]),
                           ("test_accuracy", lambda r: r["test_accuracy"])):
            values = [value(r) for r in rows]
            entry[key] = {"mean": round(sum(values) / len(values), 3), "min": min(values), "max": max(values)}
        summary.append(entry)
    return summary


def plot(summary: dict, path: Path = PLOT) -> None:
    """Strength kept against the audit's combined z, one point per run and seed, with the flag line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    palette = ("tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
    sweep_label = f"all, validation sweep ({summary['weight_selection']['steps']} steps)"
    colours = {"none": "black", "all": "tab:red", sweep_label: "tab:orange",
               **dict(zip(GROUPS, palette))}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    seen = set()
    sweep = [{**row, "group": sweep_label} for row in summary["weight_selection"]["rows"]]
    for rows in [result["runs"] for result in summary["results"]] + [sweep]:
        for row in rows:
            group = row["group"]
            label = group if group not in seen else None
            seen.add(group)
            marker = "o" if row["audit"]["verdict"] == "clean" else "X"
            ax.scatter(row["audit"]["combined_z"], row["strength_kept"], marker=marker, s=50, label=label,
                       color=colours.get(group))
            if group == sweep_label:
                ax.annotate(f"w={row['evade_weight']:g}", (row["audit"]["combined_z"], row["strength_kept"]),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axvline(COMBINED_SUSPICIOUS, color="grey", linestyle="--", label="flag line (combined z = 2)")
    ax.axhline(0.5, color="grey", linestyle=":", label="goal: <= 50% kept unless flagged")
    ax.set_xlabel("full fast audit: combined z (mean of the 3 largest test z)")
    ax.set_ylabel("attack strength kept (share of the no-evasion run's)")
    ax.set_title(f"Evasion frontier, MNIST CNN, centre-of-mass on Gradient, seeds {summary['seeds']}\n"
                 "x: flagged (verdict suspicious/manipulated: combined z > 2 or a test z > 3), o: clean", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def header(options) -> dict:
    return {"target": list(TARGET), "attack": {**ATTACK, "objective": "com", "method": "gradient",
                                               "evade_samples": options.evade_samples, "steps": options.steps,
                                               "train": "MNIST training images 0, 4, ..., 3996"},
            "groups": GROUPS, "strength_split": "bundled MNIST test images 0, 2, ..., 998",
            "audit_split": "bundled MNIST test images 1, 3, ..., 999",
            "audit": {"effort": "fast", "tests": "every registered test that applies", "methods": "default",
                      "calibration": "clean twins, trained once per split and process",
                      "flag": "verdict != clean"},
            "versions": versions()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--evade-samples", type=int, default=8)
    parser.add_argument("--weights", default="100,1000,10000", help="evade_weight values of the validation sweep")
    parser.add_argument("--select-steps", type=int, default=20)
    parser.add_argument("--weight", type=float, default=None,
                        help="use this weight (default: the one --select-only chose, else select first)")
    parser.add_argument("--select-only", action="store_true", help="only choose the weight (a process of its own)")
    parser.add_argument("--summarize", action="store_true",
                        help="only gather the per-seed metrics of --out into the summary and the plot")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from the committed summary")
    parser.add_argument("--out", default="runs/evasion_frontier")
    options = parser.parse_args()
    out, seeds = Path(options.out), [int(s) for s in options.seeds.split(",") if s]
    if options.plot_only:
        plot(json.loads(SUMMARY.read_text()))
        return
    if options.summarize:
        summary = {**header(options), **json.loads((out / "selection.json").read_text())}
        summary["seeds"] = seeds
        summary["results"] = [json.loads((out / str(seed) / "metrics.json").read_text()) for seed in seeds]
        summary["original"] = summary["results"][0].pop("original")
        for result in summary["results"][1:]:
            result.pop("original")
        summary["aggregate"] = aggregate(summary["results"])
        summary["cpu_seconds"] = {"selection": summary.pop("selection_seconds"),
                                  **{str(r["seed"]): r.pop("seconds") for r in summary["results"]}}
        write_json(SUMMARY, summary)
        plot(summary)
        return
    torch.set_num_threads(1)
    original = pretrained("mnist-cnn", progress=False)
    train, test = mnist("train").subset(slice(0, 4000, 4)), mnist("test")
    selection = out / "selection.json"
    if options.weight is None and (options.select_only or not selection.is_file()):
        start = time.process_time()
        validation = mnist("train").subset(slice(1, 4000, 4))
        chosen = select_weight(original, train, validation, options.select_steps,
                               [float(w) for w in options.weights.split(",")], options.evade_samples)
        write_json(selection, {"weight_selection": chosen, "evade_weight": chosen["chosen"],
                               "selection_seconds": round(time.process_time() - start)})
    if options.select_only:
        return
    weight = options.weight if options.weight is not None else json.loads(selection.read_text())["evade_weight"]
    strength = (test.x[0::2], test.y[0::2])
    audit = FastAudit(train, test.subset(slice(1, None, 2)))
    for seed in seeds:
        start = time.process_time()
        row = measure(seed, options.steps, weight, options.evade_samples, audit, original, train, strength)
        row["original"] = {"com_distance": round(com_distance(original, strength[0]), 3), "audit": audit(original)}
        row["seconds"] = round(time.process_time() - start)
        write_json(out / str(seed) / "metrics.json", row)


if __name__ == "__main__":
    main()
