"""Per-block calibration statistics read by layer-wise allocations (``pruning.allocation``).

:func:`dlp_unimportance` measures DLP's per-block unimportance U_l (Chen et al., "DLP: Dynamic
Layerwise Pruning in Large Language Models", ICML 2025, arXiv:2505.23807; reference code
ironartisan/DLP ``lib/prune.py: get_dlp_ratios``): a statistic of the Wanda scores
``|W_ij| * ||X_j||_2`` (Sun et al. 2023) of all the matrices of block l, on the dense model. As in
the reference, the blocks are run block-sequentially on the calibration batch without pruning, so
block l sees the dense outputs of block l - 1. The reference's activation statistic is
``||X_j||^2 / N`` (a running mean); its square root differs from ``||X_j||_2`` by the factor
``1/sqrt(N)``, the same for every block, which the allocation's min-max scaling removes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pruning.calibration.dense_stats import DenseNorms, dense_norms
from pruning.errors import ConfigError
from pruning.model.families import block_matrices, decoder_layers
from pruning.methods.wanda import wanda_scores
from pruning.model.load import LoadedModel
from pruning.model.placement import CPU_COMPUTE, Compute

log = logging.getLogger(__name__)

DLP_STATISTICS: tuple[str, ...] = ("median", "mean")


def wanda_score_statistic(weights: Sequence[Tensor], act_norms: Sequence[Tensor], statistic: str = "median") -> float:
    """Median or mean of the Wanda scores of all the given matrices together (one block).

    weights: each ``(out, in)``; act_norms: each ``(in,)`` (``||X_j||_2`` over the calibration
    tokens). The median is torch's: the lower of the two middle values for an even count (as in the
    DLP reference code, which calls ``torch.median`` on the concatenated scores); the mean is summed
    in float64.
    """
    if statistic not in DLP_STATISTICS:
        raise ConfigError(f"allocation.dlp_statistic: {statistic!r} is invalid; accepted: {', '.join(DLP_STATISTICS)}")
    if not weights or len(weights) != len(act_norms):
        raise ValueError(f"need one activation norm per weight matrix, got {len(weights)} and {len(act_norms)}")
    with torch.no_grad():
        if statistic == "mean":
            total = sum(float(wanda_scores(w, a).double().sum()) for w, a in zip(weights, act_norms))
            return total / sum(w.numel() for w in weights)
        scores = torch.cat([wanda_scores(w, a).flatten() for w, a in zip(weights, act_norms)])  # (sum numel,)
        return float(scores.median())


def dense_block_statistic(
    loaded: LoadedModel,
    calib_ids: Tensor,
    reduce: Callable[[list[Tensor], list[Tensor]], float],
    *,
    compute: Compute = CPU_COMPUTE,
    progress: Callable[[int, int], None] | None = None,
    norms: DenseNorms | None = None,
) -> dict[int, float]:
    """``{block: reduce(weights, act_norms)}`` over the dense model. reduce gets the block's
    prunable weights ``(out, in)`` and their input norms ``||X_j||_2`` ``(in,)``, in MATRIX_TYPES
    order, on ``compute.device``. The norms come from one block-sequential pass of the dense model
    (:func:`pruning.calibration.dense_stats.dense_norms`: each block sees the dense outputs of the one before),
    measured once per (model, calibration ids, device type, batch size) and reused after; pass
    ``norms`` when the caller already holds them. calib_ids: ``(nsamples, seqlen)`` LongTensor;
    ``compute`` (where the blocks run, whether offloaded, samples per block call) and ``progress``: as
    :func:`pruning.calibration.sequential.calibrate_blocks`. OWL's outlier ratios are the same statistic
    with another ``reduce`` (:func:`pruning.methods.owl.block_outlier_ratio`). The model is not modified."""
    if norms is None:
        norms = dense_norms(loaded, calib_ids, compute=compute, progress=progress)
    dev = torch.device(compute.device)
    values: dict[int, float] = {}
    with torch.no_grad():
        for index, block in enumerate(decoder_layers(loaded.model, loaded.family)):
            refs = block_matrices(block, index, loaded.family)
            weights = [ref.module.weight.data.to(dev) for ref in refs]
            values[index] = reduce(weights, [norms.norms[ref.name].to(dev) for ref in refs])
    return values


def dlp_unimportance(
    loaded: LoadedModel,
    calib_ids: Tensor,
    statistic: str = "median",
    *,
    compute: Compute = CPU_COMPUTE,
    progress: Callable[[int, int], None] | None = None,
    norms: DenseNorms | None = None,
) -> dict[int, float]:
    """DLP's unimportance U_l per block (``{block: U_l}``, :func:`wanda_score_statistic` over the
    block's prunable matrices) of the dense model; the model is not modified.

    calib_ids: ``(nsamples, seqlen)`` LongTensor. statistic: ``"median"`` (the paper) or ``"mean"``
    (the reference's unstructured path). compute: where the blocks run, whether offloaded, samples per
    block call, as :func:`pruning.calibration.sequential.calibrate_blocks`.
    """
    if statistic not in DLP_STATISTICS:
        raise ConfigError(f"allocation.dlp_statistic: {statistic!r} is invalid; accepted: {', '.join(DLP_STATISTICS)}")
    values = dense_block_statistic(
        loaded, calib_ids, lambda weights, norms: wanda_score_statistic(weights, norms, statistic),
        compute=compute, progress=progress, norms=norms,
    )
    log.info("DLP unimportance (%s Wanda score) per block: %s", statistic, {k: f"{v:.6g}" for k, v in values.items()})
    return values
