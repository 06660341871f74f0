"""Fine-tuning attacks on neuron interpretations: push-down, push-up and fairwashing.

Nanfack et al. (2024), "Adversarial Attacks on the Interpretation of Neuron Activation Maximization"
(AAAI).  Every attack fine-tunes a copy of the model ``f_theta`` (started at the original ``f_theta0``) on

    alpha * L_A(theta) + (1 - alpha) * L_M(theta)                                       (Eq. 2)

where ``L_M`` is the distillation cross-entropy ``-sum_j softmax(f_theta0(x))_j log softmax(f_theta(x))_j``
averaged over the training images of each step (the predictions must not change) and ``L_A`` is the
attack's goal on the per-channel activations ``A_c`` of Eq. 1:

* :class:`PushDown` (Eq. 3): lower the activation of each attacked channel on its original top-k images
  (``D_attack``), so that they leave the top-k and the channel's interpretation disappears;
* :class:`PushUp` (Eq. 4): a hinge over (decoy, data) pairs, ``max(0, A_c(x) - A_c(x_decoy) + margin)``,
  so that the decoys outrank every data image and fill every channel's top-k;
* :class:`Fairwash` (Eq. 5): match the first and second moments of the (pre-)activations of chosen
  neurons between the two groups of a protected attribute, so that the neurons look unbiased.

Activations are divided by a per-channel scale measured on the original model (the mean top-k
activation, or the standard deviation for fairwashing), so one ``alpha`` fits channels of any magnitude.
The model is fine-tuned in eval mode (dropout and batch-norm statistics frozen); the original is never
modified.
"""

from __future__ import annotations

import copy
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from veneer.checks import check_eval_mode, check_positive, check_tensor
from veneer.neurons.record import ActivationRecorder, record, record_batches, resolve_layers
from veneer.neurons.topk import top_k_layers

__all__ = ["FineTuneResult", "NeuronAttack", "PushDown", "PushUp", "Fairwash", "push_down", "push_up",
           "fairwash", "distillation_loss"]

Channels = None | int | list[int] | dict[str, None | int | list[int]]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """``L_M`` of Nanfack et al. (2024), Eq. 2: cross-entropy between the original model's softmax
    (the soft targets) and the fine-tuned model's, averaged over the batch.  ``temperature`` T > 1
    softens both softmaxes (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
    Network"; the loss is multiplied by T^2 so its gradients keep their scale); T = 1 is the paper's."""
    target = (teacher_logits / temperature).softmax(dim=1)
    log_student = (student_logits / temperature).log_softmax(dim=1)
    return -(target * log_student).sum(dim=1).mean() * temperature ** 2


@dataclass
class FineTuneResult:
    """The attacked model (a fine-tuned copy, eval mode), the per-step losses, the wall time, and the
    attack loss ``L_A`` on the whole attack set before and after fine-tuning."""

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    attack_loss_before: float = float("nan")
    attack_loss_after: float = float("nan")


@dataclass
class _Batch:
    """One step's inputs (N, ...) and what the attack loss needs to know about each row."""

    x: torch.Tensor
    context: dict[str, torch.Tensor]


def _as_index_list(name: str, value: None | int | list[int], size: int) -> torch.Tensor:
    if value is None:
        return torch.arange(size)
    values = [value] if isinstance(value, int) and not isinstance(value, bool) else list(value)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{name} must be None (all), an int or a non-empty list of ints, got {value!r}")
    bad = [v for v in values if not 0 <= v < size]
    if bad:
        raise ValueError(f"{name} must lie in [0, {size - 1}] (the layer has {size} channels), got {bad}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat a channel, got {values}")
    return torch.tensor(values, dtype=torch.long)


