"""Does the channel rescaling symmetry hide a neuron attack from the audit's ``neuron_balance`` test? (issue 23)

The bundled MNIST CNN, all channels of the last conv layer after its ReLU (module "4"), the push-down of
Nanfack et al. 2024 (Eq. 3) with the settings of ``experiments/neurons_acceptance.py`` (relative, alpha 0.3, lr
5e-4, temperature 4), shortened to ``--steps`` attack steps and ``--recalibrate-steps`` recalibration steps. Then
the attacker's post-hoc move: :func:`veneer.neurons.rebalance` with ``like=`` the original model, the channel
scales measured on 512 training images (the function is unchanged up to float rounding).

Measured on test images the rescaling never saw (0-999), per seed: the top-10 overlap of each live channel with the
original's (the attack's strength; rescaling a channel by a positive factor cannot change its ranking, so it must
be identical after the rebalance), the ``neuron_balance`` spread (the statistic; the audit's tolerance is 0.1
decades) of the original, the attacked and the rebalanced model, whether the rebalanced model predicts every test
image as the attacked one does, and the largest logit difference between them. Writes ``runs/rebalance_evasion/<seed>/`` and the committed summary
``experiments/results/rebalance_evasion.json``.

Run: ``nice python experiments/rebalance_evasion.py --seeds 0,1,2`` (about 3 minutes per seed on one core).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from veneer.audit import neuron_balance
from veneer.data import mnist
from veneer.models import pretrained
from veneer.neurons import PushDown, rebalance, top_k, topk_overlap
from veneer.runs import versions, write_json

LAYER, K = "4", 10
ATTACK = dict(relative=True, alpha=0.3, lr=5e-4, temperature=4.0, recalibrate_lr=1e-4)
SUMMARY = Path(__file__).parent / "results" / "rebalance_evasion.json"


def measure(seed: int, steps: int, recalibrate_steps: int) -> dict:
    torch.manual_seed(seed)
    original = pretrained("mnist-cnn", progress=False)
    train, test = mnist("train"), mnist("test").subset(slice(0, 1000))
    start = time.perf_counter()
    attacked = PushDown(original, LAYER, k=K, steps=steps, recalibrate_steps=recalibrate_steps, seed=seed,
                        **ATTACK)(train).model
    attack_seconds = time.perf_counter() - start
    scale_rows = train.x[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:512]]
    rebalanced = rebalance(attacked, LAYER, like=original, data=scale_rows)
    before = top_k(original, LAYER, test.x, K)
    live = before.values.amax(1) > 0
    overlap = {name: topk_overlap(before.indices[live], top_k(model, LAYER, test.x, K).indices[live]).mean().item()
               for name, model in (("attacked", attacked), ("rebalanced", rebalanced))}
    spread = {name: neuron_balance(model, test.x[:512], LAYER).statistic
              for name, model in (("original", original), ("attacked", attacked), ("rebalanced", rebalanced))}
    with torch.no_grad():
        logits, moved = attacked(test.x), rebalanced(test.x)
        accuracy = {name: (model(test.x).argmax(1) == test.y).float().mean().item()
                    for name, model in (("original", original), ("attacked", attacked))}
    return {"seed": seed, "live_channels": int(live.sum()), "top10_overlap": overlap, "balance_spread": spread,
            "rebalanced_predictions_equal_attacked": bool(torch.equal(logits.argmax(1), moved.argmax(1))),
            "rebalanced_max_logit_difference": (logits - moved).abs().max().item(), "test_accuracy": accuracy,
            "attack_seconds": round(attack_seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--recalibrate-steps", type=int, default=400)
    parser.add_argument("--out", default="runs/rebalance_evasion")
    options = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in [int(s) for s in options.seeds.split(",")]:
        row = measure(seed, options.steps, options.recalibrate_steps)
        write_json(Path(options.out) / str(seed) / "metrics.json", row)
        print(row, flush=True)
        rows.append(row)

    def mean(path):
        values = [row[path[0]][path[1]] for row in rows]
        return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}

    write_json(SUMMARY, {
        "what": "push-down of every channel of mnist-cnn layer 4, then rebalance(like=original); test images 0-999",
        "settings": {"steps": options.steps, "recalibrate_steps": options.recalibrate_steps, "k": K, **ATTACK},
        "seeds": [row["seed"] for row in rows], "runs": rows,
        "top10_overlap_attacked": mean(("top10_overlap", "attacked")),
        "top10_overlap_rebalanced": mean(("top10_overlap", "rebalanced")),
        "balance_spread_original": mean(("balance_spread", "original")),
        "balance_spread_attacked": mean(("balance_spread", "attacked")),
        "balance_spread_rebalanced": mean(("balance_spread", "rebalanced")),
        "versions": versions()})
    print(f"wrote {SUMMARY}")


if __name__ == "__main__":
    main()
