"""The fine-tuning engine shared by the model level (:mod:`veneer.manipulate`) and the neuron level
(:mod:`veneer.neurons`).

Every fine-tuning attack minimises

    alpha * L_attack + (1 - alpha) * L_keep

(thesis "Training Neural Networks With Manipulated Explanations", Ch. 3; Heo et al. 2019, "Fooling Neural
Network Interpretations via Adversarial Model Manipulation", Eq. 1; Nanfack et al. 2024, "Adversarial Attacks
on the Interpretation of Neuron Activation Maximization", Eq. 2). The thesis and Heo et al. write
``L_keep + lambda * L_attack``; dividing by ``1 + lambda`` (a rescaled learning rate) gives
``alpha = lambda / (1 + lambda)`` (:func:`lambda_to_alpha`).

A :class:`FineTuner` is configured once and called on data; it fine-tunes a **copy** of the model it was built
on (the model passed in is never changed) and returns a :class:`FineTuneResult`. Subclasses (the attacks)
say what ``L_attack`` is by implementing :meth:`FineTuner.attack_step`; the engine does the rest:

* ``L_keep`` (:data:`KEEP_LOSSES`): ``"ce"`` (labels), ``"kl"`` (distillation to the original model's softmax,
  with a ``temperature``), ``"prob_mse"``, ``"argmax_ce"`` (the original model's predicted labels);
* Softplus(``softplus_beta``) in place of ReLU while training (ReLU has no useful second derivative, thesis
  Sec. 3.2.2), ReLU back on the returned model;
* ``trainable`` module-name prefixes (the rest frozen), Adam at ``lr``;
* a seeded sampler over the data (epochs of shuffled batches), ``epochs`` or ``steps``, ``max_steps`` to stop
  early; atomic checkpoints every ``checkpoint_every`` steps (weights, optimiser, RNG states, the attack's own
  state) and a bit-identical ``resume``; Ctrl-C writes a checkpoint before it stops;
* data parallelism under ``torchrun`` (each rank takes its share of every global batch through a
  ``DistributedSampler``; gradients averaged with one all-reduce per step. The DDP wrapper itself is not
  used: explainers call the unwrapped model several times per step, including a double backward, which DDP's
  reducer does not support);
* the optional recalibration phase (an extension): ``recalibrate_steps`` steps of ``L_keep`` alone on the
  parameters ``L_attack`` does not depend on (found by autograd);
* an optional behaviour budget (:class:`BehaviourBudget`): with ``min_agreement`` the weight between attack
  and keep becomes a Lagrange multiplier on "the fine-tuned model predicts the original model's label on at
  least ``min_agreement`` of the validation inputs", updated by dual ascent every ``check_every`` steps, and
  the run returns the best iterate that meets the budget (the history's ``phase: "check"`` row 0 and the
  ``val_*`` / ``multiplier`` keys of every checked step record it);
* a progress bar and one history schema: ``{"step", "epoch", "phase", "loss", "attack", "keep"}``
  (``phase`` is ``"attack"`` or ``"recalibrate"``; ``attack`` is ``None`` in the recalibration phase).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from veneer.checks import check_eval_mode, check_finite_parameters, check_not_torchscript, check_positive
from veneer.data import LabeledData, as_labeled
from veneer.models import softplus_activations
from veneer.runs import atomic_write_bytes, seed_everything

CHECKPOINT = "checkpoint.safetensors"


# ---------------------------------------------------------------- keep losses


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


# ---------------------------------------------------------------- distributed helpers


def distributed_context() -> tuple[int, int]:
    """``(world_size, rank)``; initialises the default process group from the environment (``torchrun``)
    when ``WORLD_SIZE`` > 1 and none exists yet: nccl when CUDA is available, gloo otherwise."""
    if not dist.is_available():
        return 1, 0
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 1, 0
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_world_size(), dist.get_rank()


def _all_reduce_mean(flat: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(flat)
        flat /= world
    return flat


def average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Replace every gradient by its mean over the ranks (one coalesced all-reduce)."""
    if world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _all_reduce_mean(torch.cat([g.flatten() for g in grads]), world)
    for p, part in zip(params, flat.split([g.numel() for g in grads])):
        p.grad = part.view_as(p).clone()