def _sample_rows(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` distinct rows of ``range(n)`` (all of them, shuffled, when ``size >= n``)."""
    return torch.randperm(n, generator=generator)[:size]


class NeuronAttack(ABC):
    """Shared fine-tuning loop of Nanfack et al. (2024), Eq. 2; subclasses define ``L_A``.

    ``layers``: one module name or several; ``channels``: None (every channel), an int or a list of ints
    for a single layer, or ``{layer: channels}``.  ``alpha`` weighs ``L_A`` against ``L_M``; ``steps``
    Adam steps with learning rate ``lr``, each on ``batch_size`` random training images plus the
    attack's own rows; ``temperature`` softens ``L_M`` (:func:`distillation_loss`).  ``pre_activation``
    records the input of each named module (Eq. 1, footnote 1).
    ``recalibrate_steps`` > 0 adds a second phase after the attack (an extension, not in the paper): that
    many Adam steps (learning rate ``recalibrate_lr``, default ``lr``) of ``L_M`` alone on random training
    images, training only the parameters the attacked activations do not depend on (the layers after
    them). The attacked activations, hence every top-k, stay exactly as the attack left them,
    while the rest of the network re-fits the original model's outputs.
    """

    def __init__(self, model: nn.Module, layers: str | list[str], *, channels: Channels = None,
                 alpha: float = 0.5, steps: int = 300, lr: float = 1e-3, batch_size: int = 64,
                 temperature: float = 1.0, pre_activation: bool = False, recalibrate_steps: int = 0,
                 recalibrate_lr: float | None = None, seed: int = 0, progress: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_eval_mode(model)
        self.model = model
        self.layers = resolve_layers(model, layers)
        if isinstance(channels, dict):
            unknown = sorted(set(channels) - set(self.layers))
            if unknown:
                raise ValueError(f"channels names layers {unknown} that are not in layers={self.layers}")
        elif channels is not None and len(self.layers) > 1:
            raise ValueError("channels must be a {layer: channels} dict when several layers are attacked")
        self.channel_spec = channels
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        check_positive("steps", steps, integer=True)
        check_positive("lr", lr)
        check_positive("batch_size", batch_size, integer=True)
        check_positive("temperature", temperature)
        self.steps, self.lr, self.batch_size, self.temperature = steps, float(lr), batch_size, float(temperature)
        self.pre_activation = bool(pre_activation)
        if not isinstance(recalibrate_steps, int) or recalibrate_steps < 0:
            raise ValueError(f"recalibrate_steps must be an int >= 0, got {recalibrate_steps!r}")
        self.recalibrate_steps = recalibrate_steps
        if recalibrate_lr is not None:
            check_positive("recalibrate_lr", recalibrate_lr)
        self.recalibrate_lr = float(lr if recalibrate_lr is None else recalibrate_lr)
        self.seed = int(seed)
        self.progress = progress
        self.channels: dict[str, torch.Tensor] = {}
        self.scale: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ helpers for subclasses
    def _resolve_channels(self, example: torch.Tensor) -> None:
        """Turn the channel spec into index tensors, learning each layer's width from one forward."""
        sizes = {name: values.shape[1] for name, values in
                 record(self.model, self.layers, example[:1], self.pre_activation).items()}
        spec = self.channel_spec
        for name in self.layers:
            value = spec.get(name) if isinstance(spec, dict) else spec
            label = f"channels[{name!r}]" if isinstance(spec, dict) else "channels"
            self.channels[name] = _as_index_list(label, value, sizes[name])

    def _pick(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The attacked channels of each layer: ``{layer: (B, C_attacked)}``."""
        return {name: values[name][:, self.channels[name].to(values[name].device)] for name in self.layers}

    def _normalised(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`_pick` divided by each channel's scale (measured on the original model)."""
        return {name: picked / self.scale[name].to(picked.device) for name, picked in self._pick(values).items()}

    def _full_activations(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations of every channel on all of ``x``, ``{layer: (N, C)}``."""
        chunks: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        for batch in record_batches(model, self.layers, x, 512, self.pre_activation):
            for name, values in batch.items():
                chunks[name].append(values)
        return {name: torch.cat(parts) for name, parts in chunks.items()}

    # ------------------------------------------------------------------ subclass interface
    @abstractmethod
    def _loss(self, acts: dict[str, torch.Tensor], context: dict[str, torch.Tensor]) -> torch.Tensor:
        """``L_A`` of a batch from its normalised activations ``{layer: (B, C_attacked)}``."""

    @abstractmethod
    def _sample(self, step: int, model: nn.Module, generator: torch.Generator) -> _Batch:
        """The inputs of fine-tuning step ``step`` (``model`` is the model being fine-tuned)."""

    @abstractmethod
    def _whole(self) -> _Batch:
        """The whole attack set, on which :meth:`attack_loss` is measured."""

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def attack_loss(self, model: nn.Module) -> float:
        """``L_A`` of ``model`` on the whole attack set (after the attack was prepared by a call)."""
        batch = self._whole()
        return float(self._loss(self._normalised(self._full_activations(model, batch.x)), batch.context))

    def _fine_tune(self) -> FineTuneResult:
        teacher = self.model
        student = copy.deepcopy(teacher).eval()
        for parameter in student.parameters():
            parameter.requires_grad_(True)
        device = next(student.parameters()).device
        optimizer = torch.optim.Adam(student.parameters(), lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed)
        result = FineTuneResult(student, attack_loss_before=self.attack_loss(teacher))
        start = time.perf_counter()
        name = type(self).__name__
        with ActivationRecorder(student, self.layers, self.pre_activation) as recorder:
            for step in tqdm(range(self.steps), desc=name, disable=not self.progress):
                batch = self._sample(step, student, generator)
                x = batch.x.to(device)
                with torch.no_grad():
                    teacher_logits = teacher(x)
                logits = student(x)
                attack = self._loss(self._normalised(recorder.take()), batch.context)
                model_loss = distillation_loss(logits, teacher_logits, self.temperature)
                loss = self.alpha * attack + (1.0 - self.alpha) * model_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                result.history.append({"step": step + 1, "loss": loss.item(), "attack_loss": attack.item(),
                                       "model_loss": model_loss.item()})
        if self.recalibrate_steps:
            self._recalibrate(student, teacher, generator, result)
        result.seconds = time.perf_counter() - start
        result.attack_loss_after = self.attack_loss(student)
        return result

    def downstream_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters of ``model`` that the attacked layers' activations do not depend on."""
        parameters = [p for p in model.parameters() if p.requires_grad]
        with torch.enable_grad(), ActivationRecorder(model, self.layers, self.pre_activation) as recorder:
            model(self.x[:2].to(next(model.parameters()).device))
            total = sum(values.sum() for values in recorder.take().values())
            grads = torch.autograd.grad(total, parameters, allow_unused=True)
        return [p for p, grad in zip(parameters, grads) if grad is None]

    def _recalibrate(self, student: nn.Module, teacher: nn.Module, generator: torch.Generator,
                     result: FineTuneResult) -> None:
        """Phase two (``recalibrate_steps``): ``L_M`` alone on the parameters after the attacked layers."""
        downstream = self.downstream_parameters(student)
        if not downstream:
            raise ValueError(f"recalibrate_steps={self.recalibrate_steps} needs parameters after the attacked "
                             f"layers {self.layers}; this model has none")
        trained = {id(p) for p in downstream}
        frozen = [p for p in student.parameters() if id(p) not in trained]
        for parameter in frozen:
            parameter.requires_grad_(False)
        optimizer = torch.optim.Adam(downstream, lr=self.recalibrate_lr)
        device = downstream[0].device
        try:
            for step in tqdm(range(self.recalibrate_steps), desc="recalibrate", disable=not self.progress):
                x = self.x[_sample_rows(len(self.x), self.batch_size, generator)].to(device)
                with torch.no_grad():
                    teacher_logits = teacher(x)
                model_loss = distillation_loss(student(x), teacher_logits, self.temperature)
                optimizer.zero_grad(set_to_none=True)
                model_loss.backward()
                optimizer.step()
                result.history.append({"step": self.steps + step + 1, "phase": "recalibrate",
                                       "loss": model_loss.item(), "model_loss": model_loss.item()})
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)


def _check_inputs(name: str, x: object) -> torch.Tensor:
    x = check_tensor(name, x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, ...) batch of inputs, got shape {tuple(x.shape)}")
    return x


class PushDown(NeuronAttack):
    """Push-down attack (Nanfack et al. 2024, Eq. 3): remove each attacked channel's interpretation.

    ``D_attack`` is each channel's top-``k`` images of ``x`` under the original model; ``L_A`` is the mean,
    over (channel, image of its ``D_attack``) pairs, of the channel's activation divided by its original
    mean top-k activation.  ``attack_batch`` images of the union of the ``D_attack`` sets join each step's
    training images.  With ``relative=True`` the activations are divided instead by the channel's mean
    activation over the step's random training images (not detached): shrinking a whole channel (which
    the next layer can undo while the ranking, hence the interpretation, stays) no longer lowers
    ``L_A``; only moving ``D_attack`` down the ranking does.
    ``attack = PushDown(model, "4", k=10); result = attack(x_train)``.
    """

    def __init__(self, model: nn.Module, layers: str | list[str], *, k: int = 10, attack_batch: int = 64,
                 relative: bool = False, **options):
        super().__init__(model, layers, **options)
        check_positive("k", k, integer=True)
        check_positive("attack_batch", attack_batch, integer=True)
        self.k, self.attack_batch, self.relative = k, attack_batch, bool(relative)

    def __call__(self, x: torch.Tensor) -> FineTuneResult:
        """Fine-tune against the top-k images of the training inputs ``x`` (N, ...)."""
        self.x = _check_inputs("x", x)
        if self.k > len(x):
            raise ValueError(f"k={self.k} is larger than the number of samples in x ({len(x)})")
        self._resolve_channels(x)
        tops = top_k_layers(self.model, self.layers, x, self.k, pre_activation=self.pre_activation)
        rows = torch.cat([tops[n].indices[self.channels[n]].flatten() for n in self.layers]).unique()
        position = torch.full((len(x),), -1, dtype=torch.long)
        position[rows] = torch.arange(len(rows))
        self.attack_rows = rows
        self.masks = {}
        for name in self.layers:
            top = tops[name]
            attacked = self.channels[name]
            mask = torch.zeros(len(rows), len(attacked), dtype=torch.bool)
            mask[position[top.indices[attacked]], torch.arange(len(attacked))[:, None]] = True
            self.masks[name] = mask
            self.scale[name] = top.values[attacked].mean(dim=1).clamp(min=1e-8)
        return self._fine_tune()

    def _context(self, rows: torch.Tensor, extra: int) -> dict[str, torch.Tensor]:
        """Each layer's (B, C_attacked) ``D_attack`` membership of the batch: attack ``rows`` first, then
        ``extra`` random training images (flagged by ``"random"``)."""
        context = {name: torch.cat([mask[rows], mask.new_zeros(extra, mask.shape[1])])
                   for name, mask in self.masks.items()}
        context["random"] = torch.arange(len(rows) + extra) >= len(rows)
        return context

    def _sample(self, step: int, model: nn.Module, generator: torch.Generator) -> _Batch:
        attack = _sample_rows(len(self.attack_rows), self.attack_batch, generator)
        train = _sample_rows(len(self.x), self.batch_size, generator)
        x = torch.cat([self.x[self.attack_rows[attack]], self.x[train]])
        return _Batch(x, self._context(attack, len(train)))

    def _whole(self) -> _Batch:
        rows = torch.arange(len(self.attack_rows))
        reference = _sample_rows(len(self.x), 1024, torch.Generator().manual_seed(self.seed))
        return _Batch(torch.cat([self.x[self.attack_rows], self.x[reference]]), self._context(rows, len(reference)))

    def _loss(self, acts: dict[str, torch.Tensor], context: dict[str, torch.Tensor]) -> torch.Tensor:
        total, count = 0.0, 0
        for name in self.layers:
            mask = context[name].to(acts[name].device)
            values = acts[name]
            if self.relative:
                values = values / values[context["random"]].mean(dim=0).clamp(min=1e-6)
            total = total + (values * mask).sum()
            count = count + mask.sum()
        return total / count.clamp(min=1)


class PushUp(NeuronAttack):
    """Push-up attack (Nanfack et al. 2024, Eq. 4): make decoy images the top-k of every attacked channel.

    ``L_A`` is the mean over (decoy ``d``, data image ``x``, channel ``c``) of
    ``max(0, (A_c(x) - A_c(d)) / s_c + margin)``, ``s_c`` the channel's original mean top-k activation.
    The sum over data images is estimated each step on ``batch_size`` random training images plus
    ``attack_batch`` of the current top-``k`` images of every attacked channel (the pairs whose hinge
    is active), recomputed every ``refresh`` steps; ``decoy_batch`` decoys take part in each step.
    ``attack = PushUp(model, "4"); result = attack(x_train, decoys)``.
    """

    def __init__(self, model: nn.Module, layers: str | list[str], *, k: int = 10, margin: float = 0.1,
                 attack_batch: int = 64, decoy_batch: int = 32, refresh: int = 25, **options):
        super().__init__(model, layers, **options)
        for name, value in (("k", k), ("attack_batch", attack_batch), ("decoy_batch", decoy_batch),
                            ("refresh", refresh)):
            check_positive(name, value, integer=True)
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin!r}")
        self.k, self.margin = k, float(margin)
        self.attack_batch, self.decoy_batch, self.refresh = attack_batch, decoy_batch, refresh

    def __call__(self, x: torch.Tensor, decoys: torch.Tensor) -> FineTuneResult:
        """Fine-tune so that ``decoys`` (D, ...) outrank the training inputs ``x`` (N, ...)."""
        self.x = _check_inputs("x", x)
        self.decoys = _check_inputs("decoys", decoys)
        if decoys.shape[1:] != x.shape[1:]:
            raise ValueError(f"decoys must have the shape of the inputs {tuple(x.shape[1:])}, "
                             f"got {tuple(decoys.shape[1:])}")
        if self.k > len(x):
            raise ValueError(f"k={self.k} is larger than the number of samples in x ({len(x)})")
        self._resolve_channels(x)
        self.hard = self._hard_rows(self.model)
        tops = top_k_layers(self.model, self.layers, x, self.k, pre_activation=self.pre_activation)
        for name in self.layers:
            self.scale[name] = tops[name].values[self.channels[name]].mean(dim=1).clamp(min=1e-8)
        return self._fine_tune()

    def _hard_rows(self, model: nn.Module) -> torch.Tensor:
        """Rows of ``x`` in the current top-k of any attacked channel."""
        tops = top_k_layers(model, self.layers, self.x, self.k, pre_activation=self.pre_activation)
        return torch.cat([tops[n].indices[self.channels[n]].flatten() for n in self.layers]).unique()

    def _sample(self, step: int, model: nn.Module, generator: torch.Generator) -> _Batch:
        if step and step % self.refresh == 0:
            self.hard = self._hard_rows(model)
        decoys = self.decoys[_sample_rows(len(self.decoys), self.decoy_batch, generator)]
        hard = self.hard[_sample_rows(len(self.hard), self.attack_batch, generator)]
        train = _sample_rows(len(self.x), self.batch_size, generator)
        x = torch.cat([decoys, self.x[hard], self.x[train]])
        return _Batch(x, {"decoys": torch.tensor(len(decoys))})

    def _whole(self) -> _Batch:
        return _Batch(torch.cat([self.decoys, self.x]), {"decoys": torch.tensor(len(self.decoys))})

    def _loss(self, acts: dict[str, torch.Tensor], context: dict[str, torch.Tensor]) -> torch.Tensor:
        n_decoys = int(context["decoys"])
        total, count = 0.0, 0
        for name in self.layers:
            decoy, data = acts[name][:n_decoys], acts[name][n_decoys:]
            for chunk in data.split(1024):  # (D, chunk, C) pairs at a time
                total = total + (chunk[None] - decoy[:, None] + self.margin).clamp(min=0).sum()
            count += decoy.shape[0] * data.shape[0] * decoy.shape[1]
        return total / max(count, 1)


class Fairwash(NeuronAttack):
    """Fairwashing attack (Nanfack et al. 2024, Eq. 5): make biased neurons look fair.

    For each attacked neuron ``c`` with original standard deviation ``s_c`` over the data,
    ``L_A = mean_c ((m1_c^0 - m1_c^1) / s_c)^2 + ((m2_c^0 - m2_c^1) / s_c^2)^2`` where ``m1^g``/``m2^g``
    are the first/second moments of the (pre-)activations over the samples of group ``g``.  Each step
    draws ``batch_size // 2`` training samples from each group, so both moments are always defined.
    ``attack = Fairwash(model, "1", pre_activation=True); result = attack(x_train, sex)``.
    """

    def __call__(self, x: torch.Tensor, group: torch.Tensor) -> FineTuneResult:
        """Fine-tune on the training inputs ``x`` (N, ...) with binary group codes ``group`` (N,)."""
        self.x = _check_inputs("x", x)
        group = check_tensor("group", group, ndim=1, floating=False)
        if group.shape[0] != len(x):
            raise ValueError(f"group must have {len(x)} entries (one per row of x), got {group.shape[0]}")
        if group.dtype != torch.bool and not ((group == 0) | (group == 1)).all():
            raise ValueError(f"group must hold binary codes 0/1 (or bool), got values {group.unique()[:10].tolist()}")
        self.group = group.bool()
        for code in (0, 1):
            if int((self.group == bool(code)).sum()) == 0:
                raise ValueError(f"group has no sample of group {code}; fairwashing compares both groups")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (one sample per group at least), got {self.batch_size}")
        self._resolve_channels(x)
        spread = self._pick(self._full_activations(self.model, x))
        self.scale = {name: values.std(dim=0).clamp(min=1e-6) for name, values in spread.items()}
        self.members = [torch.nonzero(self.group == bool(code)).flatten() for code in (0, 1)]
        return self._fine_tune()

    def _sample(self, step: int, model: nn.Module, generator: torch.Generator) -> _Batch:
        half = self.batch_size // 2
        rows = [m[_sample_rows(len(m), half, generator)] for m in self.members]
        group = torch.cat([torch.zeros(len(rows[0]), dtype=torch.bool), torch.ones(len(rows[1]), dtype=torch.bool)])
        return _Batch(self.x[torch.cat(rows)], {"group": group})

    def _whole(self) -> _Batch:
        return _Batch(self.x, {"group": self.group})

    def _loss(self, acts: dict[str, torch.Tensor], context: dict[str, torch.Tensor]) -> torch.Tensor:
        group = context["group"]
        terms = []
        for name in self.layers:
            values = acts[name]
            g = group.to(values.device)
            first = values[~g].mean(dim=0) - values[g].mean(dim=0)
            second = values[~g].pow(2).mean(dim=0) - values[g].pow(2).mean(dim=0)
            terms.append(first.pow(2) + second.pow(2))
        return torch.cat(terms).mean()


def push_down(model: nn.Module, layers: str | list[str], x: torch.Tensor, **options) -> FineTuneResult:
    """Functional form of :class:`PushDown` (Nanfack et al. 2024, Eq. 3)."""
    return PushDown(model, layers, **options)(x)


def push_up(model: nn.Module, layers: str | list[str], x: torch.Tensor, decoys: torch.Tensor,
            **options) -> FineTuneResult:
    """Functional form of :class:`PushUp` (Nanfack et al. 2024, Eq. 4)."""
    return PushUp(model, layers, **options)(x, decoys)


def fairwash(model: nn.Module, layers: str | list[str], x: torch.Tensor, group: torch.Tensor,
             **options) -> FineTuneResult:
    """Functional form of :class:`Fairwash` (Nanfack et al. 2024, Eq. 5)."""
    return Fairwash(model, layers, **options)(x, group)
