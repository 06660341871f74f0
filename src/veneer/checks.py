"""Argument checks shared by every layer: each error names the argument and what was expected."""

from __future__ import annotations

import torch
from torch import nn


def check_tensor(
    name: str,
    x: object,
    *,
    ndim: int | tuple[int, ...] | None = None,
    floating: bool = True,
    finite: bool = True,
) -> torch.Tensor:
    """Return ``x`` if it is a tensor of the expected rank and dtype without NaN/inf, else raise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {tuple(x.shape)}"
            )
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if finite and x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_finite_parameters(model: nn.Module, name: str = "model") -> None:
    """Refuse a model with NaN or infinite parameters or buffers (its outputs would be meaningless)."""
    for key, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{name} has NaN or infinite values in {key!r}; check the weights file")


def check_not_torchscript(model: nn.Module, needs: str, name: str = "model") -> None:
    """Refuse a TorchScript model where ``needs`` (e.g. forward hooks) is something TorchScript does not offer."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError(f"{name} is a TorchScript model, and {needs}, which TorchScript does not support; pass "
                         "the model as a Python nn.Module (e.g. --model module:function --weights FILE)")


def check_eval_mode(model: nn.Module, name: str = "model") -> None:
    """Explanations of a model in training mode depend on dropout/batch-norm state: refuse them."""
    if model.training:
        raise ValueError(f"{name} is in training mode; call {name}.eval() before explaining it")


def resolve_target(target: object, logits: torch.Tensor, name: str = "target") -> torch.Tensor:
    """Turn ``None`` (predicted class), an int, or a (B,) tensor into a (B,) long tensor on logits' device."""
    batch, classes = logits.shape[0], logits.shape[-1]
    if target is None:
        return logits.detach().argmax(dim=-1)
    if isinstance(target, bool):
        raise TypeError(f"{name} must be None, an int or a (B,) tensor, got bool")
    if isinstance(target, int):
        target = torch.full((batch,), target, dtype=torch.long, device=logits.device)
    elif isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer class indices, got dtype {target.dtype}")
        if target.ndim == 0:
            target = target.expand(batch)
        if target.shape != (batch,):
            raise ValueError(f"{name} must have shape ({batch},), got {tuple(target.shape)}")
        target = target.to(device=logits.device, dtype=torch.long)
    else:
        raise TypeError(f"{name} must be None, an int or a (B,) tensor, got {type(target).__name__}")
    if ((target < 0) | (target >= classes)).any():
        raise ValueError(f"{name} must lie in [0, {classes - 1}], got values {target.unique().tolist()}")
    return target


def check_labels(model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str = "labels") -> None:
    """Refuse labels outside the model's classes (its output width on one sample), naming them."""
    with torch.no_grad():
        classes = model(x[:1]).shape[-1]
    bad = y[(y < 0) | (y >= classes)]
    if len(bad):
        raise ValueError(f"{name} must lie in [0, {classes - 1}] (the model has {classes} outputs), got "
                         f"{sorted(set(bad.tolist()))[:10]}")


def check_positive(name: str, value: float, *, integer: bool = False) -> None:
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def find_module(model: nn.Module, layer: str, name: str = "layer") -> nn.Module:
    """Look up a submodule by its dotted name, listing the valid names when it does not exist."""
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        known = ", ".join(n for n in modules if n)
        raise ValueError(f"{name}={layer!r} is not a module of the model; known names: {known}")
    return modules[layer]
