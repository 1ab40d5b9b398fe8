"""Magnitude pruning: drop the weights of smallest |W_ij|; comparison group = the whole matrix
(as in the magnitude baseline of Sun et al. 2023, "A Simple and Effective Pruning Approach for
Large Language Models", Table 2, and its reference code ``prune_magnitude``)."""

from __future__ import annotations

from torch import Tensor

from pruning.methods.nm import nm_mask
from pruning.methods.registry import KernelOptions, LayerStatistics
from pruning.methods.select import smallest_mask


def magnitude_scores(W: Tensor) -> Tensor:
    """|W_ij| in float32. W: ``(out, in)`` -> ``(out, in)``."""
    return W.detach().float().abs()


def magnitude_mask(W: Tensor, sparsity: float, nm: tuple[int, int] | None = None) -> Tensor:
    """Bool mask ``(out, in)`` (True = prune): the ``round(sparsity * out * in)`` smallest |W| of the
    matrix, or with ``nm=(N, M)`` the N smallest of every M consecutive inputs per row."""
    scores = magnitude_scores(W)
    if nm is not None:
        return nm_mask(scores, *nm)
    return smallest_mask(scores, sparsity, dim=None)


def magnitude_kernel(W: Tensor, stats: LayerStatistics, sparsity: float, nm: tuple[int, int] | None,
                     options: KernelOptions) -> Tensor:
    """The registry's kernel (:mod:`pruning.methods.registry`): :func:`magnitude_mask`; no statistics."""
    return magnitude_mask(W, sparsity, nm)
