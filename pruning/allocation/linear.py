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

Two metrics (``config.metric_mix``): each metric k in (``metric``, ``metric_mix``) gives its own
n_u^k exactly as above (unit mean over the same scoring matrices, min-max inside the same group,
direction ``higher_prunes_more`` for both; a metric that is flat in a group gives n_u^k = 0.5 to
every unit of the group, the ratio-1 meaning of a flat group), and ``n_u = (n_u^metric +
n_u^metric_mix) / 2`` replaces n_u in ``r_u = (1 - eps) + 2 eps n_u``. The average is not min-max
normalised again, so two metrics that disagree give a narrower spread than either alone. The
stored ``score`` of such a run is this n_u in [0, 1] (not a metric value). Averaging the raw
metric values instead would let the metric with the larger range decide alone. Why: the Hessian
alpha (power-law alpha of the layer-wise Hessian X^T X ESD; input statistics) and the weight
alpha (trained weights; Martin & Mahoney, JMLR 2021) are two noisy estimates of a layer's quality
(correlation 0.55 of their block means on SmolLM2-135M); averaging their normalised ranks is the
team's notes' Hessian allocation "combined with the weight spectra".

Position (``metric`` or ``metric_mix`` = ``depth``, :data:`DEPTH_METRIC`): not a spectral column but
the matrix's block index i, so that depth can be mixed with a spectral metric. Alone, with
``higher_prunes_more`` and one unit per block, n_i = i / (L - 1) and ``r_i = (1 - eps) + 2 eps i /
(L - 1)``: for equal blocks ``s_i = S (1 - eps) + 2 S eps i / (L - 1)``, ATP's rising progression
(Huang et al., ICML 2025; :mod:`pruning.allocation.depth`) with ``beta = 2 S eps / (L - 1)``. Mixed,
``n_i = (n_i^metric + i / (L - 1)) / 2``: the depth trend, moved up or down per block by the metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pruning.allocation.registry import DEPTH_METRIC
from pruning.allocation.solve import is_flat
from pruning.allocation.units import names_text, sub_block_of
from pruning.config.run_config import AllocationConfig
from pruning.errors import ConfigError

if TYPE_CHECKING:
    from pruning.model.families import FamilySpec


def metric_columns(matrices: pd.DataFrame, skip: set[str]) -> list[str]:
    """Numeric columns of a per-matrix table that can serve as ``config.metric`` or
    ``config.metric_mix`` (``skip``: the base and output columns), and :data:`DEPTH_METRIC`."""
    columns = [c for c in matrices.columns if c not in skip and pd.api.types.is_numeric_dtype(matrices[c])]
    return columns if DEPTH_METRIC in columns else [*columns, DEPTH_METRIC]


