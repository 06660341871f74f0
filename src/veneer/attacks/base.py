"""The shared machinery of input-level attacks on explanations.

Ghorbani, Abid & Zou (2019), "Interpretation of Neural Networks is Fragile" (AAAI), Algorithm 1: signed-gradient
ascent on a dissimilarity between the saliency map of the perturbed input and that of the clean input,
projected onto the l-inf ball of radius ``eps`` around the clean input and onto the valid input range;
among the label-preserving iterates, each image returns the one with the largest dissimilarity.

Every image of a batch is attacked at once and every piece of bookkeeping (accepted iterate, step size,
best iterate, its score and its step) is a per-image tensor updated with ``torch.where``; no Python loop
runs over images. The objective's gradient goes through a Softplus(beta) surrogate of the model (ReLU has
no useful second derivative, Ghorbani et al. Sec. 3; Dombrowski et al. 2019, Sec. 4), while labels and
dissimilarities are always judged on the original model with the original explainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from veneer.checks import check_eval_mode, check_positive, check_tensor, resolve_target
from veneer.explain import Explainer, Influence, heatmap
from veneer.explain.base import check_explainer
from veneer.models import with_softplus
from veneer.progress import progress_bar


@dataclass
class AttackResult:
    """Per-image record of an attack's last call, each field a ``(B,)`` tensor.

    ``dissimilarity``: the attack's score of the returned image on the original model (0 for the clean
    image, larger is better for the attacker; each attack's docstring says what it measures).
    ``label_kept``: whether the original model still predicts the kept label ``y`` for the returned image.
    ``iterations``: the step at which the returned iterate was found (0: the clean image was returned).
    ``linf``: the l-inf distance between the returned and the clean image.
    """

    dissimilarity: torch.Tensor
    label_kept: torch.Tensor
    iterations: torch.Tensor
    linf: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {"dissimilarity": self.dissimilarity, "label_kept": self.label_kept,
                "iterations": self.iterations, "linf": self.linf}


def _check_range_bound(name: str, value: Any) -> float | torch.Tensor:
    if isinstance(value, torch.Tensor):
        return check_tensor(name, value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or a tensor broadcastable to x, got {type(value).__name__}")
    return float(value)


def saliency_map(explainer: Explainer, x: torch.Tensor, target: torch.Tensor, create_graph: bool = False
                 ) -> torch.Tensor:
    """Ghorbani et al.'s saliency map (Sec. 3): the absolute attribution summed over channels, ``(B, H, W)``."""
    return heatmap(explainer(x, target=target, create_graph=create_graph), reduce="abs_sum")


def explanation_map(explainer: Explainer, x: torch.Tensor, target: torch.Tensor, create_graph: bool = False
                    ) -> torch.Tensor:
    """The explanation an attack compares: :func:`saliency_map` for feature attributions, and for
    :class:`~veneer.explain.Influence` each training sample's helpfulness ``-I_up,loss``, ``(B, N_train)``
    (larger = more influential in support of the prediction; Ghorbani et al. 2019, Sec. 3)."""
    if isinstance(explainer, Influence):
        return -explainer(x, target=target, create_graph=create_graph)
    return saliency_map(explainer, x, target, create_graph)


def normalized(saliency: torch.Tensor) -> torch.Tensor:
    """Saliency maps ``(B, H, W)`` scaled to sum 1 each (the "normalized feature importance" of Ghorbani et al.)."""
    return heatmap(saliency, reduce="sum", normalize="sum")


