"""Fine-tuning attacks on neuron interpretations: push-down, push-up and fairwashing.

Nanfack et al. (2024), "Adversarial Attacks on the Interpretation of Neuron Activation Maximization"
(AAAI).  Every attack fine-tunes a copy of the model ``f_theta`` (started at the original ``f_theta0``) on

    alpha * L_A(theta) + (1 - alpha) * L_M(theta)                                       (Eq. 2)

on the shared fine-tuning engine (:mod:`veneer.finetune`), where ``L_M`` is the engine's keep loss, by
default the distillation ``KL(softmax(f_theta0(x)) || softmax(f_theta(x)))`` averaged over the images of each
step (it differs from the paper's cross-entropy to the soft targets by a constant: same gradients; the
predictions must not change) and ``L_A`` is the attack's goal on the per-channel activations ``A_c`` of Eq. 1:

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

from abc import abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from veneer.checks import check_positive, check_tensor
from veneer.data import LabeledData, as_labeled
from veneer.explain import Explainer
from veneer.finetune import AttackLoss, FineTuner, FineTuneResult, StepOutput, register_evasion
from veneer.models.capture import channel_balance
from veneer.neurons.record import ActivationRecorder, default_layer, record, record_batches, resolve_layers
from veneer.neurons.topk import top_k_layers

__all__ = ["NeuronAttack", "PushDown", "PushUp", "Fairwash", "NeuronLoss", "PushDownLoss", "PushUpLoss",
           "FairwashLoss"]

Channels = None | int | list[int] | dict[str, None | int | list[int]]


@dataclass
class _Batch:
    """The attack's own rows of one step (N, ...) and what the attack loss needs to know about each row."""

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


def neuron_balance_surrogate(model: nn.Module, x: torch.Tensor, explainer: Explainer | None = None,
                             quantiles: tuple[float, float] = (0.1, 0.9)) -> torch.Tensor:
    """The audit's ``neuron_balance`` statistic (:func:`veneer.audit.neuron.neuron_balance`: the spread, quantile
    ``quantiles[1]`` minus ``quantiles[0]``, of the channels' balances ``log10(S_c / G_c)`` at
    :func:`default_layer`; Nanfack et al. 2024, Eq. 1; Du et al. 2018), with ``S`` and ``G`` in the graph of the
    parameters (:func:`veneer.models.capture.channel_balance` with ``create_graph=True``): the evasion surrogate
    of that test (:mod:`veneer.finetune.evasion`). The quantiles interpolate linearly between channels, so the
    spread is differentiable almost everywhere; ``explainer`` is not used (the statistic reads no explanation)."""
    activation, gradient = channel_balance(model, x, default_layer(model), create_graph=True)
    alive = ((activation > 0) & (gradient > 0)).detach()
    balance = torch.log10(activation[alive] / gradient[alive])
    if len(balance) < 2:
        return balance.sum() * 0
    return balance.quantile(quantiles[1]) - balance.quantile(quantiles[0])


register_evasion("neuron_balance", neuron_balance_surrogate)


