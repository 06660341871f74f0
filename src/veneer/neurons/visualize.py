"""Synthetic feature visualisation: an input optimised to activate one channel (activation maximisation).

Erhan et al. (2009) maximise a unit's activation by gradient ascent on the input; Olah, Mordvintsev &
Schubert (2017), "Feature Visualization" (Distill), make the images interpretable with a decorrelated
parameterisation (image = inverse FFT of a spectrum scaled by ``1 / frequency^decay``, channels mixed by
the square root of their covariance), random jitter/scale/rotation at each step (transformation
robustness) and L2 / total-variation penalties.  Nanfack et al. (2024), Sec. 5 (Fig. 9), show such
visualisations before and after their attacks.  The activation maximised is that of Eq. 1 of Nanfack
et al. (mean over positions of the squared map of a convolutional channel; the value of a linear unit).

The auditor's variants (Bareeva et al. 2025, "Manipulating Feature Visualizations with Gradient Slingshots",
Sec. 5, evaluate a manipulation against each): ``parametrization="fourier"`` (the decorrelated spectrum above)
or ``"pixel"`` (the image itself, started at N(0, ``init_std``^2)), ``optimizer="adam"`` or ``"sgd"``, and
transformation robustness on or off (``jitter=0, rotation=0, scale=(1, 1)`` turns it off).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from veneer.checks import check_eval_mode, check_positive, check_tensor
from veneer.models import capture
from veneer.neurons.record import ActivationRecorder, resolve_layers
from veneer.progress import progress_bar

__all__ = ["FourierImage", "PixelImage", "PARAMETRIZATIONS", "OPTIMIZERS", "channel_decorrelation", "random_affine",
           "total_variation", "visualize", "probe_layer", "make_image"]


def channel_decorrelation(x: torch.Tensor) -> torch.Tensor:
    """``(C, C)`` square root of the channel covariance of images ``x`` (N, C, H, W), scaled so that its
    largest column has norm 1 (Olah et al. 2017, "decorrelated space"); mixes independent parameters
    into channels correlated like natural images."""
    x = check_tensor("x", x, ndim=4)
    pixels = x.transpose(0, 1).flatten(1).double()
    pixels = pixels - pixels.mean(dim=1, keepdim=True)
    cov = pixels @ pixels.T / max(pixels.shape[1] - 1, 1)
    eigenvalues, vectors = torch.linalg.eigh(cov)
    root = vectors @ torch.diag(eigenvalues.clamp(min=0).sqrt()) @ vectors.T
    norm = root.norm(dim=0).max()
    return (root / norm if norm > 0 else torch.eye(x.shape[1], dtype=root.dtype)).float()


class FourierImage(nn.Module):
    """``n`` images (n, C, H, W) in [0, 1] parameterised by their Fourier spectrum (Olah et al. 2017).

    ``image = sigmoid(M @ irfft2(spectrum / max(f, 1/max(H, W))^decay))`` with ``f`` the radial
    frequency and ``M`` a ``(C, C)`` channel decorrelation (identity by default; see
    :func:`channel_decorrelation`).  Any number of channels, grayscale included.
    """

    def __init__(self, n: int, shape: tuple[int, int, int], decay: float = 1.0,
                 decorrelation: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 init_std: float = 0.01):
        super().__init__()
        channels, height, width = shape
        fy = torch.fft.fftfreq(height)[:, None]
        fx = torch.fft.rfftfreq(width)[None, :]
        frequency = (fy.pow(2) + fx.pow(2)).sqrt()
        self.register_buffer("spectrum_scale", frequency.clamp(min=1.0 / max(height, width)).pow(-decay))
        # Normalise so that the spatial image starts with about init_std spread whatever the size.
        self.spectrum_scale /= self.spectrum_scale.pow(2).sum().sqrt() / math.sqrt(height * width)
        spectrum = torch.randn(n, channels, height, width // 2 + 1, 2, generator=generator) * init_std
        self.spectrum = nn.Parameter(spectrum)
        if decorrelation is None:
            decorrelation = torch.eye(channels)
        decorrelation = check_tensor("decorrelation", decorrelation, ndim=2)
        if decorrelation.shape != (channels, channels):
            raise ValueError(f"decorrelation must be ({channels}, {channels}), got {tuple(decorrelation.shape)}")
        self.register_buffer("decorrelation", decorrelation.float())
        self.size = (height, width)

    def forward(self) -> torch.Tensor:
        return self.render(self.spectrum)

    def render(self, spectrum: torch.Tensor) -> torch.Tensor:
        """Images (n, C, H, W) of any batch of spectra shaped like :attr:`spectrum` (differentiable)."""
        spectrum = torch.view_as_complex(spectrum.contiguous()) * self.spectrum_scale
        spatial = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        mixed = torch.einsum("ij,njhw->nihw", self.decorrelation, spatial)
        return torch.sigmoid(mixed)

    def encode(self, images: torch.Tensor, clip: float = 0.02) -> torch.Tensor:
        """The spectra (n, C, H, W // 2 + 1, 2) that :meth:`render` maps to ``images`` (n, C, H, W) once these
        are clipped to ``[clip, 1 - clip]`` (the sigmoid never reaches 0 or 1): the inverse parameterisation."""
        logits = torch.logit(images.clamp(clip, 1 - clip))
        unmixed = torch.einsum("ij,njhw->nihw", torch.linalg.inv(self.decorrelation), logits)
        spectrum = torch.fft.rfft2(unmixed, norm="ortho") / self.spectrum_scale
        return torch.view_as_real(spectrum).contiguous()

    def project(self, spectrum: torch.Tensor) -> torch.Tensor:
        """The part of ``spectrum`` the image depends on: the half spectrum of a real image has redundant entries
        (the imaginary parts of its real coefficients, conjugate pairs in the first and last columns) that
        :meth:`render` ignores; every gradient with respect to the spectrum lies in the image of this projection."""
        complex_ = torch.view_as_complex(spectrum.contiguous()) * self.spectrum_scale
        spatial = torch.fft.irfft2(complex_, s=self.size, norm="ortho")
        return torch.view_as_real(torch.fft.rfft2(spatial, norm="ortho") / self.spectrum_scale).contiguous()


class PixelImage(nn.Module):
    """``n`` images (n, C, H, W) parameterised by their pixels, started at N(0, ``init_std``^2) (Erhan et al.
    2009; the "pixel" parameterisation of Bareeva et al. 2025). Unbounded: nothing keeps them in [0, 1]."""

    def __init__(self, n: int, shape: tuple[int, int, int], generator: torch.Generator | None = None,
                 init_std: float = 0.01):
        super().__init__()
        self.pixels = nn.Parameter(torch.randn(n, *shape, generator=generator) * init_std)

    def forward(self) -> torch.Tensor:
        return self.pixels

    def render(self, pixels: torch.Tensor) -> torch.Tensor:
        """The images of parameters ``pixels``: the pixels themselves."""
        return pixels

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The parameters of ``images``: the images themselves."""
        return images.clone()

    def project(self, pixels: torch.Tensor) -> torch.Tensor:
        """Every pixel matters: the identity."""
        return pixels


PARAMETRIZATIONS = ("fourier", "pixel")
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def make_image(parametrization: str, n: int, shape: tuple[int, int, int], decay: float = 1.0,
               decorrelation: torch.Tensor | None = None, generator: torch.Generator | None = None,
               init_std: float = 0.01) -> FourierImage | PixelImage:
    """``n`` images of one :data:`PARAMETRIZATIONS` (their one parameter started at N(0, ``init_std``^2)); both
    kinds map any batch of parameters to images (``render``) and images to parameters (``encode``)."""
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
    if parametrization == "pixel":
        return PixelImage(n, shape, generator, init_std)
    return FourierImage(n, shape, decay, decorrelation, generator, init_std)


def random_affine(images: torch.Tensor, generator: torch.Generator, jitter: float = 2.0,
                  scale: tuple[float, float] = (0.9, 1.1), rotation: float = 10.0) -> torch.Tensor:
    """Each image moved by up to ``jitter`` pixels, scaled by a factor in ``scale`` and rotated by up to
    ``rotation`` degrees (transformation robustness, Olah et al. 2017); reflection padding; batched."""
    n, _, height, width = images.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(rotation)
    factor = scale[0] + torch.rand(n, generator=generator) * (scale[1] - scale[0])
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * jitter
    cos, sin = angle.cos() / factor, angle.sin() / factor
    theta = torch.stack([
        torch.stack([cos, -sin, shift[:, 0] * 2 / width], dim=1),
        torch.stack([sin, cos, shift[:, 1] * 2 / height], dim=1),
    ], dim=1).to(images)
    grid = nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return nn.functional.grid_sample(images, grid, padding_mode="reflection", align_corners=False)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels of each image, ``(n,)``."""
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(dim=1)
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(dim=1)
    return dy + dx


def visualize(model: nn.Module, layer: str, channels: int | list[int] | None = None, *,
              input_shape: tuple[int, int, int] = (1, 28, 28), steps: int = 256, lr: float = 0.05,
              decay: float = 1.0, jitter: float = 2.0, scale: tuple[float, float] = (0.9, 1.1),
              rotation: float = 10.0, l2: float = 1e-3, tv: float = 1e-2,
              decorrelation: torch.Tensor | None = None, pre_activation: bool = False, seed: int = 0,
              parametrization: str = "fourier", optimizer: str = "adam", init_std: float = 0.01,
              progress: bool = False) -> torch.Tensor:
    """Synthetic activation maximisation of ``channels`` of ``layer`` (all channels when None).

    Gradient ascent (``optimizer``: Adam or plain SGD, ``lr``, ``steps``) on one image per channel of the
    ``parametrization`` (:class:`FourierImage` or :class:`PixelImage`, parameters started at N(0, ``init_std``^2)),
    all channels in one batch, on ``activation_c(T(x)) / positions - l2 * mean(x^2) - tv * TV(x)`` with ``T`` a
    fresh :func:`random_affine` transform each step (none when ``jitter``, ``rotation`` are 0 and ``scale`` is
    (1, 1)).  ``input_shape`` is one input's (C, H, W); returns ``(len(channels), C, H, W)`` images (the final
    parameterised images, untransformed; in [0, 1] for the Fourier parameterisation, unbounded for pixels).
    """
    check_eval_mode(model)
    resolve_layers(model, layer)
    if len(input_shape) != 3 or not all(isinstance(v, int) and v > 0 for v in input_shape):
        raise ValueError(f"input_shape must be (C, H, W) positive ints, got {input_shape!r}")
    check_positive("steps", steps, integer=True)
    check_positive("lr", lr)
    check_positive("init_std", init_std)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
    for name, value in (("jitter", jitter), ("rotation", rotation), ("l2", l2), ("tv", tv)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    width, positions = probe_layer(model, layer, input_shape, pre_activation)
    if channels is None:
        index = torch.arange(width)
    else:
        index = torch.tensor([channels] if isinstance(channels, int) else list(channels), dtype=torch.long)
        if index.numel() == 0 or ((index < 0) | (index >= width)).any():
            raise ValueError(f"channels must be non-empty and lie in [0, {width - 1}], got {channels!r}")
    image = make_image(parametrization, len(index), input_shape, decay, decorrelation, generator, init_std).to(device)
    ascent = OPTIMIZERS[optimizer](image.parameters(), lr=lr)
    transform = jitter > 0 or rotation > 0 or tuple(scale) != (1, 1)
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        with ActivationRecorder(model, layer, pre_activation) as recorder:
            for _ in progress_bar(range(steps), desc="visualize", disable=not progress):
                x = image()
                model(random_affine(x, generator, jitter, scale, rotation) if transform else x)
                values = recorder.take()[layer]
                gain = values.gather(1, index.to(device)[:, None]).squeeze(1) / positions
                penalty = l2 * x.pow(2).flatten(1).mean(dim=1) + tv * total_variation(x)
                loss = (penalty - gain).sum()
                ascent.zero_grad(set_to_none=True)
                loss.backward()
                ascent.step()
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    with torch.no_grad():
        return image().detach().cpu()


@torch.no_grad()
def probe_layer(model: nn.Module, layer: str, input_shape: tuple[int, ...],
                pre_activation: bool = False) -> tuple[int, int]:
    """Channels of ``layer`` and spatial positions per channel (1 for a linear layer), from one zero input of
    shape ``input_shape`` (one input's, without the batch axis)."""
    x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    with capture(model, [layer], inputs=pre_activation) as seen:
        model(x)
    value = seen[layer]
    return value.shape[1], int(value[0, 0].numel()) if value.ndim > 2 else 1
