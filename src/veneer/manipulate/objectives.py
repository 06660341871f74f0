"""What a manipulation makes the explanations show: one class per objective, usable with every
differentiable explainer.

An objective sees the attributions ``attr`` of a batch and returns a per-item loss (lower is a better
manipulation), the measures reported by :func:`veneer.manipulate.evaluate` and a per-item fooling-success
flag. Image objectives work on *normalized heatmaps* as in the thesis ("Training Neural Networks With
Manipulated Explanations", Sec. 3.2): ``h = sum_c |attr_c|`` per pixel, divided by its sum, so every map is a
non-negative distribution over the pixels (Grad-CAM's one-channel maps included). Comparisons with a picture
(MSE, SSIM) scale both maps by ``H * W`` (mean 1), so their values do not depend on the image size.

Objectives whose loss compares with the *original* model's explanation (``needs_reference = True``) receive
that explanation, computed by the same method on the unmodified model, as ``reference``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from veneer.checks import check_positive, check_tensor
from veneer.data import LabeledData
from veneer.explain import heatmap
from veneer.metrics import com_distance_to, mse, pearson, ssim, topk_intersection

EPS = 1e-12


# ---------------------------------------------------------------- pictures generated at any size


def _grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    check_positive("height", height, integer=True)
    check_positive("width", width, integer=True)
    rows = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width)
    return rows, cols


def _default_thickness(height: int, width: int) -> int:
    return max(1, round(min(height, width) / 7))


def cross(height: int, width: int, thickness: int | None = None) -> torch.Tensor:
    """(H, W) 0/1 map of a centred "+" whose bars are ``thickness`` pixels wide (default ``min(H, W) / 7``);
    the cross target of thesis Sec. 3.4 (Fig. 3.5)."""
    rows, cols = _grid(height, width)
    # a bar one pixel wide on an even side has no centre row: it takes the two middle ones (8x8 digits)
    half = max((thickness or _default_thickness(height, width)) / 2, 0.5 + 1e-6)
    return (((rows - (height - 1) / 2).abs() < half) | ((cols - (width - 1) / 2).abs() < half)).float()


def square(height: int, width: int, thickness: int | None = None, side: float = 0.6) -> torch.Tensor:
    """(H, W) 0/1 map of the outline of a centred square whose side is ``side`` times ``min(H, W)``."""
    rows, cols = _grid(height, width)
    t = thickness or _default_thickness(height, width)
    outer = side * min(height, width) / 2
    dist = torch.maximum((rows - (height - 1) / 2).abs(), (cols - (width - 1) / 2).abs())
    return ((dist <= outer) & (dist > outer - t)).float()


def ring(height: int, width: int, thickness: int | None = None, radius: float = 0.3) -> torch.Tensor:
    """(H, W) 0/1 map of a centred ring of radius ``radius * min(H, W)`` and width ``thickness``."""
    rows, cols = _grid(height, width)
    t = thickness or _default_thickness(height, width)
    r = radius * min(height, width)
    dist = ((rows - (height - 1) / 2) ** 2 + (cols - (width - 1) / 2) ** 2).sqrt()
    return ((dist - r).abs() <= t / 2).float()


def border(height: int, width: int, thickness: int | None = None) -> torch.Tensor:
    """(H, W) 0/1 map of the image frame, ``thickness`` pixels wide (Heo et al. 2019, "location fooling")."""
    rows, cols = _grid(height, width)
    t = thickness or _default_thickness(height, width)
    return ((rows < t) | (rows >= height - t) | (cols < t) | (cols >= width - t)).float()


PICTURES: dict[str, Callable[..., torch.Tensor]] = {"cross": cross, "square": square, "ring": ring,
                                                     "border": border}


def picture(name: str, height: int, width: int, thickness: int | None = None) -> torch.Tensor:
    """The (H, W) 0/1 picture ``name`` (one of :data:`PICTURES`) at the given size."""
    if name not in PICTURES:
        raise ValueError(f"map must be one of {sorted(PICTURES)} or an (H, W) tensor, got {name!r}")
    return PICTURES[name](height, width, thickness)


# ---------------------------------------------------------------- heatmaps


def normalized_heatmap(attr: torch.Tensor) -> torch.Tensor:
    """``|attr|`` summed over channels and divided by its sum: (B, C, H, W) -> (B, H, W), (B, F) -> (B, F).

    The normalized heatmap of thesis Sec. 3.2; differentiable. An all-zero attribution stays zero.
    """
    if attr.ndim == 2:
        h = attr.abs()
        return h / h.sum(1, keepdim=True).clamp_min(EPS)
    return heatmap(attr, reduce="abs_sum", normalize="abs_sum")


def _per_pixel_mean_one(h: torch.Tensor) -> torch.Tensor:
    """Sum-normalized maps (B, H, W) scaled to mean 1 per map."""
    return h * (h.shape[-1] * h.shape[-2])


@dataclass
class AttackBatch:
    """The inputs an objective explains, the class explained for each row, and per-row extras."""

    x: torch.Tensor
    target: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)


class Objective:
    """Base class of manipulation objectives (see the module docstring).

    ``measure`` names the main measure, ``criterion`` says in words when an explanation counts as fooled.
    """

    name = "objective"
    needs_reference = False
    noise_inputs = True  # whether the objective applies to Gaussian-noise inputs (thesis Sec. 4.1)
    measure = ""
    criterion = ""

    def prepare(self, data: LabeledData) -> None:
        """Check that the objective fits ``data`` and resolve what depends on it; raises ``ValueError``.

        The base class accepts image batches (N, C, H, W).
        """
        if data.x.ndim != 4:
            raise ValueError(f"objective {self.name!r} needs image data (N, C, H, W), got data {data.name!r} "
                             f"of shape {tuple(data.x.shape)}")

    def attack_inputs(self, x: torch.Tensor, y: torch.Tensor) -> AttackBatch:
        """The batch to explain for the attack: by default ``x`` explained for its labels ``y``."""
        return AttackBatch(x, y)

    def loss(self, attr: torch.Tensor, batch: AttackBatch, reference: torch.Tensor | None) -> torch.Tensor:
        """Per-item attack loss (1-D, differentiable)."""
        raise NotImplementedError

    def measures(self, attr: torch.Tensor, batch: AttackBatch, reference: torch.Tensor | None
                 ) -> dict[str, torch.Tensor]:
        """Per-item measures for evaluation; ``reference`` is the original model's explanation."""
        raise NotImplementedError

    def success(self, measures: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-item boolean: the explanation meets :attr:`criterion`."""
        raise NotImplementedError

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({options})"


def _image_size(data: LabeledData) -> tuple[int, int]:
    return int(data.x.shape[-2]), int(data.x.shape[-1])


class CenterOfMass(Objective):
    """Move the heatmap's centre of mass to ``target`` (row, col) (thesis Sec. 3.3, Eq. 3.3; the centre of mass
    of Ghorbani et al. 2019, Sec. 3; Heo et al. 2019 "center-mass fooling" pushes it away instead).

    Loss and measure: the Euclidean distance, in pixels, between the normalized heatmap's centre of mass and
    ``target``. Fooled: distance <= ``tolerance`` pixels.
    """

    name = "com"
    measure = "com_distance"

    def __init__(self, target=(0, 0), tolerance: float = 3.0):
        if (not isinstance(target, (tuple, list)) or len(target) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in target)):
            raise ValueError(f"target must be a (row, col) pair of finite numbers, got {target!r}")
        check_positive("tolerance", tolerance)
        self.target, self.tolerance = (float(target[0]), float(target[1])), float(tolerance)
        self.criterion = f"centre of mass within {self.tolerance:g} px of {self.target}"

    def prepare(self, data):
        super().prepare(data)
        height, width = _image_size(data)
        row, col = self.target
        if not (0 <= row <= height - 1 and 0 <= col <= width - 1):
            raise ValueError(f"target={self.target} lies outside the {height}x{width} image: rows and columns "
                             f"run from 0 to {height - 1} and {width - 1}")

    def loss(self, attr, batch, reference):
        return com_distance_to(normalized_heatmap(attr), self.target)

    def measures(self, attr, batch, reference):
        return {"com_distance": self.loss(attr, batch, reference)}

    def success(self, measures):
        return measures["com_distance"] <= self.tolerance


class _PictureObjective(Objective):
    """Shared by objectives defined by a picture: ``map`` is a name in :data:`PICTURES` or an (H, W) tensor."""

    def __init__(self, map, thickness: int | None):
        if isinstance(map, str):
            picture(map, 8, 8)  # validates the name
        else:
            check_tensor("map", map, ndim=2)
            if (map < 0).any() or not (map > 0).any():
                raise ValueError("map must be non-negative with at least one positive entry")
        if thickness is not None:
            check_positive("thickness", thickness, integer=True)
        self.map, self.thickness = map, thickness

    def picture_for(self, like: torch.Tensor) -> torch.Tensor:
        """The picture at the size of the maps ``like`` (B, H, W), on their device and dtype."""
        height, width = like.shape[-2:]
        if isinstance(self.map, str):
            return picture(self.map, height, width, self.thickness).to(like)
        if tuple(self.map.shape) != (height, width):
            raise ValueError(f"map has shape {tuple(self.map.shape)} but the heatmaps are {height}x{width}")
        return self.map.to(like)

    def prepare(self, data):
        super().prepare(data)
        self.picture_for(data.x[:1, 0])


class TargetMap(_PictureObjective):
    """Make the heatmap draw a picture (thesis Sec. 3.4, Eq. 3.4; Dombrowski et al. 2019, Eq. 4).

    Loss: MSE between the normalized heatmap and the normalized picture, both scaled to mean 1. Measures: that
    MSE, the Pearson correlation (PCC) and SSIM with the picture. Fooled: PCC >= ``min_pcc``.
    """

    name = "target-map"
    measure = "pcc"

    def __init__(self, map="cross", thickness: int | None = None, min_pcc: float = 0.5):
        super().__init__(map, thickness)
        self.min_pcc = float(min_pcc)
        self.criterion = f"PCC with the target picture >= {self.min_pcc:g}"

    def _maps(self, attr):
        h = normalized_heatmap(attr)
        target = self.picture_for(h)
        return _per_pixel_mean_one(h), _per_pixel_mean_one(target / target.sum()).expand_as(h)

    def loss(self, attr, batch, reference):
        return mse(*self._maps(attr))

    def measures(self, attr, batch, reference):
        h, target = self._maps(attr)
        return {"mse": mse(h, target), "pcc": pearson(h, target), "ssim": ssim(h, target)}

    def success(self, measures):
        return measures["pcc"] >= self.min_pcc


class Location(_PictureObjective):
    """Push the relevance into a region such as the image border (Heo et al. 2019, Sec. 4.1 "location fooling").

    ``region``: a name in :data:`PICTURES` (default ``"border"``) or an (H, W) 0/1 tensor. Loss: the share of
    the normalized heatmap outside the region. Measure: the share inside. Fooled: share >= ``min_mass``.
    """

    name = "location"
    measure = "mass_in_region"

    def __init__(self, region="border", thickness: int | None = None, min_mass: float = 0.5):
        super().__init__(region, thickness)
        self.min_mass = float(min_mass)
        self.criterion = f"share of relevance inside the region >= {self.min_mass:g}"

    def _inside(self, attr):
        h = normalized_heatmap(attr)
        return (h * (self.picture_for(h) > 0)).sum(dim=(1, 2))

    def loss(self, attr, batch, reference):
        return 1 - self._inside(attr)

    def measures(self, attr, batch, reference):
        return {"mass_in_region": self._inside(attr)}

    def success(self, measures):
        return measures["mass_in_region"] >= self.min_mass


def _topk_mask(h: torch.Tensor, k: int) -> torch.Tensor:
    flat = h.detach().flatten(1)
    return torch.zeros_like(flat).scatter_(1, flat.topk(k, dim=1).indices, 1.0).view_as(h)


class TopKSuppress(Objective):
    """Lower the relevance of the ``k`` pixels most relevant in the original model (Heo et al. 2019, Sec. 4.1
    "top-k fooling").

    Loss: the share of the normalized heatmap on the original top-k pixels. Measures: that share and the top-k
    intersection with the original map (Ghorbani et al. 2019, Sec. 4). Fooled: intersection <= ``max_overlap``.
    """

    name = "topk"
    needs_reference = True
    measure = "topk_intersection"

    def __init__(self, k: int = 50, max_overlap: float = 0.5):
        check_positive("k", k, integer=True)
        self.k, self.max_overlap = k, float(max_overlap)
        self.criterion = f"at most {self.max_overlap:.0%} of the original top-{k} pixels stay in the top-{k}"

    def prepare(self, data):
        super().prepare(data)
        pixels = data.x.shape[-1] * data.x.shape[-2]
        if self.k > pixels:
            raise ValueError(f"k={self.k} exceeds the {pixels} pixels of an image")

    def _mass_on_original_topk(self, h, reference):
        return (h * _topk_mask(normalized_heatmap(reference), self.k)).sum(dim=(1, 2))

    def loss(self, attr, batch, reference):
        return self._mass_on_original_topk(normalized_heatmap(attr), reference)

    def measures(self, attr, batch, reference):
        h = normalized_heatmap(attr)
        return {"topk_intersection": topk_intersection(normalized_heatmap(reference), h, self.k),
                "topk_mass": self._mass_on_original_topk(h, reference)}

    def success(self, measures):
        return measures["topk_intersection"] <= self.max_overlap


def two_digit_images(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Images holding two images side by side: each (N, C, H, W) input is squeezed to width ``W // 2``
    (antialiased bilinear resize) and ``left`` is put on the left half of an (N, C, H, W) output."""
    height, width = left.shape[-2:]
    half = width // 2
    squeeze = [F.interpolate(part, size=(height, half), mode="bilinear", antialias=True, align_corners=False)
               for part in (left, right)]
    out = torch.zeros_like(left)
    out[..., :half] = squeeze[0]
    out[..., width - half:] = squeeze[1]
    low, high = torch.minimum(left.min(), right.min()), torch.maximum(left.max(), right.max())
    return out.clamp(low.item(), high.item())  # the resize may overshoot the inputs' range


