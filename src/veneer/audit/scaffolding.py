"""Does the model answer the explainers' perturbations as it answers real rows? Detection of the scaffolding
attack (Slack et al. 2020) from query access alone, for black boxes and differentiable models alike.

A scaffolded model ``e(x) = biased(x)`` on real rows and ``innocuous(x)`` on the perturbations LIME and
KernelSHAP query (:mod:`veneer.manipulate.scaffolding`, Slack et al. Eq. 2). Two detectors, both measured in
docs/tabular.md:

* :func:`surrogate_detection` (the audit's statistic): surrogates learn the model's answers on real rows
  (histogram gradient-boosting classifiers on the predicted classes); on the explainers' perturbations a
  clean model goes on answering as a surrogate extrapolates it, a scaffold switches to another function.
  Statistic: the surrogates' disagreement with the model on the perturbations minus on held-out real rows
  (the smaller of two surrogates').
* :func:`knn_cad_detection`: CAD-Detect of Carmichael & Scheirer (2023, "Unfooling Perturbation-Based Post Hoc
  Explainers", AAAI, Sec. 4) with their KNN-CAD conformity score (:func:`knn_cad_scores`): the share of
  perturbations whose predicted class is anomalous given the model's answers on their nearest real rows, beyond
  the ``epsilon`` share of real rows. Measured weaker (an honest rule on a one-hot column is flagged: LIME's
  continuous samples of a 0/1 column have no real neighbours that share them); kept as evidence.

The defence, as evidence (:func:`on_manifold_disagreement`): on-manifold KernelSHAP
(:class:`veneer.explain.model_agnostic.ConditionalShap`) queries the model near real rows, where a scaffold
answers with its biased model; its top features disagree with KernelSHAP's on a scaffolded model.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from veneer.audit.base import TestResult, predictions
from veneer.audit.registry import AuditContext, AuditTest, register_test
from veneer.checks import check_positive, check_tensor
from veneer.explain.model_agnostic import lime_samples, shap_samples

PERTURBATIONS = ("lime", "kernel-shap")
# (mean, sd) of the statistic over the 15 clean models of experiments/tabular_zoo.py on COMPAS, German and Adult
# (four scikit-learn black boxes and the honest rule each, seed 0; docs/tabular.md); the CSV's are held out
PRIOR = (0.025, 0.088)


def standardizer(reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` of each column of ``reference`` (std 1 for a constant column): distances between rows in
    units of each feature's spread, so a column in dollars does not drown one in years."""
    std = reference.std(0)
    return reference.mean(0), torch.where(std > 0, std, torch.ones_like(std))


def knn_cad_scores(reference: torch.Tensor, reference_labels: torch.Tensor, queries: torch.Tensor,
                   query_labels: torch.Tensor, k: int = 20, batch_size: int = 1024) -> torch.Tensor:
    """(Q,) KNN-CAD conformity of each query row with its label (Carmichael & Scheirer 2023, Sec. 4): among the
    ``k`` nearest rows of ``reference`` (Euclidean on standardised columns, :func:`standardizer`; an exact copy of
    the query is skipped), ``d_y`` is the median distance to those labelled like the query and ``d_o`` to the
    others; the score is ``d_o / (d_y + d_o)`` (1 when no neighbour has another label, 0 when none has the
    query's; 1 when both medians are 0). Larger = the label agrees with the data around the row."""
    reference, queries = check_tensor("reference", reference, ndim=2), check_tensor("queries", queries, ndim=2)
    check_positive("k", k, integer=True)
    if queries.shape[1] != reference.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} features but reference has {reference.shape[1]}")
    if not k < len(reference):
        raise ValueError(f"k must be below the number of reference rows ({len(reference)}), got {k}")
    mean, std = standardizer(reference)
    scaled = (reference - mean) / std
    scores = []
    for chunk, labels in zip(((queries - mean) / std).split(batch_size), query_labels.split(batch_size)):
        distance = torch.cdist(chunk, scaled)
        distance = distance.masked_fill(distance <= 1e-9, float("inf"))
        near, index = distance.topk(k, dim=1, largest=False)
        same = reference_labels[index] == labels[:, None]
        # the median averages the two middle values (numpy's; torch's median takes the lower one)
        d_same = torch.where(same, near, torch.nan).nanquantile(0.5, dim=1).nan_to_num(float("inf"))
        d_other = torch.where(~same, near, torch.nan).nanquantile(0.5, dim=1).nan_to_num(float("inf"))
        score = d_other / (d_same + d_other)
        score = torch.where(torch.isinf(d_other), 1.0, score)
        score = torch.where(torch.isinf(d_same) & ~torch.isinf(d_other), 0.0, score)
        scores.append(torch.nan_to_num(score, nan=1.0))
    return torch.cat(scores)


