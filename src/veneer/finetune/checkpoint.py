"""Atomic, bit-identical checkpoints of a fine-tuning run: weights, optimiser, every RNG, the attack's state."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from veneer.runs import atomic_write_bytes

CHECKPOINT = "checkpoint.safetensors"


def _rng_state(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(keys.astype(np.int64)),
               "rng.generator": generator.get_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return tensors, {"numpy": [kind, pos, has_gauss, cached], "python": random.getstate()}


def _set_rng_state(tensors: dict[str, torch.Tensor], info: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.generator"])
    kind, pos, has_gauss, cached = info["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, state, gauss = info["python"]
    random.setstate((version, tuple(state), gauss))
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    history: list[dict], fingerprint: dict[str, Any], generator: torch.Generator,
                    state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write weights, optimiser state, RNG states (torch, NumPy, Python, CUDA, the sampler's generator), the
    attack's own ``state`` tensors, step and history as one safetensors file, atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"state.{k}": v.detach().cpu().contiguous() for k, v in (state or {}).items()})
    optimizer_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in optimizer_state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    rng_tensors, rng_info = _rng_state(generator)
    tensors.update(rng_tensors)
    metadata = {"step": str(step), "history": json.dumps(history), "fingerprint": json.dumps(fingerprint),
                "param_groups": json.dumps(optimizer_state["param_groups"]),
                "optimizer_scalars": json.dumps(scalars), "rng": json.dumps(rng_info)}
    path = Path(path)
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=metadata))
    return path


def checkpoint_step(path: str | os.PathLike, fingerprint: dict[str, Any]) -> int:
    """The step a checkpoint was written at; a checkpoint of other settings raises ``ValueError``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    saved = json.loads(metadata["fingerprint"])
    if saved != json.loads(json.dumps(fingerprint)):
        changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
        raise ValueError(f"checkpoint {path} was written by a run with other settings ({', '.join(changed)}); "
                         "use another checkpoint_dir or the same settings")
    return int(metadata["step"])


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    fingerprint: dict[str, Any], generator: torch.Generator
                    ) -> tuple[int, list[dict], dict[str, torch.Tensor]]:
    """Restore what :func:`save_checkpoint` wrote into ``model``, ``optimizer``, the RNGs and ``generator``;
    return ``(step, history, state)``. A checkpoint of a different configuration raises ``ValueError``."""
    from safetensors import safe_open

    step = checkpoint_step(path, fingerprint)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    device = next(model.parameters()).device
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            optimizer_state.setdefault(int(index), {})[name] = value if name == "step" else value.to(device)
    for index, entry in json.loads(metadata["optimizer_scalars"]).items():
        optimizer_state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": json.loads(metadata["param_groups"])})
    _set_rng_state(tensors, json.loads(metadata["rng"]), generator)
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    return step, json.loads(metadata["history"]), state
