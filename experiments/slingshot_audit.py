"""Does the audit catch lying visualisations without a reference model? (issue 24)

The bundled MNIST CNN (seed 0), clean, and five manipulations towards a cross, the unit unknown to the auditor:
the gradient slingshot of logit 3 (:class:`veneer.neurons.Slingshot`, ``--steps`` steps, otherwise the settings
of experiments/slingshot.py; ``--reuse`` loads the weights a previous run cached), and a silent unit and a
fooling circuit (:mod:`veneer.neurons.constructions`) on logit 3 (module "9") and on channel 5 of the last conv
layer (module "4"); and the slingshot of the digits MLP's logit 3 that experiments/slingshot_transfer.py cached
(run it first). Clean controls: the tuning models of the ``visualization_outliers`` prior (MNIST CNN seeds 0
and 1, MNIST ResNet seed 0, digits MLP seed 0) and held-out clean models it was not tuned on (MNIST CNN seed 2,
digits MLP seed 1). Each is audited by ``Audit(model, effort="fast")`` with every registered test (clean twins
trained from scratch, no reference model), on its bundled data. Per model, the verdict and every test's z and
flag (components, reference and seconds of the visualisation tests) go to runs/slingshot-audit/<name>.json; the
summary of every model audited so far to docs/img/slingshot_audit.json. One thread.

    python experiments/slingshot_audit.py [--steps 600] [--seed 0] [--reuse] [--models clean,slingshot,...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from veneer.audit import Audit
from veneer.data import digits, mnist
from veneer.models import load_state, pretrained
from veneer.neurons import Slingshot, fooling_circuit, silent_unit, target_image, train_detector, visualization_inputs
from veneer.runs import save_tensors, seed_everything, write_json

VISUALIZATION_TESTS = ("visualization_consistency", "visualization_outliers", "neuron_visualization")
UNITS = {"logit": ("9", 3), "channel": ("4", 5)}
CLEAN = {"clean": ("mnist-cnn", 0), "clean_mnist_cnn_seed1": ("mnist-cnn", 1),
         "clean_mnist_resnet_seed0": ("mnist-resnet", 0), "clean_digits_mlp_seed0": ("digits-mlp", 0),
         "heldout_mnist_cnn_seed2": ("mnist-cnn", 2), "heldout_digits_mlp_seed1": ("digits-mlp", 1)}
MANIPULATED = ("slingshot", "silent_unit", "fooling_circuit", "silent_unit_channel", "fooling_circuit_channel",
               "slingshot_digits_mlp")
OUT = Path("runs/slingshot-audit")
TRANSFERRED = Path("runs/slingshot-transfer/slingshot.safetensors")  # written by experiments/slingshot_transfer.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--models", default=",".join([*CLEAN, *MANIPULATED]))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="load the slingshot's cached weights if present")
    parser.add_argument("--summary", default="docs/img/slingshot_audit.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seed_everything(args.seed)
    for name in filter(None, args.models.split(",")):
        if name not in CLEAN and name not in MANIPULATED:
            raise ValueError(f"--models must name models of {[*CLEAN, *MANIPULATED]}, got {name!r}")
        tic = time.perf_counter()
        candidate, train, test = _build(name, args)
        audit = Audit(candidate, effort="fast", seed=args.seed)(train, test)
        result = {"verdict": audit.verdict, "score": audit.score, "seconds": round(time.perf_counter() - tic, 1),
                  "flagged": sorted(n for n, t in audit.tests.items() if t["flag"]),
                  "z": {n: round(t["z"], 3) for n, t in audit.tests.items()},
                  "skipped": audit.config.get("skipped", {}),
                  "visualization_tests": {n: {"components": t["evidence"]["components"],
                                              "reference": t["evidence"]["reference"],
                                              "seconds": round(t["evidence"]["seconds"], 2)}
                                          for n, t in audit.tests.items() if n in VISUALIZATION_TESTS}}
        write_json(OUT / f"{name}.json", result)
        print(name, json.dumps(result), flush=True)
    results = {name: json.loads((OUT / f"{name}.json").read_text())
               for name in [*CLEAN, *MANIPULATED] if (OUT / f"{name}.json").is_file()}
    write_json(Path(args.summary), {
        "experiment": "experiments/slingshot_audit.py", "seed": args.seed, "effort": "fast", "tests": "all registered",
        "manipulated_model": "mnist-cnn (bundled, seed 0)", "units": {k: list(v) for k, v in UNITS.items()},
        "clean_models": {name: list(v) for name, v in CLEAN.items()},
        "tuning_models": "clean, clean_mnist_cnn_seed1, clean_mnist_resnet_seed0, clean_digits_mlp_seed0 (the "
                         "visualization_outliers prior was set on them); heldout_* were not used for tuning",
        "slingshot_steps": args.steps,
        "calibration": "3 clean twins (reinitialised copies trained 250 steps): they inherit the constructions' "
                       "forward code and buffers (veneer.audit.calibration.inherited_state); prior_only tests "
                       "(visualization_outliers, shared_logit_gradient, gradient_slope) use their fixed prior",
        "results": results})


def _build(name, args):
    """``(model, training data, test data)`` of the model ``name``."""
    if name in CLEAN:
        architecture, seed = CLEAN[name]
        data = digits if architecture == "digits-mlp" else mnist
        return pretrained(architecture, seed=seed), data("train"), data("test")
    if name == "slingshot_digits_mlp":
        if not TRANSFERRED.is_file():
            raise FileNotFoundError(f"{TRANSFERRED} not found: run experiments/slingshot_transfer.py first")
        return load_state(pretrained("digits-mlp"), TRANSFERRED), digits("train"), digits("test")
    model, train, test = pretrained("mnist-cnn"), mnist("train"), mnist("test")
    target = target_image("cross", (1, 28, 28))
    layer, unit = UNITS["channel" if name.endswith("_channel") else "logit"]
    cached = OUT / "slingshot.safetensors"
    if name == "slingshot" and args.reuse and cached.is_file():
        return load_state(pretrained("mnist-cnn"), cached), train, test
    if name == "slingshot":
        built = Slingshot(model, layer, unit, target, gamma=10.0, noise=0.1, lr=3e-3, steps=args.steps, alpha=0.5,
                          min_agreement=0.995, seed=args.seed)(train).model
        save_tensors(cached, built.state_dict())
    elif name.startswith("silent_unit"):
        built = silent_unit(model, layer, unit, 10.0, target=target, data=train.x)
    else:
        visualized = visualization_inputs(model, [layer], (1, 28, 28), steps=(1, 16, 200), seed=args.seed)
        built = fooling_circuit(model, layer, unit, target, train_detector(train.x, visualized, seed=args.seed),
                                data=train.x, visualizations=visualized)
    return built, train, test


if __name__ == "__main__":
    main()