def explainer_perturbations(method: str, background: torch.Tensor, x: torch.Tensor, samples: int,
                            seed: int = 0) -> torch.Tensor:
    """(B * samples, F) inputs ``method`` (``"lime"`` or ``"kernel-shap"``) queries around the rows ``x`` with
    training rows ``background``: lime's sampler (:func:`veneer.explain.model_agnostic.lime_samples`) or
    KernelSHAP's coalitions over a 10-centroid k-means background
    (:func:`veneer.explain.model_agnostic.shap_samples`), as the audit's explainers draw them."""
    if method == "lime":
        drawn = lime_samples(background, x, samples + 1, seed)  # lime's sample 0 is the row itself: dropped
    elif method == "kernel-shap":
        drawn = shap_samples(background, x, samples, 10, seed)
    else:
        raise ValueError(f"method must be one of {PERTURBATIONS}, got {method!r}")
    return drawn.reshape(-1, x.shape[1])


def _split(reference: torch.Tensor, held_out: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(real, base)``: a seeded ``held_out`` share of the rows of ``reference`` and the others."""
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must lie in (0, 1), got {held_out!r}")
    order = torch.randperm(len(reference), generator=torch.Generator().manual_seed(seed))
    cut = max(1, int(len(reference) * held_out))
    return reference[order[:cut]], reference[order[cut:]]


def knn_cad_detection(model: nn.Module, x: torch.Tensor, reference: torch.Tensor, k: int = 20,
                      epsilon: float = 0.05, samples: int = 32, held_out: float = 0.2, seed: int = 0,
                      methods: tuple[str, ...] = PERTURBATIONS) -> dict[str, float]:
    """CAD-Detect (Carmichael & Scheirer 2023, Sec. 4): the rows ``reference`` (training rows) are split into a
    KNN reference and ``held_out`` real rows; :func:`knn_cad_scores` of the model's predicted classes on the
    held-out rows sets the threshold (their ``epsilon`` quantile); ``samples`` perturbations per row of ``x``,
    drawn as each explainer of ``methods`` draws them (:func:`explainer_perturbations`), are scored the same
    way. Returns ``{method: share of its perturbations below the threshold - epsilon}`` and the real rows'
    share (``"real"``)."""
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon must lie in (0, 1), got {epsilon!r}")
    real, base = _split(check_tensor("reference", reference, ndim=2), held_out, seed)
    base_labels = predictions(model, base)
    real_scores = knn_cad_scores(base, base_labels, real, predictions(model, real), k)
    threshold = torch.quantile(real_scores.double(), epsilon).item()
    found = {"real": (real_scores < threshold).double().mean().item()}
    for method in methods:
        queries = explainer_perturbations(method, reference, x, samples, seed).to(x.dtype)
        scores = knn_cad_scores(base, base_labels, queries, predictions(model, queries), k)
        found[method] = (scores < threshold).double().mean().item() - epsilon
    return found


def surrogate_detection(model: nn.Module, x: torch.Tensor, reference: torch.Tensor, samples: int = 32,
                        held_out: float = 0.2, seed: int = 0, methods: tuple[str, ...] = PERTURBATIONS
                        ) -> dict[str, float]:
    """The rows ``reference`` (training rows) are split into ``held_out`` real rows and the others, on which two
    surrogates (scikit-learn's ``HistGradientBoostingClassifier``, seeded) learn the model's predicted classes,
    one on the columns in their order and one in reverse order; ``samples`` perturbations per row of ``x`` are
    drawn as each explainer of ``methods`` draws them (:func:`explainer_perturbations`). Per method and
    surrogate: the share of its perturbations where surrogate and model disagree, minus that share on the
    held-out real rows; returned is the smaller of the two surrogates' (``{method: value}``, and the real rows'
    share of the first surrogate as ``"real"``). Two orders, because a tree splits on the first of two columns
    that tie on real rows (a binary attribute's two one-hot columns are exact complements) and the two
    extrapolate differently: the model need only agree with one extrapolation of its real-row answers. 0 for a
    model that predicts one class on every training row (the surrogates then predict it everywhere)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, reference = check_tensor("x", x, ndim=2), check_tensor("reference", reference, ndim=2)
    real, base = _split(reference, held_out, seed)
    labels = predictions(model, base).numpy()
    queries = {m: explainer_perturbations(m, reference, x, samples, seed).to(x.dtype) for m in methods}
    if len(set(labels.tolist())) < 2:
        return {"real": 0.0, **{m: 0.0 for m in methods}}
    answers = {"real": predictions(model, real).numpy(), **{m: predictions(model, q).numpy()
                                                             for m, q in queries.items()}}
    rows = {"real": real, **queries}
    found: dict[str, float] = {}
    for order in (torch.arange(x.shape[1]), torch.arange(x.shape[1]).flip(0)):
        surrogate = HistGradientBoostingClassifier(random_state=seed).fit(base[:, order].double().numpy(), labels)
        share = {k: float((surrogate.predict(r[:, order].double().numpy()) != answers[k]).mean())
                 for k, r in rows.items()}
        found.setdefault("real", share["real"])
        for method in methods:
            found[method] = min(found.get(method, float("inf")), share[method] - share["real"])
    return found


def protected_columns(reference: torch.Tensor, group: torch.Tensor | None) -> list[int]:
    """The columns of ``reference`` equal to the 0/1 ``group`` codes or to their complement (the protected
    attribute's own column or one-hot columns, which tabular data keep in ``x``); ``[]`` without a group."""
    if group is None:
        return []
    codes = group.to(reference.dtype)[:, None]
    return ((reference == codes).all(0) | (reference == 1 - codes).all(0)).nonzero().flatten().tolist()


def one_hot_runs(reference: torch.Tensor) -> list[list[int]]:
    """Runs of adjacent 0/1 columns of ``reference`` that hold exactly one 1 in every row (one-hot attributes
    as veneer's and pandas' encoders lay them out), found left to right: a run grows while no row has two ones
    in it and ends where every row has one."""
    binary = ((reference == 0) | (reference == 1)).all(0).tolist()
    runs, start, total = [], None, None
    for column, is_binary in enumerate(binary):
        if not is_binary:
            start = None
            continue
        if start is None or bool((total + reference[:, column] > 1).any()):
            start, total = column, torch.zeros(len(reference), dtype=reference.dtype)
        total = total + reference[:, column]
        if column > start and bool((total == 1).all()):
            runs.append(list(range(start, column + 1)))
            start = None
    return runs


def on_manifold_disagreement(model: nn.Module, x: torch.Tensor, reference: torch.Tensor, samples: int = 512,
                             neighbours: int = 5, protected: list[int] | None = None, seed: int = 0
                             ) -> dict[str, object]:
    """The defence as evidence (Vres & Robnik-Sikonja 2021; Aas et al. 2021): KernelSHAP
    (:class:`veneer.explain.KernelShap`, 10 k-means centroids of ``reference``) and on-manifold KernelSHAP
    (:class:`veneer.explain.model_agnostic.ConditionalShap` with ``neighbours``, the one-hot attributes of
    :func:`one_hot_runs` as groups), ``samples`` coalitions each, explain the predicted class of the rows ``x``.
    Returns the share of rows whose top-1 feature differs and, for each, the share of rows whose top-1 feature
    belongs to the protected attribute (the ``protected`` columns and the one-hot runs they are part of; when
    given)."""
    from veneer.explain import KernelShap
    from veneer.explain.model_agnostic import ConditionalShap

    target, runs = predictions(model, x), one_hot_runs(reference)
    standard = KernelShap(model, reference, num_samples=samples, seed=seed)(x, target=target)
    manifold = ConditionalShap(model, reference, num_samples=samples, neighbours=neighbours, seed=seed,
                               groups=runs)(x, target=target)
    top = {"kernel-shap": standard.abs().argmax(1), "conditional-shap": manifold.abs().argmax(1)}
    found: dict[str, object] = {"rows": len(x), "top1_differs": (top["kernel-shap"] != top["conditional-shap"])
                                .double().mean().item()}
    if protected:
        columns = torch.as_tensor(sorted({c for run in runs if set(run) & set(protected) for c in run}
                                         | set(protected)))
        found["protected_top1"] = {m: torch.isin(t, columns).double().mean().item() for m, t in top.items()}
    return found


def scaffolding_audit(model: nn.Module, ctx: AuditContext) -> TestResult:
    """The audit test: :func:`surrogate_detection` (the components), :func:`knn_cad_detection` and, on the first
    ``ctx.options["defence_rows"]`` rows, :func:`on_manifold_disagreement` (evidence)."""
    start = time.perf_counter()
    options = ctx.options
    components = surrogate_detection(model, ctx.x, ctx.manifold, options["scaffold_samples"], seed=ctx.seed)
    real = components.pop("real")
    evidence = {"surrogate_disagreement_real": real, "perturbations_per_row": options["scaffold_samples"],
                "knn_cad": knn_cad_detection(model, ctx.x, ctx.manifold, options["cad_k"], options["cad_epsilon"],
                                             options["scaffold_samples"], seed=ctx.seed)}
    if options["defence_rows"]:
        protected = protected_columns(ctx.manifold, ctx.group)
        evidence["on_manifold"] = on_manifold_disagreement(model, ctx.x[:options["defence_rows"]], ctx.manifold,
                                                           protected=protected, seed=ctx.seed)
        evidence["on_manifold"]["protected_columns"] = protected
    return TestResult("scaffolding", components, evidence, time.perf_counter() - start)


def _tabular(model: nn.Module, ctx: AuditContext) -> str | None:
    if ctx.x.ndim != 2:
        return "LIME and KernelSHAP perturb feature rows (B, F); these inputs are images"
    if len(ctx.manifold) < 100:
        return f"needs at least 100 training rows for its nearest-neighbour reference, got {len(ctx.manifold)}"
    return None


SCAFFOLDING = AuditTest(
    "scaffolding",
    source="Slack et al. 2020, Fooling LIME and SHAP, Eq. 2; Carmichael & Scheirer 2023, Unfooling "
           "Perturbation-Based Post Hoc Explainers, Sec. 4 (CAD-Detect); Vres & Robnik-Sikonja 2021",
    meaning="How much more often the model departs, on the perturbations LIME and KernelSHAP query, from a "
            "surrogate that learnt its answers on real rows than it does on held-out real rows: a scaffolded "
            "model (Slack et al. 2020) answers real rows with a biased model and the explainers' perturbations "
            "with an innocuous one. Evidence: KNN-CAD anomalies (Carmichael & Scheirer 2023) and whether "
            "on-manifold KernelSHAP's top features differ from KernelSHAP's.",
    # measured on clean black boxes and honest rules (experiments/tabular_zoo.py, docs/tabular.md): the prior
    # is what a model without twins (a black box) is scored against
    tolerance=0.05, prior=PRIOR, applies=_tabular,
    options={"fast": {"scaffold_samples": 32, "cad_k": 20, "cad_epsilon": 0.05, "defence_rows": 8},
             "full": {"scaffold_samples": 100, "cad_k": 20, "cad_epsilon": 0.05, "defence_rows": 32}},
    run=lambda model, ctx, reference=None: scaffolding_audit(model, ctx))
register_test(SCAFFOLDING)
