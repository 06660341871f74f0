"""How much an attack changed the interpretation of each neuron (Nanfack et al. 2024, Sec. 3.3 and 4).

Nanfack et al. (2024), "Adversarial Attacks on the Interpretation of Neuron Activation Maximization"
(AAAI) measure, per channel, the Kendall-tau between the initial and final rankings of a held-out set
(rank change), CLIP-delta (semantic change of the top-k images) and, against the "whack-a-mole"
objection that an attack could move an interpretation to another channel of the layer, the *-W
versions that compare each initial channel with its best-matching final channel (Sec. 3.3).

Conventions: activations are ``(N, C)`` (N samples, C channels, e.g. from
:func:`veneer.neurons.activations`); top-k sets are ``(C, k)`` sample indices; every per-channel
metric returns ``(C,)``.  Embeddings come from a pluggable encoder, any module mapping inputs to
``(B, D)`` vectors: a CLIP image tower when one is available; here, by default, the penultimate layer of
an independently trained model (:func:`independent_encoder`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from veneer.checks import check_positive, check_tensor
from veneer.metrics import balance, kendall, ks_distance, topk_intersection
from veneer.models import capture, pretrained
from veneer.neurons.record import iterate_inputs, resolve_layers
from veneer.neurons.topk import activations

__all__ = ["ranking_tau", "tau_matrix", "whack_a_mole_tau", "embedding_delta", "embedding_delta_matrix",
           "whack_a_mole_embedding", "topk_indices", "topk_overlap", "label_overlap", "label_share",
           "LayerEncoder", "penultimate_encoder", "independent_encoder", "embed", "NeuronComparison",
           "compare_activations", "compare_models", "group_fairness"]


def _pair(before: object, after: object, same_channels: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    before = check_tensor("before", before, ndim=2)
    after = check_tensor("after", after, ndim=2)
    if before.shape[0] != after.shape[0]:
        raise ValueError(f"before and after must rank the same samples, got {before.shape[0]} and {after.shape[0]} rows")
    if same_channels and before.shape[1] != after.shape[1]:
        raise ValueError(f"before and after must have the same channels, got {before.shape[1]} and {after.shape[1]}")
    if before.shape[0] < 2:
        raise ValueError(f"rankings need at least 2 samples, got {before.shape[0]}")
    return before, after


def ranking_tau(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Kendall-tau (tau-b, :func:`veneer.metrics.kendall`) between each channel's initial and final
    ranking of the same samples: ``(N, C)`` x ``(N, C)`` -> ``(C,)`` (Nanfack et al. 2024, Sec. 4,
    "Kendall-tau"; 1 = unchanged ranking, about 0 = unrelated)."""
    before, after = _pair(before, after)
    return kendall(before.T.contiguous(), after.T.contiguous())


def tau_matrix(before: torch.Tensor, after: torch.Tensor, rows_per_block: int = 64) -> torch.Tensor:
    """Kendall-tau-b between every initial channel ``i`` and every final channel ``j``: ``(C, C')``.

    The same statistic as :func:`veneer.metrics.kendall` (and ``scipy.stats.kendalltau``) for each pair,
    computed for all pairs of channels at once: with ``s_b[(p, q), i] = sign(b_pi - b_qi)`` over ordered
    sample pairs, ``P - Q = (s_b^T s_a) / 2`` is one matrix product and the untied pairs of each channel
    are ``sum |s| / 2``; ``rows_per_block`` samples ``p`` at a time keep memory at
    ``O(rows_per_block * N * (C + C'))``.  A constant channel gives 0."""
    before, after = _pair(before, after, same_channels=False)
    check_positive("rows_per_block", rows_per_block, integer=True)
    n = before.shape[0]
    # Sums of +-1 over n^2 ordered pairs are exact in float32 below 2^24 terms.
    dtype = torch.float32 if n * n < 1 << 24 else torch.float64
    b, a = before.to(dtype), after.to(dtype)
    concordance = torch.zeros(b.shape[1], a.shape[1], dtype=torch.float64, device=b.device)
    untied_b = torch.zeros(b.shape[1], dtype=torch.float64, device=b.device)
    untied_a = torch.zeros(a.shape[1], dtype=torch.float64, device=a.device)
    for start in range(0, n, rows_per_block):
        sign_b = (b[start:start + rows_per_block, None] - b[None]).sign_().flatten(0, 1)  # (rows * n, C)
        sign_a = (a[start:start + rows_per_block, None] - a[None]).sign_().flatten(0, 1)
        concordance += (sign_b.T @ sign_a).double()
        untied_b += sign_b.abs().sum(dim=0).double()
        untied_a += sign_a.abs().sum(dim=0).double()
    denominator = (untied_b[:, None] * untied_a[None, :]).sqrt()
    tau = torch.where(denominator > 0, concordance / denominator.clamp(min=1), torch.zeros_like(denominator))
    return tau.clamp(-1.0, 1.0).to(torch.promote_types(before.dtype, torch.float32))


