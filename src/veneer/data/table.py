"""The user's own tabular data: a CSV or Parquet file (or a pandas DataFrame) with a label column.

:func:`table` encodes it as the bundled tabular sets are encoded, with two differences: numeric columns are
kept in their own units (a model delivered as a file, e.g. an ONNX export of a scikit-learn pipeline, was
trained on them), and the train split's mean and standard deviation of each numeric column are recorded in
``LabeledData.scale`` for whoever needs standardised distances. Categorical columns (text, ``category``) are
one-hot, named ``"column=value"``, in place: the columns of ``x`` follow the file's column order, so a model
trained on ``table(...).x`` (or, for an all-numeric file, on the file's columns without the label) sees the
same columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from veneer.data.base import LabeledData
from veneer.data.images import SPLIT_SEED, check_split, missing_file, stratified_split

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# rows named in an error message (the first ones)
SHOWN_ROWS = 5


def read_table(path: str | Path, kind: str | None = None) -> pd.DataFrame:
    """The DataFrame in ``path``: ``kind`` ``"csv"`` (pandas' ``read_csv``, a header row) or ``"parquet"``; by
    default from the suffix (``.csv``, ``.parquet``, ``.pq``)."""
    file = Path(path)
    if kind is None:
        kind = TABLE_SUFFIXES.get(file.suffix.lower())
        if kind is None:
            raise ValueError(f"{file}: cannot tell the table format from suffix {file.suffix or '(none)'!r}; "
                             f"expected one of {sorted(TABLE_SUFFIXES)} (or name it: csv:PATH, parquet:PATH)")
    if kind not in ("csv", "parquet"):
        raise ValueError(f"kind must be 'csv' or 'parquet', got {kind!r}")
    if not file.is_file():
        raise missing_file(file, f"pass the path of a {kind} file with a header row naming the columns")
    if kind == "csv":
        try:
            return pd.read_csv(file, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ValueError(f"{file} is not a readable CSV file: {err}") from err
    try:
        return pd.read_parquet(file)
    except ImportError as err:
        raise ImportError(f"reading {file} needs a Parquet engine: pip install pyarrow ({err})") from err


def _rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(r) for r in rows[:SHOWN_ROWS])
    return f"{len(rows)} row(s): {shown}{', ...' if len(rows) > SHOWN_ROWS else ''} (0-based data rows)"


def _check_column(frame: pd.DataFrame, column: str, argument: str) -> None:
    if column not in frame.columns:
        raise ValueError(f"{argument}={column!r} is not a column; columns: {list(map(str, frame.columns))}")


def _protected(frame: pd.DataFrame, spec: str) -> tuple[str, np.ndarray, list[str]]:
    """``(name, (N,) codes 0/1, group names)`` of a protected attribute ``"COL"`` (two values: codes by sorted
    value) or ``"COL=VALUE"`` (1 where COL equals VALUE, compared as text)."""
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"protected must be a column name 'COL' or 'COL=VALUE', got {spec!r}")
    column, sep, value = spec.partition("=")
    _check_column(frame, column, "protected")
    text = frame[column].astype(str).str.strip()
    if sep:
        if not (text == value).any():
            raise ValueError(f"protected={spec!r}: no row has {column} == {value!r}; values: "
                             f"{sorted(text.unique())[:20]}")
        return column, (text == value).to_numpy(), [f"{column}!={value}", f"{column}={value}"]
    values = sorted(frame[column].unique(), key=str)
    if len(values) != 2:
        raise ValueError(f"protected={column!r} must be binary (two values) or given as 'COL=VALUE' naming the "
                         f"group; it has {len(values)} values: {[str(v) for v in values[:10]]}")
    return column, (frame[column] == values[1]).to_numpy(), [str(v) for v in values]


def _numeric(series: pd.Series) -> bool:
    """A column kept in its units: numeric or bool dtype. A text column whose values are mostly numbers (the
    sign of a stray text cell in a numeric column) is an error naming the rows."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return True
    parsed = pd.to_numeric(series, errors="coerce")
    if parsed.notna().mean() > 0.5:
        bad = parsed.isna().to_numpy() & series.notna().to_numpy()
        examples = sorted({str(v) for v in series[bad]})[:SHOWN_ROWS]
        raise ValueError(f"column {series.name!r} is numeric but holds text {examples} in {_rows(bad)}; fix "
                         f"those cells (or drop the rows)")
    return False


def _drop_missing(frame: pd.DataFrame, columns: list[str], dropna: bool, where: str) -> pd.DataFrame:
    missing = frame[columns].isna()
    if not missing.to_numpy().any():
        return frame
    if dropna:
        return frame[~missing.any(axis=1)].reset_index(drop=True)
    found = [f"{c!r} in {_rows(missing[c].to_numpy())}" for c in columns if missing[c].any()]
    raise ValueError(f"{where} has missing values (NaN): {'; '.join(found)}; pass dropna=True (--dropna) to drop "
                     f"those rows")


def table(source: str | Path | pd.DataFrame, target: str, protected: str | list[str] | None = None, *,
          split: str = "train", test: str | Path | pd.DataFrame | None = None, dropna: bool = False,
          train_fraction: float = 0.8, seed: int = SPLIT_SEED, name: str | None = None) -> LabeledData:
    """A labelled table (a DataFrame, or a CSV/Parquet path read by :func:`read_table`) as :class:`LabeledData`.

    ``target``: the label column; its sorted distinct values are the classes (y = their index; the order of a
    scikit-learn classifier's ``classes_``). ``protected``:
    one or a list of ``"COL"`` (a binary column; group codes by sorted value) or ``"COL=VALUE"`` (group 1:
    the rows where COL is VALUE); the column stays in ``x`` and its codes go to ``protected[COL]``.
    Every other column is a feature: numeric and bool columns in their units (``scale[COL] = (mean, std)`` of
    the train split, ddof=0), text and ``category`` columns one-hot ``"COL=value"`` with the train split's
    values (sorted), in the file's column order. ``split``: ``"train"``/``"test"`` a seeded stratified split
    (``train_fraction`` of each class to train; :func:`veneer.data.stratified_split` with ``seed``),
    ``"all"`` every row; with ``test`` (a second table with the same columns) ``source`` is the train split and
    ``test`` the test split. Missing values are refused, naming column and rows, unless ``dropna``; text in a
    numeric column is refused, naming the rows.
    """
    check_split(split)
    if not isinstance(target, str) or not target:
        raise TypeError(f"target must be the name of the label column, got {target!r}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction!r}")
    frame = source if isinstance(source, pd.DataFrame) else read_table(source)
    label = name or (Path(source).stem if not isinstance(source, pd.DataFrame) else "table")
    frames = {"source": frame}
    if test is not None:
        frames["test"] = test if isinstance(test, pd.DataFrame) else read_table(test)
    specs = [] if protected is None else [protected] if isinstance(protected, str) else list(protected)
    for key, part in frames.items():
        part = part.rename(columns=lambda c: str(c).strip())
        _check_column(part, target, "target")
        if key == "test" and list(part.columns) != list(frame.columns):
            raise ValueError(f"test must have the columns of the train table {list(frame.columns)}, "
                             f"got {list(part.columns)}")
        if len(part) == 0:
            raise ValueError(f"the {'test ' * (key == 'test')}table holds no rows")
        frames[key] = _drop_missing(part, list(part.columns), dropna,
                                    "the test table" if key == "test" else f"table {label!r}")
    frame = frames["source"]
    features = [c for c in frame.columns if c != target]
    if not features:
        raise ValueError(f"table {label!r} has no column besides the label {target!r}")
    labels = pd.concat([f[target] for f in frames.values()]).unique()
    try:
        classes = sorted(labels)  # numbers in numeric order, as scikit-learn's classes_
    except TypeError:
        classes = sorted(labels, key=str)
    if len(classes) < 2:
        raise ValueError(f"target={target!r} must hold at least two classes, got {[str(c) for c in classes]}")
    whole = pd.concat(list(frames.values()), ignore_index=True)
    y_whole = whole[target].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    if test is None:
        train_rows, test_rows = stratified_split(y_whole, train_fraction, seed)
    else:
        train_rows, test_rows = np.arange(len(frame)), len(frame) + np.arange(len(frames["test"]))
    rows = {"train": train_rows, "test": test_rows, "all": np.arange(len(whole))}[split]
    train, part = whole.iloc[train_rows], whole.iloc[rows]
    columns, names, scale = [], [], {}
    for column in features:
        if _numeric(whole[column]):
            values = pd.to_numeric(part[column]).to_numpy(np.float64)
            reference = pd.to_numeric(train[column]).to_numpy(np.float64)
            scale[column] = (float(reference.mean()), float(reference.std()))
            columns.append(values)
            names.append(column)
        else:
            text = part[column].astype(str).str.strip()
            for value in sorted(train[column].astype(str).str.strip().unique()):
                columns.append((text == value).to_numpy(np.float64))
                names.append(f"{column}={value}")
    groups, codes = {}, {}
    for spec in specs:
        column, code, group_names = _protected(whole, spec)
        codes[column], groups[column] = torch.from_numpy(code[rows].astype(np.int64)), group_names
    x = torch.from_numpy(np.stack(columns, axis=1).astype(np.float32))
    return LabeledData(x, torch.from_numpy(y_whole[rows]), label, [str(c) for c in classes], names, codes, groups,
                       scale)
