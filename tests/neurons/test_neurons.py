"""Neuron-level interpretation and its attacks (veneer.neurons, report.neurons, cli.neurons)."""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import pytest
import scipy.stats
import torch
from torch.utils.data import DataLoader, TensorDataset

from veneer.cli.neurons import register
from veneer.data import LabeledData
from veneer.finetune import keep_loss
from veneer.models.architectures import tabular_mlp
from veneer.neurons import (
    ActivationRecorder, Fairwash, FourierImage, PushDown, PushUp, activations, channel_decorrelation,
    channel_scalar, compare_activations, default_layer, embedding_delta, label_overlap,
    label_share, ranking_tau, tau_matrix, top_k, topk_indices, topk_overlap, visualize, whack_a_mole_embedding,
    whack_a_mole_tau,
)
from veneer.report.neurons import balance_histogram, ks_plot, topk_grid, visualization_grid, write_table


def _images(n: int, seed: int, channels: int = 1, size: int = 28, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _swap_channels(model: torch.nn.Module, conv: str, i: int, j: int) -> torch.nn.Module:
    """A copy of ``model`` whose conv layer ``conv`` has output channels ``i`` and ``j`` exchanged."""
    swapped = copy.deepcopy(model)
    layer = dict(swapped.named_modules())[conv]
    with torch.no_grad():
        layer.weight[[i, j]] = layer.weight[[j, i]].clone()
        layer.bias[[i, j]] = layer.bias[[j, i]].clone()
    return swapped


# ------------------------------------------------------------------------------------------ recording
def test_channel_scalar_is_squared_spatial_norm_for_maps_and_identity_for_units():
    maps = torch.randn(3, 5, 4, 6, dtype=torch.float64)
    expected = (maps ** 2).sum(dim=(2, 3))
    torch.testing.assert_close(channel_scalar(maps), expected)
    units = torch.randn(3, 7)
    assert channel_scalar(units) is units
    with pytest.raises(ValueError, match="shape"):
        channel_scalar(torch.randn(3))


def test_pre_activation_records_the_input_of_the_named_module(small_cnn, cnn_inputs):
    with ActivationRecorder(small_cnn, "4", pre_activation=True) as recorder:
        small_cnn(cnn_inputs)
        pre = recorder.take()["4"]
    with ActivationRecorder(small_cnn, "4") as recorder:
        small_cnn(cnn_inputs)
        post = recorder.take()["4"]
    conv_out = small_cnn[:4](cnn_inputs)
    torch.testing.assert_close(pre, channel_scalar(conv_out))
    torch.testing.assert_close(post, channel_scalar(conv_out.relu()))


def test_default_layer_is_the_activation_after_the_last_conv_or_hidden_linear(small_cnn, small_mlp):
    assert default_layer(small_cnn) == "4"
    assert default_layer(small_mlp) == "3"
    assert default_layer(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))) == "0"


def test_unknown_layer_is_refused_with_the_valid_names(small_cnn):
    with pytest.raises(ValueError, match=r"layer='conv9'.*known names: 0, 1, 2, 3, 4"):
        top_k(small_cnn, "conv9", _images(8, 0), 2)
    with pytest.raises(ValueError, match="known names"):
        PushDown(small_cnn, ["4", "nope"])


# ------------------------------------------------------------------------------------------ top-k
@pytest.mark.parametrize("wrap", ["tensor", "dataset", "loader"])
def test_streaming_top_k_equals_a_full_sort(small_cnn, wrap):
    x = _images(103, 1)
    full = activations(small_cnn, "4", x, pre_activation=True)  # conv outputs: no ties
    data = {"tensor": x,
            "dataset": TensorDataset(x, torch.zeros(103)),
            "loader": DataLoader(TensorDataset(x), batch_size=17)}[wrap]
    found = top_k(small_cnn, "4", data, 7, batch_size=10, pre_activation=True)
    expected = full.topk(7, dim=0)
    assert found.values.shape == (8, 7) and found.k == 7 and found.channels == 8
    torch.testing.assert_close(found.values, expected.values.T)
    assert torch.equal(found.indices, expected.indices.T)
    torch.testing.assert_close(full.gather(0, found.indices.T), found.values.T)


