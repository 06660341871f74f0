"""The residual reference architectures (:func:`veneer.models.mnist_resnet`, :func:`veneer.models.cifar_resnet`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from veneer.models import RECIPES, cifar_resnet, mnist_resnet, with_softplus


def test_resnet8_and_resnet20_shapes_and_depth():
    model = mnist_resnet(width=4).eval()
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    convs = [m for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and "shortcut" not in name]
    assert len(convs) + 1 == 8  # stem + 3 blocks x 2 convolutions + the linear layer
    deep = cifar_resnet(width=4).eval()
    assert deep(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert sum(isinstance(m, nn.Conv2d) for n, m in deep.named_modules() if "shortcut" not in n) + 1 == 20


def test_identity_shortcut_and_projection_shortcut():
    model = mnist_resnet(width=4, blocks=(2, 1, 1))
    assert isinstance(model.layer1[0].shortcut, nn.Identity) and isinstance(model.layer1[1].shortcut, nn.Identity)
    assert isinstance(model.layer2[0].shortcut[0], nn.Conv2d) and model.layer2[0].shortcut[0].stride == (2, 2)


def test_every_activation_is_its_own_module_so_softplus_replaces_all():
    model = mnist_resnet(width=4)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == len({id(m) for m in relus}) == 7
    smooth = with_softplus(model, beta=10)
    assert not any(isinstance(m, nn.ReLU) for m in smooth.modules())
    assert sum(isinstance(m, nn.Softplus) for m in smooth.modules()) == 7


def test_bad_blocks_and_registry_entry():
    with pytest.raises(ValueError, match=r"blocks must be three ints >= 1"):
        mnist_resnet(blocks=(1, 1))
    assert RECIPES["mnist-resnet"].dataset == "mnist"
    assert isinstance(RECIPES["mnist-resnet"].build((1, 28, 28)), nn.Module)
