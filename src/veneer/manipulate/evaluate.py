"""How well a manipulation worked and how far it transfers (thesis Ch. 3 Tables 3.1/3.2, Sec. 4.1;
Heo et al. 2019, Sec. 5).

For the original and the manipulated model: accuracy, label agreement and probability MSE; per explanation
method, the objective's measures and its fooling-success rate (the fraction of inputs meeting the objective's
``criterion``) on the data and on Gaussian-noise inputs; for tabular data, the mean |attribution| per feature
and the demographic disparity (DDI) and equal-opportunity difference (DEO) of the protected attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from veneer.checks import check_eval_mode, check_positive
from veneer.data import LabeledData
from veneer.explain import Explainer
from veneer.manipulate.objectives import FeatureSuppress, Objective, normalized_heatmap
from veneer.metrics import ddi, deo
from veneer.models import predict
from veneer.progress import progress_bar

MODELS = ("original", "manipulated")


@dataclass
class Evaluation:
    """Results of :func:`evaluate`.

    ``predictions``: accuracy of both models, accuracy drop (points), label agreement, probability MSE.
    ``methods`` / ``noise``: ``{method: {"original": {measure: mean, "success_rate": r}, "manipulated": ...}}``
    on the data and on Gaussian noise (``noise`` is empty when the objective does not apply to noise).
    ``examples``: ``{"inputs": x, method: (original maps, manipulated maps)}`` normalized heatmaps of the first
    inputs (image data). ``features``: ``{"names": [...], method: {"original": [...], "manipulated": [...]}}``
    mean |attribution| per feature group (tabular data). ``fairness``: ``{attribute: {"ddi_original", ...}}``.
    """

    objective: str
    measure: str
    criterion: str
    predictions: dict[str, float]
    methods: dict[str, dict[str, dict[str, float]]]
    noise: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    examples: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    fairness: dict[str, dict[str, float]] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """Everything but the example maps, JSON-ready."""
        return {"objective": self.objective, "measure": self.measure, "criterion": self.criterion,
                "predictions": self.predictions, "methods": self.methods, "noise": self.noise,
                "features": self.features, "fairness": self.fairness}

    def table(self, inputs: str = "data") -> list[dict[str, Any]]:
        """The transfer table (thesis Tables 3.1/3.2): one row per method with every measure and the success
        rate for the original and the manipulated model, on ``inputs`` ``"data"`` or ``"noise"``."""
        results = self.methods if inputs == "data" else self.noise
        rows = []
        for method, by_model in results.items():
            row: dict[str, Any] = {"method": method}
            for key in by_model["original"]:
                for model in MODELS:
                    row[f"{key} ({model})"] = by_model[model][key]
            rows.append(row)
        return rows


def prediction_agreement(original: nn.Module, manipulated: nn.Module, x: torch.Tensor, y: torch.Tensor
                         ) -> dict[str, float]:
    """Accuracy of both models, the accuracy drop in points, the share of equal predicted labels and the mean
    squared difference of the class probabilities (over samples and classes; thesis Sec. 3.5)."""
    logits = {"original": predict(original, x), "manipulated": predict(manipulated, x)}
    labels = {k: v.argmax(1) for k, v in logits.items()}
    acc = {k: (v == y).float().mean().item() for k, v in labels.items()}
    return {"accuracy_original": acc["original"], "accuracy_manipulated": acc["manipulated"],
            "accuracy_drop_points": 100 * (acc["original"] - acc["manipulated"]),
            "label_agreement": (labels["original"] == labels["manipulated"]).float().mean().item(),
            "probability_mse": (logits["original"].softmax(1) - logits["manipulated"].softmax(1)).pow(2)
            .mean().item()}


def gaussian_noise_like(x: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` Gaussian-noise inputs with the mean and standard deviation of ``x`` (over all pixels for images,
    per column for tabular data), clipped to ``x``'s range (thesis Sec. 4.1)."""
    dims = (0,) if x.ndim == 2 else tuple(range(x.ndim))
    mean, std = x.mean(dims, keepdim=True), x.std(dims, keepdim=True)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, *x.shape[1:]), generator=generator, dtype=x.dtype) * std + mean
    return noise.clamp(x.min().item(), x.max().item())


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def explanation_measures(objective: Objective, explainers: dict[str, Explainer], x: torch.Tensor,
                         target: torch.Tensor, batch_size: int = 32, examples: int = 0, progress: bool = False
                         ) -> tuple[dict[str, dict[str, float]], dict[str, torch.Tensor]]:
    """Mean of each measure and the success rate for the ``"original"`` and ``"manipulated"`` explainers (the
    same method bound to each model) on ``x`` explained for ``target``; and the first ``examples`` normalized
    heatmaps of both (plus the explained inputs) for figures."""
    per_item: dict[str, dict[str, list[torch.Tensor]]] = {m: {} for m in MODELS}
    shown: dict[str, torch.Tensor] = {}
    device = _device(explainers["original"].model)
    for start in progress_bar(range(0, len(x), batch_size), desc="evaluate", disable=not progress, leave=False):
        batch = objective.attack_inputs(x[start:start + batch_size].to(device),
                                        target[start:start + batch_size].to(device))
        if not len(batch):
            continue
        attrs = {m: explainers[m](batch.x, target=batch.target).detach() for m in MODELS}
        for model in MODELS:
            measures = objective.measures(attrs[model], batch, attrs["original"])
            measures["success_rate"] = objective.success(measures).float()
            for key, value in measures.items():
                per_item[model].setdefault(key, []).append(value.detach().cpu())
        if examples and not shown:
            shown = {"inputs": batch.x[:examples].cpu(),
                     **{m: normalized_heatmap(attrs[m][:examples]).cpu() for m in MODELS}}
    if not per_item["original"]:
        raise ValueError(f"objective {objective.name!r} found nothing to explain in the data")
    means = {m: {k: torch.cat(v).double().mean().item() for k, v in per_item[m].items()} for m in MODELS}
    return means, shown


