"""The CSV/Parquet loader (veneer.data.table): encoding, splits, protected groups and bad input."""

import numpy as np
import pandas as pd
import pytest
import torch

from veneer.data import load_dataset, stratified_split, table


def credit_frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "income": rng.normal(3000, 800, n).round(2),
        "job": rng.choice(["clerk", "nurse", "welder"], n),
        "sex": rng.choice(["F", "M"], n),
        "age": rng.integers(18, 70, n),
        "default": rng.choice(["no", "yes"], n, p=[0.7, 0.3]),
    })


def test_encoding_keeps_units_and_one_hot_in_place(tmp_path):
    frame = credit_frame()
    path = tmp_path / "credit.csv"
    frame.to_csv(path, index=False)
    data = table(path, "default", "sex", split="all")
    assert data.feature_names == ["income", "job=clerk", "job=nurse", "job=welder", "sex=F", "sex=M", "age"]
    assert data.classes == ["no", "yes"] and data.name == "credit"
    np.testing.assert_allclose(data.x[:, 0].numpy(), frame["income"].to_numpy(), rtol=1e-6)
    np.testing.assert_array_equal(data.x[:, 6].numpy(), frame["age"].to_numpy())
    np.testing.assert_array_equal(data.x[:, 1:4].numpy(), pd.get_dummies(frame["job"]).to_numpy(np.float32))
    np.testing.assert_array_equal(data.y.numpy(), (frame["default"] == "yes").to_numpy())
    np.testing.assert_array_equal(data.protected["sex"].numpy(), (frame["sex"] == "M").to_numpy())
    assert data.protected_groups["sex"] == ["F", "M"]


def test_split_is_seeded_stratified_and_scale_is_the_train_split(tmp_path):
    frame = credit_frame()
    train, test = table(frame, "default", split="train"), table(frame, "default", split="test")
    assert len(train) + len(test) == len(frame)
    y = (frame["default"] == "yes").to_numpy().astype(np.int64)
    rows_train, rows_test = stratified_split(y, 0.8, 0)
    np.testing.assert_allclose(train.x[:, 0].numpy(), frame["income"].to_numpy()[rows_train], rtol=1e-6)
    np.testing.assert_allclose(test.x[:, 0].numpy(), frame["income"].to_numpy()[rows_test], rtol=1e-6)
    mean, std = train.scale["income"]
    assert mean == pytest.approx(frame["income"].to_numpy()[rows_train].mean())
    assert std == pytest.approx(frame["income"].to_numpy()[rows_train].std())
    assert test.scale == train.scale and "job" not in train.scale
    other = table(frame, "default", split="train", seed=1)
    assert not torch.equal(other.x, train.x)
    # a subset keeps the recorded scale
    assert train.subset(slice(0, 5)).scale == train.scale


def test_protected_value_and_separate_test_file(tmp_path):
    frame = credit_frame()
    frame.iloc[:150].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[150:].to_csv(tmp_path / "test.csv", index=False)
    test = load_dataset(f"csv:{tmp_path / 'train.csv'}", "test", target="default", protected="job=nurse",
                        test=str(tmp_path / "test.csv"))
    assert len(test) == 50
    np.testing.assert_array_equal(test.protected["job"].numpy(), (frame["job"].iloc[150:] == "nurse").to_numpy())
    assert test.protected_groups["job"] == ["job!=nurse", "job=nurse"]
    train = load_dataset(f"csv:{tmp_path / 'train.csv'}", "train", target="default",
                         test=str(tmp_path / "test.csv"))
    assert len(train) == 150


@pytest.mark.parametrize("change, kwargs, message", [
    (None, {"target": "label"}, "target='label' is not a column"),
    (None, {"target": "default", "protected": "race"}, "protected='race' is not a column"),
    (None, {"target": "default", "protected": "job"}, "must be binary"),
    (None, {"target": "default", "protected": "job=pilot"}, "no row has job == 'pilot'"),
    ("nan", {"target": "default"}, "'income' in 1 row(s): 3"),
    ("text", {"target": "default"}, "column 'age' is numeric but holds text ['n/a'] in 1 row(s): 7"),
    ("one_class", {"target": "default"}, "at least two classes"),
])
def test_bad_input_is_named(change, kwargs, message):
    frame = credit_frame()
    if change == "nan":
        frame.loc[3, "income"] = np.nan
    elif change == "text":
        frame["age"] = frame["age"].astype(object)
        frame.loc[7, "age"] = "n/a"
    elif change == "one_class":
        frame["default"] = "no"
    with pytest.raises(ValueError) as error:
        table(frame, **kwargs)
    assert message in str(error.value)


def test_dropna_drops_the_rows():
    frame = credit_frame()
    frame.loc[[3, 9], "income"] = np.nan
    data = table(frame, "default", split="all", dropna=True)
    assert len(data) == len(frame) - 2 and torch.isfinite(data.x).all()


def test_load_dataset_specs(tmp_path):
    path = tmp_path / "credit.csv"
    credit_frame().to_csv(path, index=False)
    with pytest.raises(ValueError, match="needs its label column"):
        load_dataset(f"csv:{path}")
    with pytest.raises(ValueError, match="apply to csv:PATH / parquet:PATH data only"):
        load_dataset("digits", target="default")
    with pytest.raises(FileNotFoundError, match="missing.csv does not exist"):
        load_dataset(f"csv:{tmp_path / 'missing.csv'}", target="default")
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not a readable CSV"):
        load_dataset(f"csv:{tmp_path / 'bad.csv'}", target="default")
    assert len(load_dataset(f"csv:{path}", "test", target="default")) == 40
