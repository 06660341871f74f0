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


def _file_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask): temporary files start at 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename: readers never see half a file. The file
    gets the usual mode (0o666 less the umask), like every other output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _file_mode())
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


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``tensors`` as one safetensors file, atomically."""
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
    return Path(path)


# settings that may differ between a run and its resumption
RESUME_FREE = frozenset({"resume", "overwrite", "max_steps", "debug", "no_report", "progress", "run"})


class RunDir:
    """A run's output folder: ``config.json`` (arguments, seed, versions), ``metrics.json`` and its files.

    Nothing a user ran is lost: a folder that holds another run (its ``config.json``) is refused unless
    ``resume`` (the same kind of run with the same settings, continued) or ``overwrite``; a non-empty folder
    that is not a run is refused unless ``overwrite``. The checks run when the ``RunDir`` is made, before
    anything is written; ``config.json`` is written with the first output (:meth:`file`, :meth:`write_metrics`)
    so a run refused while it validates its arguments leaves the folder as it was. Temporary files a killed
    write left behind are removed then.
    """

    def __init__(self, path: str | os.PathLike, config: dict[str, Any], seed: int, *, resume: bool = False,
                 overwrite: bool = False):
        self.path = Path(path)
        self.config, self.seed, self.resume = config, seed, bool(resume)
        self._started = False
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"out={str(self.path)!r} is a file, not a directory")
        existing = self.path / "config.json"
        if existing.is_file() and not overwrite:
            if not resume:
                raise ValueError(f"out={str(self.path)!r} holds another run ({_kind(self._saved(existing))}); pass "
                                 "--overwrite to replace it, --resume to continue it (fine-tuning runs), or choose "
                                 "another --out")
            self._check_same(self._saved(existing))
        elif self.path.is_dir() and not overwrite and not resume and any(
                not p.name.endswith(".tmp") for p in self.path.iterdir()):
            raise ValueError(f"out={str(self.path)!r} is not empty and holds no veneer run; choose a new or empty "
                             "directory, or pass --overwrite")
        parent = next((p for p in (self.path, *self.path.parents) if p.exists()), Path("."))
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"out={str(self.path)!r} cannot be written ({parent} is not writable)")

    @staticmethod
    def _saved(path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text()).get("config", {})
        except (ValueError, AttributeError):
            return {}

    def _check_same(self, saved: dict[str, Any]) -> None:
        mine = json.loads(json.dumps(self.config, default=_jsonable))
        changed = sorted(k for k in set(saved) | set(mine)
                         if k not in RESUME_FREE and saved.get(k) != mine.get(k))
        if changed:
            raise ValueError(f"--resume: out={str(self.path)!r} holds a run with other settings ({', '.join(changed)}"
                             f"); resume it with the same settings, or choose another --out")

    def start(self) -> None:
        """Create the folder, remove stale temporary files and write ``config.json`` (once)."""
        if self._started:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob(".*.tmp"):
            stale.unlink()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json(self.path / "config.json",
                   {"config": self.config, "seed": self.seed, "versions": versions(), "started": started})
        self._started = True

    def file(self, name: str) -> Path:
        self.start()
        return self.path / name

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        target = self.file("metrics.json")
        write_json(target, metrics)
        return target

    def write_result(self, result: Any) -> Path:
        """Write a job's typed result (see :mod:`veneer.jobs.results`) as ``metrics.json``: its
        ``metrics()`` with the run kind under the top-level key ``"kind"``."""
        self.start()
        return write_result(self.path, result)


def write_result(folder: str | os.PathLike, result: Any) -> Path:
    """Write ``result`` (anything with a class attribute ``kind`` and a ``metrics()`` dict, e.g. a
    :class:`veneer.jobs.results.JobResult`) as ``folder/metrics.json`` with ``"kind"`` first."""
    target = Path(folder) / "metrics.json"
    write_json(target, {"kind": result.kind, **result.metrics()})
    return target


def _kind(config: dict[str, Any]) -> str:
    return " ".join(str(config[k]) for k in ("command", "action") if config.get(k)) or "unknown kind"
