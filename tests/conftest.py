"""Shared fixtures: small float64 models with seeded random weights (eval mode) and matching inputs.

Every fixture is function-scoped and rebuilt from a fixed seed, so a test may modify what it gets (switch a
model to training mode, swap activations, perturb weights) without affecting other tests, and every test
sees exactly the same numbers.

Models (all ``nn.Sequential`` from :mod:`veneer.models.architectures`, ReLU activations, float64, eval):

* ``small_cnn``  -- ``mnist_cnn(channels=(4, 8), hidden=16)``: conv/ReLU/max-pool x2, 2 linear layers;
  input (B, 1, 28, 28), 10 classes. Conv layers are named ``"0"`` and ``"3"``.
* ``small_mlp``  -- ``tabular_mlp(12, (16, 8), 3)``: input (B, 12), 3 classes.
* ``tiny_vgg``   -- ``cifar_vgg(11, width=1/16)``: input (B, 3, 32, 32), 10 classes; last conv is ``"18"``.

Inputs: ``cnn_inputs`` (4, 1, 28, 28) and ``vgg_inputs`` (4, 3, 32, 32) uniform in [0, 1];
``mlp_inputs`` (4, 12) standard normal. ``*_targets`` are (4,) long tensors with a different class per sample.
"""

from __future__ import annotations

import pytest
import torch

from veneer.models.architectures import cifar_vgg, mnist_cnn, tabular_mlp

BATCH = 4
DTYPE = torch.float64

# The test models are tiny: intra-op threading only adds synchronisation cost, which on a small shared
# machine (2 cores, other processes running) makes each call up to 100x slower. One thread is fastest.
torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """Modules marked ``slow`` (a whole audit with its twins: minutes) are collected first, so that under ``make
    test`` (``pytest -n 2 --dist loadscope``, one module per worker at a time) one worker starts them at once while
    the other runs the rest; otherwise the collection order stays."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _build(factory, seed: int):
    torch.manual_seed(seed)
    return factory().to(DTYPE).eval()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- models


@pytest.fixture
def small_cnn():
    """mnist_cnn(channels=(4, 8), hidden=16), ReLU, float64, eval mode, seeded weights."""
    return _build(lambda: mnist_cnn(channels=(4, 8), hidden=16), seed=0)


@pytest.fixture
def small_mlp():
    """tabular_mlp(12, (16, 8), 3), ReLU, float64, eval mode, seeded weights."""
    return _build(lambda: tabular_mlp(12, (16, 8), 3), seed=1)


@pytest.fixture
def tiny_vgg():
    """cifar_vgg(11, width=1/16), ReLU, float64, eval mode (dropout off), seeded weights."""
    return _build(lambda: cifar_vgg(11, width=1 / 16), seed=2)


# ---------------------------------------------------------------- inputs and targets


@pytest.fixture
def cnn_inputs():
    """(4, 1, 28, 28) float64 uniform in [0, 1]."""
    return torch.rand(BATCH, 1, 28, 28, generator=_generator(10), dtype=DTYPE)


@pytest.fixture
def mlp_inputs():
    """(4, 12) float64 standard normal."""
    return torch.randn(BATCH, 12, generator=_generator(11), dtype=DTYPE)


@pytest.fixture
def vgg_inputs():
    """(4, 3, 32, 32) float64 uniform in [0, 1]."""
    return torch.rand(BATCH, 3, 32, 32, generator=_generator(12), dtype=DTYPE)


@pytest.fixture
def cnn_targets():
    return torch.tensor([0, 3, 7, 9])


@pytest.fixture
def mlp_targets():
    return torch.tensor([0, 2, 1, 2])


@pytest.fixture
def vgg_targets():
    return torch.tensor([1, 4, 8, 5])


# ---------------------------------------------------------------- bundles


@pytest.fixture
def cnn_case(small_cnn, cnn_inputs, cnn_targets):
    """(model, x, target) for the small CNN."""
    return small_cnn, cnn_inputs, cnn_targets


@pytest.fixture
def mlp_case(small_mlp, mlp_inputs, mlp_targets):
    """(model, x, target) for the small MLP."""
    return small_mlp, mlp_inputs, mlp_targets


@pytest.fixture
def vgg_case(tiny_vgg, vgg_inputs, vgg_targets):
    """(model, x, target) for the tiny VGG."""
    return tiny_vgg, vgg_inputs, vgg_targets


@pytest.fixture(params=["cnn", "mlp"])
def model_case(request):
    """(model, x, target) for the CNN and the MLP in turn (methods that apply to any input rank)."""
    return request.getfixturevalue(f"{request.param}_case")


@pytest.fixture(params=["cnn", "vgg"])
def image_case(request):
    """(model, x, target) for the CNN and the tiny VGG in turn (image-only methods)."""
    return request.getfixturevalue(f"{request.param}_case")


@pytest.fixture(params=["cnn", "mlp", "vgg"])
def any_case(request):
    """(model, x, target) for the CNN, the MLP and the tiny VGG in turn."""
    return request.getfixturevalue(f"{request.param}_case")
