"""N:M semi-structured masks: in every group of M consecutive input columns of each row, the N
lowest-scoring weights are pruned (the convention of the reference code of Sun et al. 2023 and
Frantar & Alistarh 2023, ``--sparsity_type N:M`` / ``prunen, prunem``), so 2:4 and 4:8 are 50%
sparse and NVIDIA's 2:4 sparse tensor cores apply.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pruning.methods.nm_pattern import parse_nm  # the one N:M parser, re-exported

__all__ = ["nm_mask", "parse_nm"]


def nm_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """Mask (True = prune) of the N lowest scores in each group of M consecutive columns.

    scores: ``(out, in)`` with ``in % m == 0``. Returns a bool ``(out, in)`` with exactly ``n``
    True entries in every ``(row, group)``.
    """
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"N:M {n}:{m} needs the input width {cols} to be divisible by M={m}")
    groups = scores.reshape(rows, cols // m, m)  # (out, in/M, M)
    idx = torch.topk(groups, n, dim=-1, largest=False).indices  # (out, in/M, N)
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.reshape(rows, cols)