def test_k_larger_than_the_data_is_refused(small_cnn):
    with pytest.raises(ValueError, match=r"k=9 is larger than the number of samples in data \(5\)"):
        top_k(small_cnn, "4", _images(5, 2), 9)
    with pytest.raises(ValueError, match="k=9 is larger"):
        top_k(small_cnn, "4", iter([_images(5, 2)]), 9)
    with pytest.raises(ValueError, match="k=9 is larger"):
        PushDown(small_cnn, "4", k=9, steps=1, progress=False)(_images(5, 2))
    with pytest.raises(ValueError, match="k must be > 0"):
        top_k(small_cnn, "4", _images(5, 2), 0)


# ------------------------------------------------------------------------------------------ metrics
def test_ranking_tau_equals_scipy_per_channel():
    g = torch.Generator().manual_seed(3)
    before = torch.randn(60, 5, generator=g, dtype=torch.float64)
    after = before + 0.8 * torch.randn(60, 5, generator=g, dtype=torch.float64)
    after[:20, 1] = 0.0  # ties
    tau = ranking_tau(before, after)
    expected = [scipy.stats.kendalltau(before[:, c].numpy(), after[:, c].numpy()).statistic for c in range(5)]
    np.testing.assert_allclose(tau.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tau_matrix(before, after).diagonal().numpy(), expected, rtol=1e-10, atol=1e-12)


def test_whack_a_mole_metrics_catch_a_planted_channel_swap(small_cnn):
    x = _images(80, 4)
    swapped = _swap_channels(small_cnn, "3", 1, 5)
    before = activations(small_cnn, "4", x, pre_activation=True)
    after = activations(swapped, "4", x, pre_activation=True)
    tau, tau_w = ranking_tau(before, after), whack_a_mole_tau(before, after)
    assert tau[[1, 5]].max() < 0.9
    torch.testing.assert_close(tau_w[[1, 5]], torch.ones(2, dtype=tau_w.dtype))
    others = [c for c in range(8) if c not in (1, 5)]
    torch.testing.assert_close(tau[others], torch.ones(6, dtype=tau.dtype))
    comparison = compare_activations(before, after, 5, x=x, encoder=torch.nn.Flatten(),
                                     labels=torch.arange(80) % 10)
    assert comparison.embedding_delta[[1, 5]].min() > 1e-4
    assert comparison.embedding_w.abs().max() < 1e-6
    assert comparison.topk_overlap[others].eq(1).all() and comparison.topk_overlap[[1, 5]].lt(1).all()
    assert set(comparison.summary()) == {"tau", "tau_w", "topk_overlap", "label_overlap", "embedding_delta",
                                         "embedding_w"}


def test_embedding_delta_is_zero_for_the_same_sets_and_w_takes_the_best_match():
    emb = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(embedding_delta(emb, emb), torch.zeros(3), atol=1e-6, rtol=0)
    moved = emb[[2, 0, 1]]
    assert embedding_delta(emb, moved).min() > 0
    torch.testing.assert_close(whack_a_mole_embedding(emb, moved), torch.zeros(3), atol=1e-6, rtol=0)


def test_topk_and_label_overlap_and_label_share_count_correctly():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    before = torch.tensor([[0, 1, 2], [4, 5, 6]])
    after = torch.tensor([[1, 3, 6], [6, 5, 4]])
    torch.testing.assert_close(topk_overlap(before, after), torch.tensor([1 / 3, 1.0]))
    # labels before [0,0,1] vs after [0,1,3] share {0, 1}; the second row has the same sets.
    torch.testing.assert_close(label_overlap(labels, before, after), torch.tensor([2 / 3, 1.0]))
    torch.testing.assert_close(label_share(labels, after, 1), torch.tensor([1 / 3, 0.0]))
    with pytest.raises(ValueError, match="indices into labels"):
        label_share(labels, torch.tensor([[9]]), 1)
    with pytest.raises(ValueError, match="k=8 is larger"):
        topk_indices(torch.randn(5, 2), 8)


# ------------------------------------------------------------------------------------------ attacks
def test_kl_keep_is_the_papers_cross_entropy_to_the_teacher_softmax_less_a_constant():
    teacher, student, y = torch.randn(4, 3), torch.randn(4, 3), torch.zeros(4, dtype=torch.long)
    for temperature in (1.0, 3.0):
        soft = (teacher / temperature).softmax(1)
        cross_entropy = -(soft * (student / temperature).log_softmax(1)).sum(1).mean()
        entropy = -(soft * soft.log()).sum(1).mean()
        expected = (cross_entropy - entropy) * temperature ** 2
        torch.testing.assert_close(keep_loss("kl")(student, y, teacher, temperature), expected)
    assert keep_loss("kl")(teacher, y, teacher).abs() < 1e-6


