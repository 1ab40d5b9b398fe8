"""Layer-wise sparsity allocation: a sparsity for every prunable matrix (DESIGN.md "Allocation").

Given a per-matrix table (``block, matrix_type, name, numel`` + metric columns), a target
sparsity S and an :class:`~pruning.config.AllocationConfig`, :func:`allocate` groups the matrices
into *units* u (``granularity``), gives each unit a relative ratio r_u and turns the ratios into
sparsities s_u whose parameter-weighted mean is exactly S (sum_u P_u s_u = S sum_u P_u, P_u =
parameters of unit u). Every matrix of a unit gets the unit's sparsity.

Strategies
----------
``uniform``
    s_u = S for every unit.
``linear`` -- AlphaPruning (Lu et al., "AlphaPruning: Using Heavy-Tailed Self Regularization
    Theory for Improved Layer-wise Pruning of Large Language Models", NeurIPS 2024,
    ``ww_sparsity`` in its reference code). Score m_u = unweighted mean of ``config.metric``
    over the unit's scoring matrices; min-max normalised inside its normalisation group g:
    ``n_u = (m_u - min_g) / (max_g - min_g)`` (``(max_g - m_u) / (max_g - min_g)`` when
    ``higher_prunes_more`` is false); ``r_u = (1 - eps) + 2 eps n_u`` (all ``r_u = 1`` when
    ``max_g == min_g``, up to a relative 1e-12); ``s_u = S r_u sum(P) / sum(P_u r_u)``.
``owl`` -- OWL (Yin et al., "Outlier Weighed Layerwise Sparsity (OWL): A Missing Secret Sauce
    for Pruning LLMs to High Sparsity", 2023). Units are always transformer blocks; the outlier
    ratio D_l (share of Wanda scores above M x the block mean, computed during calibration) is
    given per block. As in the reference code (``lib/prune_all.py``), D is min-max normalised to
    ``Dn_l = 2 lambda (D_l - min D) / (max D - min D)`` (all 0 if max == min) and the block
    density is ``1 - S + (Dn_l - mean(Dn))``, i.e. ``s_l = S - (Dn_l - mean(Dn))``: more outliers
    -> less pruning, the spread of sparsities is exactly 2 lambda. The reference takes the
    *unweighted* mean over blocks (all LLaMA blocks have equal size); here the mean is
    parameter-weighted, ``mean_P(Dn) = sum P_l Dn_l / sum P_l``, so that the weighted mean of
    s_l is exactly S for any block sizes (identical to the reference for equal blocks).
    ``metric``, ``score_groups`` and ``granularity`` are not used (a non-block granularity is
    logged as a warning).

Units and scoring (``score_groups``, ``granularity``)
-----------------------------------------------------
``block``  one unit per transformer block; scored by the mean metric over the block's matrices
           whose type is in ``score_groups``; one normalisation group over all blocks
           (AlphaPruning's ``block_wise`` mapping).
``split``  the attention {q,k,v,o} and MLP {gate,up,down} sub-blocks of each block are separate
           units, each scored by its own listed types. *Choice:* a sub-block with none of its
           types listed (e.g. the MLP under ``"QKVout + split"``) is scored by the mean over all
           of its own types, so it is still allocated by the same metric rather than held at S.
           *Choice:* attention units and MLP units are min-max normalised **separately** (each
           group has its own min/max, so each spans the full [1 - eps, 1 + eps]). Attention and
           MLP metrics sit at systematically different levels (e.g. alpha of MLP matrices is
           usually lower), and a joint min/max would turn that level difference into a blanket
           "prune all MLPs more" decision that no paper proposes, squeezing the within-group
           spread that split is meant to expose. The common factor c still makes the weighted
           mean over both groups exactly S.
``matrix`` every matrix is its own unit, scored by its own metric. *Choice:* only matrices whose
           type is listed in ``score_groups`` vary; they form one normalisation group (as
           AlphaPruning's per-layer mapping); matrices of unlisted types get ``r = 1`` and
           ``score = NaN`` (they still take the common factor c, so they sit at about S).

Bounds
------
Every sparsity is clipped to ``[min_sparsity, max_sparsity]`` and the excess is redistributed so
the weighted mean stays exactly S. *Choice:* redistribution keeps each strategy's shape: for
``linear`` (and ``uniform``) proportionally to r_u, s_u = clip(c r_u, lo, hi); for ``owl``
additively, s_u = clip(base_u + t, lo, hi). The scalar c (or t) is solved exactly: the weighted
mean is piecewise linear and non-decreasing in it, so the segment between breakpoints that
holds the target is located and solved in closed form (no iteration tolerance). Both forms keep
the order of the units and reduce to the unbounded formulas when nothing is clipped. Because
c -> 0 / c -> inf drive every unit to lo / hi, the reachable targets are exactly [lo, hi]; a
target outside raises :class:`~pruning.errors.ConfigError` naming that range.

A target S = 0 (a dense run) gives every matrix sparsity 0 for any strategy, without needing
metrics or OWL ratios; the bounds are then not applied (logged if ``min_sparsity > 0``).

Output: the input rows in input order with added columns ``unit`` (unit id: ``block{i}``,
``block{i}.attn`` / ``block{i}.mlp``, or the matrix name), ``score`` (m_u; D_l for owl),
``ratio`` (r_u; for owl the unbounded s_u / S) and ``sparsity``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from pruning.config import AllocationConfig, config_error_from
from pruning.errors import ConfigError
from pruning.presets import ATTENTION_TYPES, MATRIX_TYPES

log = logging.getLogger(__name__)

BASE_COLUMNS: tuple[str, ...] = ("block", "matrix_type", "name", "numel")
OUTPUT_COLUMNS: tuple[str, ...] = ("unit", "score", "ratio", "sparsity")
_FLAT_RELATIVE_TOL = 1e-12


def allocation_config(**fields: Any) -> AllocationConfig:
    """Build an :class:`AllocationConfig`, turning validation errors into one-line ConfigErrors
    (unknown preset or matrix type -> the accepted ones; epsilon outside [0, 1); ...)."""
    try:
        return AllocationConfig(**fields)
    except ValidationError as exc:
        raise config_error_from(exc) from None


def metric_columns(matrices: pd.DataFrame) -> list[str]:
    """Numeric columns of a per-matrix table that can serve as ``config.metric``."""
    skip = set(BASE_COLUMNS) | set(OUTPUT_COLUMNS)
    return [c for c in matrices.columns if c not in skip and pd.api.types.is_numeric_dtype(matrices[c])]


def allocate(
    matrices: pd.DataFrame,
    config: AllocationConfig,
    target: float,
    owl_outlier_ratio: Mapping[int, float] | None = None,
) -> pd.DataFrame:
    """Sparsity for every prunable matrix; parameter-weighted mean == ``target`` (within 1e-9).

    matrices: one row per matrix, columns ``block, matrix_type, name, numel`` + metric columns.
    config: strategy, metric, direction, epsilon, score_groups, granularity, bounds, OWL lambda.
    target: S in [0, 1). owl_outlier_ratio: block -> D_l (needed for ``strategy="owl"``).
    Returns a copy of ``matrices`` (same order and index) with ``unit, score, ratio, sparsity``.
    Formulas: module docstring (AlphaPruning, Lu et al. 2024; OWL, Yin et al. 2023).
    """
    frame = _validated_matrices(matrices)
    lo, hi = _validated_config(config)
    if float(target) == 0.0:
        return _dense(matrices, frame, config, lo)
    target = _validated_target(target, lo, hi)

    granularity = "block" if config.strategy == "owl" else config.granularity
    if config.strategy == "owl" and config.granularity != "block":
        log.warning("owl allocates per block; granularity %r is ignored", config.granularity)
    units = _unit_ids(frame, granularity)
    unit_frame = _unit_table(frame, units)
    numel = unit_frame["numel"].to_numpy(dtype=float)

    if config.strategy == "uniform":
        unit_frame["score"] = np.nan
        unit_frame["ratio"] = 1.0
        unit_frame["sparsity"] = target
    elif config.strategy == "linear":
        scores, groups = _linear_scores(frame, units, unit_frame, config)
        ratios = _linear_ratios(scores, groups, config.epsilon, config.higher_prunes_more)
        unit_frame["score"] = scores
        unit_frame["ratio"] = ratios
        unit_frame["sparsity"] = _solve_bounded(np.zeros_like(ratios), ratios, numel, target, lo, hi)
    elif config.strategy == "owl":
        outliers = _owl_outliers(unit_frame, owl_outlier_ratio)
        base = _owl_base(outliers, numel, target, config.owl_lambda)
        unit_frame["score"] = outliers
        unit_frame["ratio"] = base / target if target > 0 else 1.0
        unit_frame["sparsity"] = _solve_bounded(base - target, np.ones_like(base), numel, target, lo, hi)
    else:  # pragma: no cover - AllocationConfig restricts the strategy
        raise ConfigError(f"allocation.strategy: unknown strategy {config.strategy!r}; accepted: uniform, linear, owl")

    out = matrices.copy()
    out["unit"] = units.to_numpy()
    for column in ("score", "ratio", "sparsity"):
        out[column] = units.map(unit_frame[column]).to_numpy(dtype=float)
    achieved = float(np.dot(out["sparsity"].to_numpy(), frame["numel"].to_numpy()) / frame["numel"].sum())
    log.info(
        "allocation %s (%s, %d units): target %.6f, weighted mean %.12f, range [%.4f, %.4f]",
        config.strategy, granularity, len(unit_frame), target, achieved, out["sparsity"].min(), out["sparsity"].max(),
    )
    return out


def _dense(matrices: pd.DataFrame, frame: pd.DataFrame, config: AllocationConfig, lo: float) -> pd.DataFrame:
    """S = 0 (a dense run): nothing is pruned whatever the strategy; no metric or OWL ratio needed."""
    if lo > 0:
        log.warning("target sparsity 0 (dense): min_sparsity %s is not applied, every matrix stays dense", lo)
    granularity = "block" if config.strategy == "owl" else config.granularity
    out = matrices.copy()
    out["unit"] = _unit_ids(frame, granularity).to_numpy()
    out["score"] = np.nan
    out["ratio"] = 1.0
    out["sparsity"] = 0.0
    return out


def summarize(allocation: pd.DataFrame, by: str = "unit") -> pd.DataFrame:
    """Per-unit (``by="unit"``) or per-block (``by="block"``) view of an :func:`allocate` result:
    matrices, parameters, score, ratio, parameter-weighted mean sparsity and its min/max."""
    if by not in ("unit", "block"):
        raise ConfigError(f"summarize: by={by!r}; accepted: 'unit', 'block'")
    frame = allocation.assign(_weighted=allocation["sparsity"] * allocation["numel"])
    grouped = frame.groupby(by, sort=False)
    table = pd.DataFrame(
        {
            "block": grouped["block"].first(),
            "types": grouped["matrix_type"].agg(lambda t: ",".join(t)),
            "numel": grouped["numel"].sum(),
            "score": grouped["score"].mean(),
            "ratio": grouped["ratio"].mean(),
            "sparsity": grouped["_weighted"].sum() / grouped["numel"].sum(),
            "min_sparsity": grouped["sparsity"].min(),
            "max_sparsity": grouped["sparsity"].max(),
        }
    )
    if by == "block":
        table = table.drop(columns="block")
    return table.reset_index()


# ---- validation --------------------------------------------------------------------------------


def _validated_matrices(matrices: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in BASE_COLUMNS if c not in matrices.columns]
    if missing:
        raise ConfigError(
            f"allocation input: missing column(s) {missing}; required: {', '.join(BASE_COLUMNS)} + metric columns"
        )
    if len(matrices) == 0:
        raise ConfigError("allocation input: the matrix table is empty")
    frame = matrices.reset_index(drop=True)
    bad_types = sorted(set(frame["matrix_type"]) - set(MATRIX_TYPES))
    if bad_types:
        raise ConfigError(f"allocation input: unknown matrix type(s) {bad_types}; accepted: {', '.join(MATRIX_TYPES)}")
    numel = pd.to_numeric(frame["numel"], errors="coerce")
    bad = frame.loc[~(numel > 0), "name"].tolist()
    if bad:
        raise ConfigError(f"allocation input: numel must be a positive count; bad for {_names(bad)}")
    duplicated = frame.loc[frame["name"].duplicated(), "name"].tolist()
    if duplicated:
        raise ConfigError(f"allocation input: matrix names must be unique; repeated: {_names(duplicated)}")
    blocks = pd.to_numeric(frame["block"], errors="coerce")
    bad = frame.loc[~(blocks.notna() & (blocks == blocks.round())), "name"].tolist()
    if bad:
        raise ConfigError(f"allocation input: block must be an integer index; bad for {_names(bad)}")
    return frame.assign(numel=numel.astype(float), block=blocks.astype(int))


def _validated_config(config: AllocationConfig) -> tuple[float, float]:
    eps = float(config.epsilon)
    if not 0.0 <= eps < 1.0:
        raise ConfigError(f"allocation.epsilon: {eps!r} is invalid: accepted range [0, 1)")
    lo, hi = float(config.min_sparsity), float(config.max_sparsity)
    if not (0.0 <= lo <= hi <= 1.0):
        raise ConfigError(f"allocation bounds: need 0 <= min_sparsity <= max_sparsity <= 1, got [{lo}, {hi}]")
    bad_groups = [t for t in config.score_groups if t not in MATRIX_TYPES]
    if bad_groups or not config.score_groups:
        raise ConfigError(
            f"allocation.score_groups: unknown matrix type(s) {bad_groups or list(config.score_groups)!r}; "
            f"accepted: {', '.join(MATRIX_TYPES)}"
        )
    return lo, hi


def _validated_target(target: float, lo: float, hi: float) -> float:
    target = float(target)
    if not (math.isfinite(target) and 0.0 <= target < 1.0):
        raise ConfigError(f"pruning.sparsity: target {target!r} is invalid: accepted range [0, 1)")
    if not lo <= target <= hi:
        raise ConfigError(
            f"pruning.sparsity: target {target} is unreachable with min_sparsity={lo}, max_sparsity={hi}; "
            f"reachable range [{lo}, {hi}]"
        )
    return target


def _names(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f" ... ({len(names)} in all)" if len(names) > limit else "")


# ---- units and scores --------------------------------------------------------------------------


def _sub_block(matrix_type: str) -> str:
    return "attn" if matrix_type in ATTENTION_TYPES else "mlp"


def _unit_ids(frame: pd.DataFrame, granularity: str) -> pd.Series:
    """Unit id of every row: ``block{i}``, ``block{i}.attn|mlp`` or the matrix name."""
    if granularity == "block":
        return "block" + frame["block"].astype(str)
    if granularity == "split":
        return "block" + frame["block"].astype(str) + "." + frame["matrix_type"].map(_sub_block)
    if granularity == "matrix":
        return frame["name"].astype(str)
    raise ConfigError(f"allocation.granularity: unknown {granularity!r}; accepted: block, split, matrix")


def _unit_table(frame: pd.DataFrame, units: pd.Series) -> pd.DataFrame:
    """One row per unit (first-appearance order): block, parameter count."""
    grouped = frame.groupby(units.to_numpy(), sort=False)
    return pd.DataFrame({"block": grouped["block"].first(), "numel": grouped["numel"].sum()})


def _scoring_types(unit_types: set[str], score_groups: set[str], granularity: str) -> set[str]:
    """Types whose metric scores a unit; empty = the unit does not vary (ratio 1)."""
    listed = unit_types & score_groups
    if granularity == "split" and not listed:
        return unit_types  # documented fallback: score an unlisted sub-block by all its own types
    return listed


def _linear_scores(
    frame: pd.DataFrame, units: pd.Series, unit_frame: pd.DataFrame, config: AllocationConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Unit scores m_u (NaN for non-varying units) and normalisation group labels ('' = none)."""
    metric = config.metric
    available = metric_columns(frame)
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
        groups[i] = {"block": "block", "matrix": "matrix"}.get(granularity) or _sub_block(next(iter(unit_types)))
    values = pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=float)
    nan_rows = used & ~np.isfinite(values)
    if nan_rows.any():
        names = frame.loc[nan_rows, "name"].tolist()
        raise ConfigError(
            f"allocation.metric: {metric!r} is NaN or infinite for {len(names)} matrices needed for scoring: "
            f"{_names(names)}"
        )
    sums = np.bincount(unit_codes, weights=np.where(used, values, 0.0), minlength=len(unit_frame))
    counts = np.bincount(unit_codes, weights=used.astype(float), minlength=len(unit_frame))
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(counts > 0, sums / counts, np.nan)
    return scores, groups


