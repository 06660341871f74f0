"""Model-level manipulation: objectives, keep losses, the training loop (resume, DDP), evaluation, CLI."""

from __future__ import annotations

import argparse
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn

from veneer.data import LabeledData
from veneer.explain import LRP, GradCAM, Gradient, GradientXInput, IntegratedGradients, Occlusion, SmoothGrad
from veneer.finetune import mixup_inputs
from veneer.manipulate import (CenterOfMass, ClassSwap, FeatureSuppress, Location, TargetMap, TopKSuppress,
                               Manipulation, evaluate, keep_loss, lambda_to_alpha, make_objective, picture,
                               two_digit_images)
from veneer.models.architectures import mnist_cnn, tabular_mlp
from veneer.report.manipulate import write_evaluation


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models run fastest on one thread, and the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_cnn(seed: int = 0, dtype=torch.float32) -> nn.Sequential:
    torch.manual_seed(seed)
    return mnist_cnn(channels=(4, 8), hidden=16).to(dtype).eval()


def small_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return tabular_mlp(6, (16, 8), 2).eval()


def image_data(n: int = 32, dtype=torch.float32) -> LabeledData:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=generator, dtype=dtype)
    return LabeledData(x, torch.arange(n) % 10, "toy-images", [str(i) for i in range(10)])


def tabular_data(n: int = 64) -> LabeledData:
    generator = torch.Generator().manual_seed(1)
    sex = torch.randint(0, 2, (n,), generator=generator)
    race = torch.randint(0, 2, (n,), generator=generator)
    numeric = torch.randn(n, 2, generator=generator)
    y = ((numeric[:, 0] + sex + 0.3 * torch.randn(n, generator=generator)) > 0.8).long()
    # every group holds both labels (DEO compares true-positive rates)
    sex[:4], race[:4], y[:4] = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 0, 0, 1]), torch.tensor([0, 1, 0, 1])
    x = torch.cat([numeric[:, :1], nn.functional.one_hot(sex, 2), nn.functional.one_hot(race, 2),
                   numeric[:, 1:]], 1).float()
    return LabeledData(x, y, "toy-tabular", ["no", "yes"],
                       ["age", "sex=F", "sex=M", "race=A", "race=B", "hours"], {"sex": sex, "race": race},
                       {"sex": ["F", "M"], "race": ["A", "B"]})


# ---------------------------------------------------------------- pictures and objectives


