"""The experiment runner: a figure measured over seeds, its hyper-parameters chosen on a validation split only,
reported on a test split the selection never saw, summarised with a 95% t-interval (issue 26).

A figure is a *measure*, ``measure(seed, split, **setting) -> {metric: float}``: it draws everything random from
``seed`` and reads only the data of ``split`` (``"validation"`` while a setting is chosen, ``"test"`` for the
reported figure). :func:`run_study` then

1. if a ``grid`` of settings is given, measures every setting on ``selection_split`` for every seed and keeps the
   one with the best mean of ``select_metric`` (``goal`` ``"max"`` or ``"min"``); the test split is not read;
2. measures the chosen setting (or the only one) on ``report_split`` for every seed;
3. writes the committed summary ``experiments/results/<name>.json`` -- config, grid, selection scores, chosen
   setting, per-seed values, mean, sd, the 95% t-interval (Student's t with ``n - 1`` degrees of freedom,
   ``scipy.stats.t``), seeds, splits and library versions (:func:`veneer.runs.versions`) -- and the same figures
   as a markdown table ``<name>.md``.

Every measurement is cached as its own JSON file under ``runs/experiments/<name>/`` (written atomically by
:func:`veneer.runs.write_json`), so a killed study resumes where it stopped: finished seeds are read back, not
measured again. The cache remembers the study's ``config``; a resumption with another config is refused (a
changed ``measure`` is not detected: delete its cache).

Kept in ``experiments/`` (not ``veneer``): it serves this project's committed figures; a library user's run is a
:class:`veneer.runs.RunDir`. A script in ``experiments/`` (its folder is on ``sys.path`` when Python runs it)
imports it as ``from runner import main`` (the command line: ``--seeds``) or, with options of its own,
``seeds_parser`` / ``parse_seeds`` / ``run_study`` (``measure_seeds`` for ``--worker``) / ``print_summary``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from scipy import stats

from veneer.progress import progress_bar
from veneer.runs import atomic_write_bytes, versions, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
CACHE = ROOT / "runs" / "experiments"
GOALS = ("max", "min")

Measure = Callable[..., Mapping[str, float]]


def t_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample sd (``ddof=1``) and the two-sided ``confidence`` Student-t interval of the mean (Student 1908,
    "The probable error of a mean"), ``mean +- t_{(1 + confidence) / 2, n - 1} * sd / sqrt(n)`` with ``t`` the
    quantile of ``scipy.stats.t`` (needs ``n >= 2`` values)."""
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"values must hold at least 2 numbers (one per seed) for an interval, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"values must be finite numbers, got {values}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "half_width": half,
            "confidence": confidence}


def cite(summary: Mapping[str, Any], metric: str, digits: int = 2) -> str:
    """How the docs cite a summary's metric: ``"0.58 +- 0.03"`` (mean +- half width of its 95% interval)."""
    figure = summary["metrics"][metric]
    return f"{figure['mean']:.{digits}f} +- {figure['half_width']:.{digits}f}"


def load_summary(name: str, results: str | Path = RESULTS) -> dict[str, Any]:
    """The committed summary ``<results>/<name>.json`` (what the docs cite)."""
    return json.loads((Path(results) / f"{name}.json").read_text())


def doc_text(path: str | Path) -> str:
    """A doc's text with every run of whitespace made one space, so a cited figure is found whatever the line
    breaks (how the tests check that the docs cite the summaries)."""
    return " ".join(Path(ROOT / path).read_text().split())


def seed_range(seeds: Sequence[int]) -> str:
    """``"seeds 0-4"`` for consecutive seeds, else ``"seeds 0, 3, 7"``."""
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return "seeds " + ", ".join(str(s) for s in seeds)


