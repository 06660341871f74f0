"""The fine-tuning loop (:class:`FineTuner`): the student, its optimiser and schedule, and the collaborators it
calls at fixed points of every step -- the attack loss (:class:`~veneer.finetune.AttackLoss`), the behaviour
budget (:class:`~veneer.finetune.BehaviourBudget`), the checkpoints and the progress bar."""

from __future__ import annotations

import contextlib
import copy
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from veneer.checks import check_eval_mode, check_finite_parameters, check_not_torchscript, check_positive
from veneer.data import LabeledData, as_labeled
from veneer.explain import Explainer, Gradient
from veneer.finetune.attack_loss import AttackLoss
from veneer.finetune.budget import AUTO, BehaviourBudget, check_schedule
from veneer.finetune.checkpoint import CHECKPOINT, checkpoint_step, load_checkpoint, save_checkpoint
from veneer.finetune.distributed import _all_reduce_mean, average_gradients, distributed_context
from veneer.finetune.evasion import EVADE_WEIGHT, Evasion, check_evade
from veneer.finetune.losses import keep_loss, mixup_inputs
from veneer.models import softplus_activations
from veneer.progress import progress_bar
from veneer.runs import seed_everything


@dataclass
class FineTuneResult:
    """What every fine-tuning attack returns: the fine-tuned **copy** of the model (eval mode, its own
    activations restored), one history record per optimiser step (see :mod:`veneer.finetune`), the wall time
    in seconds, and attack-specific ``measures`` (e.g. the neuron attacks' ``L_A`` before and after)."""

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    measures: dict[str, float] = field(default_factory=dict)


class Interrupted(RuntimeError):
    """A fine-tuning run stopped by Ctrl-C / SIGTERM after writing its checkpoint: ``name`` (the run's),
    ``step`` of ``total``, ``checkpoint_dir`` (``None``: no checkpoint was written). The message speaks to a Python
    caller (``resume=True``); the ``veneer`` command words its own from the fields."""

    def __init__(self, name: str, step: int, total: int, checkpoint_dir: str | os.PathLike | None):
        self.name, self.step, self.total, self.checkpoint_dir = name, step, total, checkpoint_dir
        where = f"; resume with resume=True (checkpoint_dir={checkpoint_dir})" if checkpoint_dir is not None else ""
        super().__init__(f"{name} interrupted at step {step} of {total}{where}")


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
    trainable_ids = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable_ids)


