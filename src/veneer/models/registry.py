"""Bundled models: trained once on bundled data, cached, and loaded by name; and user models by factory."""

from __future__ import annotations

import fcntl
import importlib
import json
import warnings
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from veneer.data import load_dataset
from veneer.models.blackbox import BLACKBOX_SUFFIXES, load_blackbox
from veneer.models.architectures import digits_mlp, mnist_cnn, mnist_resnet, mnist_vit, tabular_mlp
from veneer.models.training import accuracy, load_state, save, train


@dataclass(frozen=True)
class Recipe:
    """How a bundled model is built and trained: the architecture, its dataset and the training options."""

    build: Callable[[tuple[int, ...]], nn.Module]  # from the shape of one input
    dataset: str
    train_options: dict[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "mnist-cnn": Recipe(lambda shape: mnist_cnn(), "mnist", {"epochs": 12, "lr": 2e-3, "batch_size": 64, "max_shift": 2}),
    "digits-mlp": Recipe(lambda shape: digits_mlp(), "digits", {"epochs": 60, "lr": 3e-3, "batch_size": 64}),
    "adult-mlp": Recipe(lambda shape: tabular_mlp(shape[0], (64, 32), 2), "adult",
                        {"epochs": 8, "lr": 1e-3, "batch_size": 256}),
    # ResNet-8 with batch norm (width 8: ~2 min of training on one core)
    "mnist-resnet": Recipe(lambda shape: mnist_resnet(width=8), "mnist",
                           {"epochs": 10, "lr": 3e-3, "batch_size": 64, "max_shift": 2}),
    # a small vision transformer: 7x7 patches, width 32, 2 blocks of 2 heads (docs/explain_graphs.md, AttnLRP);
    # ~2 min of training on one core, test accuracy 0.946 (seed 0)
    "mnist-vit": Recipe(lambda shape: mnist_vit(), "mnist",
                        {"epochs": 30, "lr": 3e-3, "batch_size": 64, "max_shift": 1}),
}


