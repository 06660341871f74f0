"""A new user's tabular workflow: a CSV and an ONNX model made here from scikit-learn, through the veneer command."""

import json

import numpy as np
import pandas as pd
import pytest

from veneer.cli import main
from veneer.data import table


@pytest.fixture(scope="module")
def credit(tmp_path_factory):
    """credit.csv (income, job, sex, age -> default) and credit.onnx, a gradient-boosting model trained on
    ``veneer.data.table``'s columns of it, exported with skl2onnx."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier

    folder = tmp_path_factory.mktemp("credit")
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"income": rng.normal(3000, 800, n).round(2), "job": rng.choice(["clerk", "nurse"], n),
                          "sex": rng.choice(["F", "M"], n), "age": rng.integers(18, 70, n)})
    frame["default"] = np.where((frame["income"] < 2800) | (rng.random(n) < 0.1), "yes", "no")
    frame.to_csv(folder / "credit.csv", index=False)
    train = table(folder / "credit.csv", "default", split="train")
    model = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(train.x.numpy(), train.y.numpy())
    onnx = to_onnx(model, train.x.numpy()[:1], options={id(model): {"zipmap": False}})
    (folder / "credit.onnx").write_bytes(onnx.SerializeToString())
    narrow = GradientBoostingClassifier(n_estimators=5, random_state=0).fit(train.x.numpy()[:, :3], train.y.numpy())
    onnx = to_onnx(narrow, train.x.numpy()[:1, :3], options={id(narrow): {"zipmap": False}})
    (folder / "narrow.onnx").write_bytes(onnx.SerializeToString())
    return folder


def test_explain_a_csv_with_an_onnx_model(credit, tmp_path):
    out = tmp_path / "explain"
    code = main(["explain", "--model", str(credit / "credit.onnx"), "--data", f"csv:{credit / 'credit.csv'}",
                 "--label-column", "default", "--protected", "sex", "--methods", "kernel-shap", "--n", "4",
                 "--out", str(out), "--no-report"])
    assert code == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["label_column"] == "default" and config["protected"] == ["sex"]


@pytest.mark.parametrize("arguments, message", [
    (["--label-column", "defaulted"], "target='defaulted' is not a column"),
    ([], "needs its label column"),
    (["--label-column", "default", "--protected", "job=pilot"], "no row has job == 'pilot'"),
])
def test_bad_table_arguments_are_named(credit, tmp_path, capsys, arguments, message):
    assert main(["explain", "--model", str(credit / "credit.onnx"), "--data", f"csv:{credit / 'credit.csv'}",
                 *arguments, "--methods", "kernel-shap", "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err


def test_an_onnx_model_of_the_wrong_width_is_named(credit, tmp_path, capsys):
    assert main(["explain", "--model", str(credit / "narrow.onnx"), "--data", f"csv:{credit / 'credit.csv'}",
                 "--label-column", "default", "--methods", "kernel-shap", "--out", str(tmp_path / "x")]) == 2
    assert "narrow.onnx expects rows of shape (N, 3), got x of shape (1, 6)" in capsys.readouterr().err


def test_audit_a_csv_with_an_onnx_model(credit, tmp_path):
    out = tmp_path / "audit"
    code = main(["audit", "--model", str(credit / "credit.onnx"), "--data", f"csv:{credit / 'credit.csv'}",
                 "--target", "default", "--protected", "sex", "--out", str(out)])
    assert code == 0
    found = json.loads((out / "audit.json").read_text())
    assert "scaffolding" in found["tests"] and found["verdict"] == "clean"
    assert "not differentiable" in json.dumps(found["config"]["skipped"])
    page = (out / "report.html").read_text()
    assert "scaffolding" in page and "clean" in page




def test_explain_a_black_box_without_naming_methods_runs_lime_and_kernel_shap(credit, tmp_path):
    out = tmp_path / "explain-default"
    code = main(["explain", "--model", str(credit / "credit.onnx"), "--data", f"csv:{credit / 'credit.csv'}",
                 "--target", "default", "--n", "4", "--out", str(out), "--no-report"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["methods"]) >= {"lime", "kernel-shap"}
    assert "gradient" in metrics["dropped_methods"] and "not differentiable" in metrics["dropped_methods"]["gradient"]