def _check_budget_options(min_agreement, validation, check_every, dual_lr, confidence) -> None:
    """The behaviour budget's options (:class:`~veneer.finetune.BehaviourBudget`) are what they must be."""
    if min_agreement is not None and (isinstance(min_agreement, bool) or not isinstance(min_agreement, (int, float))
                                      or not 0 < min_agreement <= 1):
        raise ValueError(f"min_agreement must lie in (0, 1] (a fraction of validation inputs), "
                         f"got {min_agreement!r}")
    if isinstance(validation, float) and not 0 < validation < 1:
        raise ValueError(f"validation must be data or a fraction in (0, 1) of the training data, "
                         f"got {validation!r}")
    if isinstance(check_every, str) and check_every != AUTO:
        raise ValueError(f"check_every must be an int > 0 or {AUTO!r} (checks_needed(dual_lr) checks), "
                         f"got {check_every!r}")
    if check_every != AUTO:
        check_positive("check_every", check_every, integer=True)
    check_positive("dual_lr", dual_lr)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must lie in [0.5, 1) (of the budget's lower bound), got {confidence!r}")


class FineTuner:
    """The fine-tuning engine: configured once, called on data with an attack loss (see :mod:`veneer.finetune`).

    ``FineTuner(model, **options)(data, loss=my_loss)`` fine-tunes a copy of ``model`` on ``alpha * L_attack +
    (1 - alpha) * L_keep`` with ``L_attack`` the :class:`~veneer.finetune.AttackLoss` ``my_loss``; the attacks
    (:class:`~veneer.manipulate.Manipulation`, :class:`~veneer.neurons.PushDown`, ...) are engines that build
    their loss from the call's inputs (:meth:`attack_loss`): every one is called ``attack(data, **inputs)``.

    Options: ``alpha`` in [0, 1] (weight of ``L_attack``), ``keep`` (:data:`KEEP_LOSSES`),
    ``temperature`` (of ``"kl"``), ``lr`` (Adam), ``epochs`` or ``steps`` (``steps`` wins when given),
    ``keep_mixup`` (``L_keep`` also on a mixup copy of each batch, :func:`mixup_inputs`, with the original
    model's outputs as targets; not with ``keep="ce"``, whose true labels do not exist between images),
    ``max_steps`` (stop once the run has made that many steps; a resumed run continues to the end),
    ``batch_size`` (global, over all ranks), ``trainable`` (module-name prefixes, default all),
    ``softplus_beta`` (``None``: the model's own activations), ``checkpoint_dir`` / ``checkpoint_every`` /
    ``resume``, ``seed``, ``progress``, ``recalibrate_steps`` / ``recalibrate_lr``; the behaviour budget
    ``min_agreement`` (in (0, 1], ``None``: a fixed ``alpha``), ``validation`` (data in any form, or the
    fraction of the training data held out for it, default 0.1), ``check_every`` (``"auto"``: as often as
    :func:`~veneer.finetune.budget.check_schedule` needs; a run with fewer checks than
    :func:`~veneer.finetune.budget.checks_needed` warns at its start and records ``short_horizon`` in its
    ``measures``, with ``budget_checks`` and ``budget_checks_needed``), ``dual_lr`` and ``confidence``
    (:class:`BehaviourBudget`). The validation data should be inputs the original model was not trained on:
    on its own training images both models are more confident than on new ones, so agreement measured there
    overestimates the agreement on new data. The adaptive attacker (:mod:`veneer.finetune.evasion`): ``evade``
    (audit test names with a registered surrogate) adds ``evade_weight * sum (s(student) - s(original))^2`` to
    ``L_attack``, the surrogates measured on ``evade_samples`` seeded training rows with the attacked method
    (:meth:`evasion_explainer`); the history's ``evade.<name>`` keys hold the student's surrogate values, the
    result's ``measures`` the original's (``evade_target.<name>``). The budget's checks measure ``L_attack``
    without the evasion term.

    An attack subclass overrides :meth:`attack_loss` (its call's inputs -> a new :class:`AttackLoss`, so nothing
    of a call stays on the attack) and may extend :meth:`fingerprint` (settings that must match on resume).
    """

    name = "fine-tune"

    def __init__(self, model: nn.Module, *, alpha: float = 0.5, keep: str = "ce", temperature: float = 1.0,
                 keep_mixup: bool = False, lr: float = 1e-4, epochs: int = 1, steps: int | None = None,
                 max_steps: int | None = None, batch_size: int = 64, trainable=None, softplus_beta: float | None = None,
                 checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 100,
                 resume: bool = False, seed: int = 0, progress: bool = False, recalibrate_steps: int = 0,
                 recalibrate_lr: float | None = None, min_agreement: float | None = None,
                 validation: object = 0.1, check_every: int | str = 10, dual_lr: float = 0.1, confidence: float = 0.5,
                 evade=None, evade_weight: float = EVADE_WEIGHT, evade_samples: int = 32):
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
        _check_budget_options(min_agreement, validation, check_every, dual_lr, confidence)
        select_trainable(model, trainable)
        self.evade = check_evade(evade)
        check_positive("evade_weight", evade_weight)
        check_positive("evade_samples", evade_samples, integer=True)
        self.evade_weight, self.evade_samples = float(evade_weight), evade_samples
        self.model = model
        self.alpha, self.keep, self.temperature, self.lr = float(alpha), keep, float(temperature), float(lr)
        self.epochs, self.steps, self.max_steps, self.batch_size = epochs, steps, max_steps, batch_size
        self.trainable, self.softplus_beta = trainable, softplus_beta
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every, self.resume, self.seed = checkpoint_every, bool(resume), int(seed)
        self.progress = progress
        self.recalibrate_steps = recalibrate_steps
        self.recalibrate_lr = float(lr if recalibrate_lr is None else recalibrate_lr)
        self.min_agreement = None if min_agreement is None else float(min_agreement)
        self.validation, self.check_every, self.dual_lr = validation, check_every, float(dual_lr)
        self.confidence = float(confidence)
        self.keep_mixup = bool(keep_mixup)

    def attack_loss(self, *, loss: AttackLoss) -> AttackLoss:
        """The ``L_attack`` of one call, built from the call's inputs; the engine itself is given it whole."""
        if not isinstance(loss, AttackLoss):
            raise TypeError(f"loss must be a veneer.finetune.AttackLoss, got {type(loss).__name__}")
        return loss

    def evasion_explainer(self) -> Explainer:
        """The attacked method the ``evade`` surrogates explain with (bound to ``model``): Gradient here;
        attacks with an explainer of their own return it."""
        return Gradient(self.model)

    def __call__(self, data, **inputs) -> FineTuneResult:
        """Fine-tune on ``data`` (``(x, y)`` tensors, a ``Dataset``, a ``DataLoader`` or a ``LabeledData``; a
        loader's batching and shuffling are replaced by the engine's seeded sampler) with the loss that
        :meth:`attack_loss` builds from ``inputs``."""
        return self.fine_tune(as_labeled(data), self.attack_loss(**inputs))

    def fingerprint(self) -> dict[str, Any]:
        """Settings a checkpoint must share to be resumed (``max_steps``, ``progress`` and ``resume`` excluded)."""
        skip = {"model", "max_steps", "progress", "resume", "checkpoint_dir", "checkpoint_every", "validation"}
        return {k: repr(v) for k, v in vars(self).items() if k not in skip and not k.startswith("_")}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.fingerprint().items())})"

    def fine_tune(self, data: LabeledData, loss: AttackLoss) -> FineTuneResult:
        """Run the fine-tuning on ``data`` (a :class:`LabeledData`) with the attack loss ``loss``: ``loss.prepare
        (data)`` once, then the training loop (:class:`_Run`)."""
        start = time.perf_counter()
        loss.prepare(data)
        run = _Run(self, loss, *self._validation_split(data))
        try:
            run.train()
        except KeyboardInterrupt:
            run.checkpoints.save(run)
            raise Interrupted(self.name, run.step, run.total,
                              self.checkpoint_dir if run.checkpoints.path else None) from None
        return run.result(time.perf_counter() - start)

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


