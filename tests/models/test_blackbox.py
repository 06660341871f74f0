"""Black-box models: BlackBox, ONNX (onnxruntime) and skops files; references are scikit-learn and shap."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from veneer.explain import Gradient, KernelShap, applicable_methods
from veneer.models import BlackBox, onnx_model, resolve_model, skops_model


@pytest.fixture(scope="module")
def rows():
    x, y = make_classification(n_samples=300, n_features=5, n_informative=3, random_state=0)
    return x.astype(np.float32), y


def test_forward_is_log_probability_and_shap_matches_the_package(rows):
    import shap

    x, y = rows
    model = LogisticRegression().fit(x, y)
    box = BlackBox(model.predict_proba, 2, 5)
    out = box(torch.from_numpy(x[:10]))
    np.testing.assert_allclose(out.exp().numpy(), model.predict_proba(x[:10]), atol=1e-6)
    np.testing.assert_allclose(out.softmax(1).numpy(), model.predict_proba(x[:10]), atol=1e-6)
    # 5 features: 2^5 coalitions are enumerated, so both give the exact Shapley values over the same background
    ours = KernelShap(box, x[:50], background_size=None)(torch.from_numpy(x[:4]), target=1)
    reference = shap.KernelExplainer(lambda z: model.predict_proba(z)[:, 1], x[:50].astype(np.float64))
    expected = reference.shap_values(x[:4].astype(np.float64), nsamples=64, l1_reg=False, silent=True)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-5)


def test_gradient_methods_are_dropped_with_the_reason(rows):
    x, y = rows
    box = BlackBox(LogisticRegression().fit(x, y).predict_proba, 2, 5)
    with pytest.raises(RuntimeError, match="not differentiable"):
        Gradient(box)(torch.from_numpy(x[:2]))
    usable, reasons = applicable_methods(box, torch.from_numpy(x[:2]),
                                         names=["gradient", "ig", "lrp", "kernel-shap"], background=x[:20])
    assert usable == ["kernel-shap"]
    assert "not differentiable" in reasons["gradient"] and "not differentiable" in reasons["ig"]
    assert set(reasons) == {"gradient", "ig", "lrp"}


def test_bad_predict_proba_is_named(rows):
    x, _ = rows
    with pytest.raises(ValueError, match=r"predict_proba returned shape \(3, 3\), expected \(3, 2\)"):
        BlackBox(lambda z: np.full((len(z), 3), 1 / 3), 2)(torch.from_numpy(x[:3]))
    with pytest.raises(ValueError, match="must return probabilities"):
        BlackBox(lambda z: np.full((len(z), 2), 0.7), 2)(torch.from_numpy(x[:3]))
    with pytest.raises(ValueError, match=r"expects rows of shape \(N, 4\), got x of shape \(3, 5\)"):
        BlackBox(lambda z: np.full((len(z), 2), 0.5), 2, 4)(torch.from_numpy(x[:3]))
    with pytest.raises(ValueError, match="n_classes must be an int >= 2"):
        BlackBox(lambda z: z, 1)


def _onnx(model, x, path, zipmap=False):
    from skl2onnx import to_onnx

    options = {id(model): {"zipmap": False}} if not zipmap else None
    path.write_bytes(to_onnx(model, x[:1], options=options).SerializeToString())
    return path


def test_onnx_model_matches_predict_proba(rows, tmp_path):
    x, y = rows
    model = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(x, y)
    box = resolve_model(str(_onnx(model, x, tmp_path / "gb.onnx")))
    assert isinstance(box, BlackBox) and (box.n_classes, box.n_features) == (2, 5)
    np.testing.assert_allclose(box(torch.from_numpy(x)).exp().numpy(), model.predict_proba(x), atol=1e-5)
    with pytest.raises(ValueError, match=r"gb.onnx expects rows of shape \(N, 5\), got x of shape \(2, 4\)"):
        box(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="--weights does not apply"):
        resolve_model(str(tmp_path / "gb.onnx"), weights="w.safetensors")


def test_onnx_bad_files_are_refused(rows, tmp_path):
    x, y = rows
    model = LogisticRegression().fit(x, y)
    with pytest.raises(ValueError, match="zipmap"):
        onnx_model(_onnx(model, x, tmp_path / "zip.onnx", zipmap=True))
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(ValueError, match="is not an ONNX model onnxruntime can load"):
        onnx_model(tmp_path / "junk.onnx")
    with pytest.raises(FileNotFoundError, match="absent.onnx does not exist"):
        onnx_model(tmp_path / "absent.onnx")


def test_skops_model_loads_sklearn_and_refuses_the_rest(rows, tmp_path):
    from skops.io import dump

    x, y = rows
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y)
    dump(forest, tmp_path / "rf.skops")
    box = resolve_model(str(tmp_path / "rf.skops"))
    np.testing.assert_allclose(box(torch.from_numpy(x[:20])).exp().numpy(), forest.predict_proba(x[:20]), atol=1e-6)

    # a pickle renamed .skops is refused before it is unpickled: its payload would create the marker file
    marker = tmp_path / "payload-ran"
    (tmp_path / "evil.skops").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ValueError, match="is not a skops file .* never loaded"):
        skops_model(tmp_path / "evil.skops")
    assert not marker.exists()

    pipeline = make_pipeline(FunctionTransformer(_double), LogisticRegression()).fit(x, y)
    dump(pipeline, tmp_path / "custom.skops")
    with pytest.raises(ValueError, match=r"not loaded: \[.*_double"):
        skops_model(tmp_path / "custom.skops")


def _double(z):
    return 2 * z


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(self.path),)
