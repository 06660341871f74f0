"""Reference architectures: ``nn.Sequential`` chains of named modules, residual networks (:class:`ResNet`) and a
small vision transformer (:class:`ViT`).
Every explainer (LRP and DeepLift through the traced graph) and every layer-name based tool applies to them."""

from __future__ import annotations

import torch
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


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016, Fig. 2 and Sec. 3.3 option B): two 3x3 convolutions with batch norm,
    ``act(bn2(conv2(act(bn1(conv1(x))))) + shortcut(x))``; the shortcut is a 1x1 convolution with batch norm
    where the shape changes, else the identity. Each activation is its own module (no module is called twice),
    so Softplus surrogates and layer-name tools see every one."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, activation: str = "relu"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.act2 = make_activation(activation)

    def forward(self, x):
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet (He et al. 2016, Sec. 4.2): a 3x3 stem, three stages of basic blocks with
    ``width``, ``2 width``, ``4 width`` channels (strides 1, 2, 2), global average pooling and a linear layer.
    Not a chain: LRP and DeepLift follow its residual sums through the traced graph."""

    def __init__(self, blocks: tuple[int, int, int] = (1, 1, 1), width: int = 16, num_classes: int = 10,
                 in_channels: int = 1, activation: str = "relu"):
        super().__init__()
        if len(blocks) != 3 or not all(isinstance(b, int) and b >= 1 for b in blocks):
            raise ValueError(f"blocks must be three ints >= 1 (blocks per stage), got {blocks!r}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  make_activation(activation))
        stages, channels = [], width
        for stage, count in enumerate(blocks):
            out = width * 2 ** stage
            stages.append(nn.Sequential(*[BasicBlock(channels if i == 0 else out, out,
                                                     2 if stage > 0 and i == 0 else 1, activation)
                                          for i in range(count)]))
            channels = out
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


def mnist_resnet(activation: str = "relu", width: int = 16, blocks: tuple[int, int, int] = (1, 1, 1),
                 num_classes: int = 10) -> ResNet:
    """ResNet-8 for 1x28x28 inputs (stem + 3 blocks x 2 convs + linear; He et al. 2016's CIFAR family with
    n = 1); ``blocks=(3, 3, 3)`` gives ResNet-20."""
    return ResNet(blocks, width, num_classes, 1, activation)


def cifar_resnet(activation: str = "relu", width: int = 16, blocks: tuple[int, int, int] = (3, 3, 3),
                 num_classes: int = 10) -> ResNet:
    """ResNet-20 for 3x32x32 inputs (He et al. 2016, Sec. 4.2, n = 3)."""
    return ResNet(blocks, width, num_classes, 3, activation)


class SelfAttention(nn.Module):
    """Multi-head self-attention (Vaswani et al. 2017, Eq. 1): ``softmax(q k^T / sqrt(d)) v`` per head, the heads
    concatenated and projected; tokens ``(B, N, dim)``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim must be a multiple of heads, got dim={dim}, heads={heads}")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, dim = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attention = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(b, n, dim))


class TransformerBlock(nn.Module):
    """A pre-norm encoder block (Dosovitskiy et al. 2021, Eq. 2-3): ``x + attention(LN(x))``, then
    ``x + MLP(LN(x))`` with a GELU MLP of ``mlp_ratio * dim`` hidden units."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(dim), SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A small vision transformer (Dosovitskiy et al. 2021): non-overlapping ``patch x patch`` patches embedded by
    a strided convolution, learned position embeddings, ``depth`` pre-norm blocks, a final LayerNorm, the mean
    over tokens (no class token) and a linear head."""

    def __init__(self, image_size: int = 28, patch: int = 7, in_channels: int = 1, dim: int = 32, depth: int = 2,
                 heads: int = 2, mlp_ratio: int = 2, num_classes: int = 10):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size must be a multiple of patch, got {image_size} and {patch}")
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.position = nn.Parameter(torch.randn(1, (image_size // patch) ** 2, dim) * 0.02)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.position
        return self.head(self.norm(self.blocks(tokens)).mean(1))


def mnist_vit(dim: int = 32, depth: int = 2, heads: int = 2) -> ViT:
    """:class:`ViT` for 1x28x28 MNIST: 7x7 patches (16 tokens), width ``dim``, ``depth`` blocks of ``heads``
    heads."""
    return ViT(28, 7, 1, dim, depth, heads)