def _unchanged(model, reference):
    return all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_push_down_lowers_its_loss_and_keeps_the_original(small_cnn):
    x = _images(64, 6)
    reference = copy.deepcopy(small_cnn)
    result = PushDown(small_cnn, "4", k=4, steps=15, lr=3e-3, alpha=0.9, batch_size=16, attack_batch=16,
                      pre_activation=True, progress=False)(x)
    assert result.measures["attack_loss_after"] < 0.8 * result.measures["attack_loss_before"]
    assert len(result.history) == 15 and {"step", "epoch", "loss", "attack", "keep"} <= set(result.history[0])
    assert _unchanged(small_cnn, reference) and not result.model.training
    assert not _unchanged(result.model, reference)


def test_push_down_relative_and_on_chosen_channels_of_several_layers(small_cnn):
    x = _images(48, 7)
    attack = PushDown(small_cnn, ["1", "4"], channels={"1": [0, 2], "4": 3}, k=3, steps=12, lr=3e-3, alpha=0.9,
                      batch_size=16, relative=True, pre_activation=True, progress=False)
    result = attack(x)
    assert attack.channels["1"].tolist() == [0, 2] and attack.channels["4"].tolist() == [3]
    assert result.measures["attack_loss_after"] < result.measures["attack_loss_before"]


def test_push_up_lowers_its_hinge_loss(small_cnn):
    x = _images(64, 8)
    decoys = _images(6, 9) * 0.5
    result = PushUp(small_cnn, "4", k=4, steps=15, lr=3e-3, alpha=0.9, batch_size=16, attack_batch=8,
                    decoy_batch=6, refresh=5, pre_activation=True, progress=False)(x, decoys)
    assert result.measures["attack_loss_after"] < 0.8 * result.measures["attack_loss_before"]
    with pytest.raises(ValueError, match="decoys must be a non-empty batch shaped like the inputs"):
        PushUp(small_cnn, "4", steps=1, progress=False)(x, torch.rand(3, 1, 8, 8, dtype=torch.float64))


def test_fairwash_lowers_the_moment_gap_between_groups(small_mlp):
    g = torch.Generator().manual_seed(10)
    group = (torch.arange(200) % 3 == 0).long()
    x = torch.randn(200, 12, generator=g, dtype=torch.float64)
    x[:, 0] += 2.0 * group  # feature 0 carries the group: every first-layer neuron reading it is biased
    result = Fairwash(small_mlp, "0", steps=30, lr=1e-2, alpha=0.9, batch_size=64, progress=False)(x, group)
    assert result.measures["attack_loss_after"] < 0.5 * result.measures["attack_loss_before"]
    with pytest.raises(ValueError, match="group has no sample of group 1"):
        Fairwash(small_mlp, "0", steps=1, progress=False)(x, torch.zeros(200, dtype=torch.long))
    with pytest.raises(ValueError, match="group must have 200 entries"):
        Fairwash(small_mlp, "0", steps=1, progress=False)(x, group[:10])


def test_recalibration_trains_only_the_layers_after_the_attacked_one(small_cnn):
    """Phase two changes the head (modules 7 and 9 of the small CNN) and moves the outputs back towards the
    original model's, while the attacked layer's activations stay exactly as the attack left them."""
    x = _images(64, 11)
    options = dict(k=4, steps=10, lr=3e-3, alpha=0.9, batch_size=16, attack_batch=16, progress=False)
    attacked = PushDown(small_cnn, "4", **options)(x).model
    result = PushDown(small_cnn, "4", recalibrate_steps=40, **options)(x)
    recalibrated = result.model
    phases = [row["phase"] for row in result.history]
    assert phases == ["attack"] * 10 + ["recalibrate"] * 40 and result.history[-1]["attack"] is None
    for (name, before), after in zip(attacked.named_parameters(), recalibrated.parameters()):
        assert torch.equal(before, after) == (name[0] not in "79"), name
    acts = [activations(m, "4", x) for m in (attacked, recalibrated)]
    assert torch.equal(acts[0], acts[1])
    with torch.no_grad():
        teacher = small_cnn(x).softmax(1)
        gaps = [(m(x).softmax(1) - teacher).abs().mean() for m in (attacked, recalibrated)]
    assert gaps[1] < 0.5 * gaps[0]


def test_recalibration_needs_parameters_after_the_attacked_layer(small_cnn):
    with pytest.raises(ValueError, match="recalibrate_steps must be an int >= 0"):
        PushDown(small_cnn, "4", recalibrate_steps=-1)
    with pytest.raises(ValueError, match="the attack loss does not depend on"):
        PushDown(small_cnn, "9", k=2, steps=1, batch_size=4, recalibrate_steps=1, progress=False)(_images(8, 0))


