"""Wanda: pruning by weights and activations (Sun, Liu, Bair & Kolter 2023, "A Simple and
Effective Pruning Approach for Large Language Models", arXiv:2306.11695).

Score S_ij = |W_ij| * ||X_j||_2, where ||X_j||_2 is the L2 norm of input feature j over all N
calibration tokens (not its square, not a mean). Comparison group: each output row i — every row
loses the same number of weights (Sun et al. 2023, Section 3, "comparison group").
"""

from __future__ import annotations

import torch
from torch import Tensor

from pruning.methods.nm import nm_mask
from pruning.methods.registry import KernelOptions, LayerStatistics
from pruning.methods.select import smallest_mask


def act_norm_from_sq_sum(act_sq_sum: Tensor) -> Tensor:
    """||X_j||_2 = sqrt(sum_t x_tj^2). act_sq_sum: ``(in,)`` -> ``(in,)`` float32."""
    return torch.sqrt(act_sq_sum.float().clamp_min(0.0))


def wanda_scores(W: Tensor, act_norm: Tensor) -> Tensor:
    """|W_ij| * ||X_j||_2 (Sun et al. 2023, Eq. 1). W: ``(out, in)``; act_norm: ``(in,)`` -> ``(out, in)``."""
    return W.detach().float().abs() * act_norm.float().reshape(1, -1)


def wanda_mask(W: Tensor, act_norm: Tensor, sparsity: float, nm: tuple[int, int] | None = None) -> Tensor:
    """Bool mask ``(out, in)`` (True = prune): per output row, the ``round(sparsity * in)`` lowest
    Wanda scores; with ``nm=(N, M)`` the N lowest of every M consecutive inputs per row."""
    scores = wanda_scores(W, act_norm)  # (out, in)
    if nm is not None:
        return nm_mask(scores, *nm)
    return smallest_mask(scores, sparsity, dim=-1)


def wanda_kernel(W: Tensor, stats: LayerStatistics, sparsity: float, nm: tuple[int, int] | None,
                 options: KernelOptions) -> Tensor:
    """The registry's kernel (:mod:`pruning.methods.registry`): :func:`wanda_mask` from the input
    activations' ``act_sq_sum`` ``(in,)``."""
    return wanda_mask(W, act_norm_from_sq_sum(stats.act_sq_sum), sparsity, nm)