# ---------------------------------------------------------------- trainable parameters


def select_trainable(model: nn.Module, trainable) -> list[tuple[str, nn.Parameter]]:
    """Named parameters to fine-tune: all for ``None``/``"all"``, else those under the module-name prefixes in
    ``trainable`` (thesis Sec. 3.7 fine-tunes only some layers). Unknown prefixes raise ``ValueError``."""
    named = list(model.named_parameters())
    if trainable is None or trainable == "all":
        return named
    if isinstance(trainable, str) or not isinstance(trainable, (list, tuple)) or not trainable:
        raise ValueError(f"trainable must be None, 'all' or a non-empty list of module-name prefixes, "
                         f"got {trainable!r}")
    chosen = []
    for prefix in trainable:
        hits = [(n, p) for n, p in named if n == prefix or n.startswith(f"{prefix}.")]
        if not hits:
            raise ValueError(f"trainable prefix {prefix!r} matches no parameter; parameter names: "
                             f"{[n for n, _ in named]}")
        chosen += [hit for hit in hits if hit not in chosen]
    return chosen


def _train_only(model: nn.Module, params: list[nn.Parameter]) -> None:
    keep = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)


# ---------------------------------------------------------------- checkpoints


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


# ---------------------------------------------------------------- the engine


@dataclass
class FineTuneResult:
    """What every fine-tuning attack returns: the fine-tuned **copy** of the model (eval mode, its own
    activations restored), one history record per optimiser step (see the module docstring), the wall time
    in seconds, and attack-specific ``measures`` (e.g. the neuron attacks' ``L_A`` before and after)."""

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    measures: dict[str, float] = field(default_factory=dict)


@dataclass
class StepOutput:
    """What an attack's :meth:`FineTuner.attack_step` returns for one batch.

    ``attack``: the scalar ``L_attack`` (differentiable w.r.t. the student's parameters). ``inputs``: the rows
    ``L_keep`` is measured on; ``labels``: their labels for ``keep="ce"`` (``None``: the original model's
    predictions); ``logits``: the student's logits on ``inputs`` when the attack already ran that forward pass
    (the engine then reuses them instead of running the model again), else ``None``.
    """

    attack: torch.Tensor
    inputs: torch.Tensor
    labels: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def _holds_tensors(value: Any) -> bool:
    """Whether an attribute is data the attack derived from its inputs (tensors), not a setting."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, torch.Tensor) for v in value)
    return isinstance(value, torch.Tensor)


def wilson_lower_bound(share: float, n: int, z: float) -> float:
    """Lower end of the Wilson score interval (Wilson 1927, JASA 22) of a proportion ``share`` observed on ``n``
    trials, ``z`` standard normal quantiles wide (one-sided; ``z = 0``: ``share`` itself)."""
    if z <= 0:
        return share
    denominator = 1 + z * z / n
    centre = share + z * z / (2 * n)
    spread = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return (centre - spread) / denominator


class BehaviourBudget:
    """The constraint ``agreement(student, original) >= min_agreement`` on validation data, enforced with a
    Lagrange multiplier ``lambda`` on ``L_keep`` (Platt & Barr 1988, "Constrained Differential Optimization";
    the dual-ascent scheme of constrained deep learning, e.g. Cotter et al. 2019): each step minimises
    ``(L_attack + lambda * L_keep) / (1 + lambda)``, i.e. ``alpha = 1 / (1 + lambda)``, and every ``check_every``
    steps ``log lambda`` moves by ``dual_lr * (min_agreement - agreement) / (1 - min_agreement)`` (up while the
    budget is broken, down while it holds), clamped to ``[1e-3, 1e4]``. It starts at the ``alpha`` given.

    At each check the student is measured with its own activations (ReLU, not the training surrogate): the
    agreement with the original model's labels and the accuracy on the validation data, and ``L_attack`` on a
    fixed validation batch. An iterate *meets the budget* when its agreement reaches ``min_agreement``; with
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
        self.target, self.dual_lr = float(min_agreement), float(dual_lr)
        self.z = statistics.NormalDist().inv_cdf(confidence)
        best_possible = wilson_lower_bound(1.0, len(validation), self.z)
        if best_possible < self.target:
            needed = (f"at least {math.ceil(self.z * self.z * self.target / (1 - self.target))} validation inputs, "
                      if self.target < 1 else "")
            raise ValueError(f"validation holds {len(validation)} inputs: even full agreement has a {confidence:g} "
                             f"lower bound of {best_possible:.4f} < min_agreement={self.target:g}; pass {needed}"
                             f"a lower min_agreement or confidence=0.5 (the observed agreement)")
        self.validation, self.batch, self.device = validation, batch, device
        self.multiplier = min(max((1 - alpha) / max(alpha, 1e-12), 1e-3), 1e4)
        with torch.no_grad():
            self.original = self._labels(teacher)
        self.best_attack, self.best_agreement, self.best_step = math.inf, 0.0, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    @property
    def alpha(self) -> float:
        return 1.0 / (1.0 + self.multiplier)

    @torch.no_grad()
    def _labels(self, model: nn.Module) -> torch.Tensor:
        return torch.cat([model(part.to(self.device)).argmax(1).cpu() for part in self.validation.x.split(512)])

    def check(self, tuner: "FineTuner", student: nn.Module, step: int) -> dict[str, float]:
        """Measure the student, keep it when it is the best that meets the budget, move the multiplier."""
        labels = self._labels(student)
        agreement = float((labels == self.original).float().mean())
        bound = wilson_lower_bound(agreement, len(labels), self.z)
        accuracy = float((labels == self.validation.y).float().mean())
        x, y = self.validation.x[:self.batch].to(self.device), self.validation.y[:self.batch].to(self.device)
        attack = float(tuner.attack_step(student, x, y, torch.Generator().manual_seed(tuner.seed), step).attack.detach())
        if (step == 0 or bound >= self.target) and (attack, -agreement) < (self.best_attack, -self.best_agreement):
            self.best_attack, self.best_agreement, self.best_step = attack, agreement, step
            self.best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        gap = (self.target - bound) / max(1.0 - self.target, 1e-3)
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


