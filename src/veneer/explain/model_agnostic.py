"""Model-agnostic explainers for tabular data, computed by the packages auditors run: LIME (Ribeiro et al. 2016,
"Why should I trust you?", Eq. 1-3; package ``lime``) and KernelSHAP (Lundberg & Lee 2017, "A unified approach
to interpreting model predictions", Theorem 2; package ``shap``).

Both only query the model: they are not differentiable (``differentiable = False``). Each explains, per row,
the model's ``output`` for the target class: ``"probability"`` (softmax, what the packages expect and what
Slack et al. 2020 explain) or ``"logit"``. The model's forward runs batched over perturbation samples: LIME's
samples of all rows go through the model together, ``batch_size`` samples per forward (the package's own
sampler and its own weighted ridge fit, :meth:`lime.lime_base.LimeBase.explain_instance_with_data`, run per
row); ``shap.KernelExplainer`` asks for
one row at a time, so it gets one batched forward per row over all of that row's ``num_samples x background``
coalition samples.

:func:`lime_samples` and :func:`shap_samples` draw the perturbations the two explainers feed the model; an
out-of-distribution detector trained on them is the scaffolding attack of Slack et al. 2020
(:mod:`veneer.manipulate.scaffolding`).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
from torch import nn

from veneer.checks import check_positive, check_tensor
from veneer.data import as_labeled
from veneer.explain.base import Explainer

OUTPUTS = ("probability", "logit")


def background_matrix(background: object, name: str = "background") -> np.ndarray:
    """``background`` as an (N, F) float64 array: a 2-D tensor or array, or anything :func:`as_labeled` takes
    (LabeledData, ``(x, y)`` pairs, Datasets, DataLoaders), of which the inputs ``x`` are used."""
    if isinstance(background, np.ndarray):
        background = torch.from_numpy(background)
    if not isinstance(background, torch.Tensor):
        background = as_labeled(background, name).x
    check_tensor(name, background, ndim=2)
    if len(background) < 2:
        raise ValueError(f"{name} must hold at least 2 rows (feature statistics), got {len(background)}")
    return background.detach().cpu().double().numpy()


def model_output(model: nn.Module, x: np.ndarray, output: str, batch_size: int = 65536) -> np.ndarray:
    """The model's (N, C) ``output`` ("probability" or "logit") on the rows of ``x``, in chunks of
    ``batch_size`` rows, without gradients, on the model's device and dtype; returned as float64."""
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(torch.as_tensor(x[start:start + batch_size], device=device, dtype=dtype))
            outs.append((logits.softmax(-1) if output == "probability" else logits).double().cpu())
    return torch.cat(outs).numpy()


def _lime_explainer(background: np.ndarray, kernel_width: float | None, discretize_continuous: bool, seed: int):
    from lime.lime_tabular import LimeTabularExplainer

    return LimeTabularExplainer(background, mode="classification", kernel_width=kernel_width,
                                discretize_continuous=discretize_continuous, feature_selection="none",
                                random_state=seed)