class ExplanationAttack:
    """Base class: validation, label bookkeeping and the projection shared by every input-level attack.

    ``model`` is the attacked classifier (eval mode); ``explainer`` must be built for that same model.
    ``eps`` is the l-inf budget and ``input_range`` the valid ``(low, high)`` input values, both in the
    data's own units: numbers, or tensors broadcastable to ``x`` (e.g. ``(C, 1, 1)`` per-channel bounds
    for normalized data). ``attack(x, y=None)`` returns the perturbed batch; ``y`` is the label to keep
    and the class whose explanation is attacked (default: the model's prediction on ``x``).
    ``attack.result`` holds the per-image :class:`AttackResult` of the last call.
    """

    name = "attack"

    def __init__(self, model: nn.Module, explainer: Explainer, eps: float = 8 / 255,
                 input_range: tuple[Any, Any] = (0.0, 1.0), progress: bool = False):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_explainer(explainer, model)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)):
            raise TypeError(f"eps must be a number, got {eps!r}")
        check_positive("eps", eps)
        if eps == float("inf"):
            raise ValueError("eps must be finite")
        if not isinstance(input_range, (tuple, list)) or len(input_range) != 2:
            raise ValueError(f"input_range must be a (low, high) pair, got {input_range!r}")
        low = _check_range_bound("input_range[0]", input_range[0])
        high = _check_range_bound("input_range[1]", input_range[1])
        if not bool(torch.all(torch.as_tensor(low) < torch.as_tensor(high))):
            raise ValueError(f"input_range must have low < high, got {input_range!r}")
        width = float((torch.as_tensor(high) - torch.as_tensor(low)).max())
        if eps >= width:
            raise ValueError(f"eps={eps!r} is not below the width of input_range ({width:g}): the ball would "
                             "hold every input, so nothing is imperceptible; use eps in the data's units")
        self.model, self.explainer, self.eps = model, explainer, float(eps)
        self.input_range = (low, high)
        self.progress = progress
        self.result: AttackResult | None = None

    # ---------------------------------------------------------------- what subclasses provide

    def prepare(self, x: torch.Tensor, clean_map: torch.Tensor) -> None:
        """Validate attack-specific arguments against ``x`` and store what the scores need (per call)."""

    def dissimilarity(self, saliency: torch.Tensor) -> torch.Tensor:
        """``(B,)`` score of the original model's saliency maps against the clean ones; 0 for the clean maps."""
        raise NotImplementedError

    def search(self, x: torch.Tensor, labels: torch.Tensor, bounds: tuple[torch.Tensor, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(x_best, best_dissimilarity, best_step)`` for the batch."""
        raise NotImplementedError

    # ---------------------------------------------------------------- shared machinery

    def __call__(self, x: torch.Tensor, y: torch.Tensor | int | None = None) -> torch.Tensor:
        x = check_tensor("x", x, ndim=4)
        check_eval_mode(self.model)
        bounds = self._bounds(x)
        if bool(((x < bounds[0]) | (x > bounds[1])).any()):
            raise ValueError(f"x has values outside input_range {self._range_text()}; pass the data's own "
                             "value range (e.g. per-channel bounds for normalized images)")
        x = x.detach()
        with torch.no_grad():
            labels = resolve_target(y, self.model(x), "y")
        self._clean_map = explanation_map(self.explainer, x, labels).detach()
        self.prepare(x, self._clean_map)
        best, score, step = self.search(x, labels, bounds)
        best = best.detach()
        with torch.no_grad():
            kept = self.model(best).argmax(dim=-1) == labels
        linf = (best - x).abs().flatten(1).amax(dim=1)
        self.result = AttackResult(score.detach(), kept, step, linf)
        return best

    def _bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return tuple(torch.broadcast_to(torch.as_tensor(b, dtype=x.dtype, device=x.device), x.shape)
                         for b in self.input_range)
        except RuntimeError:
            raise ValueError(f"input_range bounds must broadcast to x's shape {tuple(x.shape)}, got "
                             f"{self._range_text()}") from None

    def _range_text(self) -> str:
        return str(tuple(tuple(b.shape) if isinstance(b, torch.Tensor) else b for b in self.input_range))

    def project(self, candidate: torch.Tensor, x: torch.Tensor, bounds: tuple[torch.Tensor, torch.Tensor]
                ) -> torch.Tensor:
        """Projection onto the l-inf ball of radius ``eps`` around ``x`` intersected with the input range.

        ``x + delta`` can round one ulp outside the ball; such entries step one ulp back towards ``x``, so
        ``(x_adv - x).abs() <= eps`` holds exactly in ``x``'s dtype.
        """
        delta = (candidate - x).clamp(-self.eps, self.eps)
        out = torch.min(torch.max(x + delta, bounds[0]), bounds[1])
        return torch.where((out - x).abs() > self.eps, torch.nextafter(out, x), out)

    def judge(self, candidate: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(label kept, dissimilarity)`` of each candidate, on the original model and explainer."""
        with torch.no_grad():
            kept = self.model(candidate).argmax(dim=-1) == labels
        score = self.dissimilarity(explanation_map(self.explainer, candidate, labels).detach())
        return kept, score

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                            if k not in ("model", "explainer", "result", "surrogate", "surrogate_explainer")
                            and not k.startswith("_"))
        return f"{type(self).__name__}(explainer={type(self.explainer).__name__}, {options})"


def _per_image(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``(B,)`` mask shaped to broadcast against ``like`` ``(B, ...)``."""
    return mask.view((-1,) + (1,) * (like.ndim - 1))


class IterativeAttack(ExplanationAttack):
    """Ghorbani et al. (2019), Algorithm 1: projected signed-gradient ascent on a differentiable objective.

    Each step ``x_{p} = Proj(x_{p-1} + step_size * sign(grad objective(x_{p-1})))``, the gradient taken through
    ``explainer.with_model(with_softplus(model, softplus_beta))`` with ``create_graph=True`` (``softplus_beta
    =None`` differentiates the model itself, for models without ReLU). The iterate is judged on the original
    model: if it changes the predicted label it is rejected, the image stays at its last accepted iterate and
    its step size is halved (returning to the same point with the same step would repeat the same rejected
    step forever: the sign step is deterministic; Ghorbani et al.'s reference code instead keeps walking
    from rejected iterates and only skips them when choosing the result). Each image returns its accepted
    iterate of largest dissimilarity, or the clean image if none beats it.

    ``step_size`` defaults to ``2.5 * eps / steps`` (Madry et al. 2018's PGD rule: the walk can cross the ball).
    Deterministic: no randomness is drawn, so a batch gives each image the result it gets alone, up to the
    floating-point differences of batched kernels (which can flip the sign of near-zero gradient entries).
    """

    def __init__(self, model: nn.Module, explainer: Explainer, eps: float = 8 / 255, step_size: float | None = None,
                 steps: int = 300, softplus_beta: float | None = 30.0, input_range: tuple[Any, Any] = (0.0, 1.0),
                 progress: bool = False):
        super().__init__(model, explainer, eps, input_range, progress)
        check_positive("steps", steps, integer=True)
        if step_size is None:
            step_size = 2.5 * self.eps / steps
        elif isinstance(step_size, bool) or not isinstance(step_size, (int, float)):
            raise TypeError(f"step_size must be a number or None, got {step_size!r}")
        check_positive("step_size", step_size)
        width = float((torch.as_tensor(self.input_range[1]) - torch.as_tensor(self.input_range[0])).max())
        if step_size >= width:
            raise ValueError(f"step_size={step_size!r} is not below the width of input_range ({width:g})")
        if softplus_beta is not None:
            check_positive("softplus_beta", softplus_beta)
        check_explainer(explainer, model, differentiable=True)
        self.step_size, self.steps, self.softplus_beta = float(step_size), steps, softplus_beta
        self.surrogate = model if softplus_beta is None else with_softplus(model, softplus_beta)
        self.surrogate_explainer = explainer.with_model(self.surrogate)

    def objective(self, saliency: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """``(B,)`` differentiable objective (maximised) of the surrogate's saliency maps of ``x_adv``."""
        raise NotImplementedError

    def before_step(self, step: int) -> None:
        """Hook run before step ``step`` (1-based), e.g. to grow the surrogate's beta."""

    def ascent_direction(self, current: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``sign(d objective / d x)`` at ``current``; each image's objective depends on that image only (zero
        where it does not depend on ``x`` at all: a linear model's saliency map is the same everywhere)."""
        x_adv = current.detach().requires_grad_(True)
        saliency = saliency_map(self.surrogate_explainer, x_adv, labels, create_graph=True)
        objective = self.objective(saliency, x_adv).sum()
        (grad,) = (None,) if not objective.requires_grad else torch.autograd.grad(objective, x_adv, allow_unused=True)
        return torch.zeros_like(x_adv) if grad is None else grad.sign()

    def search(self, x, labels, bounds):
        batch = x.shape[0]
        current, best = x.clone(), x.clone()
        best_score = torch.zeros(batch, dtype=x.dtype, device=x.device)
        best_step = torch.zeros(batch, dtype=torch.long, device=x.device)
        step_size = torch.full((batch,), self.step_size, dtype=x.dtype, device=x.device)
        desc = f"{self.name} ({getattr(self.explainer, 'name', type(self.explainer).__name__)})"
        for step in progress_bar(range(1, self.steps + 1), desc=desc, disable=not self.progress, leave=False):
            self.before_step(step)
            direction = self.ascent_direction(current, labels)
            candidate = self.project(current + _per_image(step_size, x) * direction, x, bounds)
            kept, score = self.judge(candidate, labels)
            current = torch.where(_per_image(kept, x), candidate, current)
            step_size = torch.where(kept, step_size, step_size / 2)
            improved = kept & (score > best_score)
            best = torch.where(_per_image(improved, x), candidate, best)
            best_score = torch.where(improved, score, best_score)
            best_step = torch.where(improved, torch.full_like(best_step, step), best_step)
        return best, best_score, best_step
