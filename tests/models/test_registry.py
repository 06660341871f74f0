"""Training, persistence, bundled and user models."""

import json
import sys

import pytest
import torch

from veneer.models import (RECIPES, accuracy, load, load_state, pretrained, resolve_model, save, tabular_mlp,
                           train_bundled)


def test_train_bundled_writes_safetensors_and_metadata(tmp_path):
    model, meta = train_bundled("digits-mlp", tmp_path / "digits", seed=1, progress=False, epochs=3)
    assert (tmp_path / "digits.safetensors").is_file()
    written = json.loads((tmp_path / "digits.json").read_text())
    assert written["dataset"] == "digits" and written["seed"] == 1 and written["train_options"]["epochs"] == 3
    assert written["test_accuracy"] == meta["test_accuracy"] > 0.5  # 3 epochs already learn something
    assert not model.training


def test_pretrained_trains_once_then_loads_same_weights(tmp_path):
    first = pretrained("digits-mlp", cache=tmp_path, progress=False)
    stamp = (tmp_path / "digits-mlp.safetensors").stat().st_mtime_ns
    second = pretrained("digits-mlp", cache=tmp_path, progress=False)
    assert (tmp_path / "digits-mlp.safetensors").stat().st_mtime_ns == stamp
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    meta = json.loads((tmp_path / "digits-mlp.json").read_text())
    assert meta["test_accuracy"] > 0.9


def test_pretrained_uses_veneer_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("VENEER_CACHE", str(tmp_path))
    pretrained("digits-mlp", progress=False)
    assert (tmp_path / "digits-mlp.safetensors").is_file()


def test_mnist_cnn_reaches_97_percent():
    from veneer.data import mnist

    test = mnist("test")
    assert accuracy(pretrained("mnist-cnn", progress=False), test.x, test.y) >= 0.97


def test_unknown_bundled_model_is_named():
    with pytest.raises(ValueError, match="model must be one of"):
        pretrained("resnet-9000")


def test_save_and_load_state_roundtrip(tmp_path):
    model = tabular_mlp(5, (4,), 2)
    path = save(model, tmp_path / "m", {"note": "x"})
    other = load_state(tabular_mlp(5, (4,), 2), path)
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="do not fit the model"):
        load_state(tabular_mlp(6, (4,), 2), path)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_state(model, tmp_path / "missing.safetensors")


def _write_factory(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "from veneer.models import tabular_mlp\n"
        "def small(width=4):\n    return tabular_mlp(5, (width,), 2)\n"
        "def not_a_model():\n    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_models", None)


def test_load_user_factory_with_safetensors_and_torch_weights(tmp_path, monkeypatch):
    _write_factory(tmp_path, monkeypatch)
    reference = tabular_mlp(5, (4,), 2)
    save(reference, tmp_path / "w", {})
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    x = torch.randn(3, 5)
    for weights in (tmp_path / "w.safetensors", tmp_path / "w.pt"):
        model = load(factory="my_models:small", weights=weights)
        assert not model.training
        assert torch.equal(model(x), reference(x))
    assert torch.equal(resolve_model("my_models:small", str(tmp_path / "w.safetensors"))(x), reference(x))


def test_load_refuses_pickled_code(tmp_path, monkeypatch):
    _write_factory(tmp_path, monkeypatch)
    torch.save({"weight": torch.zeros(1), "evil": print}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil.pt \(--weights\): the file pickles the Python object print, which "
                                         r"veneer never loads") as refused:
        load(factory="my_models:small", weights=tmp_path / "evil.pt")
    assert "weights_only" not in str(refused.value)


def test_load_torchscript(tmp_path):
    model = tabular_mlp(5, (4,), 2).eval()
    torch.jit.script(model).save(str(tmp_path / "m.pt"))
    x = torch.randn(2, 5)
    assert torch.allclose(load(torchscript=tmp_path / "m.pt")(x), model(x))
    assert torch.allclose(resolve_model(str(tmp_path / "m.pt"))(x), model(x))


def test_load_bad_factory_messages(tmp_path, monkeypatch):
    _write_factory(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="factory must look like"):
        load(factory="no_colon")
    with pytest.raises(ValueError, match="cannot be imported"):
        load(factory="my_models:missing")
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        load(factory="my_models:not_a_model")
    with pytest.raises(ValueError, match="model must be one of"):
        resolve_model("nonsense")


def test_recipes_cover_the_documented_models():
    assert {"mnist-cnn", "digits-mlp", "adult-mlp"} <= set(RECIPES)
