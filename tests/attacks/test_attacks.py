"""Input-level attacks (veneer.attacks): budget, range and label guarantees, effectiveness on the bundled
MNIST CNN, batch invariance, argument errors, and the ``attack-input`` CLI."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from veneer.attacks import (ATTACKS, IterativeAttack, MassCenter, RandomSign, TargetMapAttack, TargetRegion, TopK,
                            explanation_change, make_attack, saliency_map, sweep)
from veneer.cli.attack import register
from veneer.data import mnist
from veneer.explain import BACKGROUND_METHODS, METHODS, Gradient, IntegratedGradients, Occlusion, make_explainer
from veneer.metrics import mse
from veneer.models import pretrained
from veneer.models.architectures import mnist_cnn


def every_attack(model, explainer, eps, **options):
    """One instance of each attack class (targeted ones with a fixed region / target map)."""
    region = torch.zeros(28, 28)
    region[:10, :10] = 1
    target = torch.rand(28, 28, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    iterative = {"eps": eps, "steps": 3, **options}
    return [RandomSign(model, explainer, eps=eps, input_range=options.get("input_range", (0.0, 1.0))),
            TopK(model, explainer, k=50, **iterative), MassCenter(model, explainer, **iterative),
            TargetRegion(model, explainer, mask=region, **iterative),
            TargetMapAttack(model, explainer, target=target, beta_growth=(10.0, 100.0), **iterative)]


def assert_valid(attack, model, x, x_adv, low=0.0, high=1.0):
    """Every returned image is inside the eps ball and the input range exactly, and keeps its label."""
    eps = attack.eps
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert bool(((x_adv - x).abs() <= eps).all())
    assert bool(((x_adv >= low) & (x_adv <= high)).all())
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1), model(x).argmax(1))
    result = attack.result
    assert bool(result.label_kept.all())
    assert torch.equal(result.linf, (x_adv - x).abs().flatten(1).amax(1))
    assert result.iterations.dtype == torch.long
    unchanged = result.iterations == 0
    assert bool((result.linf[unchanged] == 0).all())
    if isinstance(attack, IterativeAttack):  # an iterate is kept only when it beats the clean image's 0
        assert bool((result.iterations <= attack.steps).all())
        assert bool((result.dissimilarity[unchanged] == 0).all())
        assert bool((result.dissimilarity[~unchanged] > 0).all())


@pytest.mark.parametrize("eps", [0.05, 0.5])
def test_every_attack_respects_budget_range_and_label(cnn_case, eps):
    model, x, _ = cnn_case
    explainer = Gradient(model)
    for attack in every_attack(model, explainer, eps):
        assert_valid(attack, model, x, attack(x))


def test_normalized_data_uses_its_own_per_channel_range(cnn_case):
    model, x, _ = cnn_case
    mean, std = 0.3, 0.4
    # the same network on standardised inputs: fold the normalization into the input
    normalized = (x - mean) / std
    low, high = torch.tensor((0 - mean) / std).view(1, 1, 1), torch.tensor((1 - mean) / std).view(1, 1, 1)
    net = nn.Sequential(*model).eval()
    attack = MassCenter(net, Gradient(net), eps=0.2, steps=3, input_range=(low.double(), high.double()))
    x_adv = attack(normalized)
    assert_valid(attack, net, normalized, x_adv, low.item(), high.item())
    assert float((x_adv - normalized).abs().max()) > 0.1


def test_every_differentiable_explainer_can_be_attacked(small_cnn, cnn_inputs):
    for name in (m for m in METHODS if m not in BACKGROUND_METHODS):  # LIME/KernelSHAP: tabular, not differentiable
        options = {"layer": "3"} if name == "gradcam" else {"steps": 4} if name == "ig" else {}
        explainer = make_explainer(name, small_cnn, **options)
        if not explainer.differentiable:
            continue
        attack = MassCenter(small_cnn, explainer, eps=0.1, steps=2)
        x_adv = attack(cnn_inputs)
        assert_valid(attack, small_cnn, cnn_inputs, x_adv)
        assert bool((attack.result.dissimilarity > 0).any()), name


def test_the_model_itself_is_never_modified(small_cnn, cnn_inputs):
    before = {k: v.clone() for k, v in small_cnn.state_dict().items()}
    TargetMapAttack(small_cnn, Gradient(small_cnn), target=torch.ones(28, 28), steps=2, beta_growth=(10.0, 100.0))(cnn_inputs)
    assert all(isinstance(small_cnn[i], nn.ReLU) for i in (1, 4, 8))
    assert all(torch.equal(before[k], v) for k, v in small_cnn.state_dict().items())


def test_beta_growth_reaches_its_end_value(small_cnn, cnn_inputs):
    attack = TargetMapAttack(small_cnn, Gradient(small_cnn), target=torch.ones(28, 28), steps=3, beta_growth=(10.0, 100.0))
    attack(cnn_inputs)
    betas = [m.beta for m in attack.surrogate.modules() if isinstance(m, nn.Softplus)]
    assert len(betas) == 3 and all(b == pytest.approx(100.0) for b in betas)


@pytest.mark.parametrize("attack_class", [MassCenter, TopK])
def test_a_batch_gives_each_image_its_own_result(small_cnn, cnn_inputs, attack_class):
    # float64 model and inputs: batched and single-image kernels agree to ~1e-16, far from flipping a sign step
    explainer = IntegratedGradients(small_cnn, steps=4)
    attack = attack_class(small_cnn, explainer, eps=0.1, steps=4)
    batched = attack(cnn_inputs)
    record = attack.result
    for i in range(len(cnn_inputs)):
        alone = attack(cnn_inputs[i:i + 1])
        torch.testing.assert_close(alone[0], batched[i], rtol=0, atol=1e-12)
        torch.testing.assert_close(attack.result.dissimilarity[0], record.dissimilarity[i], rtol=0, atol=1e-9)
        assert attack.result.iterations[0] == record.iterations[i]


def test_random_sign_is_reproducible_for_a_seed(small_cnn, cnn_inputs):
    explainer = Gradient(small_cnn)
    first = RandomSign(small_cnn, explainer, eps=0.05, seed=4)(cnn_inputs)
    again = RandomSign(small_cnn, explainer, eps=0.05, seed=4)(cnn_inputs)
    other = RandomSign(small_cnn, explainer, eps=0.05, seed=5)(cnn_inputs)
    assert torch.equal(first, again) and not torch.equal(first, other)


# ---------------------------------------------------------------- effectiveness on the bundled MNIST CNN


@pytest.fixture(scope="module")
def mnist_case():
    """The bundled CNN and its first 64 correctly classified MNIST test images."""
    model = pretrained("mnist-cnn", progress=False)
    data = mnist("test")
    x, y = data.x[:80], data.y[:80]
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert int(correct.sum()) >= 64
    return model, x[correct][:64], y[correct][:64]


def test_random_draws_that_change_the_label_return_the_clean_image(mnist_case):
    model, x, y = mnist_case
    attack = RandomSign(model, Gradient(model), eps=0.3, seed=0)
    x_adv = attack(x, y)
    signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0)).to(x) * 2 - 1
    with torch.no_grad():
        flipped = model((x + 0.3 * signs).clamp(0, 1)).argmax(1) != y
    assert 0 < int(flipped.sum()) < len(x)
    assert torch.equal(x_adv[flipped], x[flipped]) and not bool((x_adv[~flipped] == x[~flipped]).all())
    assert torch.equal(attack.result.iterations, (~flipped).long())
    assert_valid(attack, model, x, x_adv)


def test_iterates_that_change_the_label_are_rejected(mnist_case):
    model, x, y = mnist_case
    x, y = x[:16], y[:16]
    attack = MassCenter(model, Gradient(model), eps=0.3, step_size=0.15, steps=3)
    judge, rejected = attack.judge, []

    def counting_judge(candidate, labels):
        kept, score = judge(candidate, labels)
        rejected.append(int((~kept).sum()))
        return kept, score

    attack.judge = counting_judge
    x_adv = attack(x, y)
    assert sum(rejected) > 0
    assert_valid(attack, model, x, x_adv)


def test_targeted_attacks_beat_random_sign_on_mnist(mnist_case):
    model, x, y = mnist_case
    explainer = Gradient(model)
    changes = {}
    for attack in (RandomSign(model, explainer, eps=0.1), MassCenter(model, explainer, eps=0.1, steps=5),
                   TopK(model, explainer, k=100, eps=0.1, steps=5)):
        x_adv = attack(x, y)
        assert_valid(attack, model, x, x_adv)
        changes[attack.name] = {k: v.mean().item() for k, v in explanation_change(explainer, x, x_adv, y, 100).items()}
    assert changes["mass-center"]["com_shift"] >= 2 * changes["random"]["com_shift"]
    assert changes["top-k"]["topk_intersection"] < changes["random"]["topk_intersection"]


def test_target_map_halves_the_distance_to_a_reachable_target(mnist_case):
    # the target is the saliency map of a random-sign point inside the eps ball (so it can be reached)
    model, x, y = mnist_case
    x, y = x[:16], y[:16]
    explainer = Gradient(model)
    signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(1)).to(x) * 2 - 1
    target = saliency_map(explainer, (x + 0.1 * signs).clamp(0, 1), y)
    attack = TargetMapAttack(model, explainer, target=target, eps=0.1, steps=10, beta_growth=(10.0, 100.0))
    x_adv = attack(x, y)

    def distance(images):
        h = saliency_map(explainer, images, y)
        return mse(h / h.sum((1, 2), keepdim=True), target / target.sum((1, 2), keepdim=True))

    assert distance(x_adv).mean() <= 0.5 * distance(x).mean()
    torch.testing.assert_close(attack.result.dissimilarity, distance(x) - distance(x_adv), rtol=1e-4, atol=1e-9)


# ---------------------------------------------------------------- bad input


def test_bad_arguments_raise_clear_errors(small_cnn, cnn_inputs):
    explainer = Gradient(small_cnn)
    with pytest.raises(ValueError, match="eps must be > 0"):
        MassCenter(small_cnn, explainer, eps=0.0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        RandomSign(small_cnn, explainer, eps=-0.1)
    with pytest.raises(ValueError, match="steps must be > 0"):
        TopK(small_cnn, explainer, steps=0)
    with pytest.raises(ValueError, match="explainer was built for another model"):
        MassCenter(small_cnn, Gradient(mnist_cnn(channels=(4, 8), hidden=16).double().eval()))
    with pytest.raises(ValueError, match="mask must have shape"):
        TargetRegion(small_cnn, explainer, mask=torch.ones(27, 28), steps=1)(cnn_inputs)
    with pytest.raises(ValueError, match="target must have shape"):
        TargetMapAttack(small_cnn, explainer, target=torch.ones(3, 28, 28), steps=1)(cnn_inputs)
    with pytest.raises(ValueError, match="target must be a non-negative map"):
        TargetMapAttack(small_cnn, explainer, target=-torch.ones(28, 28))
    with pytest.raises(ValueError, match="k must be at most"):
        TopK(small_cnn, explainer, k=10_000, steps=1)(cnn_inputs)
    with pytest.raises(ValueError, match="not differentiable"):
        MassCenter(small_cnn, Occlusion(small_cnn))
    with pytest.raises(ValueError, match="outside input_range"):
        MassCenter(small_cnn, explainer, steps=1)(cnn_inputs + 1)
    with pytest.raises(ValueError, match="input_range must have low < high"):
        MassCenter(small_cnn, explainer, input_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        MassCenter(small_cnn, explainer, steps=1)(cnn_inputs[0])
    with pytest.raises(ValueError, match="attack must be one of"):
        make_attack("center", small_cnn, explainer, 0.1)


# ---------------------------------------------------------------- sweep and CLI


def test_sweep_covers_every_budget_attack_and_method(small_cnn, cnn_inputs):
    explainers = {"gradient": Gradient(small_cnn), "ig": IntegratedGradients(small_cnn, steps=4)}
    labels = small_cnn(cnn_inputs).argmax(1)
    outcomes = sweep(small_cnn, explainers, cnn_inputs, labels, [0.02, 0.1], list(ATTACKS), k=20, steps=2,
                     batch_size=3)
    assert [(o.eps, o.attack, o.method) for o in outcomes] == [
        (eps, attack, method) for eps in (0.02, 0.1) for attack in ATTACKS for method in explainers]
    for outcome in outcomes:
        summary = outcome.summary()
        assert summary["n"] == 4 and summary["label_kept_rate"] == 1.0
        assert 0 < summary["linf"] <= outcome.eps
        assert set(outcome.per_image) >= {"spearman", "topk_intersection", "com_shift", "dissimilarity"}


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["attack-input", *argv])
    return args.run(args)


def test_cli_writes_metrics_images_and_figures(tmp_path):
    out = tmp_path / "run"
    assert run_cli(["--n", "4", "--method", "gradient,deeplift", "--attack", "random,mass-center", "--eps", "0.1",
                    "--steps", "2", "--show", "2", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {(r["attack"], r["method"]): r for r in metrics["results"]}
    assert set(rows) == {(a, m) for a in ("random", "mass-center") for m in ("gradient", "deeplift")}
    eps32 = torch.tensor(0.1).item()  # the budget as the float32 images see it
    assert all(r["label_kept_rate"] == 1.0 and r["linf"] <= eps32 for r in rows.values())
    assert {"spearman", "topk_intersection", "com_shift", "seconds"} <= set(rows["random", "gradient"])
    tensors = load_file(str(out / "adversarial.safetensors"))
    n = metrics["n_attacked"]
    assert tensors["mass-center/gradient/eps=0.1"].shape == (n, 1, 28, 28)
    assert (tensors["mass-center/gradient/eps=0.1"] - tensors["clean"]).abs().max() <= 0.1
    lines = (out / "per_image.csv").read_text().strip().splitlines()
    assert lines[0].startswith("attack,method,eps,index,label") and len(lines) == 1 + 4 * n
    assert (out / "fig1_mass-center_eps0.1.png").stat().st_size > 0
    assert json.loads((out / "config.json").read_text())["seed"] == 0


def test_cli_sweep_writes_the_fig3_curves(tmp_path):
    out = tmp_path / "sweep"
    assert run_cli(["--n", "3", "--sweep", "--method", "gradient", "--eps", "0.05,0.1", "--steps", "1",
                    "--out", str(out)]) == 0
    table = (out / "sweep.csv").read_text().strip().splitlines()
    assert len(table) == 1 + 2 * len(ATTACKS)
    assert (out / "sweep.png").stat().st_size > 0


def test_cli_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="--attack must be comma-separated names"):
        run_cli(["--attack", "nope", "--out", str(tmp_path)])
