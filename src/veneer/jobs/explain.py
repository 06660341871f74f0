"""Attributions of every chosen method for a few inputs, as figures and a file (``veneer explain``): images get a
grid of heatmaps, tabular rows signed feature bars, the top features across rows and the methods' agreement."""

from __future__ import annotations

import time

import torch

from veneer.explain import heatmap, make_explainers, select_methods
from veneer.metrics import spearman
from veneer.models import accuracy
from veneer.jobs.results import ExplainRun
from veneer.report import explanation_grid
from veneer.report.tabular import agreement_chart, feature_bars, top_features_chart
from veneer.runs import RunDir, save_tensors

# Inputs drawn in explanations.png (every input is in attributions.safetensors): a few hundred rows of heatmaps
# would make a figure of megabytes nobody can read.
SHOWN_IMAGES = 16
SHOWN_ROWS = 6


def method_agreement(maps: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """``{a: {b: mean over inputs of the Spearman rank correlation of a's and b's map of the input}}`` for every
    pair of methods (``maps[method]``: ``(B, ...)``, one shape for all)."""
    return {a: {b: spearman(maps[a].double(), maps[b].double()).mean().item() for b in maps} for a in maps}


def explain_inputs(model, data, methods: list[str] | None, run_dir: RunDir, background=None) -> ExplainRun:
    """Explain ``data`` with each method (``None``: every method that applies to the model and data, see
    :func:`veneer.explain.applicable_methods`; a named method that does not apply is dropped, with its reason in
    ``dropped_methods``, before any work);
    ``background`` is the training data LIME and KernelSHAP need; write attributions.safetensors and
    metrics.json (with each pair of methods' mean Spearman agreement), then the figures of the first inputs:
    explanations.png (heatmaps of images; signed feature bars of tabular rows), and for tabular rows
    top_features.png and method_agreement.png; return the result."""
    x, y = data.x, data.y
    methods = select_methods(model, x[:1], methods, background=background)
    explainers = make_explainers(model, methods, background=background)
    attributions, seconds = {}, {}
    for name, explainer in explainers.items():
        start = time.perf_counter()
        attributions[name] = explainer(x, target=y).detach()
        seconds[name] = time.perf_counter() - start
    save_tensors(run_dir.file("attributions.safetensors"), attributions)
    if x.ndim == 4:
        maps = {name: heatmap(a.expand_as(x) if a.shape[1] == 1 else a, reduce="sum")
                for name, a in attributions.items()}
    else:
        maps = {name: a.flatten(1) for name, a in attributions.items()}
    shown = min(len(x), SHOWN_IMAGES if x.ndim == 4 else SHOWN_ROWS)
    result = ExplainRun({"accuracy_on_inputs": accuracy(model, x, y), "n": len(x), "methods": list(methods),
                         "dropped_methods": methods.dropped,
                         "seconds_per_method": seconds,
                         "inputs_per_second": {k: len(x) / v for k, v in seconds.items()},
                         "method_agreement": method_agreement(maps), "shown": shown})
    run_dir.write_result(result)  # before the figures: nothing computed is lost if drawing fails
    titles = [f"label {data.classes[int(c)]}" for c in y[:shown]]
    if x.ndim == 4:
        explanation_grid(x[:shown], {name: m[:shown] for name, m in maps.items()}, run_dir.file("explanations.png"),
                         row_titles=titles)
    elif x.ndim == 2:
        names = data.feature_names
        feature_bars({name: a[:shown] for name, a in attributions.items()}, run_dir.file("explanations.png"),
                     names, [f"row {i}, {title}" for i, title in enumerate(titles)])
        top_features_chart(attributions, run_dir.file("top_features.png"), names)
        if len(attributions) > 1:
            agreement_chart(result.values["method_agreement"], run_dir.file("method_agreement.png"))
    return result