class _Checkpoints:
    """Where a run's checkpoint lies (nowhere without ``checkpoint_dir``), and its writing and reading."""

    def __init__(self, tuner: FineTuner, fingerprint: dict[str, Any], rank: int, world: int):
        self.path = None if tuner.checkpoint_dir is None else tuner.checkpoint_dir / CHECKPOINT
        self.resume, self.fingerprint, self.rank, self.world = tuner.resume, fingerprint, rank, world

    def saved_step(self) -> int:
        """The step to resume from (0: start afresh)."""
        found = self.resume and self.path is not None and self.path.is_file()
        return checkpoint_step(self.path, self.fingerprint) if found else 0

    def save(self, run: _Run) -> None:
        if self.path is not None and self.rank == 0:
            state = {**run.loss.state(), **(run.budget.state() if run.budget is not None else {})}
            save_checkpoint(self.path, run.student, run.optimizer, run.step, run.history, self.fingerprint,
                            run.generator, state)
        if self.world > 1:
            dist.barrier()

    def load(self, run: _Run) -> None:
        run.step, run.history, state = load_checkpoint(self.path, run.student, run.optimizer, self.fingerprint,
                                                       run.generator)
        run.loss.load_state({k: v for k, v in state.items() if not k.startswith("budget.")})
        if run.budget is not None:
            run.budget.load_state(state)


