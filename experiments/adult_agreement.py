"""How far do Gradient, IG, LIME and KernelSHAP agree on the bundled Adult MLP, and where does the audit's
cross-method test put that against clean twins? (docs/audit.md, "LIME and KernelSHAP in the cross-method
test"; issue 26)

Per seed ``s``: ``Audit(adult-mlp, methods=[gradient, ig, lime, kernel-shap], effort="fast", seed=s,
tests=["cross_method_agreement"])`` on the Adult train split (twins, background) with the test split explained,
as ``veneer audit --model adult-mlp --data adult --methods gradient,ig,lime,kernel-shap`` does; the seed draws
the 32 explained test rows, the 4000 background rows and the three 250-step twins (LIME and KernelSHAP keep
their sampling seed 0, as in the audit). Figures: the mean Spearman rank correlation of |attribution| over the
32 rows for each pair of methods (thesis Tables 3.1-3.2's agreement), and the test's largest component z
against the twins (the audit flags above 3). No hyper-parameter is chosen, so there is no validation split.

Run from the repository root: ``nice -n 10 python experiments/adult_agreement.py`` (about 30 s per seed on one
core); writes ``experiments/results/adult_agreement.json`` and ``.md``, caches each seed under
``runs/experiments/adult_agreement/``.
"""

from __future__ import annotations

from runner import main
from veneer.audit import Audit
from veneer.data import adult
from veneer.models import pretrained

METHODS = ("gradient", "ig", "lime", "kernel-shap")
PAIRS = (("lime", "kernel-shap"), ("ig", "kernel-shap"), ("ig", "lime"), ("gradient", "lime"),
         ("gradient", "kernel-shap"), ("gradient", "ig"))
CONFIG = {"model": "adult-mlp (bundled, seed 0)", "methods": list(METHODS), "effort": "fast",
          "tests": ["cross_method_agreement"], "statistic": "mean over rows of Spearman(|map a|, |map b|)"}


def measure(seed: int, split: str) -> dict[str, float]:
    result = Audit(pretrained("adult-mlp", progress=False), methods=list(METHODS), effort="fast", seed=seed,
                   tests=["cross_method_agreement"])(adult("train"), adult(split))
    test = result.tests["cross_method_agreement"]
    matrix = test["evidence"]["spearman"]
    return {**{f"{a}~{b}": matrix[a][b] for a, b in PAIRS}, "largest_z": test["z"]}


if __name__ == "__main__":
    main("adult_agreement", measure, __doc__,
         what="Rank agreement of Gradient, IG, LIME and KernelSHAP on the bundled Adult MLP, and the cross-method "
              "test's largest z against three clean twins", config=CONFIG,
         splits={"test": "Adult test split, the audit's 32 rows drawn with each seed (twins and background from the "
                         "train split)"})
