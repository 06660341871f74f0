"""The gradient slingshot: fine-tune a model so that a unit's synthetic feature visualisation converges to any
target image while the unit keeps its function on natural data.

Bareeva et al. (2025), "Manipulating Feature Visualizations with Gradient Slingshots" (NeurIPS). Activation
maximisation ascends the gradient of the unit's activation ``F`` with respect to the parameters ``q`` of the
visualised image (its pixels, or its Fourier spectrum, :mod:`veneer.neurons.visualize`) from a start near
``q = 0``. If, in a region around the segment from the start to the target's parameters ``q_target``, the
gradient field is ``grad_q F(q) = gamma (q_target - q)`` (the gradient of the bowl
``-gamma / 2 ||q - q_target||^2``), every ascent from near the start converges to ``q_target``. The manipulation
loss (the paper's manipulation term, in gradient form) is

    L_man = E_q || grad_q F(q) - P gamma (q_target - q) ||^2 / dim(q),    q = p q_target + u

with ``p ~ U(0, 1)`` along the tunnel from the start to the target (``tunnel=True``; else ``p in {0, 1}``: the
start and the target only), ``u ~ U(-noise, noise)`` per parameter and ``P`` the projection on the parameters
the image depends on (the identity for pixels; :meth:`~veneer.neurons.FourierImage.project` drops the redundant
entries of a real image's half spectrum, where no gradient can follow the field). It is a loss on a gradient,
so its gradient with respect to the model's parameters is second order (``create_graph=True``). The preserve
term (the paper's preservation term) keeps the unit's layer on natural data: the mean squared difference between
the student's and the original's layer activations (divided by the original's mean square) plus that of the
unit's activation (divided by its variance). The engine's keep loss holds the outputs and the behaviour budget (``min_agreement``) bounds
the change in predictions, as for every fine-tuning attack (:mod:`veneer.finetune`).

The unit's activation ``F`` is the quantity :func:`veneer.neurons.visualize` ascends: a convolutional channel's
mean over positions of its squared map (Nanfack et al. 2024, Eq. 1, per position), a linear unit or a logit
itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from veneer.checks import check_positive, check_tensor
from veneer.data import LabeledData
from veneer.finetune import AttackLoss, FineTuner, FineTuneResult, StepOutput
from veneer.manipulate import PICTURES, picture
from veneer.models import capture
from veneer.neurons.attacks import _inputs
from veneer.neurons.record import channel_scalar, resolve_layers
from veneer.neurons.visualize import PARAMETRIZATIONS, make_image, probe_layer

__all__ = ["Slingshot", "SlingshotLoss", "TARGET_SHAPES", "target_image", "unit_activation", "unit_class",
           "is_output_layer"]

TARGET_SHAPES = tuple(name for name in PICTURES if name != "border") + ("digit",)
"""Built-in targets: the pictures of :data:`veneer.manipulate.PICTURES` and ``"digit"`` (an image of the data of
another class than the unit's; ``"digit:N"`` picks class ``N``)."""


def unit_activation(values: torch.Tensor, unit: int) -> torch.Tensor:
    """``(B,)`` activation of ``unit`` in a layer's output ``values`` ``(B, C, ...)``: the mean over positions of
    the squared map of a channel (what :func:`veneer.neurons.visualize` ascends), the value of a linear unit."""
    positions = values[0, 0].numel() if values.ndim > 2 else 1
    return channel_scalar(values)[:, unit] / positions


@torch.no_grad()
def _layer_and_output(model: nn.Module, layer: str, x: torch.Tensor, pre_activation: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    with capture(model, [layer], inputs=pre_activation) as seen:
        output = model(x)
        return seen.take()[layer], output


def is_output_layer(model: nn.Module, layer: str, x: torch.Tensor) -> bool:
    """Whether ``layer``'s output on ``x`` is the model's output (its units are the logits)."""
    values, output = _layer_and_output(model, layer, x)
    return values.shape == output.shape and torch.equal(values, output)


def unit_class(model: nn.Module, layer: str, unit: int, x: torch.Tensor, pre_activation: bool = False) -> int:
    """The class a unit stands for: its own index when ``layer``'s output is the model's (a logit), else the
    model's prediction on the input of ``x`` that activates the unit most (the ``"digit"`` target is another
    class's image)."""
    values, output = _layer_and_output(model, layer, x, pre_activation)
    if not pre_activation and values.shape == output.shape and torch.equal(values, output):
        return unit
    return int(output[unit_activation(values, unit).argmax()].argmax())


def _load_image(path: Path, shape: tuple[int, int, int]) -> torch.Tensor:
    from PIL import Image

    channels, height, width = shape
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB").resize((width, height))
        pixels = torch.tensor(np.asarray(image), dtype=torch.float32) / 255.0
    pixels = pixels.view(height, width, -1).permute(2, 0, 1)
    return pixels.expand(channels, height, width).clone()


def _digit(spec: str, data: LabeledData | None, shape, unit_class: int | None) -> torch.Tensor:
    if data is None:
        raise ValueError(f"target={spec!r} picks an image of the data: pass data")
    if spec == "digit":
        if unit_class is None:
            raise ValueError("target='digit' needs the unit's class; pass 'digit:N' for an image of class N")
        wanted = (unit_class + 1) % len(data.classes)
    else:
        try:
            wanted = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"target must be 'digit' or 'digit:N' with N a class index, got {spec!r}") from None
    rows = torch.nonzero(data.y == wanted).flatten()
    if len(rows) == 0:
        raise ValueError(f"target={spec!r}: the data holds no image of class {wanted}")
    image = data.x[rows[0]]
    if tuple(image.shape) != tuple(shape):
        raise ValueError(f"target={spec!r}: data images are {tuple(image.shape)}, the model takes {tuple(shape)}")
    return image.float().clone()


def target_image(target: torch.Tensor | str | Path, shape: tuple[int, int, int], data: LabeledData | None = None,
                 unit_class: int | None = None) -> torch.Tensor:
    """The target of a slingshot as one ``(C, H, W)`` image of ``shape``: a tensor (``(H, W)`` is repeated over
    the channels), a built-in shape of :data:`TARGET_SHAPES` (``"digit"``: the first image of ``data`` of class
    ``unit_class + 1``; ``"digit:N"``: of class ``N``) or the path of an image file (resized, grayscale for
    one channel)."""
    channels, height, width = shape
    if isinstance(target, torch.Tensor):
        target = check_tensor("target", target, ndim=(2, 3)).float()
        if target.ndim == 2:
            target = target.expand(channels, *target.shape)
        if tuple(target.shape) != (channels, height, width):
            raise ValueError(f"target must be a ({channels}, {height}, {width}) or ({height}, {width}) image, "
                             f"got {tuple(target.shape)}")
        return target.clone()
    if not isinstance(target, (str, Path)):
        raise TypeError(f"target must be an image tensor, a shape name {TARGET_SHAPES} or a file path, "
                        f"got {type(target).__name__}")
    name = str(target)
    if name in PICTURES and name != "border":
        return picture(name, height, width).float().expand(channels, height, width).clone()
    if name == "digit" or name.startswith("digit:"):
        return _digit(name, data, shape, unit_class)
    path = Path(target)
    if not path.is_file():
        raise ValueError(f"target must be an image tensor, one of {TARGET_SHAPES} or an image file, got {name!r} "
                         "(no such file)")
    return _load_image(path, shape)


class Slingshot(FineTuner):
    """Gradient slingshot (Bareeva et al. 2025) of ``unit`` of ``layer``: ``Slingshot(model, "9", 3, "cross")(data)``
    fine-tunes a copy of ``model`` so that the synthetic visualisation of logit 3 (``layer="9"`` of the bundled
    MNIST CNN; a channel of a conv layer likewise) becomes a cross.

    ``target``: see :func:`target_image`. ``gamma``: the slope of the planted gradient field; ``noise``: half
    the width of the uniform noise around the tunnel; ``tunnel``: sample ``p ~ U(0, 1)`` along it (else the start
    and the target only); ``parametrization``: the space the field is planted in, ``"pixel"`` or ``"fourier"``
    (the auditor's :func:`~veneer.neurons.visualize` parameterisations; ``decay`` as there); ``samples``:
    manipulation samples per step; ``preserve``: the weight of the preserve term inside ``L_attack``;
    ``pre_activation``: the unit is read at the input of ``layer``. The other options are the engine's
    (:class:`veneer.finetune.FineTuner`: ``alpha``, ``steps``, ``lr``, ``keep``, ``min_agreement``,
    ``checkpoint_dir``/``resume``, ``seed``, ``progress``, ...). The result's ``measures`` hold the manipulation
    loss before and after on a fixed draw of samples (``manipulation_before``/``manipulation_after``).
    """

    name = "slingshot"

    def __init__(self, model: nn.Module, layer: str, unit: int, target: torch.Tensor | str | Path, *,
                 gamma: float = 10.0, noise: float = 0.1, tunnel: bool = True, parametrization: str = "pixel",
                 decay: float = 1.0, samples: int = 32, preserve: float = 1.0, pre_activation: bool = False,
                 keep: str = "kl", lr: float = 1e-3, steps: int = 300, **options):
        super().__init__(model, keep=keep, lr=lr, steps=steps, **options)
        self.layer = resolve_layers(model, layer)[0]
        if isinstance(unit, bool) or not isinstance(unit, int) or unit < 0:
            raise ValueError(f"unit must be an int >= 0 (a channel or unit index of layer {layer!r}), got {unit!r}")
        check_positive("gamma", gamma)
        check_positive("noise", noise)
        check_positive("samples", samples, integer=True)
        check_positive("decay", decay)
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
        if isinstance(preserve, bool) or not isinstance(preserve, (int, float)) or preserve < 0:
            raise ValueError(f"preserve must be a number >= 0, got {preserve!r}")
        self.unit, self.target = unit, target
        self.gamma, self.noise, self.tunnel = float(gamma), float(noise), bool(tunnel)
        self.parametrization, self.decay, self.samples = parametrization, float(decay), samples
        self.preserve, self.pre_activation = float(preserve), bool(pre_activation)

    def attack_loss(self) -> SlingshotLoss:
        """A new :class:`SlingshotLoss` (the call takes no inputs: the target is the attack's)."""
        return SlingshotLoss(self)

    def __call__(self, data) -> FineTuneResult:
        """Fine-tune on ``data`` (any form veneer takes, or a bare tensor of inputs)."""
        loss = self.attack_loss()
        result = self.fine_tune(_inputs(data), loss)
        result.measures.update(manipulation_before=loss.manipulation(self.model),
                               manipulation_after=loss.manipulation(result.model))
        return result


class SlingshotLoss(AttackLoss):
    """``L_attack = L_man + preserve * L_preserve`` of one :class:`Slingshot` call (Bareeva et al. 2025, the
    manipulation and preservation terms; see the module doc). :meth:`prepare` resolves the target
    (:attr:`target`, an image), its parameters :attr:`q_target` and the original's activation scales."""

    def __init__(self, attack: Slingshot):
        self.attack = attack

    def prepare(self, data: LabeledData) -> None:
        attack = self.attack
        shape = tuple(data.x.shape[1:])
        if len(shape) != 3:
            raise ValueError(f"the slingshot visualises images (N, C, H, W); data holds {tuple(data.x.shape)}")
        width, _ = probe_layer(attack.model, attack.layer, shape, attack.pre_activation)
        if attack.unit >= width:
            raise ValueError(f"unit must lie in [0, {width - 1}] (layer {attack.layer!r} has {width} units), "
                             f"got {attack.unit}")
        natural = data.x[torch.randperm(len(data.x), generator=torch.Generator().manual_seed(attack.seed))[:1024]]
        with torch.no_grad():
            values, _ = self._forward(attack.model, natural)
        unit = unit_class(attack.model, attack.layer, attack.unit, natural, attack.pre_activation)
        self.target = target_image(attack.target, shape, data, unit).to(data.x)
        self.image = make_image(attack.parametrization, 1, shape, attack.decay)
        self.q_target = self.image.encode(self.target[None])[0]
        self.layer_scale = values.pow(2).mean().clamp(min=1e-8)
        self.unit_scale = unit_activation(values, attack.unit).var().clamp(min=1e-8)

    def _forward(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(the layer's values, the model's output)`` on ``x``."""
        with capture(model, [self.attack.layer], inputs=self.attack.pre_activation) as seen:
            output = model(x)
            return seen.take()[self.attack.layer], output

    def draw(self, generator: torch.Generator, device: torch.device | None = None) -> torch.Tensor:
        """``(samples, *q.shape)`` manipulation samples ``q = p q_target + u`` (see the module doc)."""
        attack = self.attack
        n = attack.samples
        shape = (n,) + (1,) * self.q_target.ndim
        p = torch.rand(shape, generator=generator) if attack.tunnel else \
            torch.randint(0, 2, shape, generator=generator).float()
        u = (torch.rand((n, *self.q_target.shape), generator=generator) * 2 - 1) * attack.noise
        return (p * self.q_target + u).to(device)

    def manipulation_terms(self, student: nn.Module, q: torch.Tensor, natural: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(L_man, L_preserve, logits on natural)`` of ``student`` at the samples ``q`` and the natural inputs
        ``natural`` (one forward pass over both)."""
        attack = self.attack
        n = len(q)
        with torch.enable_grad():  # the loss holds a gradient of the unit, even when it is only measured
            man, values, output = self._manipulation(student, q, natural)
        with torch.no_grad():
            original, _ = self._forward(attack.model, natural)
        mine = values[n:]
        preserve = (mine - original).pow(2).mean() / self.layer_scale.to(mine.device) + \
            (unit_activation(mine, attack.unit) - unit_activation(original, attack.unit)).pow(2).mean() / \
            self.unit_scale.to(mine.device)
        return man, preserve, output[n:]

    def _manipulation(self, student: nn.Module, q: torch.Tensor, natural: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(L_man, the layer's values on [images of q, natural], the output on them)``."""
        attack = self.attack
        q = q.detach().requires_grad_(True)
        image = self.image.to(q.device)
        values, output = self._forward(student, torch.cat([image.render(q), natural]))
        activation = unit_activation(values[:len(q)], attack.unit)
        (grad,) = torch.autograd.grad(activation.sum(), q, create_graph=True)
        field = image.project(attack.gamma * (self.q_target.to(q.device) - q))
        return (grad - field).pow(2).mean(), values, output

    def __call__(self, student, x, y, generator, step):
        man, preserve, logits = self.manipulation_terms(student, self.draw(generator, x.device), x)
        return StepOutput(man + self.attack.preserve * preserve, x, None, logits)

    def fingerprint(self):
        return {**super().fingerprint(), "target": repr(self.target.sum().item())}

    def manipulation(self, model: nn.Module) -> float:
        """``L_man`` of ``model`` on a fixed draw (seeded by the attack's seed) of the samples."""
        generator = torch.Generator().manual_seed(self.attack.seed + 1)
        device = next(model.parameters()).device
        q = self.draw(generator, device)
        man, _, _ = self.manipulation_terms(model, q, self.target[None].to(device))
        return float(man.detach())