def _key(setting: Mapping[str, Any]) -> str:
    text = json.dumps(dict(setting), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Cache:
    """Per-measurement JSON files under ``path``; ``config.json`` holds the study's config."""

    def __init__(self, path: Path, config: Mapping[str, Any]):
        self.path = Path(path)
        saved = self.path / "config.json"
        mine = json.loads(json.dumps(dict(config), sort_keys=True))
        if saved.is_file():
            theirs = json.loads(saved.read_text())
            if theirs != mine:
                changed = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
                raise ValueError(f"cache={str(self.path)!r} holds a study with another config (changed: "
                                 f"{', '.join(changed)}); pass another cache directory or delete it")
        else:
            write_json(saved, mine)

    def measured(self, measure: Measure, seed: int, split: str, setting: Mapping[str, Any]) -> dict[str, float]:
        file = self.path / split / _key(setting) / f"seed{seed}.json"
        if file.is_file():
            return json.loads(file.read_text())["metrics"]
        metrics = measure(seed, split, **setting)
        if not isinstance(metrics, Mapping) or not metrics:
            raise TypeError(f"measure must return a non-empty dict of metric -> number, got {metrics!r}")
        metrics = {str(k): float(v) for k, v in metrics.items()}
        write_json(file, {"seed": seed, "split": split, "setting": dict(setting), "metrics": metrics})
        return metrics


def _check(name: str, seeds: Sequence[int], grid, select_metric, goal: str, selection_split: str,
           report_split: str) -> list[dict[str, Any]]:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a non-empty file stem without '/', got {name!r}")
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"seeds must be at least 2 distinct integers (a 95% interval needs them), got {list(seeds)}")
    if goal not in GOALS:
        raise ValueError(f"goal must be one of {GOALS}, got {goal!r}")
    if grid is None:
        if select_metric is not None:
            raise ValueError("select_metric chooses among a grid: pass grid= too, or leave select_metric out")
        return [{}]
    grid = list(grid)
    if not grid or not all(isinstance(g, Mapping) for g in grid):
        raise ValueError(f"grid must be a non-empty list of settings (dicts of keyword arguments), got {grid!r}")
    if select_metric is None:
        raise ValueError("grid= needs select_metric=: the metric whose validation mean chooses the setting")
    if selection_split == report_split:
        raise ValueError(f"selection_split and report_split must differ (a setting chosen on the split that reports "
                         f"it is in-sample), got {selection_split!r} for both")
    return [dict(g) for g in grid]


