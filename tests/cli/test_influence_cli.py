"""``veneer influence`` and ``veneer attack-input --attack influence`` as a user runs them."""

import json

import pandas as pd
import torch
from safetensors.torch import load_file

from veneer.cli import main


def test_influence_command_writes_scores_top_and_figure(tmp_path):
    assert main(["influence", "--model", "mnist-cnn", "--data", "mnist", "--n", "3", "--train-n", "100",
                 "--k", "4", "--out", str(tmp_path), "--seed", "1"]) == 0
    saved = load_file(str(tmp_path / "scores.safetensors"))
    assert saved["scores"].shape == (3, 100) and saved["helpful"].shape == saved["harmful"].shape == (3, 4)
    assert torch.equal(saved["helpful"][:, 0], saved["scores"].argmin(1))
    top = pd.read_csv(tmp_path / "top.csv")
    assert len(top) == 3 and len(top["helpful"][0].split()) == 4
    assert (tmp_path / "influence.png").stat().st_size > 1000
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_train"] == 100 and metrics["params"] == ["9"]
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 1


def test_attack_input_influence_runs_sign_and_random(tmp_path, capsys):
    assert main(["attack-input", "--attack", "influence", "--model", "mnist-cnn", "--n", "4", "--train-n", "100",
                 "--eps", "0.05", "--show", "1", "--out", str(tmp_path)]) == 0
    sweep = pd.read_csv(tmp_path / "sweep.csv")
    assert list(sweep["attack"]) == ["influence", "random"] and (sweep["label_kept_rate"] == 1).all()
    assert "top5_intersection" in sweep.columns
    assert (tmp_path / "example_0.png").is_file() and (tmp_path / "sweep.png").is_file()
    assert "spearman" in capsys.readouterr().out


def test_attack_input_influence_must_run_alone(tmp_path, capsys):
    assert main(["attack-input", "--attack", "influence,top-k", "--out", str(tmp_path)]) == 2
    assert "runs alone" in capsys.readouterr().err
