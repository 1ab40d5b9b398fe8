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
    ``dim=-1`` on a ``(out, in)`` score: one group per output row (Wanda).
    """
    mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if dim is None:
        k = prune_count(scores.numel(), sparsity)
        if k:
            idx = torch.sort(scores.reshape(-1), stable=True).indices[:k]  # (k,)
            mask.view(-1)[idx] = True
        return mask
    k = prune_count(scores.shape[dim], sparsity)
    if k:
        idx = torch.sort(scores, dim=dim, stable=True).indices.narrow(dim, 0, k)
        mask.scatter_(dim, idx, True)
    return mask
