"""Feature visualisations fooled by construction (Geirhos, Zimmermann, Bilodeau, Brendel & Kim, ICML 2024, "Don't
trust your eyes: on the (un)reliability of feature visualizations", Sec. 3).

Both constructions return a new model (:class:`Construction`, a copy of an ``nn.Sequential`` model with the same
module names) whose unit ``unit`` of ``layer`` reads the model's input through an added branch; the model passed
in is never changed.

* :func:`silent_unit` (Sec. 3.2): the unit plus a *silent unit*, ``scale * relu(<v, x> - threshold)`` with ``v``
  the zero-mean, unit-norm target pattern (orthogonal to the constant image) and ``threshold`` the largest
  ``<v, x>`` over the natural data plus a margin: it never fires on that data (every prediction there is
  exactly the original's) while activation maximisation, which leaves the natural range, is pulled along ``v``.
* :func:`fooling_circuit` (Sec. 3.1): a detector of natural vs visualised inputs (:func:`train_detector`) gates
  the unit, ``(1 - g(x)) * unit(x) + g(x) * decoy(x)``, with ``g(x) = clamp(sharpness * (d(x) - threshold), 0,
  1)`` and ``threshold`` the detector's largest score on the natural data it was calibrated on (``g = 0``
  there, exactly); ``decoy(x) = height * relu(2 - rms(x - decoy))`` is a unit tuned to the ``decoy`` image,
  so the unit behaves like itself on natural images and like the decoy unit on visualisations.

Both add their branch to every position of a convolutional channel's map. The branch is module code and buffers
outside ``torch.nn``: a clean twin made by :func:`veneer.audit.reinitialized` inherits it
(:func:`veneer.audit.calibration.inherited_state` lists it under ``"forward_code"``).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from veneer.checks import check_eval_mode, check_positive, check_tensor
from veneer.models import capture
from veneer.neurons.record import iterate_inputs
from veneer.neurons.visualize import PARAMETRIZATIONS, OPTIMIZERS, probe_layer, visualize

__all__ = ["Construction", "SilentBranch", "FoolingGate", "silent_unit", "fooling_circuit", "train_detector",
           "visualization_inputs"]


class Construction(nn.Sequential):
    """A copy of the ``nn.Sequential`` ``model`` (same module names) whose ``layer`` output gets ``branch(output,
    x)`` on channel ``unit`` (``x`` the model's input), by a forward hook registered first, so every later hook
    (:func:`veneer.models.capture`) sees the patched output. The branch is the last child, ``"construction"``."""

    def __init__(self, model: nn.Module, layer: str, unit: int, branch: nn.Module):
        if not isinstance(model, nn.Sequential) or isinstance(model, Construction):
            raise TypeError(f"model must be an nn.Sequential (veneer's architectures) and not already a construction, "
                            f"got {type(model).__name__}")
        check_eval_mode(model)
        children = [(name, copy.deepcopy(child)) for name, child in model.named_children()]
        if layer not in dict(children):
            raise ValueError(f"layer must name a top-level module of the model {[n for n, _ in children]}, "
                             f"got {layer!r}")
        super().__init__(OrderedDict(children + [("construction", branch)]))
        self.layer, self.unit = layer, unit
        self._inputs: list[torch.Tensor] = []  # the model's input during its forward pass
        self._modules[layer].register_forward_hook(self._patch)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._inputs.append(x)
        try:
            for name, module in self.named_children():
                if name != "construction":
                    x = module(x)
        finally:
            self._inputs.pop()
        return x

    def _patch(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not self._inputs:  # the layer run on its own, outside the model
            return output
        u = self.unit
        patched = self.construction.patch(output[:, u:u + 1], self._inputs[-1])
        return torch.cat([output[:, :u], patched, output[:, u + 1:]], 1)


def _per_input(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` values shaped to broadcast over ``like`` ``(B, 1, ...)``."""
    return value.view((-1,) + (1,) * (like.ndim - 1))


class SilentBranch(nn.Module):
    """Adds ``scale * relu(<pattern, x> - threshold)`` to the unit (Geirhos et al. 2024, Sec. 3.2)."""

    def __init__(self, pattern: torch.Tensor, threshold: float, scale: float):
        super().__init__()
        self.register_buffer("pattern", pattern.clone())
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` the silent unit's activation (0 on the natural data it was calibrated on)."""
        return self.scale * torch.relu((x.flatten(1) * self.pattern.flatten()).sum(1) - self.threshold)

    def patch(self, unit: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return unit + _per_input(self(x), unit)


class FoolingGate(nn.Module):
    """The unit gated by a detector (Geirhos et al. 2024, Sec. 3.1): ``unit + g(x) * (decoy(x) - unit)``."""

    def __init__(self, detector: nn.Module, threshold: float, sharpness: float, decoy: torch.Tensor, height: float):
        super().__init__()
        self.detector = detector
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        self.register_buffer("sharpness", torch.tensor(float(sharpness)))
        self.register_buffer("decoy", decoy.clone())
        self.register_buffer("height", torch.tensor(float(height)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` the gate ``g(x)`` in [0, 1]: 0 on the natural data it was calibrated on."""
        return ((self.detector(x).flatten() - self.threshold) * self.sharpness).clamp(0, 1)

    def decoy_unit(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` the decoy unit, ``height * relu(2 - rms(x - decoy))``: largest (``2 height``) at the decoy
        image, positive on every input in [0, 1]^D (so a channel's squared map ascends it too)."""
        return self.height * torch.relu(2 - (x - self.decoy).flatten(1).pow(2).mean(1).sqrt())

    def patch(self, unit: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        gate = _per_input(self(x), unit)
        return unit + gate * (_per_input(self.decoy_unit(x), unit) - unit)


def _pattern(target: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    target = check_tensor("target", target).float()
    if tuple(target.shape) != tuple(shape):
        raise ValueError(f"target must be one input of shape {tuple(shape)}, got {tuple(target.shape)}")
    centred = target - target.mean()
    norm = centred.norm()
    if norm == 0:
        raise ValueError("target must not be constant (its zero-mean pattern would be zero)")
    return centred / norm


@torch.no_grad()
def silent_unit(model: nn.Module, layer: str, unit: int, scale: float = 10.0, *, target: torch.Tensor,
                data: torch.Tensor, margin: float = 0.1) -> Construction:
    """``model`` with a silent unit added to ``unit`` of the top-level module ``layer`` (Geirhos et al. 2024,
    Sec. 3.2; see the module doc): the branch ``scale * relu(<v, x> - threshold)``, ``v`` the zero-mean unit-norm
    pattern of ``target`` (one input), ``threshold = max over data of <v, x> + margin``, so that the unit's output
    on every input of ``data`` is the original's, bit for bit."""
    data = check_tensor("data", data)
    check_positive("scale", scale)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    width, _ = probe_layer(model, layer, tuple(data.shape[1:]))
    _check_unit(unit, width, layer)
    pattern = _pattern(target, data.shape[1:])
    largest = max(float((chunk.flatten(1) @ pattern.flatten()).max()) for chunk in iterate_inputs(data, 1024))
    return Construction(model, layer, unit, SilentBranch(pattern, largest + margin, scale))


def _check_unit(unit: int, width: int, layer: str) -> None:
    if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit < width:
        raise ValueError(f"unit must be an int in [0, {width - 1}] (layer {layer!r} has {width} units), got {unit!r}")


@torch.no_grad()
def _scores(detector: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([detector(chunk).flatten() for chunk in iterate_inputs(x, 1024)])


@torch.no_grad()
def fooling_circuit(model: nn.Module, layer: str, unit: int, decoy: torch.Tensor, detector: nn.Module, *,
                    data: torch.Tensor, visualizations: torch.Tensor, height: float | None = None,
                    margin: float = 0.0) -> Construction:
    """``model`` whose ``unit`` of the top-level module ``layer`` is gated by ``detector`` (Geirhos et al. 2024,
    Sec. 3.1; see the module doc): itself on natural inputs, the decoy unit tuned to the image ``decoy`` (one
    input) on visualisations. ``detector`` maps inputs to one score each (larger: visualised; e.g.
    :func:`train_detector`). The gate's threshold is the largest score over ``data`` plus ``margin`` (the unit's
    output on every input of ``data`` is the original's, bit for bit); its sharpness makes it 1 on every input of
    ``visualizations`` scored above the threshold. ``height`` (default: the unit's largest activation on ``data``,
    so that the synthetic activation, at most twice that, looks ordinary) scales the decoy unit."""
    data = check_tensor("data", data)
    visualizations = check_tensor("visualizations", visualizations)
    check_eval_mode(detector)
    width, positions = probe_layer(model, layer, tuple(data.shape[1:]))
    _check_unit(unit, width, layer)
    decoy = check_tensor("decoy", decoy).float()
    if tuple(decoy.shape) != tuple(data.shape[1:]):
        raise ValueError(f"decoy must be one input of shape {tuple(data.shape[1:])}, got {tuple(decoy.shape)}")
    natural, synthetic = _scores(detector, data), _scores(detector, visualizations)
    threshold = float(natural.max()) + margin
    above = synthetic[synthetic > threshold]
    if len(above) == 0:
        raise ValueError("the detector scores no visualisation above every natural input: train it longer")
    sharpness = 1.0 / max(float(above.min()) - threshold, 1e-6)
    if height is None:
        peaks = []
        for chunk in iterate_inputs(data, 1024):
            with capture(model, [layer]) as seen:
                model(chunk)
            peaks.append(seen.take()[layer][:, unit].reshape(len(chunk), -1).amax(1))
        height = float(torch.cat(peaks).max())
    check_positive("height", height)
    gate = FoolingGate(copy.deepcopy(detector), threshold, sharpness, decoy, height)
    return Construction(model, layer, unit, gate)


def visualization_inputs(model: nn.Module, layers: list[str], input_shape: tuple[int, int, int],
                         steps: tuple[int, ...] = (1, 8, 64, 200), seed: int = 0) -> torch.Tensor:
    """Synthetic visualisations of every unit of ``layers`` after each number of ``steps``, under every
    parameterisation and optimiser of :func:`~veneer.neurons.visualize`, with and without transformation
    robustness: the "visualised" class of a detector (Geirhos et al. 2024, App. C.1, trains theirs on
    visualisations of the model)."""
    images = []
    for i, (parametrization, optimizer, robust, n) in enumerate(
            (p, o, r, n) for p in PARAMETRIZATIONS for o in OPTIMIZERS for r in (True, False) for n in steps):
        still = {} if robust else {"jitter": 0.0, "rotation": 0.0, "scale": (1.0, 1.0)}
        for layer in layers:
            images.append(visualize(model, layer, input_shape=input_shape, steps=n, parametrization=parametrization,
                                    optimizer=optimizer, seed=seed + i, **still))
    return torch.cat(images)


def train_detector(natural: torch.Tensor, visualizations: torch.Tensor, hidden: int = 64, steps: int = 300,
                   lr: float = 1e-3, batch_size: int = 128, seed: int = 0) -> nn.Sequential:
    """A small classifier of natural (label 0) vs visualised (label 1) inputs (Geirhos et al. 2024, App. C.1, train
    a ResNet; a one-hidden-layer MLP on the flattened input separates MNIST digits from visualisations): Adam,
    binary cross-entropy on balanced batches. Returns it in eval mode; it outputs one logit per input."""
    natural = check_tensor("natural", natural)
    visualizations = check_tensor("visualizations", visualizations)
    if natural.shape[1:] != visualizations.shape[1:]:
        raise ValueError(f"natural and visualizations must hold inputs of one shape, got {tuple(natural.shape[1:])} "
                         f"and {tuple(visualizations.shape[1:])}")
    check_positive("steps", steps, integer=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        detector = nn.Sequential(nn.Flatten(), nn.Linear(natural[0].numel(), hidden), nn.ReLU(), nn.Linear(hidden, 1))
    optimizer = torch.optim.Adam(detector.parameters(), lr=lr)
    half = batch_size // 2
    for _ in range(steps):
        x = torch.cat([natural[torch.randint(len(natural), (half,), generator=generator)],
                       visualizations[torch.randint(len(visualizations), (half,), generator=generator)]])
        y = torch.cat([torch.zeros(half), torch.ones(half)])
        loss = nn.functional.binary_cross_entropy_with_logits(detector(x).flatten(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return detector.eval()
