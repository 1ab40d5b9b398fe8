"""OWL layer-wise outlier ratio (Yin et al. 2023, "Outlier Weighed Layerwise Sparsity (OWL): A
Missing Secret Sauce for Pruning LLMs to High Sparsity", arXiv:2310.05175).

For block l with Wanda scores A = |W| * ||X|| of all its matrices (concatenated), the outlier
ratio is D_l = #{A_ij > M * mean(A)} / #A (the reference code ``check_outlier_mean`` reports it in
percent; here it is a fraction in [0, 1]). Blocks with more outliers are pruned less.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def outlier_ratio(scores: Sequence[Tensor], M: float) -> float:
    """Share of entries above ``M`` times the mean over all entries of all ``scores`` tensors.

    scores: the Wanda scores ``(out, in)`` of every matrix of one block (any shapes; the mean is
    taken over their union, as in the OWL reference code, without concatenating them).
    """
    if M <= 0:
        raise ValueError(f"OWL M {M!r} is invalid; accepted: a positive threshold multiplier such as 5")
    if not scores:
        raise ValueError("outlier_ratio needs at least one score tensor")
    total = sum(float(s.double().sum()) for s in scores)
    count = sum(s.numel() for s in scores)
    threshold = M * total / count
    above = sum(int((s > threshold).sum()) for s in scores)
    return above / count


def block_outlier_ratio(weights: Sequence[Tensor], act_norms: Sequence[Tensor], M: float) -> float:
    """D_l from the block's weights ``(out, in)`` and their input norms ``(in,)`` (Wanda scores)."""
    from pruning.methods.wanda import wanda_scores

    with torch.no_grad():
        return outlier_ratio([wanda_scores(w, a) for w, a in zip(weights, act_norms, strict=True)], M)
