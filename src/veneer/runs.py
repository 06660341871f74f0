"""Run directories: every run writes its config, library versions and metrics as JSON, atomically."""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def versions() -> dict[str, str]:
    import veneer

    found = {"python": sys.version.split()[0], "platform": platform.platform(), "veneer": veneer.__version__}
    for module in ("torch", "numpy", "scipy", "pandas", "captum"):
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            pass
    return found


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_jsonable) + "\n").encode())


class RunDir:
    """A run's output folder: ``config.json`` (arguments, seed, versions) at start, ``metrics.json`` at the end."""

    def __init__(self, path: str | os.PathLike, config: dict[str, Any], seed: int):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json(self.path / "config.json",
                   {"config": config, "seed": seed, "versions": versions(), "started": started})

    def file(self, name: str) -> Path:
        return self.path / name

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        target = self.path / "metrics.json"
        write_json(target, metrics)
        return target