def whack_a_mole_tau(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Kendall-tau-W (Nanfack et al. 2024, Sec. 3.3): for each initial channel, the largest Kendall-tau
    between its ranking and the ranking of *any* final channel of the layer, ``(C,)``.  A low tau with a
    high tau-W means the interpretation was moved to another channel rather than removed."""
    return tau_matrix(before, after).amax(dim=1)


def _check_embeddings(name: str, x: object) -> torch.Tensor:
    return check_tensor(name, x, ndim=3)


def _mean_direction(embeddings: torch.Tensor) -> torch.Tensor:
    """``(C, k, D)`` -> ``(C, D)``: the unit-norm mean embedding of each top-k set."""
    return nn.functional.normalize(embeddings.mean(dim=1), dim=1)


def embedding_delta_matrix(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """``1 - cos(mean embedding of initial top-k of channel i, mean embedding of final top-k of j)``,
    ``(C, C')``, from ``(C, k, D)`` and ``(C', k', D)`` embeddings of the top-k images."""
    before, after = _check_embeddings("before", before), _check_embeddings("after", after)
    if before.shape[2] != after.shape[2]:
        raise ValueError(f"before and after embeddings must have the same size, got {before.shape[2]} and {after.shape[2]}")
    return 1.0 - _mean_direction(before) @ _mean_direction(after).T


def embedding_delta(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Embedding-delta per channel, the CLIP-delta of Nanfack et al. (2024), Sec. 4, with a pluggable
    encoder: ``1 - cos`` between the mean embeddings of a channel's initial and final top-k images,
    ``(C,)`` in [0, 2]; 0 = the same semantics, larger = the interpretation changed."""
    if before.shape[0] != after.shape[0]:
        raise ValueError(f"before and after must have the same channels, got {before.shape[0]} and {after.shape[0]}")
    return embedding_delta_matrix(before, after).diagonal()


def whack_a_mole_embedding(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Embedding-W (CLIP-W, Nanfack et al. 2024, Sec. 3.3): for each initial channel, the smallest
    embedding-delta to the final top-k of *any* channel of the layer, ``(C,)``."""
    return embedding_delta_matrix(before, after).amin(dim=1)


def topk_indices(acts: torch.Tensor, k: int) -> torch.Tensor:
    """``(C, k)`` indices of each channel's k largest activations in ``(N, C)`` ``acts``."""
    acts = check_tensor("acts", acts, ndim=2)
    check_positive("k", k, integer=True)
    if k > acts.shape[0]:
        raise ValueError(f"k={k} is larger than the number of samples ({acts.shape[0]})")
    return acts.topk(k, dim=0).indices.T.contiguous()


def _check_indices(name: str, x: object) -> torch.Tensor:
    x = check_tensor(name, x, ndim=2, floating=False)
    if x.is_floating_point() or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer sample indices, got dtype {x.dtype}")
    return x.long()


def topk_overlap(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Fraction of each channel's initial top-k samples still in its final top-k, ``(C,)``, from
    ``(C, k)`` index sets (1 = same set, 0 = all replaced)."""
    before, after = _check_indices("before", before), _check_indices("after", after)
    if before.shape != after.shape:
        raise ValueError(f"before and after must have the same shape, got {tuple(before.shape)} and {tuple(after.shape)}")
    return (before[:, :, None] == after[:, None, :]).any(dim=2).float().mean(dim=1)


def _label_counts(labels: torch.Tensor, top: torch.Tensor, classes: int) -> torch.Tensor:
    counts = torch.zeros(top.shape[0], classes)
    return counts.scatter_add_(1, labels[top], torch.ones(top.shape))


def _check_labels(labels: object, top: torch.Tensor) -> torch.Tensor:
    labels = check_tensor("labels", labels, ndim=1, floating=False).long()
    if top.numel() and (top.max() >= len(labels) or top.min() < 0):
        raise ValueError(f"top-k indices must lie in [0, {len(labels) - 1}] (indices into labels)")
    return labels


def label_overlap(labels: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Overlap of the class labels of each channel's initial and final top-k: the histogram
    intersection ``sum_y min(n_y^before, n_y^after) / k``, ``(C,)`` (1 = same label mix)."""
    before, after = _check_indices("before", before), _check_indices("after", after)
    if before.shape != after.shape:
        raise ValueError(f"before and after must have the same shape, got {tuple(before.shape)} and {tuple(after.shape)}")
    labels = _check_labels(labels, torch.cat([before, after]))
    classes = int(labels.max()) + 1
    shared = torch.minimum(_label_counts(labels, before, classes), _label_counts(labels, after, classes))
    return shared.sum(dim=1) / before.shape[1]


def label_share(labels: torch.Tensor, top: torch.Tensor, label: int) -> torch.Tensor:
    """Fraction of each channel's top-k samples whose label is ``label`` (e.g. the decoy class of a
    push-up attack, Nanfack et al. 2024, Eq. 4), ``(C,)``."""
    top = _check_indices("top", top)
    labels = _check_labels(labels, top)
    return (labels[top] == label).float().mean(dim=1)


class LayerEncoder(nn.Module):
    """An image encoder made of a model's named layer: inputs -> the flattened output (or, with
    ``use_input=True``, input) of ``layer``, ``(B, D)``.  The model is frozen and kept in eval mode."""

    def __init__(self, model: nn.Module, layer: str, use_input: bool = False):
        super().__init__()
        resolve_layers(model, layer)
        self.model = model.eval().requires_grad_(False)
        self.layer, self.use_input = layer, use_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with capture(self.model, [self.layer], inputs=self.use_input) as seen:
            self.model(x)
        return seen[self.layer].flatten(1)


def penultimate_encoder(model: nn.Module) -> LayerEncoder:
    """The representation a classifier's last ``Linear`` layer reads (its input), as an encoder."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError("model has no nn.Linear layer to take the penultimate representation from")
    return LayerEncoder(model, names[-1], use_input=True)


def independent_encoder(name: str = "mnist-cnn", seed: int = 1, cache: str | os.PathLike | None = None,
                        progress: bool = False) -> LayerEncoder:
    """The default embedding encoder of veneer (no CLIP weights can be downloaded): the penultimate layer
    of the bundled model ``name`` trained again with another ``seed`` (independent of the attacked
    model, same recipe; :func:`veneer.models.pretrained` caches it as ``{name}-seed{seed}``).
    Training the MNIST CNN takes about a minute on 2 CPU cores, once."""
    if seed == 0:
        raise ValueError("seed must differ from 0, the seed of the bundled (attacked) model")
    return penultimate_encoder(pretrained(name, cache, progress=progress, seed=seed))


@torch.no_grad()
def embed(encoder: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``(N, D)`` embeddings of the inputs ``x`` by ``encoder``, batched, on the CPU."""
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be a torch.nn.Module mapping inputs to vectors, got {type(encoder).__name__}")
    parameter = next(encoder.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    return torch.cat([encoder(chunk.to(device)).flatten(1).float().cpu() for chunk in iterate_inputs(x, batch_size)])


@dataclass
class NeuronComparison:
    """Per-channel comparison of an original and an attacked model on one data set (each ``(C,)``):
    top-k overlap, Kendall-tau and tau-W of the rankings (when asked), label overlap (with labels),
    embedding-delta and embedding-W (with an encoder); and the top-k index sets before/after ``(C, k)``."""

    topk_overlap: torch.Tensor
    top_before: torch.Tensor
    top_after: torch.Tensor
    tau: torch.Tensor | None = None
    tau_w: torch.Tensor | None = None
    label_overlap: torch.Tensor | None = None
    embedding_delta: torch.Tensor | None = None
    embedding_w: torch.Tensor | None = None

    PER_CHANNEL = ("tau", "tau_w", "topk_overlap", "label_overlap", "embedding_delta", "embedding_w")

    def per_channel(self) -> dict[str, list[float]]:
        """Every per-channel metric that was computed, as lists (JSON-ready)."""
        return {name: getattr(self, name).tolist() for name in self.PER_CHANNEL if getattr(self, name) is not None}

    def summary(self, channels: torch.Tensor | list[int] | None = None) -> dict[str, float]:
        """Mean over ``channels`` (default: all) of every per-channel metric."""
        return {name: float(getattr(self, name)[channels if channels is not None else slice(None)].float().mean())
                for name in self.PER_CHANNEL if getattr(self, name) is not None}


def compare_activations(before: torch.Tensor, after: torch.Tensor, k: int = 10, *,
                        labels: torch.Tensor | None = None, x: torch.Tensor | None = None,
                        encoder: nn.Module | None = None, rankings: bool = True) -> NeuronComparison:
    """Compare the ``(N, C)`` activations of the same samples before and after an attack (Nanfack et al.
    2024, Sec. 3.3 and Table 1).  ``rankings`` adds Kendall-tau and tau-W (O(C^2 N^2) work: use a
    held-out set of a few thousand samples); ``labels`` (N,) adds the label overlap; ``x`` (N, ...) with
    an ``encoder`` adds embedding-delta and embedding-W of the top-k inputs."""
    before, after = _pair(before, after)
    top_before, top_after = topk_indices(before, k), topk_indices(after, k)
    result = NeuronComparison(topk_overlap=topk_intersection(before.T, after.T, k).float(),
                              top_before=top_before, top_after=top_after)
    if rankings:
        result.tau, result.tau_w = ranking_tau(before, after), whack_a_mole_tau(before, after)
    if labels is not None:
        result.label_overlap = label_overlap(labels, top_before, top_after)
    if encoder is not None:
        if x is None:
            raise ValueError("x (the inputs) is needed to embed the top-k with encoder")
        if len(x) != before.shape[0]:
            raise ValueError(f"x must hold the {before.shape[0]} ranked samples, got {len(x)}")
        rows = torch.cat([top_before, top_after]).unique()
        vectors = embed(encoder, x[rows])
        table = torch.zeros(before.shape[0], vectors.shape[1])
        table[rows] = vectors
        emb_before, emb_after = table[top_before], table[top_after]
        result.embedding_delta = embedding_delta(emb_before, emb_after)
        result.embedding_w = whack_a_mole_embedding(emb_before, emb_after)
    return result


def compare_models(original: nn.Module, attacked: nn.Module, layer: str, x: torch.Tensor, k: int = 10, *,
                   labels: torch.Tensor | None = None, encoder: nn.Module | None = None,
                   pre_activation: bool = False, rankings: bool = True, batch_size: int = 256) -> NeuronComparison:
    """:func:`compare_activations` of ``layer`` of two models on the inputs ``x`` (a held-out set for the
    paper's Kendall-tau)."""
    before = activations(original, layer, x, batch_size=batch_size, pre_activation=pre_activation)
    after = activations(attacked, layer, x, batch_size=batch_size, pre_activation=pre_activation)
    return compare_activations(before, after, k, labels=labels, x=x, encoder=encoder, rankings=rankings)


def group_fairness(acts: torch.Tensor, group: torch.Tensor, k: int = 10) -> dict[str, torch.Tensor]:
    """Per neuron of ``(N, C)`` ``acts``: the KS distance between the two groups' activation
    distributions (:func:`veneer.metrics.ks_distance`) and the balance (minority/majority count) of its
    top-k samples (:func:`veneer.metrics.balance`); Nanfack et al. (2024), Sec. 4, "Fairwashing"."""
    acts = check_tensor("acts", acts, ndim=2)
    top = topk_indices(acts, k)
    return {"ks": ks_distance(acts, group), "balance": balance(top, group), "top": top}
