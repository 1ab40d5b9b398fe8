"""Pruning kernels: pure tensor functions, one module per method (no models, configs or files).

* :mod:`pruning.methods.magnitude` — |W_ij|, comparison group: the whole matrix.
* :mod:`pruning.methods.wanda` — |W_ij| * ||X_j||_2, comparison group: output row (Sun et al. 2023).
* :mod:`pruning.methods.sparsegpt` — OBS-based mask + weight update (Frantar & Alistarh 2023).
* :mod:`pruning.methods.nm` — N:M semi-structured masks for any score.
* :mod:`pruning.methods.owl` — OWL layer-wise outlier ratio (Yin et al. 2023).

:mod:`pruning.methods.apply` holds the thin wrapper that applies a kernel to an ``nn.Linear``.
Convention for every mask returned here: ``True`` = pruned (set to zero).
"""

from pruning.methods.magnitude import magnitude_mask, magnitude_scores
from pruning.methods.nm import nm_mask, parse_nm
from pruning.methods.owl import outlier_ratio
from pruning.methods.select import prune_count, smallest_mask
from pruning.methods.sparsegpt import sparsegpt_prune
from pruning.methods.wanda import wanda_mask, wanda_scores

METHODS: tuple[str, ...] = ("magnitude", "wanda", "sparsegpt")

__all__ = [
    "METHODS",
    "magnitude_mask",
    "magnitude_scores",
    "nm_mask",
    "outlier_ratio",
    "parse_nm",
    "prune_count",
    "smallest_mask",
    "sparsegpt_prune",
    "wanda_mask",
    "wanda_scores",
]