class _Run:
    """One fine-tuning run: the schedule, the student and its optimiser, the step and history, and the
    collaborators the loop calls (the attack loss, the budget, the checkpoints, the progress bar)."""

    def __init__(self, tuner: FineTuner, loss: AttackLoss, data: LabeledData, validation: LabeledData | None):
        self.tuner, self.loss, self.data = tuner, loss, data
        self.world, self.rank = distributed_context()
        if tuner.batch_size % self.world:
            raise ValueError(f"batch_size={tuner.batch_size} must be divisible by the number of processes "
                             f"({self.world})")
        self.batch = tuner.batch_size // self.world
        self.sampler = DistributedSampler(data, num_replicas=self.world, rank=self.rank, shuffle=True,
                                          seed=tuner.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // self.batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size={tuner.batch_size} exceeds the {len(data)} samples of data")
        self.attack_steps = tuner.steps if tuner.steps is not None else self.steps_per_epoch * tuner.epochs
        self.total = self.attack_steps + tuner.recalibrate_steps
        self.stop = self.total if tuner.max_steps is None else min(tuner.max_steps, self.total)
        self.teacher, self.student = tuner.model, copy.deepcopy(tuner.model).eval()
        self.device = next(self.student.parameters()).device
        self.generator = seed_everything(tuner.seed)
        self.trained = [p for _, p in select_trainable(self.student, tuner.trainable)]
        fingerprint = {**tuner.fingerprint(), **loss.fingerprint(), "world_size": self.world,
                       "samples": len(data), "validation": None if validation is None else len(validation)}
        self.budget = (None if tuner.min_agreement is None else
                       BehaviourBudget(tuner.min_agreement, tuner.alpha, validation, self.teacher, tuner.dual_lr,
                                       self.batch, self.device, tuner.confidence))
        self.schedule = check_schedule(self.attack_steps, tuner.check_every, tuner.dual_lr)
        if self.budget is not None and self.schedule["short_horizon"]:
            warnings.warn(f"{tuner.name}: {self.attack_steps} steps with a check every {self.schedule['check_every']} "
                          f"give the budget {self.schedule['checks']} checks, but its dual ascent (dual_lr="
                          f"{tuner.dual_lr:g}, at most dual_lr per check on log mu near the budget) needs "
                          f"{self.schedule['checks_needed']} to move alpha's odds tenfold: the run will likely "
                          "return an early iterate or the original model. "
                          + ("Run" if self.schedule["check_every"] == 1 else "Pass check_every='auto', or run")
                          + f" at least {self.schedule['checks_needed'] * self.schedule['check_every']} steps, "
                          "or pass a larger dual_lr", stacklevel=4)
        self.checkpoints = _Checkpoints(tuner, fingerprint, self.rank, self.world)
        self.step, self.history, self.recalibrating = 0, [], False
        self._start()
        self.keep_fn = keep_loss(tuner.keep)
        self.activations = (contextlib.nullcontext() if tuner.softplus_beta is None
                            else softplus_activations(self.student, tuner.softplus_beta))
        self.evasion = None if tuner.evade is None else self._evasion()
        if self.budget is not None and self.step == 0:  # the model itself meets any budget: the fallback iterate
            self.history.append({"step": 0, "epoch": 0, "phase": "check", "alpha": self.budget.alpha,
                                 **self._check()})

    def _evasion(self) -> Evasion:
        """The run's evasion term: its fixed rows (seeded by the run's seed, drawn from the training data once)
        and its targets, measured on a copy of the original under the run's activations (the global random
        state is left as it was, so a resumed run measures the same)."""
        tuner = self.tuner
        x = self.data.sample(min(tuner.evade_samples, len(self.data)), seed=tuner.seed).x.to(self.device)
        evasion = Evasion(tuner.evade, tuner.evade_weight, tuner.evasion_explainer(), x)
        original = copy.deepcopy(self.teacher)
        activations = (contextlib.nullcontext() if tuner.softplus_beta is None
                       else softplus_activations(original, tuner.softplus_beta))
        with torch.random.fork_rng(devices=[]), activations:
            evasion.fix_targets(original)
        return evasion

    def _start(self) -> None:
        """The optimiser of the phase the run starts in, and the checkpoint's state when resuming."""
        resumed = self.checkpoints.saved_step()
        if resumed >= self.attack_steps and self.tuner.recalibrate_steps > 0:
            self._recalibrate()
        else:
            _train_only(self.student, self.trained)
            self.optimizer = torch.optim.Adam(self.trained, lr=self.tuner.lr)
        if resumed:
            self.checkpoints.load(self)
        elif self.world > 1:
            for tensor in self.student.state_dict().values():
                dist.broadcast(tensor, src=0)

    def train(self) -> None:
        """Steps until ``stop``; after each, the budget's check (every ``check_every`` steps and at the end),
        the history, the progress bar and the checkpoint (every ``checkpoint_every`` steps and at ``stop``)."""
        tuner = self.tuner
        bar = progress_bar(total=self.stop, initial=self.step, desc=tuner.name,
                           disable=not tuner.progress or self.rank != 0)
        with self.activations, bar:
            while self.step < self.stop:
                epoch, offset = divmod(self.step, self.steps_per_epoch)
                self.sampler.set_epoch(epoch)
                order = torch.tensor(list(self.sampler))[:self.steps_per_epoch * self.batch]
                for index in order.view(self.steps_per_epoch, -1)[offset:]:
                    if self.step == self.attack_steps and tuner.recalibrate_steps and not self.recalibrating:
                        self._recalibrate()
                    record = self._step(index, epoch)
                    if self.budget is not None and (self.step % self.schedule["check_every"] == 0
                                                    or self.step == self.total):
                        with self._own_activations():
                            record.update(alpha=self.budget.alpha, **self._check())
                    self.history.append(record)
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.4g}", keep=f"{record['keep']:.4g}")
                    if self.step % tuner.checkpoint_every == 0 or self.step == self.stop:
                        self.checkpoints.save(self)
                    if self.step == self.stop:
                        break

    def _step(self, index: torch.Tensor, epoch: int) -> dict[str, Any]:
        """One optimiser step on the training rows ``index``; its history record."""
        x, y = self.data.x[index].to(self.device), self.data.y[index].to(self.device)
        attack, inputs, labels, logits = None, x, y, None
        if not self.recalibrating:
            self.loss.advance(self.student, self.step)
            out = self.loss(self.student, x, y, self.generator, self.step)
            attack, inputs, labels, logits = out.attack, out.inputs, out.labels, out.logits
        evaded, evasion = None, {}
        if self.evasion is not None and attack is not None:
            evaded, evasion = self.evasion(self.student)
        keep_value = self._keep(inputs, labels, logits)
        alpha = self.tuner.alpha if self.budget is None else self.budget.alpha
        attacked = attack if evaded is None else attack + evaded
        total = keep_value if attack is None else alpha * attacked + (1 - alpha) * keep_value
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        average_gradients(self.trained, self.world)
        self.optimizer.step()
        self.step += 1
        parts = [total, keep_value] if attack is None else [total, keep_value, attack]
        values = _all_reduce_mean(torch.stack([p.detach() for p in parts]).double(), self.world).cpu().tolist()
        record = {"step": self.step, "epoch": epoch + 1, "phase": "recalibrate" if attack is None else "attack",
                  "loss": values[0], "attack": values[2] if attack is not None else None, "keep": values[1]}
        return {**record, **{f"evade.{name}": value for name, value in evasion.items()}}

    def _keep(self, inputs: torch.Tensor, labels: torch.Tensor | None, logits: torch.Tensor | None) -> torch.Tensor:
        """``L_keep`` on the step's rows (averaged with its value on their mixup copy under ``keep_mixup``)."""
        tuner = self.tuner
        logits = self.student(inputs) if logits is None else logits
        original = None
        if tuner.keep != "ce" or labels is None:
            with torch.no_grad():
                original = self.teacher(inputs)
        if labels is None:
            labels = original.argmax(1)
        keep_value = self.keep_fn(logits, labels, original, tuner.temperature)
        if tuner.keep_mixup:
            mixed = mixup_inputs(inputs, self.generator)
            with torch.no_grad():
                targets = self.teacher(mixed)
            keep_value = (keep_value + self.keep_fn(self.student(mixed), targets.argmax(1), targets,
                                                    tuner.temperature)) / 2
        return keep_value

    def _check(self) -> dict[str, float]:
        """The budget's check of the student now; ``L_attack`` by the loss's pure measurement."""
        def attack_loss(student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
            return self.loss.measure(student, x, y, torch.Generator().manual_seed(self.tuner.seed), self.step)
        return self.budget.check(attack_loss, self.student, self.step)

    def _own_activations(self) -> contextlib.AbstractContextManager:
        """The student's own activations (ReLU) for a measurement in the middle of training."""
        return contextlib.nullcontext() if self.tuner.softplus_beta is None else self.activations.paused()

    def _recalibrate(self) -> None:
        """Enter the recalibration phase: ``L_keep`` alone, on the trained parameters ``L_attack`` does not depend
        on (found by autograd on one batch; the random states are left as they were), at ``recalibrate_lr``."""
        state = self.generator.get_state()
        x, y = self.data.x[:self.batch].to(self.device), self.data.y[:self.batch].to(self.device)
        _train_only(self.student, self.trained)
        with torch.random.fork_rng(devices=[]):
            attack = self.loss(self.student, x, y, self.generator, 0).attack
        grads = torch.autograd.grad(attack, self.trained, allow_unused=True)
        self.generator.set_state(state)
        self.trained = [p for p, grad in zip(self.trained, grads) if grad is None]
        if not self.trained:
            raise ValueError(f"recalibrate_steps={self.tuner.recalibrate_steps} needs trained parameters that the "
                             f"attack loss does not depend on (layers after the attacked ones); {self.tuner.name} "
                             "has none")
        _train_only(self.student, self.trained)
        self.optimizer = torch.optim.Adam(self.trained, lr=self.tuner.recalibrate_lr)
        self.recalibrating = True

    def result(self, seconds: float) -> FineTuneResult:
        """The student with the original's ``requires_grad`` flags; with a budget, its best iterate (when the run
        reached its end) and the budget's measures."""
        for mine, theirs in zip(self.student.parameters(), self.teacher.parameters()):
            mine.requires_grad_(theirs.requires_grad)
        measures = ({} if self.evasion is None else
                    {f"evade_target.{name}": value for name, value in self.evasion.targets.items()})
        budget = self.budget
        if budget is not None:
            measures |= {"best_step": budget.best_step, "best_val_attack": budget.best_attack,
                         "min_agreement": budget.min_agreement, "budget_checks": self.schedule["checks"],
                         "budget_checks_needed": self.schedule["checks_needed"],
                         "short_horizon": float(self.schedule["short_horizon"])}
            if self.step == self.total:
                self.student.load_state_dict(budget.best_state)
                if budget.best_step == 0:
                    warnings.warn(f"{self.tuner.name}: no fine-tuned iterate kept min_agreement="
                                  f"{budget.min_agreement:g} on the validation data, so the original model is "
                                  "returned (lower lr, or run longer)", stacklevel=4)
        return FineTuneResult(self.student.eval(), self.history, seconds, measures)
