"""A behaviour budget at a short horizon (issue 26): ``min_agreement=0.99`` on 6 epochs of 1500 MNIST training
images, the budget checked every 10 steps (the default) or as often as :func:`veneer.finetune.budget.check_schedule`
asks (``check_every="auto"``), against the unbudgeted run at the same start ``alpha`` 0.3.

    nice -n 15 python experiments/budget_short_horizon.py [--seeds 0,1,2]

Per seed ``s``: 1500 training images drawn with ``s`` (10% of them held out for the budget, observed agreement),
the bundled ``mnist-cnn``, Gradient, ``TargetMap("cross")``, keep ``"kl"``, lr 1e-3, batch 64, 6 epochs (126
steps: 12 checks at ``check_every=10``, 25 with ``"auto"``; ``checks_needed(0.1)`` is 24), fine-tune seed ``s``.
Reported on MNIST test images 0-499 (no setting is chosen, so there is no validation split): the PCC gain with
the cross (manipulated minus original, mean over images), the label agreement with the original and the step
the budget kept. Writes experiments/results/budget_short_horizon.json and .md.
"""

from __future__ import annotations

import warnings

from runner import main
from veneer.data import mnist
from veneer.explain import Gradient
from veneer.manipulate import Manipulation, TargetMap, evaluate
from veneer.models import pretrained

CONFIG = {"model": "mnist-cnn (bundled)", "training_images": 1500, "epochs": 6, "batch_size": 64, "lr": 1e-3,
          "keep": "kl", "alpha": 0.3, "min_agreement": 0.99, "validation": 0.1, "dual_lr": 0.1,
          "method": "gradient", "objective": "target-map cross", "softplus_beta": 20}
RUNS = {"unbudgeted": {}, "budget_every10": {"min_agreement": 0.99, "check_every": 10},
        "budget_auto": {"min_agreement": 0.99, "check_every": "auto"}}


def measure(seed: int, split: str) -> dict[str, float]:
    model = pretrained("mnist-cnn", progress=False)
    train, rows = mnist("train").sample(CONFIG["training_images"], seed=seed), mnist(split).subset(slice(0, 500))
    objective, metrics = TargetMap("cross"), {}
    for name, options in RUNS.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = Manipulation(model, Gradient(model), objective, keep="kl", alpha=CONFIG["alpha"], lr=CONFIG["lr"],
                                  epochs=CONFIG["epochs"], batch_size=CONFIG["batch_size"], seed=seed,
                                  **options)(train)
        found = evaluate(model, result.model, objective, rows, {"gradient": Gradient(model)}, noise=0,
                         batch_size=250)
        pcc = found.methods["gradient"]
        metrics[f"{name}.pcc_gain"] = pcc["manipulated"]["pcc"] - pcc["original"]["pcc"]
        metrics[f"{name}.agreement"] = found.predictions["label_agreement"]
        if options:
            metrics[f"{name}.best_step"] = result.measures["best_step"]
            metrics[f"{name}.checks"] = result.measures["budget_checks"]
            metrics[f"{name}.warned"] = float(any("needs" in str(w.message) for w in caught))
    metrics["auto_share_of_unbudgeted"] = metrics["budget_auto.pcc_gain"] / metrics["unbudgeted.pcc_gain"]
    metrics["every10_share_of_unbudgeted"] = metrics["budget_every10.pcc_gain"] / metrics["unbudgeted.pcc_gain"]
    return metrics


if __name__ == "__main__":
    main("budget_short_horizon", measure, __doc__, default_seeds="0,1,2",
         what="PCC gain with the cross target and label agreement of a 126-step fine-tune, unbudgeted (alpha 0.3) "
              "and with min_agreement=0.99 checked every 10 steps or check_every='auto'",
         config=CONFIG, splits={"test": "MNIST test images 0-499"})
