"""Attack many images with several attacks, explainers and budgets: Ghorbani et al. (2019), Fig. 3."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from veneer.attacks.base import ExplanationAttack
from veneer.attacks.evaluation import explanation_change
from veneer.attacks.ghorbani import MassCenter, RandomSign, TopK
from veneer.checks import check_positive
from veneer.explain import Explainer
from veneer.progress import progress_bar

ATTACKS: dict[str, type[ExplanationAttack]] = {"random": RandomSign, "top-k": TopK, "mass-center": MassCenter}


def make_attack(name: str, model: nn.Module, explainer: Explainer, eps: float, *, steps: int = 300,
                step_size: float | None = None, softplus_beta: float | None = 30.0, k: int = 100,
                input_range: tuple[Any, Any] = (0.0, 1.0), seed: int = 0, progress: bool = False
                ) -> ExplanationAttack:
    """An untargeted attack by its CLI name (see ``ATTACKS``), given the options that apply to it:
    ``seed`` to ``random``, ``steps``/``step_size``/``softplus_beta`` to the iterative ones, ``k`` to ``top-k``."""
    if name not in ATTACKS:
        raise ValueError(f"attack must be one of {sorted(ATTACKS)}, got {name!r}")
    if name == "random":
        return RandomSign(model, explainer, eps=eps, input_range=input_range, seed=seed, progress=progress)
    options = {"eps": eps, "steps": steps, "step_size": step_size, "softplus_beta": softplus_beta,
               "input_range": input_range, "progress": progress}
    if name == "top-k":
        options["k"] = k
    return ATTACKS[name](model, explainer, **options)


@dataclass
class Outcome:
    """One attack with one explainer at one ``eps`` on a set of images: the perturbed images, the attack's
    per-image record and the explanation-change metrics (each a ``(n,)`` tensor), and the run time."""

    attack: str
    method: str
    eps: float
    x_adv: torch.Tensor
    per_image: dict[str, torch.Tensor]
    seconds: float

    def summary(self) -> dict[str, Any]:
        """Means over the images: label-kept rate, Spearman, top-k intersection, COM shift (pixels),
        l-inf used, the attack's dissimilarity and best-iterate step; run time and throughput."""
        values = {name: tensor.double().mean().item() for name, tensor in self.per_image.items()}
        n = len(self.x_adv)
        return {"attack": self.attack, "method": self.method, "eps": self.eps, "n": n,
                "label_kept_rate": values["label_kept"], "spearman": values["spearman"],
                "topk_intersection": values["topk_intersection"], "com_shift": values["com_shift"],
                "linf": values["linf"], "dissimilarity": values["dissimilarity"], "iterations": values["iterations"],
                "seconds": self.seconds, "images_per_second": n / self.seconds if self.seconds > 0 else float("inf")}


def attack_images(attack: ExplanationAttack, x: torch.Tensor, y: torch.Tensor, k: int, batch_size: int
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``attack`` on ``x`` ``batch_size`` images at a time; return the perturbed images and the per-image
    record (:class:`~veneer.attacks.base.AttackResult` fields plus :func:`explanation_change` at ``k``)."""
    check_positive("batch_size", batch_size, integer=True)
    images, records = [], []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        x_adv = attack(xb, yb)
        record = attack.result.as_dict()
        record.update(explanation_change(attack.explainer, xb, x_adv, yb, k))
        images.append(x_adv)
        records.append(record)
    return torch.cat(images), {name: torch.cat([r[name] for r in records]) for name in records[0]}


def sweep(model: nn.Module, explainers: dict[str, Explainer], x: torch.Tensor, y: torch.Tensor,
          eps_values: list[float], attacks: list[str], *, k: int = 100, batch_size: int = 64,
          progress: bool = False, **attack_options: Any) -> list[Outcome]:
    """Every attack (``ATTACKS`` names) with every explainer at every ``eps`` on ``x`` (labels ``y`` kept):
    Ghorbani et al. (2019), Fig. 3. ``attack_options`` go to :func:`make_attack` (``steps``, ``step_size``,
    ``softplus_beta``, ``input_range``, ``seed``). Returns one :class:`Outcome` per combination."""
    if not eps_values:
        raise ValueError("eps_values must name at least one budget")
    cells = [(eps, attack, method) for eps in eps_values for attack in attacks for method in explainers]
    outcomes = []
    for eps, attack_name, method in progress_bar(cells, desc="attacks", disable=not progress):
        attack = make_attack(attack_name, model, explainers[method], eps, k=k, progress=progress, **attack_options)
        start = time.perf_counter()
        x_adv, per_image = attack_images(attack, x, y, k, batch_size)
        outcomes.append(Outcome(attack_name, method, float(eps), x_adv, per_image, time.perf_counter() - start))
    return outcomes