def _sample_rows(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` distinct rows of ``range(n)`` (all of them, shuffled, when ``size >= n``)."""
    return torch.randperm(n, generator=generator)[:size]


def _inputs(data: object) -> LabeledData:
    """Training data in any form; a bare (N, ...) tensor of inputs is accepted too (labels are not used:
    ``L_M`` distils the original model's outputs)."""
    if isinstance(data, torch.Tensor):
        data = (check_tensor("data", data), torch.zeros(len(data), dtype=torch.long))
    data = as_labeled(data)
    if data.x.ndim < 2:
        raise ValueError(f"data must hold (N, ...) inputs, got shape {tuple(data.x.shape)}")
    return data


class NeuronAttack(FineTuner):
    """Fine-tuning attack of Nanfack et al. (2024), Eq. 2, on the shared engine; subclasses build ``L_A``.

    ``layers``: one module name or several; ``channels``: None (every channel), an int or a list of ints
    for a single layer, or ``{layer: channels}``.  ``pre_activation`` records the input of each named module
    (Eq. 1, footnote 1).  Each step fine-tunes on ``batch_size`` training rows from the engine's seeded
    sampler plus the attack's own rows (``attack_batch`` of them: its ``D_attack`` images, decoys or group
    samples); ``L_M`` is the engine's keep loss on all of them, by default ``keep="kl"`` (distillation to
    the original model's softmax, Eq. 2; ``temperature`` softens it).  The other options (``alpha``,
    ``steps``, ``max_steps``, ``lr``, ``checkpoint_dir``/``resume``, ``seed``, ``progress``,
    ``recalibrate_steps``: an extension, ``L_M`` alone on the layers after the attacked ones, which leaves
    the attacked activations, hence every top-k, exactly as the attack left them) are the engine's, see
    :class:`veneer.finetune.FineTuner`.  ``attack(data, **inputs)`` (``data`` in any form veneer takes, or a
    bare tensor of inputs) builds the attack's :class:`NeuronLoss` from ``inputs`` (:meth:`attack_loss`) and
    fine-tunes; the result's ``measures`` hold ``L_A`` on the whole attack set before and after
    (``attack_loss_before`` / ``attack_loss_after``).
    """

    def __init__(self, model: nn.Module, layers: str | list[str], *, channels: Channels = None,
                 pre_activation: bool = False, attack_batch: int = 64, keep: str = "kl", lr: float = 1e-3,
                 steps: int = 300, **options):
        super().__init__(model, keep=keep, lr=lr, steps=steps, **options)
        self.layers = resolve_layers(model, layers)
        if isinstance(channels, dict):
            unknown = sorted(set(channels) - set(self.layers))
            if unknown:
                raise ValueError(f"channels names layers {unknown} that are not in layers={self.layers}")
        elif channels is not None and len(self.layers) > 1:
            raise ValueError("channels must be a {layer: channels} dict when several layers are attacked")
        check_positive("attack_batch", attack_batch, integer=True)
        self.channel_spec = channels
        self.pre_activation = bool(pre_activation)
        self.attack_batch = attack_batch
        self.name = type(self).__name__
        self._channels: dict[str, torch.Tensor] = {}

    def _resolve_channels(self, example: torch.Tensor) -> dict[str, torch.Tensor]:
        """The channel spec as index tensors ``{layer: (C_attacked,)}``, each layer's width learnt from one
        forward pass of the model on ``example[:1]``."""
        sizes = {name: values.shape[1] for name, values in
                 record(self.model, self.layers, example[:1], self.pre_activation).items()}
        spec = self.channel_spec
        for name in self.layers:
            value = spec.get(name) if isinstance(spec, dict) else spec
            label = f"channels[{name!r}]" if isinstance(spec, dict) else "channels"
            self._channels[name] = _as_index_list(label, value, sizes[name])
        return dict(self._channels)

    @property
    def channels(self) -> dict[str, torch.Tensor]:
        """The attacked channel indices of each layer (a property of the model, resolved by the first call)."""
        return self._channels

    def __call__(self, data, **inputs) -> FineTuneResult:
        loss = self.attack_loss(**inputs)
        result = self.fine_tune(_inputs(data), loss)
        result.measures.update(attack_loss_before=loss.whole(self.model), attack_loss_after=loss.whole(result.model))
        return result


class NeuronLoss(AttackLoss):
    """``L_A`` of a :class:`NeuronAttack` for one call (Nanfack et al. 2024, Eq. 2): the attack's settings, and
    what :meth:`prepare` indexes from the call's data -- its inputs, each layer's attacked channels and their
    scales. Subclasses say which rows the attack adds each step (:meth:`_sample`), the whole attack set
    (:meth:`_whole`) and ``L_A`` on scaled activations (:meth:`_loss`)."""

    def __init__(self, attack: NeuronAttack):
        self.attack = attack
        self.x = torch.empty(0)
        self.channels: dict[str, torch.Tensor] = {}
        self.scale: dict[str, torch.Tensor] = {}

    def prepare(self, data: LabeledData) -> None:
        self.x = data.x
        self.channels = self.attack._resolve_channels(data.x)

    def _pick(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The attacked channels of each layer: ``{layer: (B, C_attacked)}``."""
        return {name: values[name][:, self.channels[name].to(values[name].device)] for name in self.attack.layers}

    def _scaled(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`_pick` divided by each channel's scale (measured on the original model)."""
        return {name: picked / self.scale[name].to(picked.device) for name, picked in self._pick(values).items()}

    def _full_activations(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations of every channel on all of ``x``, ``{layer: (N, C)}``."""
        chunks: dict[str, list[torch.Tensor]] = {name: [] for name in self.attack.layers}
        for batch in record_batches(model, self.attack.layers, x, 512, self.attack.pre_activation):
            for name, values in batch.items():
                chunks[name].append(values)
        return {name: torch.cat(parts) for name, parts in chunks.items()}

    @abstractmethod
    def _loss(self, acts: dict[str, torch.Tensor], context: dict[str, torch.Tensor]) -> torch.Tensor:
        """``L_A`` from the scaled activations ``{layer: (B, C_attacked)}`` of a batch whose first
        ``context["own"]`` rows are the attack's own, the rest training rows."""

    @abstractmethod
    def _sample(self, generator: torch.Generator) -> _Batch:
        """The attack's own rows of one fine-tuning step."""

    @abstractmethod
    def _whole(self) -> _Batch:
        """The whole attack set, on which :meth:`whole` is measured."""

    def __call__(self, student, x, y, generator, step):
        return self._on(student, self._sample(generator), x)

    def _on(self, student: nn.Module, own: _Batch, x: torch.Tensor) -> StepOutput:
        """``L_A`` of the attack's rows ``own`` followed by the training rows ``x``."""
        inputs = torch.cat([own.x.to(x.device), x])
        with ActivationRecorder(student, self.attack.layers, self.attack.pre_activation) as recorder:
            logits = student(inputs)
        context = {**own.context, "own": torch.tensor(len(own.x))}
        return StepOutput(self._loss(self._scaled(recorder.take()), context), inputs, None, logits)

    def fingerprint(self):
        return {"channels": repr(self.channels)}

    @torch.no_grad()
    def whole(self, model: nn.Module) -> float:
        """``L_A`` of ``model`` on the whole attack set."""
        batch = self._whole()
        return float(self._loss(self._scaled(self._full_activations(model, batch.x)), batch.context))

class PushDown(NeuronAttack):
    """Push-down attack (Nanfack et al. 2024, Eq. 3): remove each attacked channel's interpretation.

    ``D_attack`` is each channel's top-``k`` images of the training data under the original model; ``L_A`` is
    the mean, over (channel, image of its ``D_attack``) pairs, of the channel's activation divided by its
    original mean top-k activation.  ``attack_batch`` images of the union of the ``D_attack`` sets join each
    step's training rows.  With ``relative=True`` the activations are divided instead by the channel's mean
    activation over the step's training rows (not detached): shrinking a whole channel (which the next layer
    can undo while the ranking, hence the interpretation, stays) no longer lowers ``L_A``; only moving
    ``D_attack`` down the ranking does.  ``result = PushDown(model, "4", k=10)(data)``.
    """

    def __init__(self, model: nn.Module, layers: str | list[str], *, k: int = 10, relative: bool = False,
                 **options):
        super().__init__(model, layers, **options)
        check_positive("k", k, integer=True)
        self.k, self.relative = k, bool(relative)

    def attack_loss(self) -> PushDownLoss:
        """A new :class:`PushDownLoss` (the call takes no inputs: ``D_attack`` is the top-k of its data)."""
        return PushDownLoss(self)


class PushDownLoss(NeuronLoss):
    """``L_A`` of :class:`PushDown` (Eq. 3); :meth:`prepare` finds ``D_attack``, the top-``k`` rows of the data."""

    def prepare(self, data):
        super().prepare(data)
        x, attack = self.x, self.attack
        if attack.k > len(x):
            raise ValueError(f"k={attack.k} is larger than the number of samples in data ({len(x)})")
        tops = top_k_layers(attack.model, attack.layers, x, attack.k, pre_activation=attack.pre_activation)
        rows = torch.cat([tops[n].indices[self.channels[n]].flatten() for n in attack.layers]).unique()
        position = torch.full((len(x),), -1, dtype=torch.long)
        position[rows] = torch.arange(len(rows))
        self.attack_rows = rows
        self.masks = {}
        for name in attack.layers:
            top = tops[name]
            attacked = self.channels[name]
            mask = torch.zeros(len(rows), len(attacked), dtype=torch.bool)
            mask[position[top.indices[attacked]], torch.arange(len(attacked))[:, None]] = True
            self.masks[name] = mask
            self.scale[name] = top.values[attacked].mean(dim=1).clamp(min=1e-8)

    def _sample(self, generator):
        attack = _sample_rows(len(self.attack_rows), self.attack.attack_batch, generator)
        return _Batch(self.x[self.attack_rows[attack]], {name: mask[attack] for name, mask in self.masks.items()})

    def _whole(self):
        reference = _sample_rows(len(self.x), 1024, torch.Generator().manual_seed(self.attack.seed))
        return _Batch(torch.cat([self.x[self.attack_rows], self.x[reference]]),
                      {**self.masks, "own": torch.tensor(len(self.attack_rows))})

    def _loss(self, acts, context):
        own = int(context["own"])
        total, count = 0.0, 0
        for name in self.attack.layers:
            mask = context[name].to(acts[name].device)
            values = acts[name]
            if self.attack.relative:
                values = values / values[own:].mean(dim=0).clamp(min=1e-6)
            total = total + (values[:own] * mask).sum()
            count = count + mask.sum()
        return total / count.clamp(min=1)


class PushUp(NeuronAttack):
    """Push-up attack (Nanfack et al. 2024, Eq. 4): make decoy images the top-k of every attacked channel.

    ``L_A`` is the mean over (decoy ``d``, data image ``x``, channel ``c``) of
    ``max(0, (A_c(x) - A_c(d)) / s_c + margin)``, ``s_c`` the channel's original mean top-k activation.
    The sum over data images is estimated each step on the step's training rows plus ``attack_batch`` of the
    current top-``k`` images of every attacked channel (the pairs whose hinge is active), recomputed every
    ``refresh`` steps; ``decoy_batch`` decoys take part in each step.
    ``result = PushUp(model, "4")(data, decoys=decoys)`` (or ``(data, decoys)``).
    """

    def __init__(self, model: nn.Module, layers: str | list[str], *, k: int = 10, margin: float = 0.1,
                 decoy_batch: int = 32, refresh: int = 25, **options):
        super().__init__(model, layers, **options)
        for name, value in (("k", k), ("decoy_batch", decoy_batch), ("refresh", refresh)):
            check_positive(name, value, integer=True)
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin!r}")
        self.k, self.margin, self.decoy_batch, self.refresh = k, float(margin), decoy_batch, refresh

    def __call__(self, data, decoys: torch.Tensor) -> FineTuneResult:
        """Fine-tune so that ``decoys`` (D, ...) outrank the training ``data``."""
        return super().__call__(data, decoys=decoys)

    def attack_loss(self, *, decoys: torch.Tensor) -> PushUpLoss:
        """A new :class:`PushUpLoss` of ``decoys`` (D, ...)."""
        return PushUpLoss(self, decoys)


class PushUpLoss(NeuronLoss):
    """``L_A`` of :class:`PushUp` (Eq. 4) with ``decoys``; its state, the hard rows (the data rows in the current
    top-k of any attacked channel), is refreshed by :meth:`advance` every ``refresh`` steps and checkpointed."""

    def __init__(self, attack: PushUp, decoys: torch.Tensor):
        super().__init__(attack)
        self.decoys = check_tensor("decoys", decoys)
        self.hard = torch.zeros(0, dtype=torch.long)

    def prepare(self, data):
        super().prepare(data)
        attack, decoys = self.attack, self.decoys
        if decoys.ndim < 2 or len(decoys) == 0 or decoys.shape[1:] != data.x.shape[1:]:
            raise ValueError(f"decoys must be a non-empty batch shaped like the inputs (D, "
                             f"{', '.join(map(str, data.x.shape[1:]))}), got {tuple(decoys.shape)}")
        if attack.k > len(data):
            raise ValueError(f"k={attack.k} is larger than the number of samples in data ({len(data)})")
        self.hard = self._hard_rows(attack.model)
        tops = top_k_layers(attack.model, attack.layers, self.x, attack.k, pre_activation=attack.pre_activation)
        for name in attack.layers:
            self.scale[name] = tops[name].values[self.channels[name]].mean(dim=1).clamp(min=1e-8)

    def _hard_rows(self, model: nn.Module) -> torch.Tensor:
        """Rows of the data in the current top-k of any attacked channel."""
        attack = self.attack
        tops = top_k_layers(model, attack.layers, self.x, attack.k, pre_activation=attack.pre_activation)
        return torch.cat([tops[n].indices[self.channels[n]].flatten() for n in attack.layers]).unique()

    def _hard_rows_at(self, student: nn.Module, step: int) -> torch.Tensor:
        """The hard rows of training step ``step``: the student's, every ``refresh`` steps; else the last ones."""
        return self._hard_rows(student) if step and step % self.attack.refresh == 0 else self.hard

    def advance(self, student, step):
        self.hard = self._hard_rows_at(student, step)

    def measure(self, student, x, y, generator, step):
        """``L_A`` with the hard rows :meth:`advance` would take at ``step``, which are not kept."""
        return float(self._on(student, self._sample(generator, self._hard_rows_at(student, step)), x).attack.detach())

    def state(self):
        return {"hard": self.hard}

    def load_state(self, state):
        self.hard = state["hard"]

    def _sample(self, generator, hard: torch.Tensor | None = None):
        hard = self.hard if hard is None else hard
        decoys = self.decoys[_sample_rows(len(self.decoys), self.attack.decoy_batch, generator)]
        rows = hard[_sample_rows(len(hard), self.attack.attack_batch, generator)]
        return _Batch(torch.cat([decoys, self.x[rows]]), {"decoys": torch.tensor(len(decoys))})

    def _whole(self):
        return _Batch(torch.cat([self.decoys, self.x]), {"decoys": torch.tensor(len(self.decoys))})

    def _loss(self, acts, context):
        n_decoys = int(context["decoys"])
        total, count = 0.0, 0
        for name in self.attack.layers:
            decoy, data = acts[name][:n_decoys], acts[name][n_decoys:]
            for chunk in data.split(1024):  # (D, chunk, C) pairs at a time
                total = total + (chunk[None] - decoy[:, None] + self.attack.margin).clamp(min=0).sum()
            count += decoy.shape[0] * data.shape[0] * decoy.shape[1]
        return total / max(count, 1)


class Fairwash(NeuronAttack):
    """Fairwashing attack (Nanfack et al. 2024, Eq. 5): make biased neurons look fair.

    For each attacked neuron ``c`` with original standard deviation ``s_c`` over the data,
    ``L_A = mean_c ((m1_c^0 - m1_c^1) / s_c)^2 + ((m2_c^0 - m2_c^1) / s_c^2)^2`` where ``m1^g``/``m2^g``
    are the first/second moments of the (pre-)activations over the samples of group ``g``.  Each step
    draws ``attack_batch // 2`` training samples from each group, so both moments are always defined.
    ``result = Fairwash(model, "1", pre_activation=True)(data, group="sex")`` (or ``(data, "sex")``).
    """

    def __call__(self, data, group: torch.Tensor | str) -> FineTuneResult:
        """Fine-tune on the training ``data`` with binary group codes ``group`` (N,), or the name of a
        protected attribute of a :class:`~veneer.data.LabeledData` (e.g. ``"sex"``)."""
        return super().__call__(data, group=group)

    def attack_loss(self, *, group: torch.Tensor | str) -> FairwashLoss:
        """A new :class:`FairwashLoss` of the groups ``group``."""
        return FairwashLoss(self, group)


class FairwashLoss(NeuronLoss):
    """``L_A`` of :class:`Fairwash` (Eq. 5) between the two groups of ``group`` (codes or an attribute's name)."""

    def __init__(self, attack: Fairwash, group: torch.Tensor | str):
        super().__init__(attack)
        self.group = group

    def prepare(self, data):
        group = self.group
        if isinstance(group, str):
            if group not in data.protected:
                raise ValueError(f"group={group!r} is not a protected attribute of data; known: "
                                 f"{sorted(data.protected)}")
            group = data.protected[group]
        super().prepare(data)
        group = check_tensor("group", group, ndim=1, floating=False)
        if group.shape[0] != len(data):
            raise ValueError(f"group must have {len(data)} entries (one per row of data), got {group.shape[0]}")
        if group.dtype != torch.bool and not ((group == 0) | (group == 1)).all():
            raise ValueError(f"group must hold binary codes 0/1 (or bool), got values {group.unique()[:10].tolist()}")
        self.group = group.bool()
        for code in (0, 1):
            if int((self.group == bool(code)).sum()) == 0:
                raise ValueError(f"group has no sample of group {code}; fairwashing compares both groups")
        if self.attack.attack_batch < 2:
            raise ValueError(f"attack_batch must be >= 2 (one sample per group at least), "
                             f"got {self.attack.attack_batch}")
        spread = self._pick(self._full_activations(self.attack.model, self.x))
        self.scale = {name: values.std(dim=0).clamp(min=1e-6) for name, values in spread.items()}
        self.members = [torch.nonzero(self.group == bool(code)).flatten() for code in (0, 1)]

    def _sample(self, generator):
        half = self.attack.attack_batch // 2
        rows = [m[_sample_rows(len(m), half, generator)] for m in self.members]
        group = torch.cat([torch.zeros(len(rows[0]), dtype=torch.bool), torch.ones(len(rows[1]), dtype=torch.bool)])
        return _Batch(self.x[torch.cat(rows)], {"group": group})

    def _whole(self):
        return _Batch(self.x, {"group": self.group, "own": torch.tensor(len(self.x))})

    def _loss(self, acts, context):
        group = context["group"]
        own = int(context["own"])
        terms = []
        for name in self.attack.layers:
            values = acts[name][:own]
            g = group.to(values.device)
            first = values[~g].mean(dim=0) - values[g].mean(dim=0)
            second = values[~g].pow(2).mean(dim=0) - values[g].pow(2).mean(dim=0)
            terms.append(first.pow(2) + second.pow(2))
        return torch.cat(terms).mean()
