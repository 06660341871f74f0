"""Measured detection power of `veneer audit` (issue 14): a zoo of clean and manipulated models.

Clean: bundled recipes with other seeds (MNIST CNN, digits MLP, Adult MLP). Manipulated (from the seed-0
bundled model): every model-level objective on two methods, every keep loss, a frozen-layer manipulation,
neuron push-down and push-up (MNIST CNN) and fairwashing (Adult MLP). Every model is audited with the
default `fast` audit (clean twins trained by the audit itself, no reference model); twins depend only on the
architecture and the seed, so the calibration of an architecture is computed once and reused (identical to
what each audit would train). Resumable: models, calibrations and audits are cached under the run dir.

    PYTHONPATH=src python experiments/audit_zoo.py --out runs/audit_zoo [--steps 150] [--only NAME ...]
                                                    [--build-only] [--summary-only]

Writes RUN/summary.json and RUN/summary.md (AUROC per test and for the verdict, false-positive rate on clean
models at the default threshold).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from veneer.audit import TESTS, Z_FLAG, Audit, Calibration, TestResult, combined_z, verdict
from veneer.audit.calibration import COMBINED_SUSPICIOUS
from veneer.data import load_dataset
from veneer.explain import LRP, GradCAM, Gradient, GradientXInput, IntegratedGradients
from veneer.manipulate import (CenterOfMass, ClassSwap, FeatureSuppress, Location, Manipulation, TargetMap,
                               TopKSuppress, gaussian_noise_like)
from veneer.models import RECIPES, accuracy, load_state, pretrained, save
from veneer.neurons import Fairwash, PushDown, PushUp
from veneer.runs import write_json

DATASET = {name: recipe.dataset for name, recipe in RECIPES.items()}
CLEAN = [("mnist-cnn", s) for s in range(1, 6)] + [("digits-mlp", s) for s in range(5)] + \
        [("adult-mlp", s) for s in range(1, 4)]


def _ig(model):
    return IntegratedGradients(model, steps=8)


def _lrp(model):
    return LRP(model, composite="epsilon_plus")


def _gradcam(model):
    return GradCAM(model, "3")


MODEL_LEVEL = {  # name: (base, objective, explainer, keep, alpha, lr, trainable)
    "com-gradient": ("mnist-cnn", lambda: CenterOfMass((0, 0)), Gradient, "ce", 0.1, 1e-3, None),
    "com-lrp": ("mnist-cnn", lambda: CenterOfMass((0, 0)), _lrp, "ce", 0.1, 1e-3, None),
    "target-map-gradient": ("mnist-cnn", lambda: TargetMap("cross"), Gradient, "ce", 0.1, 1e-3, None),
    "target-map-gradcam": ("mnist-cnn", lambda: TargetMap("cross"), _gradcam, "ce", 0.1, 1e-3, None),
    "location-gradient": ("mnist-cnn", lambda: Location("border"), Gradient, "ce", 0.1, 1e-3, None),
    "location-ig": ("mnist-cnn", lambda: Location("border"), _ig, "ce", 0.1, 1e-3, None),
    "topk-gradient": ("mnist-cnn", lambda: TopKSuppress(k=80), Gradient, "ce", 0.1, 1e-3, None),
    "topk-gxi": ("mnist-cnn", lambda: TopKSuppress(k=80), GradientXInput, "ce", 0.1, 1e-3, None),
    "class-swap-gradient": ("mnist-cnn", lambda: ClassSwap(3, 8), Gradient, "ce", 0.1, 1e-3, None),
    "class-swap-lrp": ("mnist-cnn", lambda: ClassSwap(3, 8), _lrp, "ce", 0.1, 1e-3, None),
    "feature-suppress-gradient": ("adult-mlp", lambda: FeatureSuppress(["sex", "race"]), Gradient, "kl", 0.5, 3e-3,
                                  None),
    "feature-suppress-ig": ("adult-mlp", lambda: FeatureSuppress(["sex", "race"]), _ig, "kl", 0.5, 3e-3, None),
    "com-gradient-kl": ("mnist-cnn", lambda: CenterOfMass((0, 0)), Gradient, "kl", 0.1, 1e-3, None),
    "target-map-gradient-prob-mse": ("mnist-cnn", lambda: TargetMap("cross"), Gradient, "prob_mse", 0.02, 1e-3,
                                     None),
    "target-map-gradient-frozen": ("mnist-cnn", lambda: TargetMap("cross"), Gradient, "ce", 0.1, 1e-3, ["0", "3"]),
}
NEURON_LEVEL = ("push-down", "push-up", "fairwash")


def build_manipulated(name: str, steps: int) -> tuple[torch.nn.Module, dict]:
    """Fine-tune a copy of the seed-0 bundled model; return it and what the fine-tuning did."""
    start = time.perf_counter()
    if name in MODEL_LEVEL:
        base, objective, method, keep, alpha, lr, trainable = MODEL_LEVEL[name]
        train = load_dataset(DATASET[base], "train")
        model = pretrained(base)
        result = Manipulation(model, method(model), objective(), keep=keep, alpha=alpha, lr=lr, steps=steps,
                              batch_size=64 if base != "adult-mlp" else 256, trainable=trainable,
                              softplus_beta=None if base == "adult-mlp" else 20.0)(train)
        history = result.history
        info = {"attack_first": history[0]["attack"], "attack_last": sum(h["attack"] for h in history[-10:]) / 10}
        return result.model, info | {"base": base, "seconds": time.perf_counter() - start}
    base = "adult-mlp" if name == "fairwash" else "mnist-cnn"
    train = load_dataset(DATASET[base], "train")
    model = pretrained(base)
    options = {"steps": steps * 2, "alpha": 0.5, "lr": 1e-3}
    if name == "push-down":
        result = PushDown(model, "4", k=10, **options)(train)
    elif name == "push-up":
        result = PushUp(model, "4", k=10, **options)(train, gaussian_noise_like(train.x, 64, seed=1))
    else:
        result = Fairwash(model, "1", pre_activation=True, **options)(train, "sex")
    info = {"attack_first": result.measures["attack_loss_before"], "attack_last": result.measures["attack_loss_after"]}
    return result.model, info | {"base": base, "seconds": time.perf_counter() - start}


def auroc(clean: list[float], manipulated: list[float]) -> float | None:
    """P(manipulated > clean) + P(tie) / 2 (Mann-Whitney); None when a class is empty."""
    if not clean or not manipulated:
        return None
    wins = sum((m > c) + 0.5 * (m == c) for m in manipulated for c in clean)
    return wins / (len(clean) * len(manipulated))


def rescore(out: Path, blob: dict) -> dict:
    """Score a stored audit's raw test components against its architecture's calibration with the current
    tolerances (so retuning a tolerance does not need the audits to run again)."""
    calibration = Calibration.from_json(json.loads((out / "calibration" / f"{blob['build']['base']}.json").read_text()))
    scored = {t: calibration.score(TestResult(t, v["components"])) for t, v in blob["tests"].items()}
    label, score = verdict(scored)
    zs = [v["z"] for v in scored.values()]
    return {"verdict": label, "score": score, "z_max": max(zs), "combined_z": combined_z(zs),
            "statistic": max(max(zs) - Z_FLAG, combined_z(zs) - COMBINED_SUSPICIOUS),
            "flagged": [t for t, v in scored.items() if v["flag"]], "z": {t: v["z"] for t, v in scored.items()},
            "seconds": blob["seconds"], "build": blob["build"]}


def summarize(out: Path, names: dict[str, bool]) -> dict:
    audits = {n: rescore(out, json.loads((out / "audits" / f"{n}.json").read_text())) for n in names
              if (out / "audits" / f"{n}.json").is_file()}
    clean = [n for n in audits if not names[n]]
    bad = [n for n in audits if names[n]]
    rank = {"clean": 0, "suspicious": 1, "manipulated": 2}
    rows = []
    for test in TESTS:
        c = [audits[n]["z"][test] for n in clean if test in audits[n]["z"]]
        m = [audits[n]["z"][test] for n in bad if test in audits[n]["z"]]
        if c or m:
            rows.append({"test": test, "auroc": auroc(c, m), "clean_flagged": sum(z > Z_FLAG for z in c),
                         "clean": len(c), "manipulated_flagged": sum(z > Z_FLAG for z in m), "manipulated": len(m)})
    summary = {
        "clean_models": len(clean), "manipulated_models": len(bad), "tests": rows,
        "verdict_auroc": auroc([audits[n]["statistic"] for n in clean], [audits[n]["statistic"] for n in bad]),
        "verdict_auroc_effective": auroc([audits[n]["statistic"] for n in clean],
                                         [audits[n]["statistic"] for n in bad if effective(audits[n])]),
        "effective_manipulations": sum(effective(audits[n]) for n in bad),
        "verdict_auroc_ordinal": auroc([rank[audits[n]["verdict"]] for n in clean],
                                       [rank[audits[n]["verdict"]] for n in bad]),
        "false_positive_rate": sum(audits[n]["verdict"] != "clean" for n in clean) / max(len(clean), 1),
        "detection_rate": sum(audits[n]["verdict"] != "clean" for n in bad) / max(len(bad), 1),
        "models": {n: {"manipulated": names[n], **a} for n, a in audits.items()},
    }
    write_json(out / "summary.json", summary)
    lines = [f"Clean models: {len(clean)}; manipulated: {len(bad)} ({summary['effective_manipulations']} effective: "
             f"attack loss at least halved). Verdict AUROC (score): {_fmt(summary['verdict_auroc'])}; on the "
             f"effective manipulations: {_fmt(summary['verdict_auroc_effective'])}; ordinal verdict AUROC: "
             f"{_fmt(summary['verdict_auroc_ordinal'])}; "
             f"false-positive rate on clean models: {summary['false_positive_rate']:.2f}; detection rate "
             f"(suspicious or manipulated): {summary['detection_rate']:.2f}.", "",
             "| test | AUROC | clean flagged | manipulated flagged |", "|---|---|---|---|"]
    lines += [f"| {r['test']} | {_fmt(r['auroc'])} | {r['clean_flagged']}/{r['clean']} | "
              f"{r['manipulated_flagged']}/{r['manipulated']} |" for r in rows]
    lines += ["", "| model | manipulated | attack loss first -> last | test accuracy | verdict | largest z | "
              "mean top-3 z | flagged |", "|---|---|---|---|---|---|---|---|"]
    for n, a in audits.items():
        b = a["build"]
        attack = f"{b['attack_first']:.3g} -> {b['attack_last']:.3g}" if "attack_first" in b else "-"
        lines.append(f"| {n} | {names[n]} | {attack} | {b.get('test_accuracy', float('nan')):.3f} | {a['verdict']} | "
                     f"{a['z_max']:.1f} | {a['combined_z']:.1f} | {', '.join(a['flagged']) or '-'} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def effective(audit: dict) -> bool:
    """Whether a manipulation did what it was asked: its attack loss at least halved during fine-tuning."""
    b = audit["build"]
    return "attack_first" in b and b["attack_last"] <= 0.5 * b["attack_first"]


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/audit_zoo")
    parser.add_argument("--steps", type=int, default=150, help="fine-tuning steps of each manipulation")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--build-only", action="store_true", help="build the manipulated models, audit nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    clean = [f"{base}-seed{seed}" for base, seed in CLEAN]
    bad = list(MODEL_LEVEL) + list(NEURON_LEVEL)
    order = [n for pair in zip(clean, bad) for n in pair] + clean[len(bad):] + bad[len(clean):]
    names = {n: n in bad for n in order}
    unknown = [n for n in args.only or [] if n not in names]
    if unknown:
        raise SystemExit(f"--only names unknown models {unknown}; known: {list(names)}")
    todo = list(names) if args.only is None else args.only
    for name in [] if args.summary_only else todo:
        audit_path = out / "audits" / f"{name}.json"
        if audit_path.is_file():
            continue
        weights = out / "models" / f"{name}.safetensors"
        if names[name]:
            base = "adult-mlp" if name == "fairwash" else (MODEL_LEVEL[name][0] if name in MODEL_LEVEL else "mnist-cnn")
            if weights.is_file():
                model = load_state(copy.deepcopy(pretrained(base, progress=False)), weights).eval()
                build = json.loads(weights.with_suffix(".json").read_text())
            else:
                print(f"{name}: building", flush=True)
                model, build = build_manipulated(name, args.steps)
                build["test_accuracy"] = accuracy(model, *load_dataset(DATASET[base], "test")[:])
                save(model, weights, build)
            if args.build_only:
                continue
        elif args.build_only:
            continue
        else:
            base, seed = name.rsplit("-seed", 1)
            model = pretrained(base, progress=False, seed=int(seed))
            build = {"base": base, "seed": int(seed)}
            build["test_accuracy"] = accuracy(model, *load_dataset(DATASET[base], "test")[:])
        data = DATASET[base]
        train, test = load_dataset(data, "train"), load_dataset(data, "test")
        calibration_path = out / "calibration" / f"{base}.json"
        reference = Calibration.from_json(json.loads(calibration_path.read_text())) if calibration_path.is_file() \
            else None
        print(f"{name}: auditing ({'cached calibration' if reference else 'training twins'})", flush=True)
        result = Audit(model, effort="fast", reference=reference, seed=0)(train, test)
        if reference is None:
            write_json(calibration_path, result.calibration.to_json())
        blob = {"verdict": result.verdict, "seconds": result.seconds, "build": build | {"base": base},
                "calibration_seconds": result.calibration.details.get("seconds"),
                "tests": {t: {"components": v["evidence"]["components"]} for t, v in result.tests.items()}}
        write_json(audit_path, blob)
        print(f"{name}: {result}", flush=True)
    summary = summarize(out, names)
    print((out / "summary.md").read_text())
    print(json.dumps({k: summary[k] for k in ("verdict_auroc", "false_positive_rate", "detection_rate")}))


if __name__ == "__main__":
    main()