def run_study(name: str, measure: Measure, seeds: Sequence[int], *, what: str, config: Mapping[str, Any],
              splits: Mapping[str, str], grid: Sequence[Mapping[str, Any]] | None = None,
              select_metric: str | None = None, goal: str = "max", selection_split: str = "validation",
              report_split: str = "test", results: str | Path = RESULTS, cache: str | Path | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Measure ``measure`` over ``seeds`` (module docstring), write ``<results>/<name>.json`` and ``.md`` and
    return the summary. ``what``: one sentence saying what is measured; ``config``: the fixed settings (stored,
    and checked on resumption); ``splits``: each split's description (which rows), e.g.
    ``{"test": "Adult test rows, 32 per seed"}``. ``cache`` defaults to ``runs/experiments/<name>``."""
    seeds = list(seeds)
    settings = _check(name, seeds, grid, select_metric, goal, selection_split, report_split)
    used = [report_split] if grid is None else [selection_split, report_split]
    missing = [s for s in used if s not in splits]
    if missing:
        raise ValueError(f"splits must describe every split the study reads {used}, missing {missing}")
    store = _Cache(Path(cache) if cache is not None else CACHE / name, config)
    summary: dict[str, Any] = {"name": name, "what": what, "config": dict(config), "seeds": seeds,
                               "splits": {s: splits[s] for s in used}, "report_split": report_split}
    chosen = settings[0]
    if grid is not None:
        scores = []
        for setting in progress_bar(settings, desc=f"{name}: selection", disable=not progress):
            values = [store.measured(measure, seed, selection_split, setting)[select_metric] for seed in seeds]
            scores.append({"setting": setting, "mean": sum(values) / len(values), "values": values})
        best = (max if goal == "max" else min)(scores, key=lambda s: s["mean"])
        chosen = best["setting"]
        summary.update(grid=settings, selection={"split": selection_split, "metric": select_metric, "goal": goal,
                                                 "scores": scores}, chosen=chosen)
    per_seed = [store.measured(measure, seed, report_split, chosen)
                for seed in progress_bar(seeds, desc=f"{name}: {report_split}", disable=not progress)]
    summary["metrics"] = {metric: {**t_interval([row[metric] for row in per_seed]),
                                   "values": [row[metric] for row in per_seed]} for metric in per_seed[0]}
    summary["versions"] = versions()
    results = Path(results)
    write_json(results / f"{name}.json", summary)
    atomic_write_bytes(results / f"{name}.md", markdown_table(summary).encode())
    return summary


def measure_seeds(name: str, measure: Measure, seeds: Sequence[int], *, config: Mapping[str, Any],
                  split: str = "test", setting: Mapping[str, Any] | None = None,
                  cache: str | Path | None = None) -> list[dict[str, float]]:
    """Fill the cache of study ``name`` with ``seeds``' measurements of ``setting`` on ``split`` and return them,
    writing no summary: how several processes share a study's seeds (each measures its own, then one
    :func:`run_study` over all of them reads the cache back)."""
    store = _Cache(Path(cache) if cache is not None else CACHE / name, config)
    return [store.measured(measure, seed, split, dict(setting or {})) for seed in seeds]


def markdown_table(summary: Mapping[str, Any], digits: int = 4) -> str:
    """The summary's figures as a markdown table: one row per metric, with its per-seed values."""
    split = summary["report_split"]
    lines = [f"# {summary['name']}", "", summary["what"], "",
             f"Reported on the {split} split ({summary['splits'][split]}); "
             f"{seed_range(summary['seeds'])}; 95% Student-t interval of the mean over seeds.", ""]
    if "selection" in summary:
        selection = summary["selection"]
        lines += [f"Setting {json.dumps(summary['chosen'])} chosen on the {selection['split']} split "
                  f"({selection['goal']} mean {selection['metric']} of {len(summary['grid'])} settings).", ""]
    lines += ["| metric | mean | sd | 95% interval | per seed |", "|---|---|---|---|---|"]
    for metric, f in summary["metrics"].items():
        values = ", ".join(f"{v:.{digits}f}" for v in f["values"])
        lines.append(f"| {metric} | {f['mean']:.{digits}f} | {f['sd']:.{digits}f} | "
                     f"{f['low']:.{digits}f} - {f['high']:.{digits}f} | {values} |")
    return "\n".join(lines) + "\n"


def seeds_parser(doc: str, default_seeds: str = "0,1,2", worker: bool = True) -> argparse.ArgumentParser:
    """The command line every experiment script shares: ``--seeds`` (comma-separated) and, with ``worker``,
    ``--worker`` (measure the seeds into the study's cache, no summary: :func:`measure_seeds`). A script adds its own
    options, then calls :func:`parse_seeds`."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seeds", default=default_seeds, help=f"comma-separated seeds (default {default_seeds})")
    if worker:
        parser.add_argument("--worker", action="store_true", help="measure the seeds into the cache, no summary")
    return parser


def parse_seeds(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, list[int]]:
    """``(options, seeds)`` of a :func:`seeds_parser` command line, with one torch thread (the machine is shared)."""
    options = parser.parse_args()
    try:
        seeds = [int(s) for s in options.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {options.seeds!r}")
    torch.set_num_threads(1)
    return options, seeds


def print_summary(summary: Mapping[str, Any]) -> None:
    """Each metric's mean, 95% interval and per-seed values, a line each."""
    for metric, figure in summary["metrics"].items():
        print(f"{metric}: {figure['mean']:.4f} (95% {figure['low']:.4f} - {figure['high']:.4f}) {figure['values']}")


def main(name: str, measure: Measure, doc: str, default_seeds: str = "0,1,2,3,4", **study: Any) -> dict[str, Any]:
    """The command line of an experiment script with no options of its own: ``--seeds``, :func:`run_study` with
    ``study``'s keywords, and :func:`print_summary`."""
    _, seeds = parse_seeds(seeds_parser(doc, default_seeds, worker=False))
    summary = run_study(name, measure, seeds, **study)
    print_summary(summary)
    return summary
