"""``owl``: Outlier Weighed Layerwise sparsity (Yin et al., "Outlier Weighed Layerwise Sparsity (OWL):
A Missing Secret Sauce for Pruning LLMs to High Sparsity", 2023, arXiv:2310.05175).

Units are transformer blocks. The outlier ratio D_l (share of the block's Wanda scores above M x
their mean, measured during calibration: ``pruning.run.prune.owl_outlier_ratios``) is min-max scaled as
in the reference code (``lib/prune_all.py``): ``Dn_l = 2 lambda (D_l - min D) / (max D - min D)``
(all 0 if flat); the block density is ``1 - S + (Dn_l - mean(Dn))``, i.e. the sparsity
``s_l = S - (Dn_l - mean_P(Dn))``: more outliers -> less pruning, spread exactly 2 lambda. The mean
is parameter-weighted (:func:`pruning.allocation.solve.centred`; the reference's unweighted mean for
equal blocks).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from pruning.allocation.solve import centred, minmax_spread
from pruning.allocation.units import block_values
from pruning.config.run_config import AllocationConfig


def owl_deviations(
    unit_frame: pd.DataFrame, numel: np.ndarray, config: AllocationConfig, outlier_ratio: Mapping[int, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(D_l, s_l - S) per block ``(blocks,)``: the score column and the centred deviation from S."""
    outliers = block_values(
        unit_frame, outlier_ratio, "owl_outlier_ratio",
        "'owl' needs the per-block outlier ratios D_l from calibration",
    )
    return outliers, -centred(minmax_spread(outliers, 2.0 * config.owl_lambda), numel)
