"""Selecting the lowest-scoring entries of a comparison group with an exact count.

The reference implementations threshold at a sorted value (``scores <= thresh``), which prunes
one extra element (SparseGPT's ``sort()[int(n * s)]``) or more on ties; here the count is exact:
``round(s * n)`` entries per group, ties broken by position (stable sort).
"""

from __future__ import annotations

import torch
from torch import Tensor


def prune_count(group_size: int, sparsity: float) -> int:
    """Number of entries to prune in a group of ``group_size`` at ``sparsity`` (nearest integer)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity!r} is outside [0, 1)")
    return int(round(sparsity * group_size))


def smallest_mask(scores: Tensor, sparsity: float, dim: int | None = None) -> Tensor:
    """Boolean mask (True = prune) of the ``round(sparsity * n)`` smallest scores per group.

    scores: any shape. ``dim=None``: one group, the whole tensor (magnitude pruning);
    ``dim=-1`` on a ``(out, in)`` score: one group per output row (Wanda). Ties at the k-th value
    are broken by position (first ones pruned), so the count is exact. Uses ``kthvalue`` (linear
    time) rather than a full sort.
    """
    if dim is None:
        return _smallest_along(scores.reshape(1, -1), sparsity).reshape(scores.shape)
    moved = scores.movedim(dim, -1)
    flat = moved.reshape(-1, moved.shape[-1])  # (groups, n)
    return _smallest_along(flat, sparsity).reshape(moved.shape).movedim(-1, dim)


def _smallest_along(scores: Tensor, sparsity: float) -> Tensor:
    """Mask of the k smallest entries of each row of ``scores`` ``(groups, n)``."""
    k = prune_count(scores.shape[-1], sparsity)
    if k == 0:
        return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    kth = torch.kthvalue(scores, k, dim=-1, keepdim=True).values  # (groups, 1)
    mask = scores < kth
    need = k - mask.sum(dim=-1, keepdim=True)  # ties at the k-th value still to prune, >= 1
    ties = scores == kth
    return mask | (ties & (ties.cumsum(dim=-1) <= need))
