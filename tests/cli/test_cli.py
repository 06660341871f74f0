"""The veneer command as a user runs it."""

import json

import torch
from safetensors.torch import load_file

from veneer.cli import main


def test_train_command_writes_run_dir(tmp_path):
    assert main(["train", "--model", "digits-mlp", "--epochs", "2", "--out", str(tmp_path), "--seed", "3"]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["seed"] == 3 and "torch" in config["versions"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.5  # ten classes: chance is 0.1
    assert (tmp_path / "model.safetensors").is_file()


def test_explain_command_every_method(tmp_path):
    assert main(["explain", "--model", "mnist-cnn", "--data", "mnist", "--n", "3", "--out", str(tmp_path)]) == 0
    attributions = load_file(str(tmp_path / "attributions.safetensors"))
    assert set(attributions) == {"gradient", "gradient_x_input", "ig", "smoothgrad", "gradcam", "occlusion", "lrp",
                                 "deeplift"}
    assert attributions["ig"].shape == (3, 1, 28, 28) and torch.isfinite(attributions["lrp"]).all()
    assert (tmp_path / "explanations.png").stat().st_size > 1000
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["seconds_per_method"]) == set(attributions)


def test_cli_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["explain", "--data", "nope", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["explain", "--methods", "gradient,shap", "--n", "2", "--out", str(tmp_path)]) == 2
    assert "unknown method(s) ['shap']" in capsys.readouterr().err
