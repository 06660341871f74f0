"""The behaviour budget of a fine-tune: "the fine-tuned model keeps the original model's labels on at least
``min_agreement`` of the validation inputs", enforced by dual ascent (:class:`BehaviourBudget`)."""

from __future__ import annotations

import math
import statistics
from typing import Callable

import torch
from torch import nn

from veneer.data import LabeledData


def wilson_lower_bound(share: float, n: int, z: float) -> float:
    """Lower end of the Wilson score interval (Wilson 1927, JASA 22) of a proportion ``share`` observed on ``n``
    trials, ``z`` standard normal quantiles wide (one-sided; ``z = 0``: ``share`` itself)."""
    if z <= 0:
        return share
    denominator = 1 + z * z / n
    centre = share + z * z / (2 * n)
    spread = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return (centre - spread) / denominator


ODDS_RANGE = 10.0  # the change of alpha's odds mu = (1 - alpha) / alpha a budgeted run must be able to make
AUTO = "auto"  # check_every="auto": as many steps between checks as leave checks_needed(dual_lr) checks


def checks_needed(dual_lr: float, odds: float = ODDS_RANGE) -> int:
    """The checks the dual ascent of :class:`BehaviourBudget` needs to change the multiplier ``mu`` (alpha's odds)
    by a factor ``odds``: each check moves ``log mu`` by ``dual_lr * gap``, and while the agreement stays within one
    budget width of ``min_agreement`` (between ``2 min_agreement - 1`` and 1: a run near its budget) ``|gap| <= 1``,
    so the move is at most ``dual_lr`` and ``ceil(ln(odds) / dual_lr)`` checks are needed (24 for the default
    ``dual_lr = 0.1`` and a tenfold change, e.g. alpha 0.5 -> 0.09)."""
    return math.ceil(math.log(odds) / dual_lr - 1e-9)