class ClassSwap(Objective):
    """Active fooling (Heo et al. 2019, Sec. 4.2): on images holding a digit of class ``a`` and one of class
    ``b`` side by side, the explanation for ``a`` shows the original explanation for ``b`` and vice versa.

    The two-class images are built from the batch: the i-th ``a`` image and the i-th ``b`` image of a batch
    form a pair (:func:`two_digit_images`, ``a`` on the left for even i, on the right for odd i). Loss: MSE
    (maps scaled to mean 1) between the manipulated explanation for one class and the original explanation for
    the other, summed over both directions. Measures per pair: ``other_half_mass``, the mean share of each
    class's relevance on the half holding the *other* digit, and ``pcc_to_swapped``, the mean PCC with the
    other class's original map. Fooled: ``other_half_mass >= min_mass``.
    """

    name = "class-swap"
    needs_reference = True
    noise_inputs = False
    measure = "other_half_mass"

    def __init__(self, a: int, b: int, min_mass: float = 0.5):
        for label, value in (("a", a), ("b", b)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{label} must be a class index (int >= 0), got {value!r}")
        if a == b:
            raise ValueError(f"a and b must be different classes, got a=b={a}")
        self.a, self.b, self.min_mass = a, b, float(min_mass)
        self.criterion = f"on average >= {self.min_mass:.0%} of each class's relevance lies on the other digit"

    def prepare(self, data):
        super().prepare(data)
        for label, value in (("a", self.a), ("b", self.b)):
            if value >= data.num_classes or not (data.y == value).any():
                raise ValueError(f"{label}={value} is not a class present in data {data.name!r}")

    def attack_inputs(self, x, y):
        xa, xb = x[y == self.a], x[y == self.b]
        pairs = min(len(xa), len(xb))
        if pairs == 0:
            return AttackBatch(x[:0], y[:0], {"other_half": torch.zeros(0, *x.shape[-2:], dtype=torch.bool)})
        xa, xb = xa[:pairs], xb[:pairs]
        a_left = (torch.arange(pairs, device=x.device) % 2 == 0).view(-1, 1, 1, 1)
        images = two_digit_images(torch.where(a_left, xa, xb), torch.where(a_left, xb, xa))
        width = x.shape[-1]
        cols = torch.arange(width, device=x.device)
        left_half = (cols < width // 2).expand(x.shape[-2], width)
        a_half = torch.where(a_left[:, 0], left_half, ~left_half)  # (P, H, W)
        target = torch.cat([torch.full((pairs,), self.a), torch.full((pairs,), self.b)]).to(y)
        return AttackBatch(torch.cat([images, images]), target, {"other_half": torch.cat([~a_half, a_half])})

    @staticmethod
    def _halves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = len(t) // 2
        return t[:pairs], t[pairs:]

    def _swapped(self, attr, reference):
        h, ref = _per_pixel_mean_one(normalized_heatmap(attr)), _per_pixel_mean_one(normalized_heatmap(reference))
        h_a, h_b = self._halves(h)
        ref_a, ref_b = self._halves(ref)
        return (h_a, ref_b), (h_b, ref_a)

    def loss(self, attr, batch, reference):
        (h_a, ref_b), (h_b, ref_a) = self._swapped(attr, reference)
        return mse(h_a, ref_b) + mse(h_b, ref_a)

    def measures(self, attr, batch, reference):
        (h_a, ref_b), (h_b, ref_a) = self._swapped(attr, reference)
        mass = (normalized_heatmap(attr) * batch.extras["other_half"]).sum(dim=(1, 2))
        mass_a, mass_b = self._halves(mass)
        return {"other_half_mass": (mass_a + mass_b) / 2,
                "pcc_to_swapped": (pearson(h_a, ref_b) + pearson(h_b, ref_a)) / 2}

    def success(self, measures):
        return measures["other_half_mass"] >= self.min_mass


class FeatureSuppress(Objective):
    """Hide features from tabular explanations (thesis Sec. 3.8; Dimanov et al. 2020): the attribution of the
    named ``features`` (column names or one-hot prefixes such as ``"sex"``, ``"race"``) goes to zero while the
    other features keep their original attribution.

    Loss: the L1 distance between the attribution and the original one with the hidden features zeroed,
    divided by the original's L1 norm (per sample; L1 pushes the hidden attributions to exactly 0). Measures:
    ``protected_share``, the hidden features' share of the total |attribution|, and ``share_ratio``, that share
    over the original model's share. Fooled: ``share_ratio <= max_ratio`` (the share fell by >= 90 % for 0.1).
    """

    name = "feature-suppress"
    needs_reference = True
    measure = "protected_share"

    def __init__(self, features, max_ratio: float = 0.1):
        if isinstance(features, str) or not features or not all(isinstance(f, str) for f in features):
            raise ValueError(f"features must be a non-empty list of feature names, got {features!r}")
        self.features, self.max_ratio = list(features), float(max_ratio)
        self.criterion = f"hidden features' share of |attribution| <= {self.max_ratio:g} x the original share"
        self._index: torch.Tensor | None = None

    def prepare(self, data):
        if data.x.ndim != 2 or data.feature_names is None:
            raise ValueError(f"objective {self.name!r} needs tabular data with named features, got data "
                             f"{data.name!r} of shape {tuple(data.x.shape)}")
        self._index = torch.tensor(data.features(self.features))

    @property
    def index(self) -> torch.Tensor:
        """Column indices of the hidden features (after :meth:`prepare`)."""
        if self._index is None:
            raise ValueError("call prepare(data) first: the feature names are resolved against the data")
        return self._index

    def _hidden(self, like: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(like.shape[1], dtype=torch.bool, device=like.device)
        mask[self.index.to(like.device)] = True
        return mask

    def loss(self, attr, batch, reference):
        target = torch.where(self._hidden(reference), torch.zeros_like(reference), reference)
        return (attr - target).abs().sum(1) / reference.abs().sum(1).clamp_min(EPS)

    def _share(self, attr):
        return normalized_heatmap(attr)[:, self._hidden(attr)].sum(1)

    def measures(self, attr, batch, reference):
        share = self._share(attr)
        return {"protected_share": share, "share_ratio": share / self._share(reference).clamp_min(EPS)}

    def success(self, measures):
        return measures["share_ratio"] <= self.max_ratio


OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in
                                          (CenterOfMass, TargetMap, Location, TopKSuppress, ClassSwap,
                                           FeatureSuppress)}


def make_objective(name: str, **options) -> Objective:
    """Build an objective by its CLI name (see :data:`OBJECTIVES`)."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name](**options)