def cache_dir() -> Path:
    """``$VENEER_CACHE`` if set, else ``$XDG_CACHE_HOME/veneer`` or ``~/.cache/veneer``."""
    if os.environ.get("VENEER_CACHE"):
        return Path(os.environ["VENEER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "veneer"


def train_bundled(name: str, out: str | os.PathLike, seed: int = 0, progress: bool = False,
                  **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Train the bundled model ``name`` on its bundled dataset; write ``out``.safetensors and ``out``.json."""
    if name not in RECIPES:
        raise ValueError(f"model must be one of {sorted(RECIPES)}, got {name!r}")
    recipe = RECIPES[name]
    train_data, test_data = load_dataset(recipe.dataset, "train"), load_dataset(recipe.dataset, "test")
    torch.manual_seed(seed)
    model = recipe.build(tuple(train_data.x.shape[1:]))
    options = {**recipe.train_options, **overrides}
    result = train(model, train_data.x, train_data.y, seed=seed, progress=progress, **options)
    metadata = {
        "name": name, "dataset": recipe.dataset, "architecture": repr(model), "seed": seed,
        "train_options": options, "train_seconds": round(result.seconds, 2),
        "train_accuracy": accuracy(model, train_data.x, train_data.y),
        "test_accuracy": accuracy(model, test_data.x, test_data.y),
        "input_shape": list(train_data.x.shape[1:]),
        "history": result.history,
    }
    save(model, out, metadata)
    return model.eval(), metadata


def _cached_path(name: str, cache: str | os.PathLike | None, seed: int) -> Path:
    stem = name if seed == 0 else f"{name}-seed{seed}"
    return Path(cache or cache_dir()) / f"{stem}.safetensors"


def pretrained(name: str, cache: str | os.PathLike | None = None, progress: bool = False, seed: int = 0) -> nn.Module:
    """The bundled model ``name`` ("mnist-cnn", "mnist-resnet", "mnist-vit", "digits-mlp", "adult-mlp") in eval mode.

    Trained on first use (the MNIST CNN takes about a minute on 2 CPU cores) and cached as safetensors
    in :func:`cache_dir` (or ``cache``); later calls load the cached weights. ``seed`` other than 0 gives an
    independently trained copy (same recipe), cached as ``{name}-seed{seed}``.
    """
    if name not in RECIPES:
        raise ValueError(f"model must be one of {sorted(RECIPES)}, got {name!r}")
    path = _cached_path(name, cache, seed)
    if not path.is_file():
        with _exclusive(path.with_suffix(".lock")):  # concurrent callers (DDP ranks, tests) train only once
            if not path.is_file():
                model, _ = train_bundled(name, path, seed=seed, progress=progress)
                return model
    metadata = json.loads(path.with_suffix(".json").read_text())
    return load_state(RECIPES[name].build(tuple(metadata["input_shape"])), path).eval()


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``lock_path`` (held until the block ends)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pretrained_metadata(name: str, cache: str | os.PathLike | None = None, seed: int = 0) -> dict[str, Any]:
    """The JSON metadata (accuracy, training options, seed) of :func:`pretrained` ``(name, seed=seed)``."""
    pretrained(name, cache, progress=False, seed=seed)
    return json.loads(_cached_path(name, cache, seed).with_suffix(".json").read_text())


def load(factory: str | None = None, weights: str | os.PathLike | None = None,
         torchscript: str | os.PathLike | None = None, **factory_kwargs: Any) -> nn.Module:
    """A user model in eval mode: ``factory="package.module:function"`` builds it (``factory_kwargs`` are passed
    on) and ``weights`` (.safetensors, or a torch state dict read with ``weights_only=True``) fills it; or a
    TorchScript file via ``torchscript``.
    """
    if torchscript is not None:
        if factory is not None or weights is not None:
            raise ValueError("pass either torchscript or factory/weights, not both")
        if not Path(torchscript).is_file():
            raise FileNotFoundError(f"torchscript file not found: {torchscript}")
        return torch.jit.load(str(torchscript), map_location="cpu").eval()
    if factory is None or ":" not in factory:
        raise ValueError(f"factory must look like 'package.module:function', got {factory!r}")
    module_name, _, attr = factory.partition(":")
    try:
        build = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"factory={factory!r} cannot be imported: {error}") from None
    model = build(**factory_kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"factory={factory!r} returned {type(model).__name__}, expected a torch.nn.Module")
    if weights is not None:
        load_state(model, weights)
    else:
        warnings.warn(f"factory={factory!r} built a model with the weights it initialises itself (no weights "
                      "file given): pass weights= (--weights) to explain a trained model", stacklevel=2)
    return model.eval()


def resolve_model(spec: str, weights: str | None = None) -> nn.Module:
    """A CLI model spec: a bundled name, ``module:function`` (with ``weights``), a TorchScript ``.pt`` path or a
    black-box model file (``.onnx``, ``.skops``; :func:`veneer.models.blackbox.load_blackbox`)."""
    if spec in RECIPES:
        if weights is not None:
            shape = tuple(load_dataset(RECIPES[spec].dataset, "test").x.shape[1:])
            return load_state(RECIPES[spec].build(shape), weights).eval()
        return pretrained(spec)
    if ":" in spec:
        return load(factory=spec, weights=weights)
    if Path(spec).suffix in (".pt", ".pth", ".ts") and weights is None:
        return load(torchscript=spec)
    if Path(spec).suffix.lower() in BLACKBOX_SUFFIXES:
        if weights is not None:
            raise ValueError(f"--weights does not apply to the model file {spec!r} (it holds the whole model)")
        return load_blackbox(spec)
    raise ValueError(f"model must be one of {sorted(RECIPES)}, 'module:function', a TorchScript file or an "
                     f".onnx/.skops file, got {spec!r}")
