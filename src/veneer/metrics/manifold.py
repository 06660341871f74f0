"""The data manifold's local tangent space (Anders et al. 2020, "Fairwashing explanations with off-manifold
detergent", Sec. 5.1): bases from the nearest training rows, projections on them, and the share of a vector's norm
that lies along the manifold. One home for the audit's ``tangent_space`` test and its evasion surrogate."""

from __future__ import annotations

import torch

from veneer.checks import check_positive, check_tensor

__all__ = ["tangent_basis", "project_tangent", "tangent_share"]


def tangent_basis(x: torch.Tensor, reference: torch.Tensor, k: int = 32, dim: int = 8,
                  batch_size: int = 256) -> torch.Tensor:
    """Orthonormal bases ``(B, dim, D)`` of the data manifold's tangent space at each row of ``x`` ``(B, D)``
    (Anders et al. 2020, Sec. 5.1): the top ``dim`` right singular vectors of the ``k`` nearest rows of
    ``reference`` ``(N, D)`` (Euclidean; an exact copy of the row itself is skipped), centred on their mean."""
    x, reference = check_tensor("x", x, ndim=2), check_tensor("reference", reference, ndim=2)
    check_positive("k", k, integer=True)
    check_positive("dim", dim, integer=True)
    if x.shape[1] != reference.shape[1]:
        raise ValueError(f"x has {x.shape[1]} features but reference has {reference.shape[1]}")
    if not dim <= k < len(reference):
        raise ValueError(f"need dim <= k < len(reference), got dim={dim}, k={k}, len(reference)={len(reference)}")
    bases = []
    for chunk in x.split(batch_size):
        distance = torch.cdist(chunk, reference)
        distance = distance.masked_fill(distance <= 1e-9, float("inf"))
        neighbours = reference[distance.topk(k, dim=1, largest=False).indices]  # (b, k, D)
        centred = neighbours - neighbours.mean(1, keepdim=True)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        bases.append(vh[:, :dim])
    return torch.cat(bases)


def project_tangent(vectors: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Orthogonal projection of ``vectors`` ``(B, D)`` on the spans of ``basis`` ``(B, dim, D)`` (orthonormal rows)."""
    coefficients = torch.einsum("bkd,bd->bk", basis, vectors)
    return torch.einsum("bk,bkd->bd", coefficients, basis)


def tangent_share(vectors: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``(B,)`` share of each vector's norm that survives the projection on its tangent space,
    ``||P v|| / ||v||`` (Anders et al. 2020, Sec. 4: a manipulated explanation points mostly off the manifold);
    differentiable in ``vectors``."""
    return project_tangent(vectors, basis).norm(dim=1) / vectors.norm(dim=1).clamp_min(1e-30)
