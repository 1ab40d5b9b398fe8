"""The allocation entry point: validate the inputs, form units, run one strategy, expand to matrices.

Given a per-matrix table (``block, matrix_type, name, numel`` + metric columns), a target sparsity S
and an :class:`~pruning.config.run_config.AllocationConfig`, :func:`allocate` groups the matrices into units
(:mod:`pruning.allocation.units`), asks the configured strategy for per-unit sparsities whose
parameter-weighted mean is exactly S, and gives every matrix its unit's sparsity.

Strategies (one module each): ``uniform`` (every unit at S); ``linear``
(:mod:`~pruning.allocation.linear`, AlphaPruning, proportional to a metric ratio); ``owl``
(:mod:`~pruning.allocation.owl`), ``dlp`` (:mod:`~pruning.allocation.dlp`) and ``depth``
(:mod:`~pruning.allocation.depth`, ATP): per transformer block, additive deviations from S.

Bounds: every sparsity is clipped to ``[min_sparsity, max_sparsity]`` and the excess redistributed
so the weighted mean stays exactly S (:func:`pruning.allocation.solve.solve_bounded`): for
``linear`` (and ``uniform``) proportionally to r_u, ``s_u = clip(c r_u, lo, hi)``; for the additive
strategies by a common shift, ``s_u = clip(S + d_u + t, lo, hi)``. Both keep the order of the units
and reduce to the unbounded formulas when nothing clips; the reachable targets are exactly [lo, hi]
(outside: :class:`~pruning.errors.ConfigError` naming that range).

A target S = 0 (a dense run) gives every matrix sparsity 0 for any strategy, without metrics or
calibration statistics; the bounds are then not applied (logged if ``min_sparsity > 0``).

Output: the input rows in input order with added columns ``unit``, ``score`` (m_u; with
``metric_mix`` the averaged normalised score n_u in [0, 1]; D_l for owl; U_l for dlp; the block
index for depth), ``ratio`` (r_u; for the additive strategies the unbounded
s_u / S) and ``sparsity``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from pruning.allocation import linear
from pruning.allocation.registry import BLOCK_STRATEGIES as REGISTERED_BLOCK_STRATEGIES
from pruning.allocation.registry import StrategySpec, strategy_names, strategy_spec
from pruning.allocation.rules import UnitContext
from pruning.allocation.units import names_text, unit_ids, unit_table
from pruning.config.run_config import AllocationConfig, config_error_from
from pruning.errors import ConfigError
from pruning.config.presets import MATRIX_TYPES

if TYPE_CHECKING:
    from pruning.model.families import FamilySpec

log = logging.getLogger(__name__)

BASE_COLUMNS: tuple[str, ...] = ("block", "matrix_type", "name", "numel")
OUTPUT_COLUMNS: tuple[str, ...] = ("unit", "score", "ratio", "sparsity")
#: strategies that always allocate per transformer block (their statistics are per block)
BLOCK_STRATEGIES: tuple[str, ...] = REGISTERED_BLOCK_STRATEGIES  # pruning.allocation.registry


def allocation_config(**fields: Any) -> AllocationConfig:
    """Build an :class:`AllocationConfig`, turning validation errors into one-line ConfigErrors
    (unknown preset or matrix type -> the accepted ones; epsilon outside [0, 1); ...)."""
    try:
        return AllocationConfig(**fields)
    except ValidationError as exc:
        raise config_error_from(exc) from None


def metric_columns(matrices: pd.DataFrame) -> list[str]:
    """Numeric columns of a per-matrix table that can serve as ``config.metric`` or ``config.metric_mix``."""
    return linear.metric_columns(matrices, set(BASE_COLUMNS) | set(OUTPUT_COLUMNS))


def allocate(
    matrices: pd.DataFrame,
    config: AllocationConfig,
    target: float,
    owl_outlier_ratio: Mapping[int, float] | None = None,
    *,
    dlp_unimportance: Mapping[int, float] | None = None,
    family: "FamilySpec | None" = None,
    searched: pd.DataFrame | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Sparsity for every prunable matrix; parameter-weighted mean == ``target`` (within 1e-9), except for
    ``strategy="probe"``, which prunes one block at ``target`` and leaves the others dense.

    matrices: one row per matrix, columns ``block, matrix_type, name, numel`` + metric columns.
    config: strategy and its hyper-parameters, score_groups, granularity, bounds.
    target: S in [0, 1). owl_outlier_ratio: block -> D_l (``strategy="owl"``, from
    ``pruning.run.prune.owl_outlier_ratios``). dlp_unimportance: block -> U_l (``strategy="dlp"``, from
    :func:`pruning.calibration.layer_stats.dlp_unimportance`). family: the model's layout (which sub-block holds
    which matrix type, for ``granularity="split"``; default LLaMA's). searched: ``strategy="evopress"``'s
    result (columns name, level, sparsity: one row per matrix, :mod:`pruning.run.evopress`). inputs: what
    the strategy's run hook measured, by name (the three above are shorthands for its entries); the
    registered strategy's rule reads them (:mod:`pruning.allocation.rules`, :mod:`pruning.allocation.registry`).
    Returns a copy of ``matrices`` (same order and index) with ``unit, score, ratio, sparsity``.
    Formulas: the strategy modules (AlphaPruning, Lu et al. 2024; OWL, Yin et al. 2023; DLP, Chen et
    al. ICML 2025; ATP, Huang et al. ICML 2025).
    """
    frame = _validated_matrices(matrices)
    lo, hi = _validated_config(config)
    spec = _registered(config.strategy)
    granularity = config.granularity if spec.units == "config" else spec.units
    if float(target) == 0.0:
        return _dense(matrices, frame, granularity, family, lo)
    target = _validated_target(target, lo, hi)
    if granularity != config.granularity:
        log.warning("%s allocates per %s; granularity %r is ignored", config.strategy, granularity, config.granularity)
    units = unit_ids(frame, granularity, family)
    unit_frame = unit_table(frame, units)
    given = {"owl_outlier_ratio": owl_outlier_ratio, "dlp_unimportance": dlp_unimportance, "searched": searched}
    merged = {**{k: v for k, v in given.items() if v is not None}, **dict(inputs or {})}
    ctx = UnitContext(frame, units, unit_frame, unit_frame["numel"].to_numpy(dtype=float), config, target, lo, hi,
                      family, tuple(metric_columns(frame)), merged)
    result = spec.resolved_rule()(ctx)
    for column in ("score", "ratio", "sparsity"):
        values = np.asarray(getattr(result, column), dtype=float)
        if values.shape != (len(unit_frame),):
            raise ConfigError(f"allocation strategy {config.strategy!r}: its rule gave {column} of shape "
                              f"{values.shape}; accepted: one value per unit, ({len(unit_frame)},)")
        unit_frame[column] = values

    out = matrices.copy()
    out["unit"] = units.to_numpy()
    for column in ("score", "ratio", "sparsity"):
        out[column] = units.map(unit_frame[column]).to_numpy(dtype=float)
    achieved = float(np.dot(out["sparsity"].to_numpy(), frame["numel"].to_numpy()) / frame["numel"].sum())
    if spec.keeps_mean and abs(achieved - target) > 1e-9:
        raise ConfigError(f"allocation strategy {config.strategy!r}: its rule gave a parameter-weighted mean sparsity "
                          f"{achieved:.12f}; accepted: the target {target} within 1e-9")
    log.info(
        "allocation %s (%s, %d units): target %.6f, weighted mean %.12f, range [%.4f, %.4f]",
        config.strategy, granularity, len(unit_frame), target, achieved, out["sparsity"].min(), out["sparsity"].max(),
    )
    return out


