"""``dlp``: Dynamic Layerwise Pruning (Chen, Cheng, Han, Zhang, Li & Zhang, "DLP: Dynamic Layerwise
Pruning in Large Language Models", ICML 2025, arXiv:2505.23807; reference code ironartisan/DLP,
``lib/prune.py: get_dlp_ratios``).

Units are transformer blocks. Per block l the *unimportance* U_l is a statistic (the paper: the
median; ``allocation.dlp_statistic``) of the Wanda scores ``|W_ij| * ||X_j||_2`` of all the block's
matrices on the dense model's calibration activations (:func:`pruning.calibration.layer_stats.dlp_unimportance`).
Then, as in the reference code:

* relative importance ``I_l = 1 - U_l / sum_k U_k`` (a larger weight-activation level -> less
  important);
* min-max scaling to ``[0, 2 alpha]``: ``In_l = 2 alpha (I_l - min I) / (max I - min I)`` (all 0 if
  flat);
* block density ``1 - S + (In_l - mean(In))``, i.e. sparsity ``s_l = S - (In_l - mean_P(In))``.

So the most important block is pruned least, the spread of sparsities is exactly 2 alpha, and since
I is a decreasing affine function of U, ``s_l = S + 2 alpha (Un_l - mean_P(Un))`` with Un the min-max
normalised U (blocks with a higher weight-activation level are pruned more). The mean is
parameter-weighted (the reference's unweighted mean for equal blocks). The reference clamps a block
density at or below 0 to a sparsity of 0.01; here the bounds clip with exact redistribution.
Default alpha = 0.15 (``--alpha`` in the reference's ``run.py`` and scripts, used for every
published table).

*Which statistic:* the paper and the reference's ``--strategy`` default say median; the reference's
unstructured path (``get_dlp_ratios``, which produced its published ratios) takes the mean of the
scores. ``dlp_statistic`` selects either; median is the default.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from pruning.allocation.solve import centred, minmax_spread
from pruning.allocation.units import block_values
from pruning.config.run_config import AllocationConfig
from pruning.errors import ConfigError


def dlp_importance(unimportance: np.ndarray) -> np.ndarray:
    """I_l = 1 - U_l / sum(U) ``(blocks,)`` (DLP's relative importance). U: ``(blocks,)``, >= 0."""
    total = float(unimportance.sum())
    if not total > 0 or (unimportance < 0).any():
        raise ConfigError(
            f"dlp_unimportance: values must be >= 0 with a positive sum (statistics of |W| * ||X||), "
            f"got {np.round(unimportance, 6).tolist()}"
        )
    return 1.0 - unimportance / total


def dlp_deviations(
    unit_frame: pd.DataFrame, numel: np.ndarray, config: AllocationConfig, unimportance: Mapping[int, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(U_l, s_l - S) per block ``(blocks,)``: the score column and the centred deviation from S."""
    values = block_values(
        unit_frame, unimportance, "dlp_unimportance",
        f"'dlp' needs the per-block unimportance U_l ({config.dlp_statistic} Wanda score) from calibration",
    )
    scaled = minmax_spread(dlp_importance(values), 2.0 * config.dlp_alpha)
    return values, -centred(scaled, numel)
