"""What a fine-tuning attack gives the engine: its ``L_attack`` as an object (:class:`AttackLoss`).

Every fine-tuning attack is the engine (:class:`~veneer.finetune.FineTuner`) given one :class:`AttackLoss` per
call; :class:`~veneer.manipulate.Manipulation`, :class:`~veneer.neurons.PushDown`, :class:`~veneer.neurons.PushUp`
and :class:`~veneer.neurons.Fairwash` build theirs from the call's inputs. A new attack is a new loss, handed to
the engine directly (no subclass of the engine needed)::

    class MeanLogit(AttackLoss):  # push the mean logit of class 0 up
        def __call__(self, student, x, y, generator, step):
            logits = student(x)
            return StepOutput(-logits[:, 0].mean(), x, y, logits)

    result = FineTuner(model, steps=100, keep="kl", min_agreement=0.95)(data, loss=MeanLogit())
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from veneer.data import LabeledData


@dataclass
class StepOutput:
    """What an :class:`AttackLoss` returns for one batch.

    ``attack``: the scalar ``L_attack`` (differentiable w.r.t. the student's parameters). ``inputs``: the rows
    ``L_keep`` is measured on; ``labels``: their labels for ``keep="ce"`` (``None``: the original model's
    predictions); ``logits``: the student's logits on ``inputs`` when the loss already ran that forward pass
    (the engine then reuses them instead of running the model again), else ``None``.
    """

    attack: torch.Tensor
    inputs: torch.Tensor
    labels: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class AttackLoss(ABC):
    """``L_attack`` of a fine-tuning run: what the engine calls, and when.

    * :meth:`prepare` ``(data)``: once per run, before anything else (check and index what the loss needs);
    * :meth:`advance` ``(student, step)``: before every training step of the attack phase; the one place the
      loss may update its own state (e.g. :class:`~veneer.neurons.PushUp` refreshes its hard rows);
    * ``__call__(student, x, y, generator, step)`` -> :class:`StepOutput`: ``L_attack`` of one batch ``(x, y)``
      of training rows at step ``step`` (0-based); ``generator`` (seeded, checkpointed) draws any extra rows
      the loss adds. It reads the loss's state, never changes it;
    * :meth:`measure` ``(student, x, y, generator, step)`` -> float: ``L_attack`` for the behaviour budget's
      validation batch, a pure measurement (by default the value of ``__call__``);
    * :meth:`state` / :meth:`load_state`: the tensors :meth:`advance` updates, checkpointed with the run;
    * :meth:`fingerprint`: what a checkpoint must share with the run resuming it (beyond the engine's options).

    Only ``__call__`` must be written; every other method defaults to "nothing to do".
    """

    def prepare(self, data: LabeledData) -> None:
        """Check the loss against the run's ``data`` and index what it needs (once per run)."""

    def advance(self, student: nn.Module, step: int) -> None:
        """Update the loss's own state before training step ``step`` (the budget's checks never call it)."""

    @abstractmethod
    def __call__(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                 step: int) -> StepOutput:
        """``L_attack`` of the batch ``(x, y)`` at step ``step``, reading the loss's state only."""

    def measure(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                step: int) -> float:
        """``L_attack`` of ``student`` on the batch ``(x, y)`` at step ``step``, leaving the loss's state as it is."""
        return float(self(student, x, y, generator, step).attack.detach())

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors :meth:`advance` updates during the run (checkpointed with it)."""
        return {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state` returned."""

    def fingerprint(self) -> dict[str, Any]:
        """Settings of the loss a checkpoint must share to be resumed (``{name: repr}``); by default its class."""
        return {"attack_loss": f"{type(self).__module__}.{type(self).__qualname__}"}