def _dense(matrices: pd.DataFrame, frame: pd.DataFrame, granularity: str, family: "FamilySpec | None",
           lo: float) -> pd.DataFrame:
    """S = 0 (a dense run): nothing is pruned whatever the strategy; no metric or statistic needed."""
    if lo > 0:
        log.warning("target sparsity 0 (dense): min_sparsity %s is not applied, every matrix stays dense", lo)
    out = matrices.copy()
    out["unit"] = unit_ids(frame, granularity, family).to_numpy()
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


def _registered(name: str) -> StrategySpec:
    """The registered strategy ``name`` (configs built without validation can name any)."""
    try:
        return strategy_spec(name)
    except KeyError:
        raise ConfigError(f"allocation.strategy: {name!r} is not a registered strategy; accepted: "
                          f"{', '.join(strategy_names())}") from None


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
        raise ConfigError(f"allocation input: numel must be a positive count; bad for {names_text(bad)}")
    duplicated = frame.loc[frame["name"].duplicated(), "name"].tolist()
    if duplicated:
        raise ConfigError(f"allocation input: matrix names must be unique; repeated: {names_text(duplicated)}")
    blocks = pd.to_numeric(frame["block"], errors="coerce")
    bad = frame.loc[~(blocks.notna() & (blocks == blocks.round())), "name"].tolist()
    if bad:
        raise ConfigError(f"allocation input: block must be an integer index; bad for {names_text(bad)}")
    return frame.assign(numel=numel.astype(float), block=blocks.astype(int))


#: hyper-parameter -> (low, high, high inclusive) as AllocationConfig bounds it; checked again here
#: for configs built without validation (``model_construct``)
_RANGES: dict[str, tuple[float, float, bool]] = {
    "epsilon": (0.0, 1.0, False), "owl_lambda": (0.0, 1.0, False),
    "dlp_alpha": (0.0, 1.0, False), "depth_beta": (0.0, 1.0, False),
}


def _validated_config(config: AllocationConfig) -> tuple[float, float]:
    for name, (low, high, inclusive) in _RANGES.items():
        value = getattr(config, name, None)
        if value is None:
            continue
        value = float(value)
        if not (math.isfinite(value) and low <= value and (value <= high if inclusive else value < high)):
            raise ConfigError(f"allocation.{name}: {value!r} is invalid: accepted range "
                              f"[{low:g}, {high:g}{']' if inclusive else ')'}")
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
