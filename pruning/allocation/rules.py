"""The per-unit rule of every built-in allocation strategy, behind one signature.

A rule is ``rule(ctx: UnitContext) -> UnitAllocation``: given the units (transformer blocks, sub-blocks
or matrices, :mod:`pruning.allocation.units`) with their parameter counts ``numel`` ``(units,)``, the
config, the target S and the run's inputs (spectral metric columns on ``ctx.frame``; ``inputs`` for what
a strategy's run hook measured: OWL's outlier ratios, DLP's unimportance, EvoPress's searched levels),
it returns ``score``, ``ratio`` and ``sparsity`` per unit ``(units,)`` with the parameter-weighted mean of
``sparsity`` equal to S (:func:`pruning.allocation.allocate` checks it, except for ``probe``).

:mod:`pruning.allocation.registry` names each rule as ``"pruning.allocation.rules:NAME"``; a new strategy
registers its own (``register_strategy``) and never edits this file. Two helpers do the bounded solve
the built-ins share (:func:`pruning.allocation.solve.solve_bounded`): :func:`proportional` for a ratio per
unit (``s_u = clip(c r_u, lo, hi)``, AlphaPruning's form) and :func:`additive` for a deviation from S
(``s_u = clip(S + d_u + t, lo, hi)``, OWL's, DLP's and ATP's form).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pruning.allocation import linear
from pruning.allocation.depth import depth_deviations
from pruning.allocation.dlp import dlp_deviations
from pruning.allocation.owl import owl_deviations
from pruning.allocation.probe import probe_sparsities
from pruning.allocation.solve import centred, minmax_spread, solve_bounded
from pruning.allocation.units import block_values
from pruning.errors import ConfigError

if TYPE_CHECKING:
    from pruning.config.allocation import AllocationConfig
    from pruning.model.families import FamilySpec


@dataclass(frozen=True)
class UnitContext:
    """What a rule reads. ``frame``: one row per matrix (``block, matrix_type, name, numel`` + metric
    columns); ``units``: each matrix's unit id (aligned with ``frame``); ``unit_frame``: one row per unit
    (index = unit id; ``block, numel``); ``numel``: ``unit_frame["numel"]`` as float ``(units,)``;
    ``available``: the metric columns of ``frame``; ``inputs``: what the strategy's run hook measured
    (by name: ``owl_outlier_ratio``, ``dlp_unimportance``, ``searched``, or a new strategy's own)."""

    frame: pd.DataFrame
    units: pd.Series
    unit_frame: pd.DataFrame
    numel: np.ndarray
    config: "AllocationConfig"
    target: float
    lo: float
    hi: float
    family: "FamilySpec | None" = None
    available: tuple[str, ...] = ()
    inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UnitAllocation:
    """A rule's answer, one value per unit ``(units,)``: the score it ranked by (NaN where none), the
    ratio to S before the bounds, and the sparsity."""

    score: np.ndarray
    ratio: np.ndarray
    sparsity: np.ndarray


def proportional(ctx: UnitContext, score: np.ndarray, ratio: np.ndarray) -> UnitAllocation:
    """Sparsity proportional to ``ratio`` with the mean exactly S within the bounds."""
    ratio = np.asarray(ratio, dtype=float)
    sparsity = solve_bounded(np.zeros_like(ratio), ratio, ctx.numel, ctx.target, ctx.lo, ctx.hi)
    return UnitAllocation(np.asarray(score, dtype=float), ratio, sparsity)


def additive(ctx: UnitContext, score: np.ndarray, deviation: np.ndarray) -> UnitAllocation:
    """Sparsity S + ``deviation`` + a common shift that keeps the mean exactly S within the bounds."""
    deviation = np.asarray(deviation, dtype=float)
    sparsity = solve_bounded(deviation, np.ones_like(deviation), ctx.numel, ctx.target, ctx.lo, ctx.hi)
    return UnitAllocation(np.asarray(score, dtype=float), (ctx.target + deviation) / ctx.target, sparsity)


def uniform(ctx: UnitContext) -> UnitAllocation:
    """Every unit at S."""
    n = len(ctx.numel)
    return UnitAllocation(np.full(n, np.nan), np.ones(n), np.full(n, ctx.target))


def linear_rule(ctx: UnitContext) -> UnitAllocation:
    """AlphaPruning (Lu et al., NeurIPS 2024): ratio from a spectral metric (:mod:`pruning.allocation.linear`)."""
    scores, ratios = linear.linear_allocation(ctx.frame, ctx.units, ctx.unit_frame, ctx.config,
                                              list(ctx.available), ctx.family)
    return proportional(ctx, scores, ratios)


def owl(ctx: UnitContext) -> UnitAllocation:
    """OWL (Yin et al. 2023): a block's deviation from its outlier ratio D_l."""
    return additive(ctx, *owl_deviations(ctx.unit_frame, ctx.numel, ctx.config, ctx.inputs.get("owl_outlier_ratio")))


def dlp(ctx: UnitContext) -> UnitAllocation:
    """DLP (Chen et al., ICML 2025): a block's deviation from its unimportance U_l."""
    return additive(ctx, *dlp_deviations(ctx.unit_frame, ctx.numel, ctx.config, ctx.inputs.get("dlp_unimportance")))


def depth(ctx: UnitContext) -> UnitAllocation:
    """ATP (Huang et al., ICML 2025): an arithmetic progression over depth."""
    return additive(ctx, *depth_deviations(ctx.unit_frame, ctx.numel, ctx.config, ctx.target))


def probe(ctx: UnitContext) -> UnitAllocation:
    """One block at S, the others dense (the mean is not S: a sensitivity probe)."""
    scores, sparsity = probe_sparsities(ctx.unit_frame, ctx.config.probe_block, ctx.target)
    return UnitAllocation(scores, sparsity / ctx.target, sparsity)


def evopress(ctx: UnitContext) -> UnitAllocation:
    """EvoPress (Sieberling et al., ICML 2025): the levels its search found (``inputs["searched"]``:
    columns ``name, level, sparsity``, one row per matrix; the units are matrices)."""
    searched = ctx.inputs.get("searched")
    if searched is None:
        raise ConfigError("allocation.strategy 'evopress' needs the searched levels (pruning.run.evopress)")
    by_name = searched.set_index("name")
    missing = sorted(set(ctx.frame["name"]) - set(by_name.index))
    if missing:
        raise ConfigError(f"evopress: no searched level for {len(missing)} matrices, e.g. {missing[0]!r}")
    names = ctx.unit_frame.index.to_series()  # matrix granularity: the unit id is the matrix name
    sparsity = names.map(by_name["sparsity"]).to_numpy(dtype=float)  # the exact mean: allocate checks it
    return UnitAllocation(names.map(by_name["level"]).to_numpy(dtype=float), sparsity / ctx.target, sparsity)


def kl_slope(ctx: UnitContext) -> UnitAllocation:
    """Ours v4b: a block's deviation from its measured marginal KL per pruned weight at the target
    (``inputs["kl_slope"]``, :func:`pruning.run.allocation_inputs.kl_slope_inputs`): the log slopes min-max
    scaled to ``2 kl_spread`` and centred, a steeper block pruned less — OWL's additive form on a measured
    cost instead of a proxy. Logs, because the slopes span orders of magnitude (SmolLM2's block 0); slopes at
    or below zero (noise: pruning more did not raise the KL on the windows read) count as the smallest positive
    one — a floor far below it made such blocks the most pruned by far (a CPU look: four noisy SmolLM2 blocks
    at 83-89 %)."""
    slopes = block_values(ctx.unit_frame, ctx.inputs.get("kl_slope"), "kl_slope",
                          "'kl_slope' needs each block's measured KL slope from the model")
    positive = slopes[slopes > 0]
    floor = float(positive.min()) if positive.size else 1.0  # unmeasurable: as cheap as the cheapest measured
    score = np.log(np.maximum(slopes, floor))
    return additive(ctx, slopes, -centred(minmax_spread(score, 2.0 * ctx.config.kl_spread), ctx.numel))
