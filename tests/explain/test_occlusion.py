"""Occlusion's incremental inference on traced graphs (:mod:`veneer.explain.occlusion`): a ResNet's stem is
evaluated on the changed regions only and the residual blocks on whole maps, with the result of occluding
whole images; a graph that starts with a functional operation falls back to whole images, and says so."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from agreement import generator, randomize_batch_norm, relative_error
from torch import nn

from veneer.explain import Occlusion
from veneer.models.architectures import mnist_resnet


def test_incremental_occlusion_on_a_resnet_equals_whole_images():
    torch.manual_seed(50)
    model = randomize_batch_norm(mnist_resnet(width=2, num_classes=3).double().eval(), seed=51)
    x = torch.rand(3, 1, 12, 12, generator=generator(52), dtype=torch.float64)
    t = torch.tensor([0, 2, 1])
    full = Occlusion(model, window=3, stride=2, baseline=0.3, incremental=False)(x, t)
    fast = Occlusion(model, window=3, stride=2, baseline=0.3, batch_size=16)
    assert relative_error(fast(x, t), full) < 1e-12 and full.abs().max() > 0
    assert fast.last_incremental


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2 * 10 * 10, 3)

    def forward(self, x):
        return self.fc(F.relu(self.conv(2 * x)).flatten(1))


def test_graph_starting_with_a_function_falls_back_to_whole_images():
    torch.manual_seed(53)
    model = Scaled().double().eval()
    x = torch.rand(2, 1, 12, 12, generator=generator(54), dtype=torch.float64)
    occlusion = Occlusion(model, window=4, stride=4)
    attr = occlusion(x, target=1)
    assert not occlusion.last_incremental
    torch.testing.assert_close(attr, Occlusion(model, window=4, stride=4, incremental=False)(x, target=1))