def check_schedule(attack_steps: int, check_every: int | str, dual_lr: float) -> dict[str, int | bool]:
    """How often a budgeted run of ``attack_steps`` steps checks, and whether that is enough: ``check_every`` (the
    steps between checks; ``"auto"``: ``attack_steps // checks_needed(dual_lr)``, at least 1), ``checks`` (the
    checks the attack phase makes), ``checks_needed`` (:func:`checks_needed`) and ``short_horizon`` (``checks <
    checks_needed``: the multiplier cannot move alpha's odds tenfold before the run ends; then the run likely
    returns an early iterate or the original model, measured in docs/manipulate.md)."""
    needed = checks_needed(dual_lr)
    every = max(1, attack_steps // needed) if check_every == AUTO else check_every
    checks = attack_steps // every
    return {"check_every": every, "checks": checks, "checks_needed": needed, "short_horizon": checks < needed}


class BehaviourBudget:
    """The constraint ``agreement(student, original) >= min_agreement`` on validation data, enforced with a
    Lagrange multiplier ``mu`` on ``L_keep`` (Platt & Barr 1988, "Constrained Differential Optimization"; the
    dual-ascent scheme of constrained deep learning, e.g. Cotter et al. 2019): each step minimises
    ``(L_attack + mu * L_keep) / (1 + mu)``, i.e. ``alpha = 1 / (1 + mu)``. In the thesis' convention
    ``L_keep + lambda * L_attack`` (:func:`~veneer.finetune.lambda_to_alpha`) the multiplier is ``mu = 1 / lambda``:
    it weighs the constraint's loss, ``lambda`` the attack's. Every ``check_every`` steps ``log mu`` moves by
    ``dual_lr * (min_agreement - agreement) / (1 - min_agreement)`` (up while the budget is broken, down while it
    holds), clamped to ``[1e-3, 1e4]``. It starts at the ``alpha`` given.

    At each check the student is measured with its own activations (ReLU, not the training surrogate): the
    agreement with the original model's labels and the accuracy on the validation data, and ``L_attack`` on a
    fixed validation batch (the attack loss's pure :meth:`~veneer.finetune.AttackLoss.measure`, which leaves the
    attack's state as it is). An iterate *meets the budget* when its agreement reaches ``min_agreement``; with
    ``confidence > 0.5``, when the one-sided ``confidence`` lower bound of its agreement (the Wilson score
    interval, Wilson 1927, for ``n`` validation inputs) does, so that the agreement on new inputs holds with that
    confidence rather than being a lucky count on a small validation set; the multiplier moves on that bound.
    The iterate with the lowest validation ``L_attack`` among those that meet the budget is kept and returned
    (on a tie, the one with the higher agreement: the recalibration phase leaves ``L_attack`` as it was);
    the original model (step 0, checked before training) meets any budget, so a run in
    which no fine-tuned iterate does returns it, with a warning.
    """

    def __init__(self, min_agreement: float, alpha: float, validation: LabeledData, teacher: nn.Module,
                 dual_lr: float, batch: int, device: torch.device, confidence: float = 0.5):
        self.min_agreement, self.dual_lr = float(min_agreement), float(dual_lr)
        self.z = statistics.NormalDist().inv_cdf(confidence)
        best_possible = wilson_lower_bound(1.0, len(validation), self.z)
        share = self.min_agreement
        if best_possible < share:
            needed = (f"at least {math.ceil(self.z * self.z * share / (1 - share))} validation inputs, "
                      if share < 1 else "")
            raise ValueError(f"validation holds {len(validation)} inputs: even full agreement has a {confidence:g} "
                             f"lower bound of {best_possible:.4f} < min_agreement={share:g}; pass {needed}"
                             f"a lower min_agreement or confidence=0.5 (the observed agreement)")
        self.validation, self.batch, self.device = validation, batch, device
        self.multiplier = min(max((1 - alpha) / max(alpha, 1e-12), 1e-3), 1e4)
        with torch.no_grad():
            self.original = self._labels(teacher)
        self.best_attack, self.best_agreement, self.best_step = math.inf, 0.0, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    @property
    def alpha(self) -> float:
        """The weight of ``L_attack`` now: ``1 / (1 + mu)``."""
        return 1.0 / (1.0 + self.multiplier)

    @torch.no_grad()
    def _labels(self, model: nn.Module) -> torch.Tensor:
        return torch.cat([model(part.to(self.device)).argmax(1).cpu() for part in self.validation.x.split(512)])

    def check(self, attack_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], float], student: nn.Module,
              step: int) -> dict[str, float]:
        """Measure the student, keep it when it is the best that meets the budget, move the multiplier.
        ``attack_loss(student, x, y)``: ``L_attack`` of the student on the fixed validation batch ``(x, y)``
        (a pure measurement)."""
        labels = self._labels(student)
        agreement = float((labels == self.original).float().mean())
        bound = wilson_lower_bound(agreement, len(labels), self.z)
        accuracy = float((labels == self.validation.y).float().mean())
        x, y = self.validation.x[:self.batch].to(self.device), self.validation.y[:self.batch].to(self.device)
        attack = float(attack_loss(student, x, y))
        meets = step == 0 or bound >= self.min_agreement
        if meets and (attack, -agreement) < (self.best_attack, -self.best_agreement):
            self.best_attack, self.best_agreement, self.best_step = attack, agreement, step
            self.best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        gap = (self.min_agreement - bound) / max(1.0 - self.min_agreement, 1e-3)
        self.multiplier = min(max(self.multiplier * math.exp(self.dual_lr * gap), 1e-3), 1e4)
        return {"val_agreement": agreement, "val_agreement_bound": bound, "val_accuracy": accuracy,
                "val_attack": attack, "multiplier": self.multiplier}

    def state(self) -> dict[str, torch.Tensor]:
        found = {"budget.numbers": torch.tensor([self.multiplier, self.best_attack, float(self.best_step),
                                                 self.best_agreement], dtype=torch.float64)}
        found.update({f"budget.best.{k}": v for k, v in (self.best_state or {}).items()})
        return found

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.multiplier, self.best_attack, best_step, self.best_agreement = state["budget.numbers"].tolist()
        self.best_step = int(best_step)
        best = {k[len("budget.best."):]: v.to(self.device) for k, v in state.items() if k.startswith("budget.best.")}
        self.best_state = best or None