def _linear_ratios(scores: np.ndarray, groups: np.ndarray, epsilon: float, higher_prunes_more: bool) -> np.ndarray:
    """r_u = (1 - eps) + 2 eps n_u with n_u the min-max normalised score inside each group."""
    ratios = np.ones(len(scores), dtype=float)
    for group in sorted({g for g in groups if g}):
        members = groups == group
        values = scores[members]
        low, high = float(values.min()), float(values.max())
        if high - low <= _FLAT_RELATIVE_TOL * max(abs(low), abs(high), 1.0):
            continue  # flat group: all ratios 1
        normalised = (values - low) / (high - low) if higher_prunes_more else (high - values) / (high - low)
        ratios[members] = (1.0 - epsilon) + 2.0 * epsilon * normalised
    return ratios


# ---- OWL ---------------------------------------------------------------------------------------


def _owl_outliers(unit_frame: pd.DataFrame, owl_outlier_ratio: Mapping[int, float] | None) -> np.ndarray:
    if owl_outlier_ratio is None:
        raise ConfigError(
            "allocation.strategy 'owl' needs the per-block outlier ratios D_l from calibration (owl_outlier_ratio)"
        )
    blocks = unit_frame["block"].astype(int).tolist()
    missing = [b for b in blocks if b not in owl_outlier_ratio]
    if missing:
        raise ConfigError(f"owl_outlier_ratio: missing blocks {missing}; given for {sorted(owl_outlier_ratio)}")
    values = np.array([float(owl_outlier_ratio[b]) for b in blocks])
    bad = [b for b, v in zip(blocks, values) if not math.isfinite(v)]
    if bad:
        raise ConfigError(f"owl_outlier_ratio: NaN or infinite for blocks {bad}")
    return values