def _lime_neighbourhoods(explainer, rows: np.ndarray, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, lime's own sampler (``LimeTabularExplainer.__data_inverse``): the interpretable samples
    (B, S, F) and the samples in input space (B, S, F); sample 0 of each row is the row itself."""
    sample = explainer._LimeTabularExplainer__data_inverse  # the package's sampler (name-mangled private)
    pairs = [sample(row, num_samples) for row in rows]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def lime_samples(background: object, x: torch.Tensor, num_samples: int = 5000, seed: int = 0,
                 discretize_continuous: bool = False) -> torch.Tensor:
    """The (B, num_samples - 1, F) inputs LIME queries the model on around each row of ``x`` (lime's sampler,
    configured as :class:`Lime`; the row itself, LIME's first sample, left out), in ``x``'s dtype."""
    check_tensor("x", x, ndim=2)
    check_positive("num_samples", num_samples, integer=True)
    explainer = _lime_explainer(background_matrix(background), None, discretize_continuous, seed)
    _, inverse = _lime_neighbourhoods(explainer, x.detach().cpu().double().numpy(), num_samples)
    return torch.from_numpy(inverse[:, 1:]).to(x)


class _BackgroundExplainer(Explainer):
    """Shared by LIME and KernelSHAP: tabular rows with the background's features only."""

    differentiable = False
    needs_background = True

    def __init__(self, model: nn.Module, background, output: str, seed: int, batch_size: int):
        super().__init__(model)
        check_positive("batch_size", batch_size, integer=True)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self._background = background_matrix(background)
        self.output, self.seed, self.batch_size = output, seed, batch_size

    def __call__(self, x, target=None, create_graph=False):
        check_tensor("x", x)
        if x.ndim != 2 or x.shape[1] != self._background.shape[1]:
            raise ValueError(f"x must be (B, {self._background.shape[1]}) rows with the background's features, "
                             f"got shape {tuple(x.shape)}")
        return super().__call__(x, target, create_graph)


class Lime(_BackgroundExplainer):
    """LIME for tabular data (Ribeiro et al. 2016, Eq. 1-3) computed by ``lime.lime_tabular``.

    ``background``: the training data whose per-feature mean and standard deviation LIME samples from (a 2-D
    tensor/array or anything :func:`veneer.data.as_labeled` takes). For each row, ``num_samples`` samples
    (the first is the row itself) are drawn by lime's sampler, weighted by the exponential kernel of width
    ``kernel_width`` (lime's default ``0.75 * sqrt(F)``) on the standardised distance, and lime's weighted
    ridge regression (``feature_selection="none"``: every feature kept) is fitted to the model's ``output``
    for the target class. The attribution of feature ``i`` is the ridge coefficient, i.e. the local slope per
    *standard deviation* of the feature (lime fits on standardised samples). ``discretize_continuous=False``
    (as Slack et al. 2020) samples each feature from ``N(mean, std)`` of the background; ``True`` uses
    lime's quartile discretiser and binary "same bin" features. Deterministic for a given ``seed``.
    """

    name = "lime"

    def __init__(self, model: nn.Module, background, num_samples: int = 5000, kernel_width: float | None = None,
                 output: str = "probability", discretize_continuous: bool = False, seed: int = 0,
                 batch_size: int = 65536):
        super().__init__(model, background, output, seed, batch_size)
        check_positive("num_samples", num_samples, integer=True)
        if kernel_width is not None:
            check_positive("kernel_width", kernel_width)
        self.num_samples, self.kernel_width = num_samples, kernel_width
        self.discretize_continuous = discretize_continuous

    def attribute(self, x, target, create_graph):
        rows = x.detach().cpu().double().numpy()
        explainer = _lime_explainer(self._background, self.kernel_width, self.discretize_continuous, self.seed)
        chunk = max(1, self.batch_size // self.num_samples)  # rows whose samples go through one forward
        attr = np.zeros(rows.shape)
        for start in range(0, len(rows), chunk):
            attr[start:start + chunk] = self._chunk(explainer, rows[start:start + chunk],
                                                    target[start:start + chunk].tolist())
        return torch.from_numpy(attr).to(x)

    def _chunk(self, explainer, rows: np.ndarray, labels: list[int]) -> np.ndarray:
        data, inverse = _lime_neighbourhoods(explainer, rows, self.num_samples)
        batch, samples, features = inverse.shape
        outputs = model_output(self.model, inverse.reshape(-1, features), self.output, self.batch_size)
        outputs = outputs.reshape(batch, samples, -1)
        scaled = (data - explainer.scaler.mean_) / explainer.scaler.scale_
        distances = np.linalg.norm(scaled - scaled[:, :1], axis=2)  # lime's euclidean distance to the row
        attr = np.zeros((batch, features))
        for i, label in enumerate(labels):
            _, weights, _, _ = explainer.base.explain_instance_with_data(
                scaled[i], outputs[i], distances[i], label, features, feature_selection="none")
            index, values = zip(*weights)
            attr[i, list(index)] = values
        return attr


def shap_background(background: object, size: int | None) -> np.ndarray:
    """The background KernelSHAP integrates over: ``background`` itself when it has at most ``size`` rows (or
    ``size`` is None), else ``shap.kmeans(background, size)``'s weighted centroids, as shap recommends and
    Slack et al. 2020 use. Returns the (K, F) rows; :func:`shap_weights` gives their weights."""
    return _summary(background_matrix(background), size)[0]


def _summary(matrix: np.ndarray, size: int | None):
    import shap

    if size is None or len(matrix) <= size:
        return matrix, np.full(len(matrix), 1.0 / len(matrix)), matrix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = shap.kmeans(matrix, size)
    return summary.data, summary.weights, summary


def shapley_coalitions(n: int, features: int, generator: torch.Generator) -> torch.Tensor:
    """(n, features) bool coalitions (True: the feature is present) whose sizes ``s`` in ``1 .. features - 1``
    are drawn with probability proportional to the Shapley kernel's total weight of that size,
    ``(M - 1) / (s (M - s))`` (Lundberg & Lee 2017, Theorem 2), and whose members are uniform given the size:
    a sample from the Shapley kernel over the non-trivial coalitions."""
    sizes = torch.arange(1, features, dtype=torch.float64)
    size = 1 + torch.multinomial((features - 1) / (sizes * (features - sizes)), n, replacement=True,
                                 generator=generator)
    return torch.rand(n, features, generator=generator).argsort(1).argsort(1) < size[:, None]


def shap_samples(background: object, x: torch.Tensor, num_samples: int = 200, background_size: int | None = 10,
                 seed: int = 0) -> torch.Tensor:
    """(B, num_samples, F) coalition samples of KernelSHAP around each row of ``x``: a coalition ``z`` of
    features keeps the row's values and takes the others from a background row, ``z * x + (1 - z) * b``
    (Lundberg & Lee 2017, Eq. 11, ``h_x``), with coalition sizes drawn by the Shapley kernel weight
    ``(M - 1) / (s (M - s))`` (their Theorem 2) and ``b`` drawn by the background weights (the summary of
    :func:`shap_background`). Empty and full coalitions are left out. In ``x``'s dtype; seeded."""
    check_tensor("x", x, ndim=2)
    check_positive("num_samples", num_samples, integer=True)
    rows, weights, _ = _summary(background_matrix(background), background_size)
    features = x.shape[1]
    if features < 2 or rows.shape[1] != features:
        raise ValueError(f"x must have the background's {rows.shape[1]} features (at least 2), got {features}")
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0] * num_samples
    keep = shapley_coalitions(n, features, gen)
    pick = torch.multinomial(torch.from_numpy(weights), n, replacement=True, generator=gen)
    fill = torch.from_numpy(rows)[pick].to(x)
    return torch.where(keep, x.detach().repeat_interleave(num_samples, 0), fill).view(x.shape[0], num_samples, -1)


@contextlib.contextmanager
def _numpy_seed(seed: int):
    """shap's KernelExplainer draws from numpy's global generator: seed it, and put its state back after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


class KernelShap(_BackgroundExplainer):
    """KernelSHAP (Lundberg & Lee 2017, Theorem 2) computed by ``shap.KernelExplainer``.

    ``background``: the data whose expectation stands in for a missing feature (a 2-D tensor/array or anything
    :func:`veneer.data.as_labeled` takes), summarised to ``background_size`` weighted k-means centroids
    (``shap.kmeans``) when it has more rows (``None``: use every row). Each row is explained with
    ``num_samples`` coalitions (``None``: shap's ``2 F + 2048``; when that reaches ``2^F`` shap enumerates every
    coalition and the values are the exact Shapley values of the model's ``output`` for the target class with
    features missing replaced by the background, e.g. ``w_i (x_i - E[x_i])`` for a linear model). No l1
    feature selection (``l1_reg=False``): every feature gets its value. Deterministic for a given ``seed``.
    """

    name = "kernel-shap"

    def __init__(self, model: nn.Module, background, num_samples: int | None = None,
                 background_size: int | None = 10, output: str = "probability", seed: int = 0,
                 batch_size: int = 65536):
        super().__init__(model, background, output, seed, batch_size)
        if num_samples is not None:
            check_positive("num_samples", num_samples, integer=True)
        if background_size is not None:
            check_positive("background_size", background_size, integer=True)
        self.num_samples, self.background_size = num_samples, background_size
        self._summary = _summary(self._background, background_size)[2]

    def attribute(self, x, target, create_graph):
        import shap

        rows = x.detach().cpu().double().numpy()
        explainer = shap.KernelExplainer(lambda z: model_output(self.model, z, self.output, self.batch_size),
                                         self._summary)
        with _numpy_seed(self.seed):
            values = explainer.shap_values(rows, nsamples=self.num_samples or "auto", l1_reg=False, silent=True)
        values = torch.from_numpy(np.asarray(values)).to(x)  # (B, F, C)
        return values.gather(2, target.view(-1, 1, 1).expand(-1, values.shape[1], 1).to(x.device)).squeeze(2)


def constrained_shapley_fit(coalitions: torch.Tensor, outputs: torch.Tensor, base: torch.Tensor,
                            full: torch.Tensor) -> torch.Tensor:
    """KernelSHAP's regression (Lundberg & Lee 2017, Theorem 2) for coalitions sampled from the Shapley kernel
    (:func:`shapley_coalitions`, so every sample has weight 1): per row, the least-squares ``phi`` of
    ``outputs ~ base + coalitions @ phi`` under the efficiency constraint ``sum(phi) = full - base``, solved by
    eliminating the last feature. ``coalitions`` (B, S, F) 0/1, ``outputs`` (B, S), ``base`` and ``full``
    (B,); returns (B, F)."""
    z = coalitions.to(outputs.dtype)
    total = (full - base)[:, None]
    design = z[:, :, :-1] - z[:, :, -1:]
    response = (outputs - base[:, None] - z[:, :, -1] * total)[..., None]
    head = torch.linalg.lstsq(design, response, driver="gelsd").solution.squeeze(-1)
    return torch.cat([head, total - head.sum(1, keepdim=True)], 1)


class ConditionalShap(_BackgroundExplainer):
    """On-manifold KernelSHAP: the Shapley values of the model's ``output`` for the target class where a missing
    feature is filled from real rows that resemble the row on its present features, the empirical conditional
    expectation of Aas, Jullum & Loland (2021, "Explaining individual predictions when features are dependent",
    Sec. 2.3), instead of KernelSHAP's independent background rows. Its samples stay near the data, so a model
    that answers off-manifold queries differently (a scaffold, Slack et al. 2020) is explained by the answers it
    gives on real rows; Vres & Robnik-Sikonja (2021) propose on-manifold sampling as the defence.

    Per row: ``num_samples`` coalitions from the Shapley kernel (:func:`shapley_coalitions`); for each, one of the
    ``neighbours`` rows of ``background`` nearest on the present features (Euclidean on columns standardised by
    the background's spread) fills the missing ones; the values are KernelSHAP's constrained regression
    (:func:`constrained_shapley_fit`) with ``phi_0`` the mean output over the background and the row's own
    output as the total. ``neighbours=None`` fills from a uniformly drawn background row (the interventional
    KernelSHAP of the ``shap`` package, as a check). ``groups``: lists of columns that are present or missing
    together (a one-hot attribute's columns, so that no sample has two or no category); a group's value is the
    Shapley value of the group, given to each of its columns. Not differentiable; seeded."""

    name = "conditional-shap"

    def __init__(self, model: nn.Module, background, num_samples: int = 512, neighbours: int | None = 5,
                 output: str = "probability", seed: int = 0, batch_size: int = 65536,
                 groups: list[list[int]] | None = None):
        super().__init__(model, background, output, seed, batch_size)
        features = self._background.shape[1]
        self.members = torch.eye(features, dtype=torch.bool)  # (players, features): the columns of each player
        if groups:
            grouped = [c for g in groups for c in g]
            if len(set(grouped)) != len(grouped) or not all(isinstance(c, int) and 0 <= c < features
                                                            for c in grouped):
                raise ValueError(f"groups must be disjoint lists of column indices in [0, {features}), got {groups}")
            alone = [[c] for c in range(features) if c not in set(grouped)]
            self.members = torch.zeros(len(groups) + len(alone), features, dtype=torch.bool)
            for player, columns in enumerate(list(groups) + alone):
                self.members[player, columns] = True
        check_positive("num_samples", num_samples, integer=True)
        if neighbours is not None:
            check_positive("neighbours", neighbours, integer=True)
            if neighbours > len(self._background):
                raise ValueError(f"neighbours must be at most the {len(self._background)} background rows, "
                                 f"got {neighbours}")
        if len(self.members) < 2:
            raise ValueError("ConditionalShap needs at least 2 features (or groups)")
        self.num_samples, self.neighbours = num_samples, neighbours

    def attribute(self, x, target, create_graph):
        reference = torch.from_numpy(self._background)
        rows = x.detach().cpu().double()
        batch, features = rows.shape
        gen = torch.Generator().manual_seed(self.seed)
        players = shapley_coalitions(batch * self.num_samples, len(self.members), gen).view(batch, self.num_samples, -1)
        coalitions = (players.double() @ self.members.double()).bool()  # (B, S, F) columns present
        std = reference.std(0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        filled = torch.empty(batch, self.num_samples, features, dtype=torch.float64)
        for i in range(batch):  # one row at a time: a batch's distances would hold B x S x N numbers
            if self.neighbours is None:
                donor = torch.randint(len(reference), (self.num_samples,), generator=gen)
            else:  # squared distance on the present features: (S, F) coalitions x (F, N) per-feature gaps
                gaps = ((rows[i] - reference) / std).square().T
                near = (coalitions[i].double() @ gaps).topk(self.neighbours, dim=1, largest=False).indices
                donor = near.gather(1, torch.randint(self.neighbours, (self.num_samples, 1), generator=gen))[:, 0]
            filled[i] = torch.where(coalitions[i], rows[i], reference[donor])
        classes = target.cpu()
        outputs = model_output(self.model, filled.reshape(-1, features).numpy(), self.output, self.batch_size)
        outputs = torch.from_numpy(outputs).view(batch, self.num_samples, -1)
        outputs = outputs.gather(2, classes.view(-1, 1, 1).expand(-1, self.num_samples, 1)).squeeze(2)
        own = torch.from_numpy(model_output(self.model, rows.numpy(), self.output, self.batch_size))
        base = torch.from_numpy(model_output(self.model, self._background, self.output, self.batch_size)).mean(0)
        phi = constrained_shapley_fit(players, outputs, base[classes], own.gather(1, classes.view(-1, 1))[:, 0])
        return phi[:, self.members.double().argmax(0)].to(x)  # each column gets its player's value
