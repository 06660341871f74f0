"""The user's own data: a folder of images per class, local CIFAR-10 python batches, or a tensor file."""

from __future__ import annotations

import importlib
import json
import pickle
from pathlib import Path

import numpy as np
import torch

from veneer.checks import check_tensor
from veneer.data.base import LabeledData
from veneer.data.images import SPLIT_SEED, check_split, missing_file, stratified_split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _size_pair(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
        raise ValueError(f"size must be None, a positive int or a (height, width) pair, got {size!r}")
    return pair


def image_folder(path: str | Path, size: int | tuple[int, int] | None = None,
                 grayscale: bool = False, split: str = "all", train_fraction: float = 0.8,
                 seed: int = SPLIT_SEED) -> LabeledData:
    """Images in ``path/<class>/`` (one sub-folder per class; sorted folder names are the classes).

    Files ending in .png/.jpg/.jpeg/.bmp/.gif (any case) are read with Pillow and converted to RGB (or L
    if ``grayscale``). ``size`` = (height, width) resizes every image (bilinear); without it all images
    must share one size. ``x`` is (N, 3 or 1, H, W) float32 in [0, 1]. ``split`` ``"train"``/``"test"`` takes
    a seeded, stratified share of each class (``train_fraction`` of it for train, the rest for test, the test
    rows in a shuffled order; :func:`stratified_split`), so held-out figures are not computed on training
    images; ``"all"`` keeps every image.
    """
    check_split(split)
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise missing_file(root, "pass a folder holding one sub-folder of images per class")
    target = _size_pair(size)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class sub-folders; expected {root}/<class>/<image>.png")
    mode = "L" if grayscale else "RGB"
    images, labels = [], []
    first: tuple[Path, tuple[int, int]] | None = None
    for label, name in enumerate(classes):
        files = sorted(f for f in (root / name).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"class folder {root / name} holds no image ({'/'.join(IMAGE_SUFFIXES)})")
        for file in files:
            try:
                with Image.open(file) as img:
                    img = img.convert(mode)
                    if target is not None:
                        img = img.resize((target[1], target[0]), Image.BILINEAR)
                    array = np.asarray(img, dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"cannot read image {file}: {err}") from err
            hw = array.shape[:2]
            if first is None:
                first = (file, hw)
            elif hw != first[1]:
                raise ValueError(f"{file} is {hw[0]}x{hw[1]} (HxW) but {first[0]} is {first[1][0]}x{first[1][1]}; "
                                 f"pass size=(height, width) to resize all images")
            images.append(array.reshape(hw + (-1,)))
            labels.append(label)
    x = torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    data = LabeledData(x, torch.tensor(labels, dtype=torch.int64), root.name or "image-folder", classes)
    if split == "all":
        return data
    train, test = stratified_split(data.y.numpy(), train_fraction, seed)
    return data.subset(torch.from_numpy(train if split == "train" else test))


# ------------------------------------------------------------------------------------------- CIFAR-10
def _numpy_global(submodule: str, name: str):
    for prefix in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{prefix}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {submodule}.{name}")


_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: importlib.import_module("_codecs").encode,  # bytes under protocol 2
}
for _prefix in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS[(f"{_prefix}.multiarray", "_reconstruct")] = lambda: _numpy_global("multiarray", "_reconstruct")
    _ALLOWED_GLOBALS[(f"{_prefix}.multiarray", "scalar")] = lambda: _numpy_global("multiarray", "scalar")
    _ALLOWED_GLOBALS[(f"{_prefix}.numeric", "_frombuffer")] = lambda: _numpy_global("numeric", "_frombuffer")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays, lists, dicts, numbers and strings, and nothing else:
    any other global (``os.system``, ``builtins.eval``, ...) raises :class:`pickle.UnpicklingError`."""

    def find_class(self, module: str, name: str):
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy arrays are "
                                         f"allowed in a CIFAR-10 batch file")
        return factory()


def restricted_load(path: str | Path) -> object:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` and ``encoding="bytes"`` (the CIFAR format)."""
    with open(path, "rb") as fh:
        return RestrictedUnpickler(fh, encoding="bytes").load()


CIFAR_HINT = ("download the CIFAR-10 python version (cifar-10-python.tar.gz, "
              "https://www.cs.toronto.edu/~kriz/cifar.html), extract it and pass the "
              "cifar-10-batches-py folder")


def _cifar_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise missing_file(path, CIFAR_HINT)
    return path


