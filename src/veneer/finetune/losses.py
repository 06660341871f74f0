"""The keep losses ``L_keep`` of the fine-tuning engine, mixup for them, and the thesis' weight ``lambda``."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

def cross_entropy_keep(logits: torch.Tensor, y: torch.Tensor, original_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy to the labels (thesis Secs. 3.3-3.4; Heo et al. 2019, Eq. 1's classification loss)."""
    return F.cross_entropy(logits, y)


def distillation_keep(logits: torch.Tensor, y: torch.Tensor, original_logits: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """``T^2 KL(softmax(z_0 / T) || softmax(z / T))``, averaged over the batch: distillation to the original
    model's outputs (Nanfack et al. 2024, Eq. 2's ``L_M``; the temperature ``T`` of Hinton et al. 2015,
    "Distilling the Knowledge in a Neural Network", the ``T^2`` keeping the gradients' scale). It differs
    from the cross-entropy to the soft targets by the teacher's entropy, a constant: same gradients."""
    return F.kl_div(F.log_softmax(logits / temperature, 1), F.log_softmax(original_logits / temperature, 1),
                    reduction="batchmean", log_target=True) * temperature ** 2


def probability_mse_keep(logits: torch.Tensor, y: torch.Tensor, original_logits: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
    """Mean squared difference between the manipulated and the original class probabilities, over samples and
    classes (thesis Sec. 3.5: identical prediction probabilities)."""
    return F.mse_loss(logits.softmax(1), original_logits.softmax(1))


def original_label_keep(logits: torch.Tensor, y: torch.Tensor, original_logits: torch.Tensor,
                        temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy to the original model's predicted labels ``argmax z_0``: hard-label distillation (Hinton
    et al. 2015, Sec. 2, the "hard targets" term). It keeps exactly what a ``min_agreement`` budget measures --
    the labels -- and, unlike ``"kl"``, leaves the probabilities free once a label is held with a margin."""
    return F.cross_entropy(logits, original_logits.argmax(1))


KEEP_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ce": cross_entropy_keep, "kl": distillation_keep, "prob_mse": probability_mse_keep,
    "argmax_ce": original_label_keep}


def mixup_inputs(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each row mixed with another row of the batch, ``l x_i + (1 - l) x_j`` with ``l ~ U(0, 1)`` per row (mixup,
    Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization", Eq. 1, with Beta(1, 1)): inputs between the
    training images, where a distilled student disagrees with its teacher most (Stanton et al. 2021, "Does
    Knowledge Distillation Really Work?", Sec. 5: mixup raised student-teacher agreement on test data)."""
    partner = torch.randperm(len(x), generator=generator).to(x.device)
    share = torch.rand(len(x), generator=generator).to(x.device, x.dtype).view(-1, *[1] * (x.ndim - 1))
    return share * x + (1 - share) * x[partner]


def keep_loss(name: str) -> Callable[..., torch.Tensor]:
    """The keep loss called ``name`` (``"ce"``, ``"kl"``, ``"prob_mse"`` or ``"argmax_ce"``):
    ``f(logits, y, original_logits, temperature)``."""
    if name not in KEEP_LOSSES:
        raise ValueError(f"keep must be one of {sorted(KEEP_LOSSES)}, got {name!r}")
    return KEEP_LOSSES[name]


def lambda_to_alpha(lam: float) -> float:
    """The ``alpha`` of ``alpha * L_attack + (1 - alpha) * L_keep`` for the thesis' weight ``lambda`` of
    ``L_keep + lambda * L_attack``."""
    if not lam >= 0 or math.isinf(lam):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    return lam / (1 + lam)