class Interrupted(RuntimeError):
    """A fine-tuning run stopped by Ctrl-C / SIGTERM after writing its checkpoint."""


class FineTuner:
    """Base class of every fine-tuning attack: configured once, called on data (see the module docstring).

    Options: ``alpha`` in [0, 1] (weight of ``L_attack``), ``keep`` (:data:`KEEP_LOSSES`),
    ``temperature`` (of ``"kl"``), ``lr`` (Adam), ``epochs`` or ``steps`` (``steps`` wins when given),
    ``keep_mixup`` (``L_keep`` also on a mixup copy of each batch, :func:`mixup_inputs`, with the original
    model's outputs as targets; not with ``keep="ce"``, whose true labels do not exist between images),
    ``max_steps`` (stop once the run has made that many steps; a resumed run continues to the end),
    ``batch_size`` (global, over all ranks), ``trainable`` (module-name prefixes, default all),
    ``softplus_beta`` (``None``: the model's own activations), ``checkpoint_dir`` / ``checkpoint_every`` /
    ``resume``, ``seed``, ``progress``, ``recalibrate_steps`` / ``recalibrate_lr``; the behaviour budget
    ``min_agreement`` (in (0, 1], ``None``: a fixed ``alpha``), ``validation`` (data in any form, or the
    fraction of the training data held out for it, default 0.1), ``check_every``, ``dual_lr`` and ``confidence``
    (:class:`BehaviourBudget`). The validation data should be inputs the original model was not trained on:
    on its own training images both models are more confident than on new ones, so agreement measured there
    overestimates the agreement on new data.

    Subclasses implement :meth:`prepare` (per call: check and index the data) and :meth:`attack_step`, and may
    override :meth:`attack_state` / :meth:`load_attack_state` (tensors checkpointed with the run) and
    :meth:`fingerprint` (settings that must match on resume).
    """

    name = "fine-tune"

    def __init__(self, model: nn.Module, *, alpha: float = 0.5, keep: str = "ce", temperature: float = 1.0,
                 keep_mixup: bool = False, lr: float = 1e-4, epochs: int = 1, steps: int | None = None,
                 max_steps: int | None = None, batch_size: int = 64, trainable=None, softplus_beta: float | None = None,
                 checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 100,
                 resume: bool = False, seed: int = 0, progress: bool = False, recalibrate_steps: int = 0,
                 recalibrate_lr: float | None = None, min_agreement: float | None = None,
                 validation: object = 0.1, check_every: int = 10, dual_lr: float = 0.1, confidence: float = 0.5):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_not_torchscript(model, "fine-tuning needs its parameters and modules (a copy, the Softplus swap)")
        check_eval_mode(model)
        check_finite_parameters(model)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha must lie in [0, 1] (lambda = alpha / (1 - alpha)), got {alpha!r}")
        keep_loss(keep)
        if keep_mixup and keep == "ce":
            raise ValueError('keep_mixup needs a keep loss with the original model\'s outputs as targets ("kl", '
                             '"prob_mse", "argmax_ce"), not keep="ce": mixed images have no true label')
        check_positive("temperature", temperature)
        check_positive("lr", lr)
        check_positive("epochs", epochs, integer=True)
        for name, value in (("steps", steps), ("max_steps", max_steps)):
            if value is not None:
                check_positive(name, value, integer=True)
        check_positive("batch_size", batch_size, integer=True)
        check_positive("checkpoint_every", checkpoint_every, integer=True)
        if softplus_beta is not None:
            check_positive("softplus_beta", softplus_beta)
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir (where the checkpoint to continue from lies)")
        if isinstance(recalibrate_steps, bool) or not isinstance(recalibrate_steps, int) or recalibrate_steps < 0:
            raise ValueError(f"recalibrate_steps must be an int >= 0, got {recalibrate_steps!r}")
        if recalibrate_lr is not None:
            check_positive("recalibrate_lr", recalibrate_lr)
        if min_agreement is not None and (isinstance(min_agreement, bool) or not isinstance(min_agreement, (int, float))
                                          or not 0 < min_agreement <= 1):
            raise ValueError(f"min_agreement must lie in (0, 1] (a fraction of validation inputs), got {min_agreement!r}")
        if isinstance(validation, float) and not 0 < validation < 1:
            raise ValueError(f"validation must be data or a fraction in (0, 1) of the training data, got {validation!r}")
        check_positive("check_every", check_every, integer=True)
        check_positive("dual_lr", dual_lr)
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 <= confidence < 1:
            raise ValueError(f"confidence must lie in [0.5, 1) (of the budget's lower bound), got {confidence!r}")
        select_trainable(model, trainable)
        self.model = model
        self.alpha, self.keep, self.temperature, self.lr = float(alpha), keep, float(temperature), float(lr)
        self.epochs, self.steps, self.max_steps, self.batch_size = epochs, steps, max_steps, batch_size
        self.trainable, self.softplus_beta = trainable, softplus_beta
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every, self.resume, self.seed, self.progress = checkpoint_every, bool(resume), int(seed), progress
        self.recalibrate_steps = recalibrate_steps
        self.recalibrate_lr = float(lr if recalibrate_lr is None else recalibrate_lr)
        self.min_agreement = None if min_agreement is None else float(min_agreement)
        self.validation, self.check_every, self.dual_lr = validation, check_every, float(dual_lr)
        self.confidence = float(confidence)
        self.keep_mixup = bool(keep_mixup)

    # ---------------------------------------------------------------- what attacks provide

    def prepare(self, data: LabeledData) -> None:
        """Check the attack's arguments against ``data`` and index what its loss needs (once per call)."""

    def attack_step(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                    step: int) -> StepOutput:
        """``L_attack`` of one batch ``(x, y)`` of training rows at step ``step`` (0-based); ``generator``
        (seeded, checkpointed) draws any extra rows the attack adds."""
        raise NotImplementedError

    def attack_state(self) -> dict[str, torch.Tensor]:
        """Tensors the attack updates during the run (checkpointed with it)."""
        return {}

    def load_attack_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`attack_state` returned."""

    def fingerprint(self) -> dict[str, Any]:
        """Settings a checkpoint must share to be resumed (``max_steps``, ``progress`` and ``resume`` excluded)."""
        skip = {"model", "max_steps", "progress", "resume", "checkpoint_dir", "checkpoint_every", "validation"}
        return {k: repr(v) for k, v in vars(self).items()
                if k not in skip and not k.startswith("_") and not _holds_tensors(v)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.fingerprint().items())})"

    # ---------------------------------------------------------------- the engine

    def fine_tune(self, data: LabeledData) -> FineTuneResult:
        """Run the fine-tuning on ``data`` (a :class:`LabeledData`; attacks convert user data with
        :func:`veneer.data.as_labeled` before calling this)."""
        start = time.perf_counter()
        data, validation = self._validation_split(data)
        world, rank = distributed_context()
        if self.batch_size % world:
            raise ValueError(f"batch_size={self.batch_size} must be divisible by the number of processes ({world})")
        local_batch = self.batch_size // world
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=self.seed,
                                     drop_last=True)
        steps_per_epoch = len(sampler) // local_batch
        if steps_per_epoch == 0:
            raise ValueError(f"batch_size={self.batch_size} exceeds the {len(data)} samples of data")
        attack_steps = self.steps if self.steps is not None else steps_per_epoch * self.epochs
        total = attack_steps + self.recalibrate_steps
        stop = total if self.max_steps is None else min(self.max_steps, total)

        teacher = self.model
        student = copy.deepcopy(teacher).eval()
        device = next(student.parameters()).device
        generator = seed_everything(self.seed)
        trained = [p for _, p in select_trainable(student, self.trainable)]
        fingerprint = {**self.fingerprint(), "world_size": world, "samples": len(data),
                       "validation": None if validation is None else len(validation)}
        budget = (None if self.min_agreement is None else
                  BehaviourBudget(self.min_agreement, self.alpha, validation, teacher, self.dual_lr, local_batch,
                                  device, self.confidence))
        path = None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT
        resumed_step = (checkpoint_step(path, fingerprint) if self.resume and path is not None and path.is_file()
                        else 0)
        phase_two = resumed_step >= attack_steps and self.recalibrate_steps > 0
        if phase_two:
            trained = self._downstream(student, teacher, data, trained, local_batch, device, generator)
        _train_only(student, trained)
        optimizer = torch.optim.Adam(trained, lr=self.recalibrate_lr if phase_two else self.lr)
        step, history = 0, []
        if resumed_step:
            step, history, state = load_checkpoint(path, student, optimizer, fingerprint, generator)
            self.load_attack_state({k: v for k, v in state.items() if not k.startswith("budget.")})
            if budget is not None:
                budget.load_state(state)
        elif world > 1:
            for tensor in student.state_dict().values():
                dist.broadcast(tensor, src=0)

        def checkpoint() -> None:
            if path is not None and rank == 0:
                save_checkpoint(path, student, optimizer, step, history, fingerprint, generator,
                                {**self.attack_state(), **(budget.state() if budget is not None else {})})
            if world > 1:
                dist.barrier()

        keep_fn = keep_loss(self.keep)
        activations = (contextlib.nullcontext() if self.softplus_beta is None
                       else softplus_activations(student, self.softplus_beta))
        if budget is not None and step == 0:  # the model itself meets any budget: the fallback iterate
            history.append({"step": 0, "epoch": 0, "phase": "check", "alpha": budget.alpha,
                            **budget.check(self, student, 0)})
        bar = tqdm(total=stop, initial=step, desc=self.name, disable=not self.progress or rank != 0)
        try:
            with activations, bar:
                while step < stop:
                    epoch, offset = divmod(step, steps_per_epoch)
                    sampler.set_epoch(epoch)
                    order = torch.tensor(list(sampler))[:steps_per_epoch * local_batch].view(steps_per_epoch, -1)
                    for index in order[offset:]:
                        if step == attack_steps and self.recalibrate_steps and not phase_two:
                            phase_two = True
                            trained = self._downstream(student, teacher, data, trained, local_batch, device,
                                                       generator)
                            _train_only(student, trained)
                            optimizer = torch.optim.Adam(trained, lr=self.recalibrate_lr)
                        x, y = data.x[index].to(device), data.y[index].to(device)
                        if phase_two:
                            attack, inputs, labels, logits = None, x, y, None
                        else:
                            out = self.attack_step(student, x, y, generator, step)
                            attack, inputs, labels, logits = out.attack, out.inputs, out.labels, out.logits
                        if logits is None:
                            logits = student(inputs)
                        original = None
                        if self.keep != "ce" or labels is None:
                            with torch.no_grad():
                                original = teacher(inputs)
                        if labels is None:
                            labels = original.argmax(1)
                        keep = keep_fn(logits, labels, original, self.temperature)
                        if self.keep_mixup:
                            mixed = mixup_inputs(inputs, generator)
                            with torch.no_grad():
                                targets = teacher(mixed)
                            keep = (keep + keep_fn(student(mixed), targets.argmax(1), targets, self.temperature)) / 2
                        alpha = self.alpha if budget is None else budget.alpha
                        loss = keep if attack is None else alpha * attack + (1 - alpha) * keep
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        average_gradients(trained, world)
                        optimizer.step()
                        step += 1
                        parts = [loss, keep] if attack is None else [loss, keep, attack]
                        values = _all_reduce_mean(torch.stack([p.detach() for p in parts]).double(),
                                                  world).cpu().tolist()
                        record = {"step": step, "epoch": epoch + 1,
                                  "phase": "recalibrate" if attack is None else "attack",
                                  "loss": values[0], "attack": values[2] if attack is not None else None,
                                  "keep": values[1]}
                        if budget is not None and (step % self.check_every == 0 or step == total):
                            with activations.paused() if self.softplus_beta is not None else contextlib.nullcontext():
                                record.update(alpha=alpha, **budget.check(self, student, step))
                        history.append(record)
                        bar.update(1)
                        bar.set_postfix(loss=f"{values[0]:.4g}", keep=f"{values[1]:.4g}")
                        if step % self.checkpoint_every == 0 or step == stop:
                            checkpoint()
                        if step == stop:
                            break
        except KeyboardInterrupt:
            checkpoint()
            where = f"; resume with resume=True (checkpoint_dir={self.checkpoint_dir})" if path else ""
            raise Interrupted(f"{self.name} interrupted at step {step} of {total}{where}") from None
        for mine, theirs in zip(student.parameters(), teacher.parameters()):
            mine.requires_grad_(theirs.requires_grad)
        measures = {}
        if budget is not None:
            measures = {"best_step": budget.best_step, "best_val_attack": budget.best_attack,
                        "min_agreement": budget.target}
            if step == total:
                student.load_state_dict(budget.best_state)
                if budget.best_step == 0:
                    warnings.warn(f"{self.name}: no fine-tuned iterate kept min_agreement={budget.target:g} on the "
                                  "validation data, so the original model is returned (lower lr, or run longer)",
                                  stacklevel=2)
        return FineTuneResult(student.eval(), history, time.perf_counter() - start, measures)

    def _validation_split(self, data: LabeledData) -> tuple[LabeledData, LabeledData | None]:
        """``(training data, validation data)``: without a budget all of ``data`` trains; with one, ``validation``
        is the data given or a seeded, stratified share of ``data`` held out from training."""
        if self.min_agreement is None:
            return data, None
        if not isinstance(self.validation, float):
            return data, as_labeled(self.validation, "validation")
        held = max(1, round(self.validation * len(data)))
        mixed = data.sample(len(data), seed=self.seed)  # every row, the classes interleaved in proportion
        return mixed.subset(slice(held, None)), mixed.subset(slice(0, held))

    def _downstream(self, student: nn.Module, teacher: nn.Module, data: LabeledData,
                    trained: list[nn.Parameter], batch: int, device: torch.device, generator: torch.Generator
                    ) -> list[nn.Parameter]:
        """The trained parameters ``L_attack`` does not depend on (the recalibration phase trains only those),
        found by autograd on one batch; the random states are left as they were."""
        state = generator.get_state()
        x, y = data.x[:batch].to(device), data.y[:batch].to(device)
        _train_only(student, trained)
        with torch.random.fork_rng(devices=[]):
            attack = self.attack_step(student, x, y, generator, 0).attack
        grads = torch.autograd.grad(attack, trained, allow_unused=True)
        generator.set_state(state)
        downstream = [p for p, grad in zip(trained, grads) if grad is None]
        if not downstream:
            raise ValueError(f"recalibrate_steps={self.recalibrate_steps} needs trained parameters that the "
                             f"attack loss does not depend on (layers after the attacked ones); {self.name} "
                             "has none")
        return downstream