def _owl_base(outliers: np.ndarray, numel: np.ndarray, target: float, owl_lambda: float) -> np.ndarray:
    """Unbounded OWL sparsities s_l = S - (Dn_l - mean_P(Dn)), Dn = 2 lambda minmax(D)."""
    low, high = float(outliers.min()), float(outliers.max())
    if high - low <= _FLAT_RELATIVE_TOL * max(abs(low), abs(high), 1.0):
        normalised = np.zeros_like(outliers)
    else:
        normalised = 2.0 * owl_lambda * (outliers - low) / (high - low)
    return target - (normalised - float(np.dot(numel, normalised) / numel.sum()))


# ---- exact bounded solve -----------------------------------------------------------------------


def _solve_bounded(
    offset: np.ndarray, slope: np.ndarray, numel: np.ndarray, target: float, lo: float, hi: float
) -> np.ndarray:
    """s_u = clip(offset_u + slope_u * t, lo, hi) with t chosen so that sum(P s) = target * sum(P).

    slope_u > 0. The weighted sum is continuous, piecewise linear and non-decreasing in t with
    breakpoints where a unit hits a bound; the target's segment is found and solved exactly.
    """
    total = target * numel.sum()
    t_free = (total - np.dot(numel, offset)) / np.dot(numel, slope)
    free_solution = offset + slope * t_free
    if free_solution.min() >= lo and free_solution.max() <= hi:
        return free_solution  # nothing clipped: the strategy's own formula, e.g. S r sum(P)/sum(P r)

    breakpoints = np.unique(np.concatenate([(lo - offset) / slope, (hi - offset) / slope]))
    sums = np.clip(offset[None, :] + slope[None, :] * breakpoints[:, None], lo, hi) @ numel
    k = int(np.searchsorted(sums, total, side="left"))  # sums[k-1] < total <= sums[k]
    if k < len(breakpoints) and sums[k] == total:
        return np.clip(offset + slope * breakpoints[k], lo, hi)
    if k == 0:
        probe = breakpoints[0] - 1.0
    elif k == len(breakpoints):
        probe = breakpoints[-1] + 1.0
    else:
        probe = 0.5 * (breakpoints[k - 1] + breakpoints[k])
    raw = offset + slope * probe
    at_low, at_high = raw <= lo, raw >= hi
    free = ~(at_low | at_high)
    if not free.any():
        return np.clip(raw, lo, hi)
    fixed = lo * numel[at_low].sum() + hi * numel[at_high].sum()
    t = (total - fixed - np.dot(numel[free], offset[free])) / np.dot(numel[free], slope[free])
    result = np.where(at_low, lo, np.where(at_high, hi, offset + slope * t))
    return np.clip(result, lo, hi)


__all__ = ["allocate", "allocation_config", "metric_columns", "summarize", "BASE_COLUMNS", "OUTPUT_COLUMNS"]
