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
            level switch and the seeded evolution; the model side is :mod:`pruning.run.evopress`
``probe``   one block at S, the others dense: a point of a per-block sensitivity profile
``registry`` what the rest of the product knows about each strategy (one :class:`StrategySpec` each)

The calibration statistics DLP reads come from :func:`pruning.calibration.layer_stats.dlp_unimportance`.
"""

from typing import TYPE_CHECKING, Any

#: the names re-exported from pruning.allocation.core, loaded on first use (PEP 562) so that the
#: strategy registry (pruning.allocation.registry, read by the config) imports nothing heavy
_FROM_CORE = ("allocate", "allocation_config", "metric_columns", "summarize", "BASE_COLUMNS", "BLOCK_STRATEGIES",
              "OUTPUT_COLUMNS")

if TYPE_CHECKING:
    from pruning.allocation.core import (  # noqa: F401
        BASE_COLUMNS, BLOCK_STRATEGIES, OUTPUT_COLUMNS, allocate, allocation_config, metric_columns, summarize,
    )


def __getattr__(name: str) -> Any:
    if name in _FROM_CORE:
        from pruning.allocation import core

        return getattr(core, name)
    raise AttributeError(f"module 'pruning.allocation' has no attribute {name!r}")


__all__ = list(_FROM_CORE)
