"""The container every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset


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
            {k: v[index] for k, v in self.protected.items()}, self.protected_groups,
        )

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
