"""``depth``: ATP, sparsity rising linearly with depth (Huang, Zhang, Zheng, Chao & Ji, "Determining
Layer-wise Sparsity for Large Language Models Through a Theoretical Perspective", ICML 2025,
arXiv:2502.14770; reference code wzhuang-xmu/ATP, ``main.py``).

Units are transformer blocks. Block i (0-based) gets ``s_i = S - beta (L - 1) / 2 + beta i``: an
arithmetic progression with common difference beta **per block** (not per unit of normalised depth:
the same beta spreads a deeper model wider, ``beta (L - 1)`` in all), whose unweighted mean is S.
Here ``s_i = S + beta (i - mean_P(i))`` with the parameter-weighted mean block index, identical for
equal blocks and exact for any sizes.

beta has no default in the paper or its code: ``search.sh`` tries beta = 0.002, 0.004, ... on the
evaluation perplexity until beta exceeds ``min(2 S, 2 (1 - S)) / (L - 1)``, where the progression
would leave [0, 1] (the code stops: "Illegal beta"). So ``allocation.depth_beta`` must be given
(choose it on a validation split); a beta whose progression leaves the bounds is not rejected:
the bounds clip with exact redistribution (:func:`pruning.allocation.solve.solve_bounded`), which is
logged.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from pruning.allocation.solve import centred
from pruning.config.run_config import AllocationConfig
from pruning.errors import ConfigError

log = logging.getLogger(__name__)


def atp_max_beta(target: float, n_blocks: int) -> float:
    """ATP's largest legal common difference ``min(2 S, 2 (1 - S)) / (L - 1)`` (inf for one block)."""
    return float("inf") if n_blocks < 2 else min(2.0 * target, 2.0 * (1.0 - target)) / (n_blocks - 1)


def depth_deviations(
    unit_frame: pd.DataFrame, numel: np.ndarray, config: AllocationConfig, target: float
) -> tuple[np.ndarray, np.ndarray]:
    """(block index, s_i - S) per block ``(blocks,)``: the score column and the centred deviation."""
    beta = config.depth_beta
    if beta is None:
        raise ConfigError(
            "allocation.depth_beta: required for strategy 'depth' (ATP's common difference per block; the "
            "paper searches 0.002, 0.004, ... on perplexity); accepted range [0, 1)"
        )
    depth = unit_frame["block"].to_numpy(dtype=float)
    legal = atp_max_beta(target, len(depth))
    if beta > legal:
        log.warning("depth: beta %g exceeds ATP's legal %g at S=%g with %d blocks; the bounds clip",
                    beta, legal, target, len(depth))
    return depth, float(beta) * centred(depth, numel)
