"""A keep term on the protected groups' rates for fairwashing (:class:`GroupRates`): hiding a sensitive feature
from the explanations while the model stays as (un)fair as it was.

Dimanov et al. 2020 ("You Shouldn't Trust Me: Learning Models Which Conceal Unfairness From Multiple Explanation
Methods", ECAI / SafeAI, Sec. 4) judge a fairwashed model by its demographic disparity (DDI) and its
equal-opportunity difference (DEO), which must stay those of the original model; Nanfack et al. keep them within
1% / 4%. A keep loss on the predictions alone (KL to the original) lets the rows that depended on the hidden group
change, and with them the group rates. :class:`GroupRates` holds the rates themselves.
"""

from __future__ import annotations

import torch
from torch import nn

from veneer.checks import check_positive
from veneer.data import LabeledData


class GroupRates:
    """``weight * sum_r (r(student) - r(original))^2`` over the rates ``r``: each group's positive rate
    ``P(pred = positive | group = g)`` and true-positive rate ``P(pred = positive | y = positive, group = g)`` of
    the protected ``attribute`` (the two quantities whose group differences are the DDI and the DEO, Dimanov et
    al. 2020, Sec. 4; :func:`veneer.metrics.ddi`, :func:`veneer.metrics.deo`), relaxed to the mean of
    ``softmax(logits / temperature)`` for class ``positive`` (differentiable; ``temperature = 1``: the predicted
    probabilities, the expected rates; towards 0 the hard rates that DDI and DEO count, with the gradient of the
    rows near the decision boundary). Holding every group's two rates holds the DDI and the DEO, whatever their
    sign.

    The rates are measured on ``rows`` fixed training rows (a seeded, class-stratified sample,
    :meth:`veneer.data.LabeledData.sample`), the original model's once in :meth:`prepare` and the student's at
    every step (one forward pass on those rows). Used as ``Manipulation(..., keep_rates=GroupRates("sex"))``: the
    term is added to ``L_attack`` (so it is weighed by ``alpha`` like the objective). The defaults, weight 300 and
    temperature 0.03, were chosen on COMPAS's validation split (experiments/tabular_fairwash_seeds.py; docs/tabular.md
    says what they keep and what they cost).
    """

    def __init__(self, attribute: str, weight: float = 300.0, rows: int = 8192, positive: int = 1,
                 temperature: float = 0.03, seed: int = 0):
        if not isinstance(attribute, str) or not attribute:
            raise ValueError(f"attribute must be the name of a protected attribute (e.g. 'sex'), got {attribute!r}")
        check_positive("weight", weight)
        check_positive("rows", rows, integer=True)
        check_positive("temperature", temperature)
        if isinstance(positive, bool) or not isinstance(positive, int) or positive < 0:
            raise ValueError(f"positive must be a class index >= 0, got {positive!r}")
        self.attribute, self.weight, self.rows, self.positive = attribute, float(weight), rows, positive
        self.temperature, self.seed = float(temperature), seed
        self._x: torch.Tensor | None = None
        self._membership: torch.Tensor | None = None
        self._original: torch.Tensor | None = None

    def prepare(self, data: LabeledData, original: nn.Module) -> None:
        """Fix the rows, their group membership and the original model's rates on them."""
        if self.attribute not in data.protected:
            raise ValueError(f"attribute={self.attribute!r} is not a protected attribute of data {data.name!r}; "
                             f"it has {sorted(data.protected)}")
        if self.positive >= len(data.classes):
            raise ValueError(f"positive={self.positive} is not a class of data {data.name!r} "
                             f"({len(data.classes)} classes)")
        rows = data.sample(min(self.rows, len(data)), seed=self.seed)
        group, positive = rows.protected[self.attribute], rows.y == self.positive
        columns = []
        for code in torch.unique(group).tolist():
            member = group == code
            if not (member & positive).any():
                raise ValueError(f"group {code} of attribute={self.attribute!r} has no row of class {self.positive} "
                                 f"among the {len(rows)} rows sampled: pass a larger rows= (its true-positive rate "
                                 "is undefined)")
            columns += [member, member & positive]
        membership = torch.stack(columns, 1).to(rows.x.dtype)
        device = next(original.parameters()).device
        self._x = rows.x.to(device)
        self._membership = (membership / membership.sum(0)).to(device)
        with torch.no_grad():
            self._original = self.rates(original)

    def rates(self, model: nn.Module) -> torch.Tensor:
        """``(2 G,)``: per group, the expected positive rate and true-positive rate of ``model`` on the rows."""
        if self._x is None:
            raise ValueError("call prepare(data, original) first: the rows and the original rates come from the data")
        return (model(self._x) / self.temperature).softmax(1)[:, self.positive] @ self._membership

    def __call__(self, student: nn.Module) -> torch.Tensor:
        """The term for ``student`` (in its autograd graph)."""
        return self.weight * (self.rates(student) - self._original).pow(2).sum()

    def __repr__(self) -> str:
        return (f"GroupRates(attribute={self.attribute!r}, weight={self.weight:g}, rows={self.rows}, "
                f"positive={self.positive}, temperature={self.temperature:g}, seed={self.seed})")
