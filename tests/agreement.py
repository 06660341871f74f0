"""Helpers shared by the tests that compare veneer with independent implementations (Captum, formulas)."""

import torch
from torch import nn


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def relative_error(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """max |actual - reference| / max |reference|."""
    scale = reference.abs().max()
    assert scale > 0, "the reference is identically zero: the comparison would prove nothing"
    return ((actual - reference).abs().max() / scale).item()


class AgreementLog:
    """Fails a comparison whose relative error exceeds ``rtol`` and remembers the worst error per method."""

    def __init__(self, rtol: float):
        self.rtol = rtol
        self.worst: dict[str, float] = {}

    def check(self, method: str, actual: torch.Tensor, reference: torch.Tensor, rtol: float | None = None) -> None:
        assert actual.shape == reference.shape, (tuple(actual.shape), tuple(reference.shape))
        assert actual.dtype == torch.float64 and torch.isfinite(actual).all()
        err = relative_error(actual, reference.to(actual.dtype))
        self.worst[method] = max(self.worst.get(method, 0.0), err)
        assert err <= (self.rtol if rtol is None else rtol), f"{method}: relative error {err:.3g}"

    def report(self, title: str) -> None:
        if self.worst:
            print(f"\nmax relative error against {title}:")
            for method, err in sorted(self.worst.items()):
                print(f"  {method:<40s} {err:.3e}")


FD_RTOL = 1e-4  # central differences with h = 1e-6 in float64


def perturbed_losses(loss, tensor: torch.Tensor, index: int, h: float) -> tuple[float, float]:
    """(loss(t + h e_i), loss(t - h e_i)), perturbing ``tensor`` (a parameter or input) in place and restoring it."""
    flat = tensor.data.view(-1)
    original = flat[index].item()
    flat[index] = original + h
    up = loss()
    flat[index] = original - h
    down = loss()
    flat[index] = original
    return up, down


def central_difference(loss, tensor: torch.Tensor, index: int, h: float = 1e-6) -> float:
    """(loss(t + h e_i) - loss(t - h e_i)) / 2h."""
    up, down = perturbed_losses(loss, tensor, index, h)
    return (up - down) / (2 * h)


def attribution_parameter_gradients(explainer, model: nn.Module, x: torch.Tensor, target: torch.Tensor, seed: int):
    """The loss ``sum(w * attribution)`` (``w`` seeded Gaussian weights) as a function for finite differences,
    and its autograd gradients: ``(names, params, grads, loss)``; grads are None for unused parameters."""
    attr = explainer(x, target, create_graph=True)
    w = torch.randn(attr.shape, generator=generator(seed), dtype=attr.dtype)
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad((attr * w).sum(), params, allow_unused=True)

    def loss() -> float:
        return (explainer(x, target) * w).sum().item()

    return names, params, grads, loss


def check_against_finite_differences(name: str, analytic: torch.Tensor, tensor: torch.Tensor, loss, seed: int,
                                     count: int = 6) -> None:
    """Central differences on the largest entries of |analytic| and random ones, ``count`` in all."""
    flat = analytic.reshape(-1)
    assert flat.abs().max() > 0, f"{name}: gradient is zero but the attribution depends on it"
    chosen = flat.abs().topk(min(2, flat.numel())).indices.tolist()
    chosen += [i for i in torch.randperm(flat.numel(), generator=generator(seed)).tolist() if i not in chosen]
    entries = chosen[:count]
    numeric = torch.tensor([central_difference(loss, tensor, i) for i in entries], dtype=torch.float64)
    picked = flat[entries].detach()
    scale = max(picked.abs().max().item(), numeric.abs().max().item())
    err = (picked - numeric).abs().max().item() / scale
    assert err < FD_RTOL, f"{name}: autograd {picked.tolist()} vs finite differences {numeric.tolist()} ({err:.3g})"


def randomize_batch_norm(model: nn.Module, seed: int) -> nn.Module:
    """Give every batch-norm layer non-trivial float64 scale, shift and running statistics (in place)."""
    g = generator(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=torch.float64) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=torch.float64) + 0.5)
    return model