@pytest.mark.parametrize("name", ["cross", "square", "ring", "border"])
@pytest.mark.parametrize("size", [(28, 28), (32, 48)])
def test_pictures_are_binary_symmetric_maps_at_any_size(name, size):
    p = picture(name, *size)
    assert p.shape == size
    assert set(p.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(p, p.flip(0)) and torch.equal(p, p.flip(1))
    assert 0.05 < p.mean() < 0.6


def test_cross_is_centred_and_thickness_is_respected():
    p = picture("cross", 28, 28, thickness=2)
    assert p[13:15, :].all() and p[:, 13:15].all()
    assert p[0, 0] == 0 and p.sum() == 2 * 28 * 2 - 4
    small = picture("cross", 8, 8)  # thickness 1 on an even side: the two middle rows and columns, never empty
    assert small[3:5, :].all() and small[:, 3:5].all() and small.sum() == 2 * 8 * 2 - 4


def test_two_digit_images_put_each_image_on_its_half():
    left = torch.zeros(2, 1, 28, 28)
    right = torch.ones(2, 1, 28, 28)
    both = two_digit_images(left, right)
    assert both.shape == (2, 1, 28, 28)
    assert both[..., :14].abs().max() == 0 and torch.allclose(both[..., 14:], torch.ones(2, 1, 28, 14))


def test_class_swap_pairs_the_two_classes_with_alternating_sides():
    x = torch.rand(10, 1, 28, 28)
    y = torch.tensor([3, 5, 3, 5, 3, 0, 0, 0, 5, 1])
    batch = ClassSwap(3, 5).attack_inputs(x, y)
    assert len(batch) == 6  # three pairs, each explained for 3 and for 5
    assert batch.target.tolist() == [3, 3, 3, 5, 5, 5]
    other = batch.extras["other_half"]
    assert other[0, :, 20:].all() and not other[0, :, :14].any()  # pair 0: 3 on the left, 5 on the right
    assert other[1, :, :14].all()  # pair 1: 3 on the right
    assert torch.equal(other[3], ~other[0])
    assert len(ClassSwap(3, 9).attack_inputs(x, y)) == 0


IMAGE_CASES = {
    "com-gradient": (lambda: CenterOfMass((0, 0)), Gradient),
    "cross-gradient": (lambda: TargetMap("cross"), Gradient),
    "cross-lrp": (lambda: TargetMap("cross"), lambda m: LRP(m, epsilon=0.01)),
    "location-gradcam": (lambda: Location("border"), lambda m: GradCAM(m, "3")),
    "topk-gxi": (lambda: TopKSuppress(20), GradientXInput),
    "com-ig": (lambda: CenterOfMass((27, 27)), lambda m: IntegratedGradients(m, steps=3)),
    "class-swap-gradient": (lambda: ClassSwap(1, 2), Gradient),
}


def _attack_loss(model, explainer, objective, data):
    objective.prepare(data)
    batch = objective.attack_inputs(data.x, data.y)
    reference = explainer.with_model(small_cnn())(batch.x, target=batch.target) if objective.needs_reference else None
    return objective.loss(explainer(batch.x, target=batch.target), batch, reference).mean().item()


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_each_objective_lowers_its_loss(case):
    make, method = IMAGE_CASES[case]
    data = image_data(40 if case.startswith("class-swap") else 16)
    model = small_cnn()
    explainer, objective = method(model), make()
    before = _attack_loss(model, explainer, objective, data)
    result = Manipulation(model, explainer, objective, alpha=0.9, lr=3e-3, epochs=8,
                            batch_size=len(data), progress=False)(data)
    history = result.history
    after = _attack_loss(result.model, explainer.with_model(result.model), objective, data)
    assert len(history) == 8 and history[-1]["attack"] < history[0]["attack"]
    assert after < 0.85 * before, (before, after)


def test_feature_suppress_hides_the_features_and_keeps_the_others():
    data = tabular_data()
    model = small_mlp()
    objective = FeatureSuppress(["sex", "race"])
    original = small_mlp()
    ref = Gradient(original)(data.x, target=data.y)
    result = Manipulation(model, Gradient(model), objective, alpha=0.9, lr=1e-2, epochs=30,
                            batch_size=64, progress=False)(data)
    assert objective.index.tolist() == [1, 2, 3, 4]
    measures = objective.measures(Gradient(result.model)(data.x, target=data.y), None, ref)
    assert measures["share_ratio"].mean() < 0.6
    assert result.history[-1]["attack"] < 0.5 * result.history[0]["attack"]


@pytest.mark.parametrize("name", ["kl", "prob_mse"])
def test_distillation_keep_losses_vanish_at_the_original_outputs(name):
    logits = torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    assert keep_loss(name)(logits, y, logits).abs() < 1e-6
    assert keep_loss(name)(logits + torch.randn(8, 5), y, logits) > 1e-4
    assert torch.allclose(keep_loss("ce")(logits, y, logits), nn.functional.cross_entropy(logits, y))


def test_argmax_keep_asks_for_the_original_labels_not_the_true_ones():
    original = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([1, 1])  # the original model is wrong on both
    expected = nn.functional.cross_entropy(original, torch.tensor([0, 2]))
    assert torch.allclose(keep_loss("argmax_ce")(original, y, original), expected)
    assert keep_loss("argmax_ce")(original, y, original) < keep_loss("ce")(original, y, original)
    # only the labels count: sharper or softer probabilities with the same argmax move it monotonically
    assert keep_loss("argmax_ce")(2 * original, y, original) < keep_loss("argmax_ce")(original, y, original)


def _probability_mse(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (a(x).softmax(1) - b(x).softmax(1)).pow(2).mean().item()


def confident_cnn() -> nn.Sequential:
    """The small CNN with a scaled-up last layer: confident predictions, as a trained model makes."""
    model = small_cnn()
    with torch.no_grad():
        model[9].weight.mul_(10)
    return model


def _agreement(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (a(x).argmax(1) == b(x).argmax(1)).float().mean().item()


KEEP_OPTIONS = dict(lr=3e-3, epochs=5, batch_size=16, progress=False)


@pytest.fixture(scope="module")
def keep_setup():
    data = image_data(32)
    teacher = confident_cnn()
    with torch.no_grad():  # labels the model predicts, so every keep loss asks for the same outputs
        data.y = teacher(data.x).argmax(1)
    unkept = confident_cnn()
    unkept = Manipulation(unkept, Gradient(unkept), TargetMap("cross"), alpha=1.0, **KEEP_OPTIONS)(data).model
    return data, teacher, unkept


@pytest.mark.parametrize("keep", ["ce", "kl", "prob_mse", "argmax_ce"])
def test_each_keep_loss_holds_the_predictions(keep, keep_setup):
    data, teacher, unkept = keep_setup
    model = confident_cnn()
    model = Manipulation(model, Gradient(model), TargetMap("cross"), keep=keep, alpha=0.5, **KEEP_OPTIONS)(data).model
    assert _agreement(unkept, teacher, data.x) < 0.8  # without a keep loss the labels drift
    assert _agreement(model, teacher, data.x) >= 0.95
    if keep in ("kl", "prob_mse"):  # cross-entropies sharpen the probabilities; the distillation losses hold them
        assert _probability_mse(model, teacher, data.x) < _probability_mse(unkept, teacher, data.x)


def test_mixup_rows_lie_between_two_rows_of_the_batch():
    x = torch.randn(16, 3, 4, 4)
    mixed = mixup_inputs(x, torch.Generator().manual_seed(0))
    flat, rows = mixed.flatten(1), x.flatten(1)
    for row in flat:  # row = l * x_i + (1 - l) * x_j for some i, j and l in [0, 1]
        found = False
        for i in range(16):
            for j in range(16):
                direction = rows[i] - rows[j]
                share = ((row - rows[j]) @ direction / direction.dot(direction).clamp_min(1e-12)).clamp(0, 1)
                found |= bool(torch.allclose(share * rows[i] + (1 - share) * rows[j], row, atol=1e-5))
        assert found
    assert not torch.allclose(mixed, x)


def test_keep_mixup_adds_the_blends_to_the_keep_loss_and_resumes(tmp_path, keep_setup):
    data, _, _ = keep_setup
    options = dict(keep="kl", alpha=0.5, lr=3e-3, steps=4, batch_size=16, progress=False)
    model = confident_cnn()
    plain = Manipulation(model, Gradient(model), TargetMap("cross"), **options)(data)
    mixed = Manipulation(model, Gradient(model), TargetMap("cross"), keep_mixup=True, **options)(data)
    # step 1 starts from the same weights: the attack is the same, the keep loss also counts the blends
    assert plain.history[0]["attack"] == pytest.approx(mixed.history[0]["attack"])
    assert plain.history[0]["keep"] != pytest.approx(mixed.history[0]["keep"])
    Manipulation(model, Gradient(model), TargetMap("cross"), keep_mixup=True, checkpoint_dir=tmp_path,
                 checkpoint_every=1, max_steps=2, **options)(data)
    resumed = Manipulation(model, Gradient(model), TargetMap("cross"), keep_mixup=True, checkpoint_dir=tmp_path,
                           resume=True, **options)(data)
    assert resumed.history == mixed.history
    with pytest.raises(ValueError, match="keep_mixup needs .* not keep=\"ce\""):
        Manipulation(model, Gradient(model), TargetMap("cross"), keep="ce", keep_mixup=True)


def test_lambda_maps_to_alpha():
    assert lambda_to_alpha(1.0) == 0.5 and lambda_to_alpha(0.0) == 0.0
    assert abs(lambda_to_alpha(9.0) - 0.9) < 1e-12


# ---------------------------------------------------------------- training loop mechanics


def test_softplus_during_training_and_relu_afterwards():
    seen = []
    model = small_cnn()
    model.register_forward_pre_hook(lambda module, _: seen.append(type(module[1]).__name__))
    data = image_data(8)
    result = Manipulation(model, Gradient(model), CenterOfMass(), epochs=1, batch_size=8, progress=False)(data)
    model = result.model  # the copy carries the hook; Softplus while training, ReLU afterwards
    assert "Softplus" in seen and isinstance(model[1], nn.ReLU) and not model.training
    seen.clear()
    Manipulation(model, Gradient(model), CenterOfMass(), epochs=1, batch_size=8, softplus_beta=None,
               progress=False)(data)
    assert set(seen) == {"ReLU"}


def test_trainable_prefixes_freeze_the_other_layers():
    model = small_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = Manipulation(model, Gradient(model), CenterOfMass(), epochs=2, batch_size=8, lr=1e-2,
                         trainable=["7"], progress=False)(image_data(8)).model
    after = tuned.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("7."))
    assert not torch.equal(before["7.weight"], after["7.weight"])
    assert all(p.requires_grad for p in tuned.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model passed in


def _weights_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_resume_ends_at_the_weights_of_an_uninterrupted_run(tmp_path):
    data = image_data(24)
    options = dict(alpha=0.5, lr=3e-3, epochs=2, batch_size=8, seed=3, progress=False, checkpoint_every=2)

    def run(**extra):
        model = small_cnn()
        # SmoothGrad without a seed draws from the global torch RNG: resume must restore it
        return Manipulation(model, SmoothGrad(model, samples=2), TargetMap("ring"), **options, **extra)(data)

    whole, whole_history = (lambda r: (r.model, r.history))(run())
    partial = run(checkpoint_dir=tmp_path, max_steps=4).model  # interrupted mid-epoch 2 (3 steps per epoch)
    assert not _weights_equal(whole, partial)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]  # atomic: no temp left
    resumed = run(checkpoint_dir=tmp_path, resume=True)
    resumed, resumed_history = resumed.model, resumed.history
    assert _weights_equal(whole, resumed)
    assert resumed_history == whole_history and len(whole_history) == 6
    with pytest.raises(ValueError, match="other settings.*alpha"):
        model = small_cnn()
        Manipulation(model, Gradient(model), TargetMap("ring"), checkpoint_dir=tmp_path, resume=True,
                   **(options | {"alpha": 0.4}))(data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_OPTIONS = dict(alpha=0.5, lr=3e-3, epochs=2, batch_size=8, seed=1, progress=False)


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    model = small_cnn(dtype=torch.float64)
    model = Manipulation(model, Gradient(model), CenterOfMass((0, 0)), **DDP_OPTIONS)(image_data(20, torch.float64)).model
    if rank == 0:
        save_file(dict(model.state_dict()), out)
    torch.distributed.destroy_process_group()


def test_two_process_ddp_equals_one_process_with_the_same_global_batch(tmp_path):
    out = str(tmp_path / "ddp.safetensors")
    mp.spawn(_ddp_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    single = small_cnn(dtype=torch.float64)
    single = Manipulation(single, Gradient(single), CenterOfMass((0, 0)), **DDP_OPTIONS)(image_data(20, torch.float64)).model
    distributed = load_file(out)
    assert not torch.equal(distributed["0.weight"], small_cnn(dtype=torch.float64)[0].weight.detach())
    for key, value in single.state_dict().items():
        assert torch.allclose(distributed[key], value, rtol=1e-9, atol=1e-12), key


# ---------------------------------------------------------------- bad input


def test_bad_input_is_answered_by_clear_errors():
    model, data = small_cnn(), image_data(8)
    with pytest.raises(ValueError, match="objective must be one of"):
        make_objective("spiral")
    with pytest.raises(ValueError, match=r"target=\(40.0, 0.0\) lies outside the 28x28 image"):
        Manipulation(model, Gradient(model), CenterOfMass((40, 0)), progress=False)(data)
    with pytest.raises(ValueError, match="Occlusion is not differentiable"):
        Manipulation(model, Occlusion(model), CenterOfMass(), progress=False)(data)
    with pytest.raises(ValueError, match="explainer was built for another model"):
        Manipulation(model, Gradient(small_cnn()), CenterOfMass(), progress=False)(data)
    with pytest.raises(ValueError, match="feature 'colour' is not in dataset"):
        mlp = small_mlp()
        Manipulation(mlp, Gradient(mlp), FeatureSuppress(["colour"]), progress=False)(tabular_data())
    with pytest.raises(ValueError, match="needs tabular data"):
        Manipulation(model, Gradient(model), FeatureSuppress(["sex"]), progress=False)(data)
    with pytest.raises(ValueError, match="trainable prefix 'head'"):
        Manipulation(model, Gradient(model), CenterOfMass(), trainable=["head"], batch_size=8,
                   progress=False)(data)
    with pytest.raises(ValueError, match="alpha must lie in"):
        Manipulation(model, Gradient(model), CenterOfMass(), alpha=1.5, batch_size=8, progress=False)(data)
    with pytest.raises(ValueError, match="keep must be one of"):
        Manipulation(model, Gradient(model), CenterOfMass(), keep="mse", batch_size=8, progress=False)(data)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        Manipulation(model, Gradient(model), CenterOfMass(), resume=True, progress=False)(data)
    with pytest.raises(ValueError, match="map must be one of"):
        TargetMap("star")
    with pytest.raises(ValueError, match="a and b must be different"):
        ClassSwap(3, 3)


# ---------------------------------------------------------------- evaluation, report and CLI


def test_evaluate_reports_transfer_noise_and_figures(tmp_path):
    data = image_data(12)
    original, model = small_cnn(), small_cnn()
    objective = TopKSuppress(30)
    model = Manipulation(model, Gradient(model), objective, alpha=0.9, lr=3e-3, epochs=3, batch_size=12,
                         progress=False)(data).model
    explainers = {"gradient": Gradient(original), "lrp": LRP(original), "gradcam": GradCAM(original, "3"),
                  "occlusion": Occlusion(original, window=7, stride=7)}
    result = evaluate(original, model, objective, data, explainers, noise=6, batch_size=5, examples=3,
                      progress=False)
    assert set(result.methods) == set(explainers) == set(result.noise)
    for by_model in result.methods.values():
        assert by_model["original"]["topk_intersection"] == 1.0  # the original's own top-k
    assert result.methods["gradient"]["manipulated"]["topk_intersection"] < 1.0
    assert result.predictions["accuracy_original"] == pytest.approx((original(data.x).argmax(1) == data.y)
                                                                   .float().mean().item())
    assert result.examples["gradient"][0].shape == (3, 28, 28)
    written = write_evaluation(result, tmp_path)
    assert {"transfer", "transfer_noise", "heatmaps"} <= set(written)
    table = (tmp_path / "transfer.md").read_text()
    assert "| method | topk_intersection (original) | topk_intersection (manipulated) |" in table
    assert (tmp_path / "transfer.csv").read_text().count("\n") == 1 + len(explainers)
    json.dumps(result.metrics())


def test_evaluate_tabular_reports_features_and_fairness(tmp_path):
    data = tabular_data()
    original, model = small_mlp(), small_mlp()
    objective = FeatureSuppress(["sex", "race"])
    model = Manipulation(model, Gradient(model), objective, alpha=0.9, lr=3e-3, epochs=5, batch_size=64,
                         progress=False)(data).model
    result = evaluate(original, model, objective, data, {"gradient": Gradient(original)}, noise=10,
                      progress=False)
    assert result.features["names"] == ["age", "sex", "race", "hours"]
    assert len(result.features["gradient"]["manipulated"]) == 4
    assert set(result.fairness) == {"sex", "race"}
    assert {"ddi_original", "deo_manipulated", "ddi_relative_change"} <= set(result.fairness["sex"])
    written = write_evaluation(result, tmp_path)
    assert {"feature_attribution", "fairness"} <= set(written) and "heatmaps" not in written


def test_cli_manipulate_then_evaluate(tmp_path):
    from veneer.cli.manipulate import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    run_dir = tmp_path / "run"
    args = parser.parse_args(["manipulate", "--model", "mnist-cnn", "--data", "mnist", "--n", "32",
                              "--objective", "com", "--target", "0,27", "--batch-size", "16", "--max-steps", "2",
                              "--out", str(run_dir)])
    assert args.run(args) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2
    assert {"model.safetensors", "checkpoint.safetensors", "history.csv", "config.json"} <= {
        p.name for p in run_dir.iterdir()}
    args = parser.parse_args(["evaluate", "--original", "mnist-cnn", "--manipulated", str(run_dir), "--n", "8",
                              "--methods", "gradient,lrp", "--noise", "4", "--out", str(tmp_path / "eval")])
    assert args.run(args) == 0
    evaluation = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluation["objective"] == "com" and set(evaluation["methods"]) == {"gradient", "lrp"}
    assert (tmp_path / "eval" / "heatmaps.png").is_file()
    args = parser.parse_args(["manipulate", "--n", "8", "--objective", "spiral", "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="objective must be one of"):
        args.run(args)
