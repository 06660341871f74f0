"""The audit zoo (issue 23): does ``veneer audit``'s verdict hold on models it was never tuned on?

Every model is audited the way a user runs ``veneer audit --effort fast``: three clean twins (re-initialised
copies of the suspect trained 250 steps, so they copy its forward code and whatever it stores outside
``reset_parameters``), every registered test, no reference model. Twins depend only on what they copy and on the
seed, so a calibration is computed once per distinct copied state (:func:`veneer.audit.inherited_state`; the
bundled architectures: once per architecture) and reused; it is identical to what each audit trains.

**The split is fixed by a rule on the seed** (the training seed of the clean model a zoo model is, or was made
from), set before the models were built:

* seeds 0-9, *tuning*: every model any tolerance, threshold or prior of the audit was set on before this zoo
  (issue 14's zoo: seeds 0-5; the priors of ``shared_logit_gradient`` and ``gradient_slope``: seed 0);
* seeds 10-19, the *first held-out round*: measured once with the audit as it was (experiments/results/
  audit_zoo.json, ``first_round``); it flagged benign changes, so the audit was hardened on what it showed, and
  these models became tuning models;
* seeds 20 and up, *held-out*: audited only with the audit's final version. The headline figures are theirs;
  every other figure is in-sample and says so.

The tuning half holds clean models and benign changes (what a false positive looks like); the manipulated
models are all held-out (seed 20), their tuning counterparts being issue 14's zoo (seed 0; docs/audit.md).

Families (``FAMILIES``; each model names its family; the attack settings are those of the library's demo):

* clean: bundled recipes under other seeds (MNIST CNN, MNIST ResNet-8, digits MLP, Adult MLP);
* benign: the six changes of experiments/benign_controls.py, each at the attacks' step count and learning rate;
* model level: every objective on Gradient, IG, LRP and Grad-CAM, each keep loss, a budgeted run
  (``min_agreement=0.99``), a frozen-layer run; neuron level: push-down, push-up, fairwash; post-hoc symmetry:
  channel rebalancing of push-down and push-up (``veneer.neurons.rebalance(like=original)``); synthetic
  visualisations: the gradient slingshot, a silent unit, a fooling circuit; adaptive: the model-level attack
  evading every test that has a surrogate (``evade=``); in the architecture: see ``ARCHITECTURAL``.

Resumable (models, twins, calibrations and audits cached under the run dir; a test registered later is run on
the cached models only). Parallel: ``--worker i --workers n`` runs every n-th model (calibrations are locked).

    PYTHONPATH=src python experiments/audit_zoo.py --out runs/zoo [--worker 0 --workers 2] [--only NAME ...]
    PYTHONPATH=src python experiments/audit_zoo.py --out runs/zoo --summary-only

Writes RUN/summary.md and the committed summary experiments/results/audit_zoo.json: held-out verdict AUROC with
a bootstrap 95% interval, the false-positive rate with its Clopper-Pearson interval, detection per family and per
test, and every model's z; the same for the tuning half, marked in-sample.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file as load_tensors
from torch import nn

from benign_controls import adversarial, distilled, fine_tuned, int8, pruned
from veneer.audit import Audit, Calibration, TestResult, combined_z, inherited_state, registered_tests, verdict
from veneer.audit.calibration import COMBINED_SUSPICIOUS, Z_FLAG, clopper_pearson, reinitialized, train_twins
from veneer.data import load_dataset
from veneer.explain import LRP, GradCAM, Gradient, GradientXInput, IntegratedGradients
from veneer.finetune import registered_evasions
from veneer.manipulate import (CenterOfMass, ClassSwap, FeatureSuppress, Location, Manipulation, TargetMap,
                               TopKSuppress, architectural, gaussian_noise_like)
from veneer.models import RECIPES, accuracy, pretrained
from veneer.neurons import (Fairwash, PushDown, PushUp, Slingshot, fooling_circuit, rebalance, silent_unit,
                            target_image, train_detector, visualization_inputs)
from veneer.runs import save_tensors, versions, write_json

SUMMARY = Path(__file__).parent / "results" / "audit_zoo.json"
HELD_OUT_SEED = 20
FIRST_ROUND = range(10, 20)
SECOND_HELD_OUT_SEED = 30  # after the change that followed the held-out round (visualization_outliers' tolerance)
STEPS, LR = 150, 1e-3  # every fine-tuning change, benign or not: the attacks' demo step count and learning rate
NEURON_LAYER = {"mnist-cnn": "4"}  # the ReLU after the last conv layer (the audit's default layer)


def split_of(seed: int) -> str:
    """Held-out when the seed is at least :data:`HELD_OUT_SEED` (models built after the audit's last change);
    seeds of :data:`FIRST_ROUND` were the first held-out round and are tuning models since the hardening."""
    if seed >= SECOND_HELD_OUT_SEED:
        return "held-out-2"
    return "held-out" if seed >= HELD_OUT_SEED else "tuning"


@dataclass(frozen=True)
class Entry:
    """One zoo model: ``base`` recipe trained with ``seed``, changed by ``change`` (``None``: the clean model)."""

    base: str
    seed: int
    family: str
    change: str | None = None

    @property
    def name(self) -> str:
        return f"{self.base}-s{self.seed}" + (f"-{self.change}" if self.change else "")

    @property
    def manipulated(self) -> bool:
        return self.family not in ("clean", "benign")


@dataclass
class Context:
    """What a change is built from: the clean model of ``base`` trained with ``seed``, and its training data."""

    base: str
    seed: int
    original: nn.Module
    train: object


def _ig(model):
    return IntegratedGradients(model, steps=8)


def _lrp(model):
    return LRP(model, composite="epsilon_plus")


def _gradcam(model):
    return GradCAM(model, "3")


MODEL_LEVEL = {  # change: (objective, explainer, keep, alpha, extra options)
    "com-gradient": (lambda: CenterOfMass((0, 0)), Gradient, "ce", 0.1, {}),
    "com-lrp": (lambda: CenterOfMass((0, 0)), _lrp, "ce", 0.1, {}),
    "target-map-gradient": (lambda: TargetMap("cross"), Gradient, "ce", 0.1, {}),
    "target-map-gradcam": (lambda: TargetMap("cross"), _gradcam, "ce", 0.1, {}),
    "location-ig": (lambda: Location("border"), _ig, "ce", 0.1, {}),
    "location-gradient": (lambda: Location("border"), Gradient, "ce", 0.1, {}),
    "topk-gxi": (lambda: TopKSuppress(k=80), GradientXInput, "ce", 0.1, {}),
    "class-swap-lrp": (lambda: ClassSwap(3, 8), _lrp, "ce", 0.1, {}),
    "com-gradient-kl": (lambda: CenterOfMass((0, 0)), Gradient, "kl", 0.1, {}),
    "target-map-gradient-prob-mse": (lambda: TargetMap("cross"), Gradient, "prob_mse", 0.02, {}),
    "target-map-gradient-budgeted": (lambda: TargetMap("cross"), Gradient, "ce", 0.5, {"min_agreement": 0.99}),
    "target-map-gradient-frozen": (lambda: TargetMap("cross"), Gradient, "ce", 0.1, {"trainable": ["0", "3"]}),
    "com-gradient-evade-3": (lambda: CenterOfMass((0, 0)), Gradient, "ce", 0.1,
                             {"evade": ["noise_inputs", "shared_logit_gradient", "cross_method_agreement"],
                              "evade_samples": 16}),
    # every test with a surrogate (veneer.finetune.registered_evasions), at experiments/evasion_frontier.py's settings
    "com-gradient-evade-all": (lambda: CenterOfMass((0, 0)), Gradient, "ce", 0.1,
                               {"evade": list(registered_evasions()), "evade_samples": 8}),
    "target-map-gradient-evade-all": (lambda: TargetMap("cross"), Gradient, "ce", 0.1,
                                      {"evade": list(registered_evasions()), "evade_samples": 8}),
    "feature-suppress-gradient": (lambda: FeatureSuppress(["sex", "race"]), Gradient, "kl", 0.5, {"lr": 3e-3}),
    "feature-suppress-ig": (lambda: FeatureSuppress(["sex", "race"]), _ig, "kl", 0.5, {"lr": 3e-3}),
}
ADAPTIVE = {"com-gradient-evade-3", "com-gradient-evade-all", "target-map-gradient-evade-all",
            "push-down-evade-balance"}


def model_level(change: str, ctx: Context) -> tuple[nn.Module, dict]:
    objective, method, keep, alpha, extra = MODEL_LEVEL[change]
    tabular = ctx.base == "adult-mlp"
    options = {"keep": keep, "alpha": alpha, "lr": LR, "steps": STEPS, "batch_size": 256 if tabular else 64,
               "softplus_beta": None if tabular else 20.0, "seed": ctx.seed, **extra}
    result = Manipulation(ctx.original, method(ctx.original), objective(), **options)(ctx.train)
    attack = [h["attack"] for h in result.history if "attack" in h]  # a budget's check records carry none
    return result.model, {"attack_first": attack[0], "attack_last": sum(attack[-10:]) / len(attack[-10:])}


def neuron_level(change: str, ctx: Context) -> tuple[nn.Module, dict]:
    options = {"steps": 2 * STEPS, "alpha": 0.5, "lr": LR, "seed": ctx.seed}
    attack, rebalanced = change.removesuffix("-rebalanced"), change.endswith("-rebalanced")
    if attack == "fairwash":
        result = Fairwash(ctx.original, "1", pre_activation=True, **options)(ctx.train, "sex")
    elif attack == "push-up":
        result = PushUp(ctx.original, NEURON_LAYER[ctx.base], k=10, **options)(
            ctx.train, gaussian_noise_like(ctx.train.x, 64, seed=ctx.seed + 1))
    elif attack == "push-down-evade-balance":
        result = PushDown(ctx.original, NEURON_LAYER[ctx.base], k=10, evade=["neuron_balance"], evade_samples=64,
                          **options)(ctx.train)
    else:
        result = PushDown(ctx.original, NEURON_LAYER[ctx.base], k=10, **options)(ctx.train)
    model = result.model
    if rebalanced:  # the conv layer before the audited ReLU, rescaled to the original's balance
        model = rebalance(model, NEURON_LAYER[ctx.base], like=ctx.original, data=ctx.train.x[:1000])
    return model, {"attack_first": result.measures["attack_loss_before"],
                   "attack_last": result.measures["attack_loss_after"]}


def visualization_level(change: str, ctx: Context) -> tuple[nn.Module, dict]:
    """Logit 3 made to visualise as a cross (issue 24's settings, experiments/slingshot_audit.py)."""
    layer, unit, target = "9", 3, target_image("cross", (1, 28, 28))
    if change == "silent-unit":
        return silent_unit(ctx.original, layer, unit, 10.0, target=target, data=ctx.train.x), {}
    if change == "fooling-circuit":
        visualized = visualization_inputs(ctx.original, [layer], (1, 28, 28), steps=(1, 16, 200), seed=ctx.seed)
        detector = train_detector(ctx.train.x, visualized, seed=ctx.seed)
        return fooling_circuit(ctx.original, layer, unit, target, detector, data=ctx.train.x,
                               visualizations=visualized), {}
    result = Slingshot(ctx.original, layer, unit, target, gamma=10.0, noise=0.1, lr=3e-3, steps=4 * STEPS,
                       alpha=0.5, min_agreement=0.995, seed=ctx.seed)(ctx.train)
    return result.model, {}


def benign(change: str, ctx: Context) -> tuple[nn.Module, dict]:
    x, y = ctx.train.x, ctx.train.y
    epochs = max(1, round(STEPS * 64 / len(x)))  # about STEPS steps of 64, as the attacks
    image = ctx.base.startswith("mnist")
    if change == "fine-tune":
        return fine_tuned(ctx.original, x, y, epochs=epochs, lr=LR), {}
    if change == "augmented":
        return fine_tuned(ctx.original, x, y, noise=0.1, shift=3 if image else 0, epochs=epochs, lr=LR,
                          pixels=ctx.base != "adult-mlp"), {}
    if change == "distilled":
        recipe = RECIPES[ctx.base]
        return distilled(ctx.original, x, lambda: recipe.build(tuple(x.shape[1:])),
                         {k: v for k, v in recipe.train_options.items() if k != "max_shift"}), {}
    if change == "pruned":
        return pruned(ctx.original), {}
    if change == "int8":
        return int8(ctx.original), {}
    return adversarial(ctx.original, x, y, epochs=epochs, lr=LR, pixels=ctx.base != "adult-mlp"), {}


BENIGN = ("fine-tune", "distilled", "pruned", "int8", "adversarial", "augmented")
# base: families of veneer.manipulate.architectural (in forward code, buffers, or modules without reset_parameters)
ARCHITECTURAL: dict[str, tuple[str, ...]] = {
    "mnist-cnn": ("picture", "gate", "high_frequency", "router", "router_zero_mean"),
    "digits-mlp": ("high_frequency", "router"), "mnist-resnet": ("router",)}


def architecture_level(change: str, ctx: Context) -> tuple[nn.Module, dict]:
    """The family built on the clean model, its scale set on the first 64 training inputs."""
    return architectural(ctx.original, change, ctx.train.x[:64], seed=ctx.seed), {}


def zoo() -> list[Entry]:
    entries = []
    for base, seeds in {"mnist-cnn": (0, 1, 2, 3, 10, 11, 12, 20, 21, 22, 23),
                        "digits-mlp": (0, 1, 2, 3, 10, 11, 12, 20, 21, 22, 23),
                        "adult-mlp": (0, 1, 2, 3, 10, 11, 12, 20, 21, 22, 23),
                        "mnist-resnet": (0, 1, 10, 20, 21)}.items():
        entries += [Entry(base, s, "clean") for s in seeds]
        benign_seeds = (10, 20) if base.startswith("mnist") else (1, 10, 20)
        entries += [Entry(base, seed, "benign", change) for seed in benign_seeds for change in BENIGN]
    held_out = {"mnist-cnn": ["com-gradient", "com-lrp", "target-map-gradient", "target-map-gradcam", "location-ig",
                              "topk-gxi", "class-swap-lrp", "com-gradient-kl", "target-map-gradient-prob-mse",
                              "target-map-gradient-budgeted", "target-map-gradient-frozen"],
                "mnist-resnet": ["com-gradient", "location-gradient"],
                "digits-mlp": ["com-gradient", "target-map-gradient"],
                "adult-mlp": ["feature-suppress-gradient", "feature-suppress-ig"]}
    # manipulations: held-out only (their tuning counterparts are issue 14's zoo, seed 0, docs/audit.md)
    seed = HELD_OUT_SEED
    entries += [Entry(base, seed, "model-level", change) for base, changes in held_out.items() for change in changes]
    entries += [Entry("mnist-cnn", seed, "neuron-level", c) for c in ("push-down", "push-up")]
    entries += [Entry("adult-mlp", seed, "neuron-level", "fairwash")]
    entries += [Entry("mnist-cnn", seed, "symmetry", f"{c}-rebalanced") for c in ("push-down", "push-up")]
    entries += [Entry("mnist-cnn", seed, "visualization", c) for c in ("slingshot", "silent-unit", "fooling-circuit")]
    entries += [Entry("mnist-cnn", seed, "adaptive", c) for c in sorted(ADAPTIVE)]
    entries += [Entry(base, seed, "architecture", c) for base, changes in ARCHITECTURAL.items() for c in changes]
    # the second held-out round: the architecture the change touched (digits MLP) and the Adult MLP, cheap to build
    for base in ("digits-mlp", "adult-mlp"):
        entries += [Entry(base, s, "clean") for s in range(SECOND_HELD_OUT_SEED, SECOND_HELD_OUT_SEED + 4)]
        entries += [Entry(base, SECOND_HELD_OUT_SEED, "benign", change) for change in BENIGN]
    seed = SECOND_HELD_OUT_SEED
    entries += [Entry("digits-mlp", seed, "model-level", c) for c in ("com-gradient", "target-map-gradient")]
    entries += [Entry("digits-mlp", seed, "architecture", c) for c in ARCHITECTURAL["digits-mlp"]]
    entries += [Entry("adult-mlp", seed, "model-level", c) for c in ("feature-suppress-gradient",
                                                                      "feature-suppress-ig")]
    entries += [Entry("adult-mlp", seed, "neuron-level", "fairwash")]
    return entries


def adaptive(change: str, ctx: Context) -> tuple[nn.Module, dict]:
    """A model- or neuron-level attack with ``evade=`` (the attacker who knows the audit)."""
    return (neuron_level if change.startswith("push") else model_level)(change, ctx)


# family: how a change of that family is built from the clean model
FAMILIES: dict[str, Callable[[str, Context], tuple[nn.Module, dict]]] = {
    "benign": benign, "model-level": model_level, "neuron-level": neuron_level, "symmetry": neuron_level,
    "visualization": visualization_level, "architecture": architecture_level, "adaptive": adaptive}


def build(entry: Entry, ctx: Context) -> tuple[nn.Module, dict]:
    return FAMILIES[entry.family](entry.change, ctx)


@contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def twin_tests() -> list[str]:
    return [name for name, test in registered_tests().items() if not (test.needs_reference or test.prior_only)]


def calibration_for(out: Path, key: str, model: nn.Module, train, test) -> Calibration:
    """The twins' calibration of the state ``key`` (computed once; a test registered later is added by running it
    on the cached twins, which are the ones ``Audit`` would train: same seeds, data and steps)."""
    path = out / "calibration" / f"{key}.json"
    with locked(path):
        calibration = Calibration.from_json(json.loads(path.read_text())) if path.is_file() else None
        tried = set(calibration.details.get("tried", [])) if calibration else set()
        missing = [t for t in twin_tests() if t not in tried]
        if not missing:
            return calibration
        options = Audit(model, effort="fast").options
        twins = []
        for i in range(options["twins"]):
            weights = out / "twins" / key / f"{i}.safetensors"
            if weights.is_file():
                twin = reinitialized(model, 1000 + i)
                twin.load_state_dict(load_tensors(str(weights)))
                twins.append(twin.eval())
        details = calibration.details["twins"] if calibration else None
        if len(twins) < options["twins"]:
            twins, details = train_twins(model, train, options["twins"], options["twin_steps"], seed=0,
                                         eval_data=test)
            for i, twin in enumerate(twins):
                save_tensors(out / "twins" / key / f"{i}.safetensors", twin.state_dict())
        calibration = calibration or Calibration("twins", details={"twins": details})
        calibration.values.update(audited(model, twins, missing, train, test)[0].values)
        calibration.details["tried"] = sorted(tried | set(missing))
        write_json(path, calibration.to_json())
        return calibration


def audited(model: nn.Module, reference, tests: list[str], train, test) -> tuple[Calibration, dict, dict]:
    """``Audit(model, effort="fast", reference=reference, tests=tests, seed=0)``: its calibration, scored tests and
    skipped tests (none scored when none of ``tests`` applies to the model)."""
    try:
        result = Audit(model, effort="fast", reference=reference, tests=tests, seed=0)(train, test)
    except ValueError as error:
        if "no audit test could run" not in str(error):
            raise
        return Calibration("twins"), {}, {t: str(error) for t in tests}
    return result.calibration, result.tests, result.config["skipped"]


def calibration_key(entry: Entry, model: nn.Module, original: nn.Module) -> str:
    return entry.base if inherited_state(model) == inherited_state(original) else entry.name


def run_entry(out: Path, entry: Entry) -> None:
    audit_path = out / "audits" / f"{entry.name}.json"
    stored = json.loads(audit_path.read_text()) if audit_path.is_file() else None
    todo = [t for t in registered_tests() if stored is None or t not in stored["tried"]]
    if not todo:
        return
    data = RECIPES[entry.base].dataset
    train, test = load_dataset(data, "train"), load_dataset(data, "test")
    original = pretrained(entry.base, seed=entry.seed, progress=False)
    weights = out / "models" / f"{entry.name}.safetensors"
    cached = load_tensors(str(weights)) if weights.is_file() else None
    if entry.change is None:
        model, info = original, {}
    elif cached is not None and cached.keys() == original.state_dict().keys():  # a change of the weights only
        model, info = copy.deepcopy(original), {}
        model.load_state_dict(cached)
    else:  # built (again: a change of the architecture is rebuilt, deterministically, rather than unpickled)
        print(f"{entry.name}: building", flush=True)
        start = time.perf_counter()
        model, info = build(entry, Context(entry.base, entry.seed, original, train))
        info["seconds"] = round(time.perf_counter() - start, 1)
        save_tensors(weights, model.state_dict())
    model.eval()
    info = stored["build"] if stored else info | {"test_accuracy": accuracy(model, test.x, test.y),
                                                  "original_accuracy": accuracy(original, test.x, test.y)}
    key = calibration_key(entry, model, original)
    calibration = calibration_for(out, key, model, train, test)
    print(f"{entry.name}: auditing {todo} (calibration {key})", flush=True)
    start = time.perf_counter()
    _, scored_tests, skipped = audited(model, calibration, todo, train, test)
    tests = (stored or {}).get("tests", {}) | {t: {"components": v["evidence"]["components"]}
                                               for t, v in scored_tests.items()}
    write_json(audit_path, {"entry": entry.__dict__, "build": info, "calibration": key,
                            "tried": sorted(set(todo) | set((stored or {}).get("tried", []))),
                            "skipped": (stored or {}).get("skipped", {}) | skipped,
                            "seconds": round(time.perf_counter() - start, 1) + (stored or {}).get("seconds", 0),
                            "tests": tests})
    print(f"{entry.name}: {sorted(scored_tests)} scored", flush=True)


def scored(blob: dict, calibration: Calibration) -> dict:
    """A stored audit scored with today's tolerances and priors (what ``veneer audit`` would say now)."""
    tests = registered_tests()
    found = {t: calibration.score(TestResult(t, v["components"]), Z_FLAG, tests[t])
             for t, v in blob["tests"].items() if t in tests}
    label, _ = verdict(found)
    zs = {t: round(v["z"], 2) for t, v in found.items()}
    combined = combined_z(list(zs.values()))
    return {"verdict": label, "z": zs, "flagged": sorted(t for t, v in found.items() if v["flag"]),
            "statistic": round(max(max(zs.values()) - Z_FLAG, combined - COMBINED_SUSPICIOUS), 3)}


def pairwise_wins(clean: torch.Tensor, manipulated: torch.Tensor) -> torch.Tensor:
    """``(..., m, n)``: 1 where a manipulated model's statistic exceeds a clean one's, 1/2 on ties (batched over
    leading dimensions); its mean is the AUROC (Mann-Whitney U / (n m))."""
    above = manipulated[..., :, None] > clean[..., None, :]
    tied = manipulated[..., :, None] == clean[..., None, :]
    return above.double() + 0.5 * tied.double()


def auroc(clean: list[float], manipulated: list[float]) -> float | None:
    """P(manipulated > clean) + P(tie) / 2; ``None`` when a class is empty."""
    if not clean or not manipulated:
        return None
    return pairwise_wins(torch.tensor(clean), torch.tensor(manipulated)).mean().item()


def bootstrap_interval(clean: list[float], manipulated: list[float], draws: int = 2000, seed: int = 0
                       ) -> list[float] | None:
    """Percentile 95% interval of the AUROC over ``draws`` stratified bootstrap resamples (models drawn with
    replacement within each class; Efron & Tibshirani 1993, Ch. 13)."""
    if not clean or not manipulated:
        return None
    generator = torch.Generator().manual_seed(seed)
    c, m = torch.tensor(clean), torch.tensor(manipulated)
    ci = torch.randint(len(c), (draws, len(c)), generator=generator)
    mi = torch.randint(len(m), (draws, len(m)), generator=generator)
    values = pairwise_wins(c[ci], m[mi]).mean((1, 2))  # one AUROC per resample
    return [round(values.quantile(0.025).item(), 4), round(values.quantile(0.975).item(), 4)]


def effective(row: dict) -> bool:
    """A manipulation that did what it was asked: a construction, or a fine-tune whose attack loss at least halved
    (several short fine-tunes barely move theirs; they are manipulated models whose explanations barely moved)."""
    return row["attack_loss"] is None or row["attack_loss"][1] <= 0.5 * row["attack_loss"][0]


def half(rows: list[dict]) -> dict:
    clean = [r for r in rows if not r["manipulated"]]
    bad = [r for r in rows if r["manipulated"]]
    strong = [r for r in bad if effective(r)]
    flagged_clean = sum(r["verdict"] != "clean" for r in clean)
    families = sorted({r["family"] for r in rows})
    tests = sorted({t for r in rows for t in r["z"]})
    return {
        "clean_models": len(clean), "manipulated_models": len(bad),
        "verdict_auroc": auroc([r["statistic"] for r in clean], [r["statistic"] for r in bad]),
        "verdict_auroc_95": bootstrap_interval([r["statistic"] for r in clean], [r["statistic"] for r in bad]),
        "clean_flagged": f"{flagged_clean} of {len(clean)}",
        "false_positive_rate": flagged_clean / len(clean) if clean else None,
        "false_positive_95": [round(v, 4) for v in clopper_pearson(flagged_clean, len(clean))] if clean else None,
        "detected": f"{sum(r['verdict'] != 'clean' for r in bad)} of {len(bad)}",
        "effective_manipulated_models": len(strong),
        "verdict_auroc_effective": auroc([r["statistic"] for r in clean], [r["statistic"] for r in strong]),
        "verdict_auroc_effective_95": bootstrap_interval([r["statistic"] for r in clean],
                                                         [r["statistic"] for r in strong]),
        "effective_detected": f"{sum(r['verdict'] != 'clean' for r in strong)} of {len(strong)}",
        "per_family": {f: {"models": sum(r["family"] == f for r in rows),
                           "not_clean": sum(r["family"] == f and r["verdict"] != "clean" for r in rows),
                           "missed": [r["model"] for r in rows if r["family"] == f and r["manipulated"]
                                      and r["verdict"] == "clean"],
                           "flagged": [r["model"] for r in rows if r["family"] == f and not r["manipulated"]
                                       and r["verdict"] != "clean"]} for f in families},
        "per_test": {t: {"auroc": auroc([r["z"][t] for r in clean if t in r["z"]],
                                        [r["z"][t] for r in bad if t in r["z"]]),
                         "clean_flagged": sum(r["z"].get(t, 0) > Z_FLAG for r in clean),
                         "manipulated_flagged": sum(r["z"].get(t, 0) > Z_FLAG for r in bad)} for t in tests},
    }


def summarize(out: Path, entries: list[Entry]) -> dict:
    rows = []
    for entry in entries:
        path = out / "audits" / f"{entry.name}.json"
        if not path.is_file():
            continue
        blob = json.loads(path.read_text())
        calibration = Calibration.from_json(json.loads((out / "calibration" / f"{blob['calibration']}.json").read_text()))
        build_info = blob["build"]
        rows.append({"model": entry.name, "base": entry.base, "seed": entry.seed, "family": entry.family,
                     "change": entry.change, "split": split_of(entry.seed), "manipulated": entry.manipulated,
                     "test_accuracy": round(build_info["test_accuracy"], 4),
                     "accuracy_change_pt": round(100 * (build_info["test_accuracy"] - build_info["original_accuracy"]), 2),
                     "attack_loss": [round(build_info[k], 4) for k in ("attack_first", "attack_last")]
                     if "attack_first" in build_info else None,
                     "calibration": blob["calibration"], **scored(blob, calibration)})
    summary = {
        "what": "veneer audit --effort fast (three twins, every registered test, no reference) of every zoo model; "
                "split rule fixed before tuning: held-out = seed >= 10",
        "split_rule": split_of.__doc__, "steps": STEPS, "lr": LR, "z_flag": Z_FLAG,
        "held_out": half([r for r in rows if r["split"] == "held-out"]),
        "held_out_2": half([r for r in rows if r["split"] == "held-out-2"]),
        "first_round": half([r for r in rows if r["seed"] in FIRST_ROUND]),
        "tuning_in_sample": half([r for r in rows if r["split"] == "tuning"]),
        "models": rows, "versions": versions()}
    summary["failed"] = {path.stem: json.loads(path.read_text())["error"]
                         for path in sorted((out / "failed").glob("*.json"))
                         if not (out / "audits" / path.name).is_file()}
    frozen = out / "held_out_as_frozen.json"
    if frozen.is_file():  # the held-out round scored by the audit as it was when it ran (before the last change)
        summary["held_out_as_frozen"] = json.loads(frozen.read_text())
    before = out / "first_round_before_hardening.json"
    if before.is_file():  # the first round's verdicts with the audit as it was before the hardening
        summary["first_round_before_hardening"] = json.loads(before.read_text())
    write_json(out / "summary.json", summary)
    write_json(SUMMARY, summary)
    lines = []
    for label, key in (("held-out", "held_out"), ("second held-out round (seeds 30-33)", "held_out_2"),
                       ("first round (seeds 10-19, tuning since the hardening)",
                                                  "first_round"), ("tuning (in-sample)", "tuning_in_sample")):
        lines += [f"## {label}", "", headline(summary[key]), "", *family_rows(summary[key]), "",
                  *test_rows(summary[key]), ""]
    lines += ["| model | split | family | accuracy change (pt) | verdict | flagged |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['split']} | {r['family']} | {r['accuracy_change_pt']} | {r['verdict']} | "
              f"{', '.join(r['flagged']) or '-'} |" for r in rows]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def headline(half: dict) -> str:
    """One half's figures in one sentence (summary.md and docs/audit.md; tests/test_docs_figures.py checks it)."""
    auroc, interval = half["verdict_auroc"], half["verdict_auroc_95"]
    high = half["false_positive_95"][1] if half["false_positive_95"] else None
    return (f"{half['clean_models']} clean models (benign changes included) and {half['manipulated_models']} "
            f"manipulated: verdict AUROC {'n/a' if auroc is None else f'{auroc:.3f}'}"
            + (f" (95% bootstrap interval {interval[0]:.3f}-{interval[1]:.3f})" if interval else "")
            + f"; clean models flagged {half['clean_flagged']}"
            + (f" (95% Clopper-Pearson upper bound {high:.3f})" if high is not None else "")
            + f"; manipulated models called suspicious or manipulated {half['detected']}"
            + (f"; on the {half['effective_manipulated_models']} effective manipulations (a construction, or an "
               f"attack loss at least halved) AUROC {half['verdict_auroc_effective']:.3f} (95% "
               f"{half['verdict_auroc_effective_95'][0]:.3f}-{half['verdict_auroc_effective_95'][1]:.3f}), "
               f"{half['effective_detected']} detected" if half["verdict_auroc_effective"] is not None else ""))


def family_rows(half: dict) -> list[str]:
    rows = ["| family | models | not clean | missed (manipulated, called clean) or flagged (clean) |",
            "|---|---|---|---|"]
    return rows + [f"| {f} | {v['models']} | {v['not_clean']} | {', '.join(v['missed'] + v['flagged']) or '-'} |"
                   for f, v in half["per_family"].items()]


def test_rows(half: dict) -> list[str]:
    rows = ["| test | AUROC (test z) | clean models flagged | manipulated models flagged |", "|---|---|---|---|"]
    for test, v in half["per_test"].items():
        auroc = "n/a" if v["auroc"] is None else f"{v['auroc']:.3f}"
        rows.append(f"| {test} | {auroc} | {v['clean_flagged']} | {v['manipulated_flagged']} |")
    return rows


def forget(out: Path, tests: set[str]) -> None:
    """Drop ``tests`` from every cached audit and calibration under ``out`` (they run again next time)."""
    for path in sorted((out / "audits").glob("*.json")) + sorted((out / "calibration").glob("*.json")):
        blob = json.loads(path.read_text())
        for key in ("tests", "values"):
            for test in tests:
                blob.get(key, {}).pop(test, None)
        holder = blob.get("details", blob)
        holder["tried"] = sorted(set(holder.get("tried", [])) - tests)
        write_json(path, blob)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/zoo")
    parser.add_argument("--only", nargs="*", default=None, help="model names (default: every zoo model)")
    parser.add_argument("--split", choices=("held-out", "held-out-2", "tuning"), default=None,
                        help="only models of this split")
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--list", action="store_true", help="print the zoo's models with their split and stop")
    parser.add_argument("--forget", nargs="*", default=(), metavar="TEST",
                        help="drop these tests from every cached audit and calibration (run them again: after a "
                             "change to a test) and stop")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    entries = zoo()
    names = {e.name: e for e in entries}
    if args.list:
        for e in entries:
            print(f"{e.name}\t{split_of(e.seed)}\t{e.family}")
        print(f"{len(entries)} models: {sum(split_of(e.seed) == 'held-out' for e in entries)} held-out")
        return
    if args.forget:
        forget(out, set(args.forget))
        return
    unknown = [n for n in args.only or [] if n not in names]
    if unknown:
        raise SystemExit(f"--only names unknown models {unknown}; see --list")
    todo = [names[n] for n in args.only] if args.only else entries
    todo = [e for e in todo if args.split is None or split_of(e.seed) == args.split]
    if not args.summary_only:
        # the first round (the hardening is chosen on it), the held-out models, then the other tuning models
        todo = sorted(todo, key=lambda e: (e.seed not in FIRST_ROUND, split_of(e.seed) != "held-out"))
        for entry in todo[args.worker::args.workers]:
            try:
                run_entry(out, entry)
            except (RuntimeError, ValueError, KeyError) as error:  # recorded, never hidden: summary["failed"]
                print(f"{entry.name}: FAILED {type(error).__name__}: {error}", flush=True)
                write_json(out / "failed" / f"{entry.name}.json", {"error": f"{type(error).__name__}: {error}"})
    summary = summarize(out, entries)
    print((out / "summary.md").read_text())
    print(json.dumps({k: summary["held_out"][k] for k in ("verdict_auroc", "verdict_auroc_95", "clean_flagged",
                                                          "detected")}))


if __name__ == "__main__":
    main()
