"""How noisy are LIME and KernelSHAP on the bundled Adult MLP? Spearman between two sampling seeds of one map
(docs/audit.md, "LIME and KernelSHAP in the cross-method test"; issue 26).

Per seed ``s``: 32 rows of the Adult test split drawn with ``s``, the background 4000 training rows drawn with
``s`` (the audit's ``fast`` sample), target the predicted class, the softmax probability explained. Each method
explains the rows twice, with sampling seeds ``2s`` and ``2s + 1`` (seed 0 is the pair 0/1 the doc cited
first); the figure is the mean over rows of the Spearman correlation of the two |attribution| vectors (the
audit's ``rank_similarity`` of ``flat_maps``, 87 features). LIME (Ribeiro et al. 2016, Eqs. 1-3) at 1000 and
5000 samples per row, KernelSHAP (Lundberg & Lee 2017, Eq. 8 / Theorem 2) at 512 coalitions over 10 k-means
centroids. No hyper-parameter is chosen, so there is no validation split.

Run from the repository root: ``nice -n 10 python experiments/lime_noise.py`` (about 15 s per seed on one
core); writes ``experiments/results/lime_noise.json`` and ``.md``, caches each seed under
``runs/experiments/lime_noise/``.
"""

from __future__ import annotations

import torch

from runner import main
from veneer.audit.base import explain_maps, predictions, rank_similarity
from veneer.data import adult
from veneer.explain import KernelShap, Lime
from veneer.models import pretrained

ROWS, BACKGROUND = 32, 4000
CONFIG = {"model": "adult-mlp (bundled, seed 0)", "rows": ROWS, "background_rows": BACKGROUND,
          "output": "probability", "target": "predicted class", "lime_samples": [1000, 5000],
          "kernel_shap_samples": 512, "kernel_shap_background": "10 k-means centroids",
          "statistic": "mean over rows of Spearman(|map seed 2s|, |map seed 2s+1|)"}


def measure(seed: int, split: str) -> dict[str, float]:
    model = pretrained("adult-mlp", progress=False)
    generator = torch.Generator().manual_seed(seed)
    rows, train = adult(split), adult("train")
    x = rows.x[torch.randperm(len(rows), generator=generator)[:ROWS]]
    background = train.x[torch.randperm(len(train), generator=generator)[:BACKGROUND]]
    target = predictions(model, x)
    methods = {f"lime_{n}": (Lime, {"num_samples": n}) for n in CONFIG["lime_samples"]}
    methods["kernel_shap_512"] = (KernelShap, {"num_samples": CONFIG["kernel_shap_samples"]})
    found = {}
    for name, (method, options) in methods.items():
        first, second = (explain_maps(method(model, background, seed=s, **options), x, target)
                         for s in (2 * seed, 2 * seed + 1))
        found[name] = rank_similarity(first, second).mean().item()
    return found


if __name__ == "__main__":
    main("lime_noise", measure, __doc__,
         what="Spearman between two sampling seeds of LIME / KernelSHAP maps, bundled Adult MLP", config=CONFIG,
         splits={"test": f"Adult test split, {ROWS} rows drawn with each seed"})