def _attributions(explainer: Explainer, x: torch.Tensor, target: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = _device(explainer.model)
    return torch.cat([explainer(x[i:i + batch_size].to(device), target=target[i:i + batch_size]).detach().cpu()
                      for i in range(0, len(x), batch_size)])


def feature_groups(names: list[str]) -> tuple[list[str], torch.Tensor]:
    """Column names grouped by their one-hot prefix (``"sex=Male"`` -> ``"sex"``): (group names, (F,) index)."""
    groups: list[str] = []
    index = []
    for name in names:
        group = name.split("=", 1)[0]
        if group not in groups:
            groups.append(group)
        index.append(groups.index(group))
    return groups, torch.tensor(index)


def feature_attribution(attr: torch.Tensor, group_index: torch.Tensor, groups: int) -> torch.Tensor:
    """Mean |attribution| per feature group: (N, F) -> (groups,), one-hot columns summed per sample."""
    per_group = torch.zeros(attr.shape[0], groups, dtype=attr.dtype).index_add_(1, group_index, attr.abs().cpu())
    return per_group.mean(0)


def fairness_measures(original: nn.Module, manipulated: nn.Module, data: LabeledData, attributes: list[str]
                      ) -> dict[str, dict[str, float]]:
    """DDI and DEO (Dimanov et al. 2020, Sec. 4; :func:`veneer.metrics.ddi`/``deo``) of both models' hard
    predictions of class 1 for each protected attribute in ``attributes``, and their relative change."""
    preds = {name: predict(model, data.x).argmax(1) == 1 for name, model in zip(MODELS, (original, manipulated))}
    results = {}
    for attribute in attributes:
        group = data.protected[attribute]
        row = {}
        for name, pred in preds.items():
            row[f"ddi_{name}"] = ddi(pred, group).item()
            row[f"deo_{name}"] = deo(pred, data.y, group).item()
        for key in ("ddi", "deo"):
            base = row[f"{key}_original"]
            row[f"{key}_relative_change"] = (row[f"{key}_manipulated"] - base) / base if base else float("nan")
        results[attribute] = row
    return results


def evaluate(original: nn.Module, manipulated: nn.Module, objective: Objective, data: LabeledData,
             explainers: dict[str, Explainer], noise: int | None = None, batch_size: int = 32,
             examples: int = 4, seed: int = 0, progress: bool = False) -> Evaluation:
    """Compare ``original`` and ``manipulated`` on ``data`` (the test split) under every explainer.

    ``explainers`` maps a name to an explainer (bound to any model: each is rebound to both models with
    :meth:`~veneer.explain.Explainer.with_model`), e.g. Gradient, GradientXInput, IntegratedGradients(steps=100),
    SmoothGrad, GradCAM (last conv layer), LRP and Occlusion. Inputs are explained for their labels. ``noise``
    Gaussian-noise inputs (default: as many as ``data``; 0 to skip; see :func:`gaussian_noise_like`) are
    explained for the original model's predicted class. ``examples`` heatmaps per method are kept for figures.
    """
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be a veneer.manipulate.Objective, got {type(objective).__name__}")
    if not explainers or not all(isinstance(e, Explainer) for e in explainers.values()):
        raise ValueError("explainers must be a non-empty dict of veneer.explain.Explainer")
    check_positive("batch_size", batch_size, integer=True)
    for name, model in zip(MODELS, (original, manipulated)):
        check_eval_mode(model, name)
    objective.prepare(data)
    noise = len(data) if noise is None else noise
    x_noise = gaussian_noise_like(data.x, noise, seed) if noise and objective.noise_inputs else None
    noise_target = predict(original, x_noise).argmax(1) if x_noise is not None else None
    result = Evaluation(objective.name, objective.measure, objective.criterion,
                        prediction_agreement(original, manipulated, data.x, data.y), {})
    tabular = data.x.ndim == 2
    if tabular and data.feature_names is not None:
        groups, group_index = feature_groups(data.feature_names)
        result.features = {"names": groups}
    for name, explainer in progress_bar(explainers.items(), desc="methods", disable=not progress):
        bound = {"original": explainer.with_model(original), "manipulated": explainer.with_model(manipulated)}
        result.methods[name], shown = explanation_measures(objective, bound, data.x, data.y, batch_size,
                                                           examples if not tabular else 0)
        if shown:
            result.examples.setdefault("inputs", shown["inputs"])
            result.examples[name] = (shown["original"], shown["manipulated"])
        if x_noise is not None:
            result.noise[name], _ = explanation_measures(objective, bound, x_noise, noise_target, batch_size)
        if result.features:
            result.features[name] = {
                m: feature_attribution(_attributions(bound[m], data.x, data.y, batch_size), group_index,
                                       len(groups)).tolist() for m in MODELS}
    if isinstance(objective, FeatureSuppress):
        hidden = [a for a in data.protected if a in objective.features]
        result.fairness = fairness_measures(original, manipulated, data, hidden)
    return result
