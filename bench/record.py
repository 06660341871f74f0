"""The measured rows of a bench as JSON, ``bench/results/<bench>.json``: BENCHMARKS.md cites these files
(issue 26: no figure typed by hand; ``tests/test_benchmark_figures.py`` checks the doc against them)."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from veneer.runs import versions, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the rates depend on: CPU, cores, threads and the load average when this is called."""
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "load_average": list(os.getloadavg())}


def write_results(bench: str, settings: dict[str, Any], rows: list[dict[str, Any]], started: dict[str, Any],
                  **figures: Any) -> Path:
    """Write ``bench/results/<bench>.json`` atomically: command line, settings (threads, repeats, ...), library
    versions, the machine at the start (``started``, from ``machine()``) and at the end, the rows and any further
    named ``figures`` of the bench."""
    path = RESULTS / f"{bench}.json"
    write_json(path, {"bench": bench, "command": " ".join([".venv/bin/python", *sys.argv]), "settings": settings,
                      "versions": versions(), "machine_at_start": started, "machine_at_end": machine(),
                      "written": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": rows, **figures})
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return path
