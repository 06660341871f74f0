"""Attributions of every chosen method for a few inputs, as a figure and a file (``veneer explain``)."""

from __future__ import annotations

import time

from veneer.explain import heatmap, make_explainers, select_methods
from veneer.models import accuracy
from veneer.jobs.results import ExplainRun
from veneer.report import explanation_grid
from veneer.runs import RunDir, save_tensors


def explain_inputs(model, data, methods: list[str] | None, run_dir: RunDir, background=None) -> ExplainRun:
    """Explain ``data`` with each method (``None``: every method that applies to the model and data, see
    :func:`veneer.explain.applicable_methods`; a named method that does not apply is refused before any work);
    ``background`` is the training data LIME and KernelSHAP need; write attributions.safetensors and
    metrics.json, then explanations.png; return the result."""
    x, y = data.x, data.y
    methods = select_methods(model, x[:1], methods, background=background)
    explainers = make_explainers(model, methods, background=background)
    attributions, seconds = {}, {}
    for name, explainer in explainers.items():
        start = time.perf_counter()
        attributions[name] = explainer(x, target=y).detach()
        seconds[name] = time.perf_counter() - start
    save_tensors(run_dir.file("attributions.safetensors"), attributions)
    result = ExplainRun({"accuracy_on_inputs": accuracy(model, x, y), "n": len(x), "methods": methods,
                            "seconds_per_method": seconds,
                            "images_per_second": {k: len(x) / v for k, v in seconds.items()}})
    run_dir.write_result(result)  # before the figure: nothing computed is lost if drawing fails
    if x.ndim == 4:
        maps = {name: heatmap(a.expand_as(x) if a.shape[1] == 1 else a, reduce="sum")
                for name, a in attributions.items()}
        explanation_grid(x, maps, run_dir.file("explanations.png"),
                         row_titles=[f"label {data.classes[int(c)]}" for c in y])
    return result
