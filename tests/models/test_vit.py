"""The small vision transformer (``mnist_vit``, bundled as ``mnist-vit``): its shape contract, and the library's
levels on it with tiny settings -- an input attack, a model-level manipulation through AttnLRP, and the audit."""

from __future__ import annotations

import pytest
import torch

from veneer.attacks import TopK
from veneer.audit import Audit
from veneer.data import as_labeled, mnist
from veneer.explain import LRP, Gradient
from veneer.manipulate import CenterOfMass, Manipulation
from veneer.models import RECIPES, mnist_vit
from veneer.models.architectures import ViT


def tiny_vit(seed: int = 0) -> ViT:
    torch.manual_seed(seed)
    return ViT(28, 7, 1, dim=8, depth=1, heads=2).eval()


@pytest.fixture(scope="module")
def images():
    data = mnist("test")
    return data.x[:16], data.y[:16]


def test_the_bundled_recipe_builds_a_vit_with_7x7_patches():
    model = RECIPES["mnist-vit"].build((1, 28, 28))
    assert isinstance(model, ViT) and model.embed.kernel_size == (7, 7) and model.position.shape == (1, 16, 32)
    assert model.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert sum(p.numel() for p in mnist_vit().parameters()) < 40_000
    with pytest.raises(ValueError, match="image_size must be a multiple of patch"):
        ViT(image_size=28, patch=5)
    with pytest.raises(ValueError, match="dim must be a multiple of heads"):
        ViT(dim=10, heads=4)


def test_an_input_attack_moves_the_vit_explanation_and_keeps_the_label(images):
    """Top-k (Ghorbani et al. 2019) on the untrained tiny ViT. (The mass-center attack does not move a model
    without ReLU: its objective ``|c(x') - c(x)|^2`` has a zero gradient at ``x'= x`` unless a Softplus surrogate
    differs from the model, and a ViT has no ReLU to replace.)"""
    model = tiny_vit()
    x = images[0][:6]
    y = model(x).argmax(1)
    attack = TopK(model, Gradient(model), k=50, eps=0.1, steps=3)
    x_adv = attack(x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and torch.equal(model(x_adv).argmax(1), y)
    assert attack.result.label_kept.all() and (attack.result.dissimilarity > 0.2).all()


def test_a_manipulation_through_attn_lrp_lowers_its_loss(images):
    model = tiny_vit()
    data = as_labeled(images)
    explainer = LRP(model, composite="attn_lrp")
    result = Manipulation(model, explainer, CenterOfMass((0, 0)), alpha=0.9, lr=3e-3, epochs=4,
                          batch_size=len(data.x), progress=False)(data)
    history = result.history
    assert len(history) == 4 and history[-1]["attack"] < history[0]["attack"]
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), result.model.parameters()))


def test_the_audit_runs_on_a_vit_with_every_default_method(images):
    model = tiny_vit()
    data = as_labeled((mnist("train").x[:300], mnist("train").y[:300]))
    result = Audit(model, reference=tiny_vit(seed=1), tests=["noise_inputs", "cross_method_agreement"],
                   options={"samples": 6, "ig_steps": 4})(data)
    assert result.config["dropped_methods"] == {}
    assert set(result.config["methods"]) >= {"gradient", "ig", "lrp", "occlusion"}
    assert set(result.tests) == {"noise_inputs", "cross_method_agreement"}
