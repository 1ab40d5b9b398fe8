"""``linear``: AlphaPruning's metric-to-ratio mapping (Lu et al., "AlphaPruning: Using Heavy-Tailed
Self Regularization Theory for Improved Layer-wise Pruning of Large Language Models", NeurIPS 2024;
``ww_sparsity`` in its reference code).

Score m_u = unweighted mean of ``config.metric`` over the unit's scoring matrices; min-max
normalised inside its normalisation group g: ``n_u = (m_u - min_g) / (max_g - min_g)`` (or
``(max_g - m_u) / (max_g - min_g)`` when ``higher_prunes_more`` is false); ``r_u = (1 - eps) +
2 eps n_u`` (all ``r_u = 1`` for a flat group); the sparsities ``s_u = c r_u`` follow from the exact
solve (:func:`pruning.allocation.solve.solve_bounded`), ``c = S sum(P) / sum(P r)`` when nothing
clips.

Scoring types (``score_groups``) and groups per granularity: ``block`` - one group over all blocks,
scored by the listed types; ``split`` - attention and MLP units are normalised **separately** (their
metric levels differ systematically; a joint min/max would turn that into "prune all MLPs more"),
and a sub-block with none of its types listed is scored by all of its own types; ``matrix`` - only
listed types vary (one group), other matrices keep ``r = 1`` and ``score = NaN``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pruning.allocation.solve import is_flat
from pruning.allocation.units import names_text, sub_block_of
from pruning.config import AllocationConfig
from pruning.errors import ConfigError

if TYPE_CHECKING:
    from pruning.families import FamilySpec


def metric_columns(matrices: pd.DataFrame, skip: set[str]) -> list[str]:
    """Numeric columns of a per-matrix table that can serve as ``config.metric`` (``skip``: the
    base and output columns)."""
    return [c for c in matrices.columns if c not in skip and pd.api.types.is_numeric_dtype(matrices[c])]


def _scoring_types(unit_types: set[str], score_groups: set[str], granularity: str) -> set[str]:
    """Types whose metric scores a unit; empty = the unit does not vary (ratio 1)."""
    listed = unit_types & score_groups
    if granularity == "split" and not listed:
        return unit_types  # documented fallback: score an unlisted sub-block by all its own types
    return listed


def linear_scores(
    frame: pd.DataFrame, units: pd.Series, unit_frame: pd.DataFrame, config: AllocationConfig,
    available: list[str], family: "FamilySpec | None" = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Unit scores m_u ``(units,)`` (NaN for non-varying units) and normalisation group labels
    ``(units,)`` ('' = none). available: the table's metric columns (for messages)."""
    metric = config.metric
    if metric not in frame.columns:
        raise ConfigError(
            f"allocation.metric: column {metric!r} is not in the matrix table; available metric columns: "
            f"{', '.join(available) or '(none)'}"
        )
    if metric not in available:
        raise ConfigError(f"allocation.metric: column {metric!r} is not numeric; available: {', '.join(available)}")
    granularity = config.granularity
    score_groups = set(config.score_groups)
    used = np.zeros(len(frame), dtype=bool)
    groups = np.full(len(unit_frame), "", dtype=object)
    unit_index = {u: i for i, u in enumerate(unit_frame.index)}
    unit_codes = units.map(unit_index).to_numpy()
    types = frame["matrix_type"].to_numpy()
    sub_blocks = sub_block_of(frame["matrix_type"], family).to_numpy() if granularity == "split" else None
    for unit, i in unit_index.items():
        rows = unit_codes == i
        unit_types = set(types[rows])
        scoring = _scoring_types(unit_types, score_groups, granularity)
        if not scoring:
            if granularity == "block":
                raise ConfigError(
                    f"allocation.score_groups: {unit} has none of the types {sorted(score_groups)} "
                    f"(it has {sorted(unit_types)})"
                )
            continue
        used |= rows & np.isin(types, list(scoring))
        groups[i] = sub_blocks[rows][0] if sub_blocks is not None else granularity
    values = pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=float)
    nan_rows = used & ~np.isfinite(values)
    if nan_rows.any():
        names = frame.loc[nan_rows, "name"].tolist()
        raise ConfigError(
            f"allocation.metric: {metric!r} is NaN or infinite for {len(names)} matrices needed for scoring: "
            f"{names_text(names)}"
        )
    sums = np.bincount(unit_codes, weights=np.where(used, values, 0.0), minlength=len(unit_frame))
    counts = np.bincount(unit_codes, weights=used.astype(float), minlength=len(unit_frame))
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(counts > 0, sums / counts, np.nan)
    return scores, groups


def linear_ratios(scores: np.ndarray, groups: np.ndarray, epsilon: float, higher_prunes_more: bool) -> np.ndarray:
    """r_u = (1 - eps) + 2 eps n_u ``(units,)`` with n_u the min-max normalised score inside each group."""
    ratios = np.ones(len(scores), dtype=float)
    for group in sorted({g for g in groups if g}):
        members = groups == group
        values = scores[members]
        if is_flat(values):
            continue  # flat group: all ratios 1
        low, high = float(values.min()), float(values.max())
        normalised = (values - low) / (high - low) if higher_prunes_more else (high - values) / (high - low)
        ratios[members] = (1.0 - epsilon) + 2.0 * epsilon * normalised
    return ratios