def with_depth(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the :data:`DEPTH_METRIC` column (the block index as a float), unless it has one."""
    return frame if DEPTH_METRIC in frame.columns else frame.assign(**{DEPTH_METRIC: frame["block"].astype(float)})


def _scoring_types(unit_types: set[str], score_groups: set[str], granularity: str) -> set[str]:
    """Types whose metric scores a unit; empty = the unit does not vary (ratio 1)."""
    listed = unit_types & score_groups
    if granularity == "split" and not listed:
        return unit_types  # documented fallback: score an unlisted sub-block by all its own types
    return listed


def linear_allocation(
    frame: pd.DataFrame, units: pd.Series, unit_frame: pd.DataFrame, config: AllocationConfig,
    available: list[str], family: "FamilySpec | None" = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(score, ratio) per unit ``(units,)``: with one metric (m_u, r_u); with ``config.metric_mix``
    (n_u, r_u), n_u the mean of the two metrics' normalised scores (module docstring). Units that do
    not vary get score NaN and ratio 1. available: the table's metric columns (for messages)."""
    if DEPTH_METRIC in config.metrics:
        frame = with_depth(frame)
    used, groups = _scoring_rows(frame, units, unit_frame, config, family)
    scores = _unit_means(frame, config.metric, "allocation.metric", used, units, unit_frame, available)
    if config.metric_mix is None:
        return scores, linear_ratios(scores, groups, config.epsilon, config.higher_prunes_more)
    mix = _unit_means(frame, config.metric_mix, "allocation.metric_mix", used, units, unit_frame, available)
    normalised = (normalised_scores(scores, groups, config.higher_prunes_more)
                  + normalised_scores(mix, groups, config.higher_prunes_more)) / 2.0
    return normalised, _ratios(normalised, groups, config.epsilon)


def _scoring_rows(
    frame: pd.DataFrame, units: pd.Series, unit_frame: pd.DataFrame, config: AllocationConfig,
    family: "FamilySpec | None",
) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose metric scores their unit ``(matrices,)`` bool, and the units' normalisation group
    labels ``(units,)`` ('' = the unit does not vary)."""
    granularity = config.granularity
    score_groups = set(config.score_groups)
    used = np.zeros(len(frame), dtype=bool)
    groups = np.full(len(unit_frame), "", dtype=object)
    unit_codes = _unit_codes(units, unit_frame)
    types = frame["matrix_type"].to_numpy()
    sub_blocks = sub_block_of(frame["matrix_type"], family).to_numpy() if granularity == "split" else None
    for i, unit in enumerate(unit_frame.index):
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
    return used, groups


def _unit_codes(units: pd.Series, unit_frame: pd.DataFrame) -> np.ndarray:
    """Position of each matrix's unit in ``unit_frame`` ``(matrices,)``."""
    return units.map({u: i for i, u in enumerate(unit_frame.index)}).to_numpy()


def _unit_means(
    frame: pd.DataFrame, metric: str, field: str, used: np.ndarray, units: pd.Series, unit_frame: pd.DataFrame,
    available: list[str],
) -> np.ndarray:
    """Unweighted mean of column ``metric`` over each unit's scoring rows ``(units,)`` (NaN where a
    unit has none); ``field`` (``allocation.metric`` or ``allocation.metric_mix``) names the setting
    in the errors for a missing, non-numeric or non-finite column."""
    if metric not in frame.columns:
        raise ConfigError(
            f"{field}: column {metric!r} is not in the matrix table; available metric columns: "
            f"{', '.join(available) or '(none)'}"
        )
    if metric not in available:
        raise ConfigError(f"{field}: column {metric!r} is not numeric; available: {', '.join(available)}")
    values = pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=float)
    nan_rows = used & ~np.isfinite(values)
    if nan_rows.any():
        names = frame.loc[nan_rows, "name"].tolist()
        raise ConfigError(
            f"{field}: {metric!r} is NaN or infinite for {len(names)} matrices needed for scoring: "
            f"{names_text(names)}"
        )
    unit_codes = _unit_codes(units, unit_frame)
    sums = np.bincount(unit_codes, weights=np.where(used, values, 0.0), minlength=len(unit_frame))
    counts = np.bincount(unit_codes, weights=used.astype(float), minlength=len(unit_frame))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def normalised_scores(scores: np.ndarray, groups: np.ndarray, higher_prunes_more: bool) -> np.ndarray:
    """n_u in [0, 1] ``(units,)``: ``scores`` min-max normalised inside each group (reversed when
    ``higher_prunes_more`` is false); 0.5 for every unit of a flat group (ratio 1, the group does
    not vary); NaN for units without a group."""
    normalised = np.full(len(scores), np.nan, dtype=float)
    for group in sorted({g for g in groups if g}):
        members = groups == group
        values = scores[members]
        if is_flat(values):
            normalised[members] = 0.5
            continue
        low, high = float(values.min()), float(values.max())
        normalised[members] = (values - low) / (high - low) if higher_prunes_more else (high - values) / (high - low)
    return normalised


def linear_ratios(scores: np.ndarray, groups: np.ndarray, epsilon: float, higher_prunes_more: bool) -> np.ndarray:
    """r_u = (1 - eps) + 2 eps n_u ``(units,)`` with n_u the min-max normalised score inside each group."""
    return _ratios(normalised_scores(scores, groups, higher_prunes_more), groups, epsilon)


def _ratios(normalised: np.ndarray, groups: np.ndarray, epsilon: float) -> np.ndarray:
    """r_u = (1 - eps) + 2 eps n_u ``(units,)`` for units in a group, 1 for the others (n_u = 0.5 of
    a flat group gives exactly 1 in float64 for every eps in [0, 1))."""
    ratios = np.ones(len(normalised), dtype=float)
    varying = groups != ""
    ratios[varying] = (1.0 - epsilon) + 2.0 * epsilon * normalised[varying]
    return ratios
