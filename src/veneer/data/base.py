"""The container every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset


@dataclass
class LabeledData(Dataset):
    """Inputs ``x`` (N, ...) float32, labels ``y`` (N,) int64, and what is known about them.

    Image data: ``x`` is (N, C, H, W) in [0, 1]. Tabular data: ``x`` is (N, F) with ``feature_names``
    (one-hot columns are named ``"column=value"``). ``protected`` maps an attribute name (``"sex"``,
    ``"race"``, ``"age"``) to an (N,) int64 group code; ``protected_groups[name]`` names each code.
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str
    classes: list[str]
    feature_names: list[str] | None = None
    protected: dict[str, torch.Tensor] = field(default_factory=dict)
    protected_groups: dict[str, list[str]] = field(default_factory=dict)
    scale: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index):
        return self.x[index], self.y[index]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: torch.Tensor | slice) -> "LabeledData":
        """Rows ``index`` of every per-sample field."""
        return LabeledData(
            self.x[index], self.y[index], self.name, self.classes, self.feature_names,
            {k: v[index] for k, v in self.protected.items()}, self.protected_groups, self.scale,
        )

    def sample(self, n: int, seed: int = 0) -> "LabeledData":
        """A seeded, class-stratified subset of ``n`` rows (each class in proportion to its share, rounded by
        a seeded draw), in a shuffled order that mixes the classes; ``n >= len(self)`` returns every row,
        shuffled. The first rows of the split would be one class when the split is sorted by class."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=generator)
        labels = self.y[order]
        counts = torch.bincount(labels, minlength=int(labels.max()) + 1)
        # rank of each sample within its class, in the random order
        by_class = torch.argsort(labels, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(labels)
        rank[by_class] = torch.arange(len(labels)) - starts[labels[by_class]]
        key = (rank.double() + torch.rand(len(labels), generator=generator, dtype=torch.float64)) / counts[labels]
        chosen = order[torch.argsort(key)[:n]]
        return self.subset(chosen)

    def features(self, prefixes: list[str] | tuple[str, ...]) -> list[int]:
        """Column indices whose name equals or starts with ``prefix=`` for each prefix; unknown names raise."""
        if self.feature_names is None:
            raise ValueError(f"dataset {self.name!r} has no named features (it is not tabular)")
        found: list[int] = []
        for prefix in prefixes:
            hits = [i for i, n in enumerate(self.feature_names) if n == prefix or n.startswith(prefix + "=")]
            if not hits:
                raise ValueError(f"feature {prefix!r} is not in dataset {self.name!r}; "
                                 f"columns: {sorted({n.split('=')[0] for n in self.feature_names})}")
            found += hits
        return sorted(set(found))


def as_labeled(data: object, name: str = "data") -> LabeledData:
    """The one conversion of user data into a :class:`LabeledData`, used wherever veneer takes data.

    Accepts a :class:`LabeledData` (returned as is), an ``(x, y)`` pair of tensors or arrays, a
    :class:`~torch.utils.data.TensorDataset` of ``(x, y)``, any map-style ``Dataset`` whose items are
    ``(x, y)`` pairs, or a :class:`~torch.utils.data.DataLoader` over such items. A loader is read once, batch
    by batch, and its batches are concatenated: the loader's own batching and shuffling are replaced by the
    caller's (e.g. the fine-tuning engine's seeded sampler). ``x`` becomes float32 unless it already is a
    floating-point tensor; ``y`` must hold integer class indices. ``name`` is the argument named in errors.
    """
    if isinstance(data, LabeledData):
        if len(data) == 0:
            raise ValueError(f"{name} is empty (0 samples)")
        return data
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(f"{name} as a tuple must be (x, y), got {len(data)} elements")
        x, y = data
    elif isinstance(data, TensorDataset):
        if len(data.tensors) != 2:
            raise ValueError(f"{name} as a TensorDataset must hold (x, y), got {len(data.tensors)} tensors")
        x, y = data.tensors
    elif isinstance(data, DataLoader):
        xs, ys = [], []
        for batch in data:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError(f"{name}'s batches must be (x, y) pairs, got {type(batch).__name__}")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
        if not xs:
            raise ValueError(f"{name} is empty (the DataLoader yields no batch)")
        x, y = torch.cat(xs), torch.cat(ys)
    elif isinstance(data, Dataset) and hasattr(data, "__len__"):
        if len(data) == 0:
            raise ValueError(f"{name} is empty (0 samples)")
        return as_labeled(DataLoader(data, batch_size=256, shuffle=False), name)
    else:
        raise TypeError(f"{name} must be a LabeledData, an (x, y) pair of tensors, a Dataset or a DataLoader, "
                        f"got {type(data).__name__}")
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if not x.is_floating_point():
        x = x.float()
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{name}: y must hold integer class indices, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name}: y must have shape (N,), got {tuple(y.shape)}")
    if len(x) != len(y):
        raise ValueError(f"{name}: x has {len(x)} rows but y has {len(y)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: x contains NaN or infinite values")
    if bool((y < 0).any()):
        raise ValueError(f"{name}: y must be class indices >= 0, got {int(y.min())}")
    y = y.long()
    classes = [str(c) for c in range(int(y.max()) + 1)]
    return LabeledData(x, y, name, classes)
