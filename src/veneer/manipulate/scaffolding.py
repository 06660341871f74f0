"""The scaffolding attack on LIME and KernelSHAP (Slack et al. 2020, "Fooling LIME and SHAP: Adversarial Attacks
on Post hoc Explanation Methods", AIES, Sec. 3 and Alg. 1).

LIME and KernelSHAP explain a model by querying it on perturbed inputs that lie off the data manifold. The
adversarial classifier ``e(x) = biased(x) if is_ood(x) is False else innocuous(x)`` (their Eq. 2) behaves like
the ``biased`` model on real rows and like an ``innocuous`` one on the explainers' perturbations, so the
explanations show the innocuous model's features. ``is_ood`` is a random forest (as in Slack et al.) trained
on real rows (label 1) against the explainer's own perturbation samples of those rows (label 0).

:func:`feature_rule` builds the models of their experiments: the biased model predicts from the sensitive
feature alone; the innocuous ones from one uncorrelated random feature, or from the XOR of two
(:func:`add_random_features` appends such features to a data set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from veneer.checks import check_positive, check_tensor
from veneer.data import LabeledData
from veneer.explain.model_agnostic import KernelShap, Lime, lime_samples, shap_samples
from veneer.manipulate.evaluate import feature_groups

PERTURBATIONS = ("lime", "shap", "both")
# explainer settings a scaffold that holds against the auditor's choices learns (Scaffolding's arguments)
ROBUST_SETTINGS = {"background_size": (5, 10, 25, None), "lime_discretize": (False, True)}


class FeatureRule(nn.Module):
    """A rule model on one or two columns (Slack et al. 2020, Sec. 4.1): ``b_j = x[:, j] > threshold`` for each
    column ``j`` of ``features``; the predicted class is ``b_1`` (one column) or ``b_1 XOR b_2`` (two), turned
    round when ``invert``. Returns logits ``+-margin / 2`` (class 1 vs class 0)."""

    def __init__(self, features: list[int], threshold: float = 0.5, invert: bool = False, margin: float = 10.0):
        super().__init__()
        if not 1 <= len(features) <= 2 or not all(isinstance(f, int) and f >= 0 for f in features):
            raise ValueError(f"features must be one or two column indices, got {features!r}")
        check_positive("margin", margin)
        self.features, self.threshold, self.invert, self.margin = list(features), threshold, invert, margin
        self.eval()  # nothing to train: always ready to be explained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = x[:, self.features] > self.threshold
        positive = bits[:, 0] if len(self.features) == 1 else bits[:, 0] ^ bits[:, 1]
        positive = positive ^ self.invert
        logit = (positive.to(x.dtype) - 0.5) * self.margin
        return torch.stack([-logit / 2, logit / 2], dim=1)

    def extra_repr(self) -> str:
        return f"features={self.features}, threshold={self.threshold}, invert={self.invert}"


def feature_rule(data: LabeledData, features: list[str], invert: bool = False, threshold: float = 0.5
                 ) -> FeatureRule:
    """:class:`FeatureRule` on the columns named ``features`` (exact column names, e.g. ``"race=African-American"``
    or ``"random_1"``) of tabular ``data``."""
    if data.feature_names is None:
        raise ValueError(f"data {data.name!r} has no feature names (it is not tabular)")
    missing = [f for f in features if f not in data.feature_names]
    if missing:
        raise ValueError(f"features {missing} are not columns of data {data.name!r}")
    return FeatureRule([data.feature_names.index(f) for f in features], threshold, invert)


def add_random_features(data: LabeledData, count: int, seed: int = 0, prefix: str = "random_") -> LabeledData:
    """``data`` with ``count`` columns of independent fair coin flips (0/1) appended, named ``random_1``, ...
    (the "unrelated columns" of Slack et al. 2020, Sec. 4.1). The same ``seed`` gives the same columns."""
    check_positive("count", count, integer=True)
    gen = torch.Generator().manual_seed(seed)
    coins = torch.randint(0, 2, (len(data), count), generator=gen).to(data.x.dtype)
    names = list(data.feature_names or [f"x{i}" for i in range(data.x.shape[1])])
    return LabeledData(torch.cat([data.x, coins], 1), data.y, data.name, data.classes,
                       names + [f"{prefix}{i + 1}" for i in range(count)], data.protected, data.protected_groups)


class ScaffoldedModel(nn.Module):
    """``biased(x)`` where the detector says ``x`` is a real row, ``innocuous(x)`` elsewhere (Slack et al. Eq. 2).
    Outputs the (N, C) logits of the chosen model per row; not differentiable (the detector is a forest):
    ``differentiable = False``, as :class:`veneer.models.BlackBox` declares it."""

    differentiable = False

    def __init__(self, biased: Callable, innocuous: Callable, detector, threshold: float = 0.5,
                 groups: list[list[int]] | None = None):
        super().__init__()
        # a tuple, so that the given modules are not registered as submodules (``.eval()`` etc. leave them alone)
        self.models, self.detector, self.threshold = (biased, innocuous), detector, threshold
        self.groups = groups or []

    def in_distribution(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the detector's probability that each row is real is at least ``threshold``."""
        real = self.detector.predict_proba(detector_input(x.detach().cpu().double(), self.groups).numpy())[:, 1]
        return torch.from_numpy(real >= self.threshold).to(x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        real = self.in_distribution(x)
        biased, innocuous = self.models
        return torch.where(real[:, None], biased(x), innocuous(x))


def one_hot_groups(names: list[str] | None) -> list[list[int]]:
    """Column indices of each one-hot attribute (columns named ``attribute=value``, at least two per attribute),
    grouped by :func:`veneer.manipulate.evaluate.feature_groups`."""
    if not names:
        return []
    groups, index = feature_groups(names)
    columns = [(index == g).nonzero().flatten().tolist() for g in range(len(groups))]
    return [c for c in columns if len(c) > 1]


def detector_input(x: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """The detector's features: the row and the sum of each one-hot group (exactly 1 on a real row; a
    perturbation that mixes a group's columns from two rows, as KernelSHAP's coalitions do, breaks it)."""
    return torch.cat([x] + [x[:, columns].sum(1, keepdim=True) for columns in groups], 1)


@dataclass
class ScaffoldingResult:
    """The scaffolded model and how well it hides: ``detector_accuracy`` on held-out real rows and their
    perturbations (balanced: the mean of the accuracy on each), ``fidelity`` the share of held-out real rows on
    which ``model`` predicts the class ``biased`` predicts."""

    model: ScaffoldedModel
    detector_accuracy: float
    fidelity: float


class Scaffolding:
    """Slack et al. 2020, Alg. 1: build the adversarial classifier that hides ``biased`` from LIME and KernelSHAP.

    ``biased`` / ``innocuous``: modules or callables from (N, F) feature tensors to (N, C) logits.
    ``perturbation``: whose samples the detector learns to recognise, ``"lime"`` (:func:`lime_samples`),
    ``"shap"`` (:func:`shap_samples`, the coalitions of KernelSHAP with a ``shap.kmeans`` background of
    ``background_size`` rows) or ``"both"``. An attacker does not know the auditor's settings: ``background_size``
    may be a tuple of KernelSHAP backgrounds (each a number of k-means centroids, or ``None``: the raw training
    rows) and ``lime_discretize`` a tuple of LIME samplers (``False``: Gaussian per feature, ``True``: lime's
    quartile discretiser); the detector then learns the perturbations of every setting, ``samples_per_row`` of
    each (:data:`ROBUST_SETTINGS` is the one measured in docs/tabular.md; LIME's kernel width and sample count
    do not change where its samples lie). ``Scaffolding(...)(train_x)`` draws ``samples_per_row``
    perturbations of each real row of ``train_x`` (a tensor or LabeledData; at most ``max_rows`` rows are used,
    chosen at random), holds out ``test_share`` of the rows for the reported figures and as many for
    calibration, trains a ``RandomForestClassifier(n_estimators)`` on the other real rows (1) vs their
    perturbations (0) and returns a :class:`ScaffoldingResult`. A row counts as real when the forest's
    probability reaches the threshold (at most 0.5) that keeps ``real_recall`` of the calibration rows real (an
    addition to Alg. 1, which thresholds at 0.5: near-real perturbations, e.g. a KernelSHAP coalition missing one
    feature, are hard to tell from real rows, and fidelity to ``biased`` on real data comes first).
    Seeded; the models passed in are not changed.
    """

    def __init__(self, biased: Callable, innocuous: Callable, perturbation: str = "lime", seed: int = 0,
                 samples_per_row: int = 10, max_rows: int = 4000,
                 background_size: int | None | tuple[int | None, ...] = 10,
                 n_estimators: int = 100, test_share: float = 0.2, real_recall: float = 0.95,
                 lime_discretize: bool | tuple[bool, ...] = False):
        for name, model in (("biased", biased), ("innocuous", innocuous)):
            if not callable(model):
                raise TypeError(f"{name} must be a module or a callable from (N, F) features to logits, "
                                f"got {type(model).__name__}")
        if perturbation not in PERTURBATIONS:
            raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {perturbation!r}")
        for name, value in (("samples_per_row", samples_per_row), ("max_rows", max_rows),
                            ("n_estimators", n_estimators)):
            check_positive(name, value, integer=True)
        backgrounds = background_size if isinstance(background_size, tuple) else (background_size,)
        discretize = lime_discretize if isinstance(lime_discretize, tuple) else (lime_discretize,)
        for size in backgrounds:
            if size is not None:
                check_positive("background_size", size, integer=True)
        if not backgrounds or not discretize or not all(isinstance(d, bool) for d in discretize):
            raise ValueError(f"background_size and lime_discretize need at least one setting (lime_discretize: "
                             f"bools), got {background_size!r}, {lime_discretize!r}")
        for name, value in (("test_share", test_share), ("real_recall", real_recall)):
            if not 0 < value < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
        self.biased, self.innocuous, self.perturbation, self.seed = biased, innocuous, perturbation, seed
        self.samples_per_row, self.max_rows = samples_per_row, max_rows
        self.backgrounds, self.discretize = backgrounds, discretize
        self.n_estimators, self.test_share, self.real_recall = n_estimators, test_share, real_recall

    def perturb(self, background: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(N * samples, F) perturbations of the rows ``x`` drawn as the chosen explainer(s) draw them, under
        each of their settings."""
        parts = []
        if self.perturbation in ("lime", "both"):
            # lime's sample 0 is the row itself and is dropped, hence one more
            parts += [lime_samples(background, x, self.samples_per_row + 1, self.seed, discretize)
                      for discretize in self.discretize]
        if self.perturbation in ("shap", "both"):
            parts += [shap_samples(background, x, self.samples_per_row, size, self.seed) for size in self.backgrounds]
        return torch.cat(parts, 1).reshape(-1, x.shape[1])

    def __call__(self, train_x) -> ScaffoldingResult:
        from sklearn.ensemble import RandomForestClassifier

        x = train_x.x if isinstance(train_x, LabeledData) else train_x
        groups = one_hot_groups(train_x.feature_names) if isinstance(train_x, LabeledData) else []
        check_tensor("train_x", x, ndim=2)
        if len(x) < 10:
            raise ValueError(f"train_x must hold at least 10 rows, got {len(x)}")
        gen = torch.Generator().manual_seed(self.seed)
        rows = x.detach()[torch.randperm(len(x), generator=gen)[:self.max_rows]].double()
        held = max(1, int(len(rows) * self.test_share))
        test, calibration, train = rows[:held], rows[held:2 * held], rows[2 * held:]
        fake_train, fake_test = self.perturb(x, train), self.perturb(x, test)
        features = detector_input(torch.cat([train, fake_train]), groups).numpy()
        labels = np.r_[np.ones(len(train)), np.zeros(len(fake_train))]
        detector = RandomForestClassifier(n_estimators=self.n_estimators, class_weight="balanced",
                                          random_state=self.seed, n_jobs=1).fit(features, labels)
        real_scores = detector.predict_proba(detector_input(calibration, groups).numpy())[:, 1]
        threshold = min(0.5, float(np.quantile(real_scores, 1 - self.real_recall)))
        model = ScaffoldedModel(self.biased, self.innocuous, detector, threshold, groups).eval()
        test = test.to(x.dtype)
        accuracy = (model.in_distribution(test).double().mean()
                    + (~model.in_distribution(fake_test.to(x.dtype))).double().mean()) / 2
        with torch.no_grad():
            fidelity = (model(test).argmax(1) == self.biased(test).argmax(1)).double().mean()
        return ScaffoldingResult(model, accuracy.item(), fidelity.item())


def rank_shares(attr: torch.Tensor, groups: dict[str, list[int]], ranks: int = 3) -> dict[str, list[float]]:
    """Slack et al. 2020, Fig. 2: for each rank ``r = 1..ranks`` by ``|attr|`` (B, F), the share of rows whose
    ``r``-th feature is in each group of columns (``{"race": [9, 10, ...], "random_1": [18]}``), and in none of
    them (``"other"``)."""
    check_tensor("attr", attr, ndim=2)
    order = attr.abs().argsort(1, descending=True)[:, :ranks]
    member = torch.full((attr.shape[1],), -1, dtype=torch.long)
    for g, columns in enumerate(groups.values()):
        member[torch.as_tensor(columns, dtype=torch.long)] = g
    found = member[order.cpu()]  # (B, ranks) group of each ranked feature, -1 for other
    shares = {name: (found == g).double().mean(0).tolist() for g, name in enumerate(groups)}
    shares["other"] = (found == -1).double().mean(0).tolist()
    return shares


def top_k_share(attr: torch.Tensor, columns: list[int], k: int) -> float:
    """The share of rows whose ``k`` largest ``|attr|`` include one of ``columns`` (e.g. a one-hot group)."""
    check_tensor("attr", attr, ndim=2)
    top = attr.abs().topk(min(k, attr.shape[1]), dim=1).indices
    return torch.isin(top.cpu(), torch.as_tensor(columns, dtype=torch.long)).any(1).double().mean().item()


class _Function(nn.Module):
    """A callable from (N, F) features to logits as a module in eval mode (what explainers take); the callable
    is kept in a tuple so that a module passed in is not registered (and not switched to eval)."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = (fn,)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn[0](x)


def explanation_ranks(models: dict[str, Callable], background, x: torch.Tensor, groups: dict[str, list[int]],
                      sensitive: str, methods: tuple[str, ...] = ("lime", "kernel-shap"), target: int = 1,
                      lime_samples: int = 5000, shap_samples: int | None = None, seed: int = 0
                      ) -> list[dict]:
    """Explain ``x`` for class ``target`` with LIME and/or KernelSHAP (:mod:`veneer.explain.model_agnostic`,
    ``background`` their training data) on every model of ``models`` (name -> module in eval mode, or callable);
    one row per (model, method) with the top-1 and top-3 shares of the ``sensitive`` group, the top-1 share of
    every other group and the :func:`rank_shares` of every group (``ranks``)."""
    build = {"lime": lambda m: Lime(m, background, num_samples=lime_samples, seed=seed),
             "kernel-shap": lambda m: KernelShap(m, background, num_samples=shap_samples, seed=seed)}
    unknown = [m for m in methods if m not in build]
    if unknown:
        raise ValueError(f"methods must be among {sorted(build)}, got {unknown}")
    if sensitive not in groups:
        raise ValueError(f"sensitive={sensitive!r} is not one of the groups {sorted(groups)}")
    rows = []
    for name, model in models.items():
        for method in methods:
            attr = build[method](model if isinstance(model, nn.Module) else _Function(model))(x, target=target)
            row = {"model": name, "method": method, f"{sensitive} top-1": top_k_share(attr, groups[sensitive], 1),
                   f"{sensitive} top-3": top_k_share(attr, groups[sensitive], 3)}
            row.update({f"{g} top-1": top_k_share(attr, c, 1) for g, c in groups.items() if g != sensitive})
            row["ranks"] = rank_shares(attr, groups)
            rows.append(row)
    return rows


EXPLAINED_BY = {"lime": ("lime",), "shap": ("kernel-shap",), "both": ("lime", "kernel-shap")}


def slack_case(train: LabeledData, test: LabeledData, column: str, perturbation: str = "lime", innocuous: int = 1,
               invert: bool = False, biased: Callable | None = None, n: int = 200, seed: int = 0,
               lime_samples: int = 5000, shap_samples: int | None = None, real_recall: float = 0.95) -> dict:
    """One setting of Slack et al. 2020, Sec. 4: append ``innocuous`` (1 or 2) random columns to ``train`` and
    ``test`` (:func:`add_random_features`, seeds ``seed`` and ``seed + 1``); the biased model is ``biased``
    (any callable on the original columns) or, by default, the rule on ``column`` (:func:`feature_rule`,
    ``invert``); the innocuous model the rule on the random column(s); scaffold it with ``perturbation`` (and
    ``real_recall``, see :class:`Scaffolding`).
    ``n`` random test rows are explained for class 1 by the explainer(s) the scaffolding targets (LIME for
    ``"lime"``, KernelSHAP for ``"shap"``, both for ``"both"``) on the biased and the scaffolded model.

    Returns ``{"scaffolding": ScaffoldingResult, "fidelity_test": share of all test rows on which both models
    predict the same class, "rows": explanation_ranks rows (sensitive group: the one-hot prefix of column)}``.
    """
    if innocuous not in (1, 2):
        raise ValueError(f"innocuous must be 1 or 2 (random features of the innocuous model), got {innocuous!r}")
    features = train.x.shape[1]
    train, test = add_random_features(train, innocuous, seed), add_random_features(test, innocuous, seed + 1)
    if biased is None:
        biased = feature_rule(train, [column], invert=invert)
    else:
        model = biased
        biased = lambda x: model(x[:, :features])  # noqa: E731 - the given model sees its own columns only
    randoms = [f"random_{i + 1}" for i in range(innocuous)]
    result = Scaffolding(biased, feature_rule(train, randoms), perturbation, seed=seed, real_recall=real_recall)(train)
    with torch.no_grad():
        fidelity = (result.model(test.x).argmax(1) == biased(test.x).argmax(1)).double().mean().item()
    sensitive = column.split("=", 1)[0]
    groups = {sensitive: train.features([sensitive]), **{r: train.features([r]) for r in randoms}}
    x = test.x[torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n]]
    rows = explanation_ranks({"biased": biased, f"scaffold, {innocuous} feature{'s' * (innocuous > 1)}": result.model},
                             train, x, groups, sensitive, EXPLAINED_BY[perturbation], lime_samples=lime_samples,
                             shap_samples=shap_samples, seed=seed)
    return {"scaffolding": result, "fidelity_test": fidelity, "rows": rows}
