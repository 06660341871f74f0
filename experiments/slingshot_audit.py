"""Does the audit catch lying visualisations without a reference model? (issue 24)

The bundled MNIST CNN, clean, and three manipulations of logit 3 towards a cross (the unit is unknown to the
auditor): the gradient slingshot (:class:`veneer.neurons.Slingshot`, ``--steps`` steps, otherwise the settings of
experiments/slingshot.py), a silent unit and a fooling circuit (:mod:`veneer.neurons.constructions`). Each is
audited by ``Audit(model, effort="fast", tests=["visualization_consistency", "neuron_visualization"])`` (clean
twins trained from scratch, the audit's default layer and the logits), and the verdicts, z-scores and
components are written to docs/img/slingshot_audit.json. One thread.

    python experiments/slingshot_audit.py [--steps 600] [--seed 0] [--models clean,slingshot,...]

``--models`` audits some of them and updates their entries of an existing summary.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from veneer.audit import Audit
from veneer.data import mnist
from veneer.models import pretrained
from veneer.neurons import Slingshot, fooling_circuit, silent_unit, target_image, train_detector, visualization_inputs
from veneer.runs import save_tensors, seed_everything, write_json

TESTS = ["visualization_consistency", "neuron_visualization"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--models", default="clean,silent_unit,fooling_circuit,slingshot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summary", default="docs/img/slingshot_audit.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seed_everything(args.seed)
    model, train, test = pretrained("mnist-cnn"), mnist("train"), mnist("test")
    target = target_image("cross", (1, 28, 28))
    layer, unit = "9", 3
    start = time.perf_counter()
    builders = {
        "clean": lambda: model,
        "silent_unit": lambda: silent_unit(model, layer, unit, 10.0, target=target, data=train.x),
        "fooling_circuit": lambda: _fooling_circuit(model, layer, unit, target, train, args.seed),
        "slingshot": lambda: Slingshot(model, layer, unit, target, gamma=10.0, noise=0.1, lr=3e-3, steps=args.steps,
                                       alpha=0.5, min_agreement=0.995, seed=args.seed)(train).model,
    }
    summary = Path(args.summary)
    previous = json.loads(summary.read_text())["results"] if summary.is_file() else {}
    results = dict(previous)
    for name in args.models.split(","):
        tic = time.perf_counter()
        candidate = builders[name]()
        save_tensors(Path("runs/slingshot-audit") / f"{name}.safetensors", candidate.state_dict())
        audit = Audit(candidate, effort="fast", tests=TESTS, seed=args.seed)(train, test)
        results[name] = {"verdict": audit.verdict, "seconds": round(time.perf_counter() - tic, 1),
                         "tests": {test_name: {"z": scored["z"], "flag": bool(scored["flag"]),
                                               "components": scored["evidence"]["components"],
                                               "reference": scored["evidence"]["reference"]}
                                   for test_name, scored in audit.tests.items()}}
        print(name, results[name], flush=True)
    write_json(summary, {
        "experiment": "experiments/slingshot_audit.py", "model": "mnist-cnn (bundled)", "unit": [layer, unit],
        "seed": args.seed, "slingshot_steps": args.steps, "effort": "fast", "tests": TESTS,
        "calibration": "3 clean twins (reinitialised copies trained 250 steps): they inherit the constructions' "
                       "forward code and buffers (veneer.audit.calibration.inherited_state)",
        "results": results, "seconds": round(time.perf_counter() - start, 1)})


def _fooling_circuit(model, layer, unit, target, train, seed):
    visualized = visualization_inputs(model, [layer], (1, 28, 28), steps=(1, 16, 200), seed=seed)
    return fooling_circuit(model, layer, unit, target, train_detector(train.x, visualized, seed=seed), data=train.x,
                           visualizations=visualized)


if __name__ == "__main__":
    main()