def test_attack_arguments_are_checked(small_cnn):
    with pytest.raises(ValueError, match="alpha must lie in"):
        PushDown(small_cnn, "4", alpha=1.5)
    with pytest.raises(ValueError, match="dict when several layers"):
        PushDown(small_cnn, ["1", "4"], channels=[0])
    with pytest.raises(ValueError, match=r"channels must lie in \[0, 7\]"):
        PushDown(small_cnn, "4", channels=[8], k=2, steps=1, progress=False)(_images(8, 0))
    with pytest.raises(ValueError, match="training mode"):
        PushDown(copy.deepcopy(small_cnn).train(), "4")


# ------------------------------------------------------------------------------------------ visualisation
def test_fourier_image_and_decorrelation_shapes_and_range():
    image = FourierImage(2, (3, 10, 12), generator=torch.Generator().manual_seed(0))()
    assert image.shape == (2, 3, 10, 12) and 0 <= image.min() and image.max() <= 1
    x = torch.rand(50, 3, 6, 6)
    x[:, 1] = x[:, 0]  # perfectly correlated channels
    root = channel_decorrelation(x)
    assert root.shape == (3, 3) and abs(float(root.norm(dim=0).max()) - 1) < 1e-5
    cov = torch.cov(x.transpose(0, 1).flatten(1))
    torch.testing.assert_close(root @ root.T / (root @ root.T).max(), cov / cov.max(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", ["gray", "rgb"])
def test_visualize_raises_the_activation_of_each_channel(case, small_cnn, tiny_vgg):
    # Post-ReLU channels 0 and 5 of the small CNN are alive on mid-gray images; the VGG case
    # maximises pre-activations (a dead post-ReLU channel has no gradient to climb).
    model, layer, shape, channels, pre = {"gray": (small_cnn, "4", (1, 28, 28), [0, 5], False),
                                          "rgb": (tiny_vgg, "4", (3, 32, 32), [0, 2], True)}[case]
    model = model.float()
    images = visualize(model, layer, channels, input_shape=shape, steps=30, lr=0.1, seed=0, pre_activation=pre)
    assert images.shape == (2, *shape) and images.min() >= 0 and images.max() <= 1
    start = FourierImage(2, shape, generator=torch.Generator().manual_seed(0))()
    gained = activations(model, layer, images, pre_activation=pre)[torch.arange(2), channels]
    initial = activations(model, layer, start, pre_activation=pre)[torch.arange(2), channels]
    assert (gained > 1.5 * initial).all()
    with pytest.raises(ValueError, match="channels must be non-empty"):
        visualize(model, layer, [99], input_shape=shape, steps=1)


# ------------------------------------------------------------------------------------------ report
def test_report_figures_and_table_are_written(tmp_path):
    images = torch.rand(20, 1, 8, 8)
    top = torch.tensor([[0, 1, 2], [3, 4, 5]])
    assert topk_grid(images, top, tmp_path / "grid.png", top + 6, labels=torch.arange(20) % 10).is_file()
    assert visualization_grid(images[:2], tmp_path / "vis.png", images[2:4], channels=[3, 7]).is_file()
    assert ks_plot(torch.rand(6), torch.rand(6), tmp_path / "ks.png", torch.tensor([1, 0, 1, 0, 0, 1]).bool()).is_file()
    assert balance_histogram(torch.rand(6), torch.rand(6), tmp_path / "bal.png").is_file()
    md, table = write_table([{"layer": "4", "attack": "push-down", "tau": 0.25, "accuracy": 0.97}], tmp_path / "t1")
    assert md.read_text().splitlines()[2] == "| 4 | push-down |  | 0.2500 |  |  | 0.9700 |"
    assert table.read_text().splitlines()[1] == "4,push-down,,0.25,,,0.97"
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        topk_grid(torch.rand(20, 8), top, tmp_path / "bad.png")


# ------------------------------------------------------------------------------------------ CLI
def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def _tiny_mnist_model_factory():
    torch.manual_seed(0)
    from veneer.models import mnist_cnn

    return mnist_cnn(channels=(4, 8), hidden=16)


@pytest.fixture
def tiny_mnist(monkeypatch):
    """Small random CNN and 160 random 'MNIST' images, so the CLI runs in a second."""
    g = torch.Generator().manual_seed(0)
    data = LabeledData(torch.rand(160, 1, 28, 28, generator=g), torch.arange(160) % 10, "mnist",
                       [str(d) for d in range(10)])
    monkeypatch.setattr("veneer.cli.common.load_dataset", lambda spec, split, grayscale=False: data)
    monkeypatch.setattr("veneer.cli.neurons.load_model", lambda args: _tiny_mnist_model_factory().eval())
    return data


def test_cli_topk_and_visualize_write_their_files(tmp_path, tiny_mnist):
    args = _cli(["neurons", "topk", "--k", "5", "--out", str(tmp_path / "topk")])
    assert args.run(args) == 0
    metrics = json.loads((tmp_path / "topk" / "metrics.json").read_text())
    assert metrics["layer"] == "4" and len(metrics["indices"]) == 8 and len(metrics["indices"][0]) == 5
    assert (tmp_path / "topk" / "topk.png").is_file() and (tmp_path / "topk" / "config.json").is_file()
    args = _cli(["neurons", "visualize", "--channels", "0,3", "--steps", "5", "--out", str(tmp_path / "vis")])
    assert args.run(args) == 0
    assert (tmp_path / "vis" / "visualizations.png").is_file()


def test_cli_push_down_and_push_up_write_metrics_tables_and_figures(tmp_path, tiny_mnist):
    out = tmp_path / "down"
    args = _cli(["neurons", "push-down", "--steps", "3", "--k", "5", "--encoder", "none", "--visualize", "1",
                 "--out", str(out)])
    assert args.run(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"accuracy_before", "accuracy_after", "train", "heldout", "table1", "fine_tune"} <= set(metrics)
    assert len(metrics["heldout"]["per_channel"]["tau"]) == 8
    for name in ("table1.md", "table1.csv", "topk_train.png", "topk_heldout.png", "visualizations.png",
                 "attacked.safetensors"):
        assert (out / name).is_file(), name
    out = tmp_path / "up"
    args = _cli(["neurons", "push-up", "--steps", "3", "--k", "5", "--encoder", "none", "--visualize", "0",
                 "--decoy-class", "2", "--n-decoys", "8", "--out", str(out)])
    assert args.run(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    after = metrics["decoy_share_train"]["after"]
    assert after["mean_share"] == pytest.approx(sum(after["per_channel"]) / len(after["per_channel"]))


def test_cli_fairwash_on_a_tabular_model(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 12, generator=g)
    sex = (torch.arange(300) % 3 == 0).long()
    x[:, 0] += 2 * sex
    data = LabeledData(x, (x[:, 1] > 0).long(), "toy", ["no", "yes"], [f"f{i}" for i in range(12)],
                       {"sex": sex}, {"sex": ["Female", "Male"]})
    torch.manual_seed(0)
    model = tabular_mlp(12, (16, 8), 2).eval()
    monkeypatch.setattr("veneer.cli.common.load_dataset", lambda spec, split, grayscale=False: data)
    monkeypatch.setattr("veneer.cli.neurons.load_model", lambda args: model)
    out = tmp_path / "wash"
    args = _cli(["neurons", "fairwash", "--layer", "0", "--most-biased", "4", "--steps", "20", "--lr", "1e-2",
                 "--out", str(out)])
    assert args.run(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["attacked_neurons"]) == 4
    assert metrics["after"]["ks_attacked_mean"] < metrics["before"]["ks_attacked_mean"]
    assert (out / "ks.png").is_file() and (out / "balance.png").is_file()
    args = _cli(["neurons", "fairwash", "--attribute", "race", "--steps", "1", "--out", str(tmp_path / "bad")])
    with pytest.raises(ValueError, match="'race' is not a protected attribute"):
        args.run(args)


def test_cli_keep_loss_and_keep_mixup_reach_the_attack(tmp_path, tiny_mnist, monkeypatch):
    seen = []
    original = PushDown.__init__

    def spy(self, *args, **options):
        seen.append((options.get("keep"), options.get("keep_mixup")))
        original(self, *args, **options)

    monkeypatch.setattr(PushDown, "__init__", spy)
    args = _cli(["neurons", "push-down", "--steps", "2", "--k", "5", "--encoder", "none", "--visualize", "0",
                 "--keep", "argmax_ce", "--keep-mixup", "--out", str(tmp_path / "down")])
    assert args.run(args) == 0
    assert seen == [("argmax_ce", True)]
    with pytest.raises(SystemExit):
        _cli(["neurons", "push-down", "--keep", "labels"])
