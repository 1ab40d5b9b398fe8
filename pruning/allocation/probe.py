"""The ``probe`` strategy: one transformer block pruned at the run's sparsity, every other block dense.

A run of it measures how much one block's pruning costs on its own — the per-block *sensitivity* that a
layer-wise allocation tries to predict from a cheap metric (weight α, Hessian α, OWL's outlier ratio,
DLP's unimportance, depth). Its ``pruning.sparsity`` is the probed block's sparsity, not the model's mean
(that is sparsity x the block's share of the prunable parameters). Because the blocks before the probed
one stay dense, its calibration statistics are the dense model's, exactly as in a block-sequential run of
the same method (the sensitivity profiles of the allocation study, ``pruning.study.sensitivity``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pruning.errors import ConfigError


def probe_sparsities(unit_frame: pd.DataFrame, block: int | None, target: float) -> tuple[np.ndarray, np.ndarray]:
    """(score, sparsity) per unit (units are blocks): ``target`` for ``block``, 0 for the others; the
    score marks the probed block with 1. Raises ConfigError naming a block the model does not have."""
    blocks = unit_frame["block"].to_numpy()
    if block is None or block not in set(blocks.tolist()):
        raise ConfigError(f"allocation.probe_block: {block!r} is not a block of this model; accepted: 0 to "
                          f"{int(blocks.max())}")
    probed = blocks == block
    return probed.astype(float), np.where(probed, float(target), 0.0)
