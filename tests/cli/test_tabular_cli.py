"""`veneer explain --methods lime,kernel-shap` and `veneer manipulate --objective scaffolding` on German credit."""

import json

import torch
from safetensors.torch import load_file

from veneer.cli import main
from veneer.models.architectures import tabular_mlp

FEMALE = "personal_status_sex=female : divorced/separated/married"


def test_explain_with_lime_and_kernel_shap(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "mlp.pt"
    torch.jit.script(tabular_mlp(61, (8,), 2).eval()).save(str(path))
    out = tmp_path / "run"
    assert main(["explain", "--model", str(path), "--data", "german", "--n", "3",
                 "--methods", "gradient,lime,kernel-shap", "--out", str(out)]) == 0
    attributions = load_file(str(out / "attributions.safetensors"))
    assert set(attributions) == {"gradient", "lime", "kernel-shap"}
    for name in ("lime", "kernel-shap"):
        assert attributions[name].shape == (3, 61) and torch.isfinite(attributions[name]).all()
        assert attributions[name].abs().sum() > 0
    assert json.loads((out / "config.json").read_text())["seed"] == 0


def test_manipulate_scaffolding_hides_sex_from_lime(tmp_path, capsys):
    assert main(["manipulate", "--objective", "scaffolding", "--data", "german", "--features", FEMALE, "--invert",
                 "--perturbation", "lime", "--explain-n", "10", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["fidelity_test"] >= 0.95
    shares = {row["model"]: row["personal_status_sex top-1"] for row in metrics["explanations"]}
    assert shares == {"biased": 1.0, "scaffold, 1 feature": shares["scaffold, 1 feature"]}
    assert shares["scaffold, 1 feature"] <= 0.1
    assert (tmp_path / "ranks.png").stat().st_size > 1000
    assert "detector accuracy" in capsys.readouterr().out


def test_scaffolding_needs_one_sensitive_column(tmp_path, capsys):
    assert main(["manipulate", "--objective", "scaffolding", "--data", "german", "--out", str(tmp_path)]) == 2
    assert "--features must name one sensitive column" in capsys.readouterr().err
