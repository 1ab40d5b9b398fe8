"""Layer-wise sparsity allocation: a sparsity for every prunable matrix (DESIGN.md "Allocation").

The parameter-weighted mean sparsity is exactly the target S for every strategy but ``probe`` (a
measurement: one block at S, the rest dense), and every sparsity respects ``[min_sparsity, max_sparsity]``.
One module per strategy family:

``core``    :func:`allocate` (validation, units, dispatch), :func:`summarize`
``units``   allocation units per ``granularity`` (block / split / matrix)
``solve``   the exact bounded solve shared by all strategies
``linear``  AlphaPruning (Lu et al., NeurIPS 2024): metric -> ratio in [1 - eps, 1 + eps]
``owl``     OWL (Yin et al. 2023): per-block outlier ratio, spread 2 lambda
``dlp``     DLP (Chen et al., ICML 2025): per-block Wanda-score median, spread 2 alpha
``depth``   ATP (Huang et al., ICML 2025, arXiv:2502.14770): arithmetic progression over blocks
``evopress`` EvoPress (Sieberling et al., ICML 2025, arXiv:2410.14649): the level ladder, the exact-mean
            level switch and the seeded evolution; the model side is :mod:`pruning.evopress_run`
``probe``   one block at S, the others dense: a point of a per-block sensitivity profile

The calibration statistics DLP reads come from :func:`pruning.layer_stats.dlp_unimportance`.
"""

from pruning.allocation.core import (
    BASE_COLUMNS,
    BLOCK_STRATEGIES,
    OUTPUT_COLUMNS,
    allocate,
    allocation_config,
    metric_columns,
    summarize,
)

__all__ = [
    "allocate", "allocation_config", "metric_columns", "summarize", "BASE_COLUMNS", "BLOCK_STRATEGIES",
    "OUTPUT_COLUMNS",
]