def cifar10(path: str | Path, split: str = "train") -> LabeledData:
    """CIFAR-10 (Krizhevsky 2009) from a local copy of the python batches: ``data_batch_1`` .. ``_5``
    (train, 50000), ``test_batch`` (test, 10000) and ``batches.meta`` (class names) in ``path`` (or in
    ``path/cifar-10-batches-py``). Files are unpickled with :class:`RestrictedUnpickler`.
    ``x`` is (N, 3, 32, 32) float32 in [0, 1].
    """
    check_split(split)
    folder = Path(path)
    if not (folder / "batches.meta").exists() and (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    meta = restricted_load(_cifar_file(folder, "batches.meta"))
    if not isinstance(meta, dict) or b"label_names" not in meta:
        raise ValueError(f"{folder / 'batches.meta'} has no b'label_names' entry")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"]]
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    files = [_cifar_file(folder, n) for n in names.get(split, names["train"] + names["test"])]
    xs, ys = [], []
    for file in files:
        batch = restricted_load(file)
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise ValueError(f"{file} is not a CIFAR-10 batch (needs keys b'data' and b'labels')")
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise ValueError(f"{file}: b'data' must be uint8 (N, 3072) matching {len(labels)} labels, "
                             f"got {data.dtype} {data.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"{file}: labels must lie in [0, {len(classes) - 1}]")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    x = torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0)
    return LabeledData(x, torch.from_numpy(np.concatenate(ys)), "cifar10", classes)


# -------------------------------------------------------------------------------------------- tensors
def _names(value: object, key: str, path: Path) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):  # safetensors metadata: a JSON list
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: metadata {key!r} must be a JSON list of strings") from err
    return [str(v) for v in np.asarray(value).reshape(-1).tolist()]


def tensors(path: str | Path) -> LabeledData:
    """Arrays ``x`` (N, ...) floating point and ``y`` (N,) integer from a ``.npz`` (read with
    ``allow_pickle=False``) or ``.safetensors`` file. Optional class and feature names: npz arrays
    ``classes``/``feature_names`` of strings, or safetensors metadata of the same names holding JSON lists.
    Without ``classes`` they are ``"0" .. str(max(y))``.
    """
    file = Path(path)
    if not file.is_file():
        raise missing_file(file, "save x and y with numpy.savez or safetensors.torch.save_file")
    suffix = file.suffix.lower()
    if suffix == ".npz":
        with np.load(file, allow_pickle=False) as archive:
            try:
                found = {k: archive[k] for k in ("x", "y", "classes", "feature_names") if k in archive.files}
            except ValueError as err:  # object arrays would need pickle: refused
                raise ValueError(f"{file}: {err}") from err
        extra = {k: found.get(k) for k in ("classes", "feature_names")}
        arrays = {}
        for key in ("x", "y"):
            if key in found:
                value = found[key]
                if value.dtype.kind not in "fiub":
                    raise TypeError(f"{file}: {key} must be numeric, got dtype {value.dtype}")
                if value.dtype.kind == "u":
                    value = value.astype(np.int64)
                arrays[key] = torch.from_numpy(np.ascontiguousarray(value))
    elif suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as fh:
            arrays = {k: fh.get_tensor(k) for k in fh.keys() if k in ("x", "y")}
            metadata = fh.metadata() or {}
        extra = {k: metadata.get(k) for k in ("classes", "feature_names")}
    else:
        raise ValueError(f"{file}: expected a .npz or .safetensors file, got {suffix or 'no suffix'!r}")
    for key in ("x", "y"):
        if key not in arrays:
            raise ValueError(f"{file} has no array {key!r} (it needs 'x' (N, ...) float and 'y' (N,) int)")
    x = check_tensor(f"{file}: x", arrays["x"]).to(torch.float32)
    y = arrays["y"]
    if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{file}: y must hold integer class indices, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{file}: y must have shape (N,), got {tuple(y.shape)}")
    y = y.to(torch.int64)
    if len(y) and y.min() < 0:
        raise ValueError(f"{file}: y must be >= 0, got {int(y.min())}")
    classes = _names(extra["classes"], "classes", file)
    if classes is None:
        classes = [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
    elif len(y) and int(y.max()) >= len(classes):
        raise ValueError(f"{file}: y reaches {int(y.max())} but only {len(classes)} classes are named")
    feature_names = _names(extra["feature_names"], "feature_names", file)
    if feature_names is not None and (x.ndim != 2 or x.shape[1] != len(feature_names)):
        raise ValueError(f"{file}: {len(feature_names)} feature_names for x of shape {tuple(x.shape)}")
    return LabeledData(x, y, file.stem, classes, feature_names)
