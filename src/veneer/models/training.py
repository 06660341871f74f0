"""Training, evaluation and safetensors persistence of classifiers."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from veneer.progress import progress_bar
from veneer.runs import atomic_write_bytes, save_tensors, seed_everything


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``x`` in batches, model in eval mode."""
    device = next(model.parameters()).device
    return torch.cat([model(chunk.to(device)).cpu() for chunk in x.split(batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    return (predict(model, x, batch_size).argmax(1) == y).float().mean().item()


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero fill) -- cheap augmentation for small data."""
    if max_shift == 0:
        return x
    pad = torch.nn.functional.pad(x, (max_shift,) * 4)
    h, w = x.shape[-2:]
    offsets = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    return pad[..., offsets[0]:offsets[0] + h, offsets[1]:offsets[1] + w]


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 10, lr: float = 1e-3,
          batch_size: int = 64, weight_decay: float = 0.0, max_shift: int = 0, seed: int = 0,
          x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
          progress: bool = False, desc: str = "train") -> TrainResult:
    """Adam + cross-entropy with a cosine learning-rate schedule; returns the model in eval mode. ``desc`` labels
    the progress bar (e.g. which of several models it trains)."""
    generator = seed_everything(seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    result = TrainResult(model)
    start = time.perf_counter()
    for epoch in progress_bar(range(epochs), desc=desc, disable=not progress):
        model.train()
        total, seen = 0.0, 0
        for xb, yb in loader:
            if xb.ndim == 4:
                xb = random_shift(xb, max_shift, generator)
            loss = nn.functional.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(xb)
            seen += len(xb)
        model.eval()
        record = {"epoch": epoch + 1, "loss": total / seen}
        if x_val is not None:
            record["val_accuracy"] = accuracy(model, x_val, y_val)
        result.history.append(record)
    result.seconds = time.perf_counter() - start
    return result


def save(model: nn.Module, path: str | os.PathLike, metadata: dict[str, Any]) -> Path:
    """Write ``path`` (.safetensors, the state dict) and ``path`` with suffix .json (metadata), atomically."""
    path = save_tensors(Path(path).with_suffix(".safetensors"), model.state_dict())
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(metadata, indent=2) + "\n").encode())
    return path


def _unreadable(error: Exception) -> str:
    """Why a torch file could not be read with ``weights_only=True``, in one line; a file that pickles Python
    objects is refused as such (veneer never unpickles them, whatever torch's own message suggests)."""
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if refused:
        return (f"the file pickles the Python object {refused[1]}, which veneer never loads; save the model's "
                "state_dict() (tensors only), ideally as .safetensors")
    detail = str(error).split(". ")[0] if isinstance(error, RuntimeError) else ""
    return "not a .safetensors file nor a torch file of tensors (a state dict)" + (f" ({detail})" if detail else "")


def load_state(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load weights from .safetensors, or from a torch checkpoint with ``weights_only=True`` (never pickle code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except Exception as error:  # safetensors raises its own error types for a damaged file
            raise ValueError(f"weights file {path} cannot be read as safetensors: {error}") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - torch raises pickle, zip and key errors for unreadable files
            raise ValueError(f"weights={path} (--weights): {_unreadable(error)}") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"weights={path} holds a {type(state).__name__}, expected a state dict")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"weights={path} do not fit the model: {error}") from None
    if missing or unexpected:
        raise ValueError(f"weights={path} do not fit the model: missing keys {missing}, unexpected keys {unexpected}")
    return model
