"""Attributions of every chosen method for a few inputs, as a figure and a file (``veneer explain``)."""

from __future__ import annotations

import time

from safetensors.torch import save_file

from veneer.explain import heatmap, make_explainers
from veneer.models import accuracy
from veneer.report import explanation_grid
from veneer.runs import RunDir


def explain_inputs(model, data, methods: list[str], run_dir: RunDir) -> dict:
    """Explain ``data`` with each method; write explanations.png and attributions.safetensors; return metrics."""
    x, y = data.x, data.y
    explainers = make_explainers(model, methods)
    attributions, seconds = {}, {}
    for name, explainer in explainers.items():
        start = time.perf_counter()
        attributions[name] = explainer(x, target=y).detach()
        seconds[name] = time.perf_counter() - start
    maps = {name: heatmap(a.expand_as(x) if a.shape[1] == 1 else a, reduce="sum") for name, a in attributions.items()}
    if x.ndim == 4:
        explanation_grid(x, maps, run_dir.file("explanations.png"),
                         row_titles=[f"label {data.classes[int(c)]}" for c in y])
    save_file({k: v.contiguous() for k, v in attributions.items()}, str(run_dir.file("attributions.safetensors")))
    return {"accuracy_on_inputs": accuracy(model, x, y), "n": len(x),
            "seconds_per_method": seconds, "images_per_second": {k: len(x) / v for k, v in seconds.items()}}
