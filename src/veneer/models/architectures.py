"""Reference architectures. All are ``nn.Sequential`` chains of named modules, so every explainer
(LRP and DeepLift included) and every layer-name based tool applies to them."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = ("relu", "softplus")

# VGG configurations (Simonyan & Zisserman 2015, Table 1) for 32x32 inputs; "M" is a 2x2 max-pool.
VGG_CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def make_activation(activation: str = "relu", beta: float = 20.0) -> nn.Module:
    """``"relu"`` or ``"softplus"`` (Softplus(beta), the smooth surrogate of thesis 3.2.2)."""
    if activation == "relu":
        return nn.ReLU()
    if activation == "softplus":
        return nn.Softplus(beta=beta)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def mnist_cnn(activation: str = "relu", channels: tuple[int, int] = (32, 64), hidden: int = 128,
              num_classes: int = 10) -> nn.Sequential:
    """Two conv blocks (3x3 conv, activation, 2x2 max-pool) and two linear layers, for 1x28x28 inputs."""
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), make_activation(activation), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), make_activation(activation), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 7 * 7, hidden), make_activation(activation),
        nn.Linear(hidden, num_classes),
    )


def cifar_vgg(depth: int = 11, activation: str = "relu", width: float = 1.0, batch_norm: bool = False,
              num_classes: int = 10, in_channels: int = 3) -> nn.Sequential:
    """VGG-style network for 32x32 inputs (depth 11, 13 or 16 as in the thesis); ``width`` scales channels."""
    if depth not in VGG_CONFIGS:
        raise ValueError(f"depth must be one of {sorted(VGG_CONFIGS)}, got {depth!r}")
    layers: list[nn.Module] = []
    channels = in_channels
    for item in VGG_CONFIGS[depth]:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        out = max(1, int(item * width))
        layers.append(nn.Conv2d(channels, out, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(make_activation(activation))
        channels = out
    hidden = max(1, int(512 * width))
    layers += [nn.Flatten(), nn.Linear(channels, hidden), make_activation(activation), nn.Dropout(0.5),
               nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


def tabular_mlp(in_features: int, hidden: tuple[int, ...] = (64, 32), num_classes: int = 2,
                activation: str = "relu") -> nn.Sequential:
    """Fully connected network for tabular (or flattened image) features."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), make_activation(activation)]
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def digits_mlp(activation: str = "relu") -> nn.Sequential:
    """MLP for the 8x8 scikit-learn digits, taking (B, 1, 8, 8) images."""
    return nn.Sequential(nn.Flatten(), *tabular_mlp(64, (64, 32), 10, activation))
