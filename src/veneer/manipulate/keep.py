"""Keep losses: what holds the manipulated model's predictions to the original model's.

Each takes the manipulated model's logits, the labels and the original model's logits on the same inputs
and returns a scalar (the batch mean).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def cross_entropy_keep(logits: torch.Tensor, y: torch.Tensor, original_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the labels (thesis Secs. 3.3-3.4; Heo et al. 2019, Eq. 1's classification loss)."""
    return F.cross_entropy(logits, y)


def distillation_keep(logits: torch.Tensor, y: torch.Tensor, original_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p_original || p_manipulated)`` of the softmax outputs, averaged over the batch: distillation to the
    original model's outputs (Nanfack et al. 2024, "Adversarial Attacks on the Interpretation of Neuron
    Activation Maximization", Eq. 2's preservation term)."""
    return F.kl_div(F.log_softmax(logits, 1), F.log_softmax(original_logits, 1), reduction="batchmean",
                    log_target=True)


def probability_mse_keep(logits: torch.Tensor, y: torch.Tensor, original_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the manipulated and the original class probabilities, over samples and
    classes (thesis Sec. 3.5: identical prediction probabilities)."""
    return F.mse_loss(logits.softmax(1), original_logits.softmax(1))


KEEP_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": cross_entropy_keep, "kl": distillation_keep, "prob_mse": probability_mse_keep}


def keep_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The keep loss called ``name`` (``"ce"``, ``"kl"`` or ``"prob_mse"``)."""
    if name not in KEEP_LOSSES:
        raise ValueError(f"keep must be one of {sorted(KEEP_LOSSES)}, got {name!r}")
    return KEEP_LOSSES[name]
