"""Exact weighted-mean solves shared by every allocation strategy (DESIGN.md "Allocation", Bounds).

All strategies produce per-unit sparsities s_u of the form ``clip(offset_u + slope_u * t, lo, hi)``
with one scalar t chosen so that the parameter-weighted mean is exactly the target S:
``sum_u P_u s_u = S sum_u P_u`` (P_u = parameters of unit u). Proportional strategies (AlphaPruning's
``linear``) use ``offset = 0, slope = r_u``; additive ones (OWL, DLP, ATP ``depth``) use
``offset = d_u`` (a centred deviation from S) and ``slope = 1``.
"""

from __future__ import annotations

import numpy as np

FLAT_RELATIVE_TOL = 1e-12


def is_flat(values: np.ndarray) -> bool:
    """True when max - min is zero up to a relative 1e-12 (all units score the same)."""
    low, high = float(values.min()), float(values.max())
    return high - low <= FLAT_RELATIVE_TOL * max(abs(low), abs(high), 1.0)


def minmax_spread(values: np.ndarray, spread: float) -> np.ndarray:
    """``spread * (v - min) / (max - min)`` in [0, spread]; all zeros for flat values.

    This is the min-max scaling of OWL (``2 lambda``) and DLP (``2 alpha``) in their reference code.
    """
    if is_flat(values):
        return np.zeros_like(values, dtype=float)
    low, high = float(values.min()), float(values.max())
    return spread * (values - low) / (high - low)


def centred(values: np.ndarray, numel: np.ndarray) -> np.ndarray:
    """``v - mean_P(v)`` with the parameter-weighted mean ``sum P v / sum P``, so ``sum P (v - mean) = 0``.

    The reference codes of OWL and DLP subtract the unweighted mean over blocks (all LLaMA blocks
    have the same size, where both agree); the weighted mean keeps ``sum P s = S sum P`` exact for
    any block sizes.
    """
    return values - float(np.dot(numel, values) / numel.sum())


def solve_bounded(
    offset: np.ndarray, slope: np.ndarray, numel: np.ndarray, target: float, lo: float, hi: float
) -> np.ndarray:
    """s_u = clip(offset_u + slope_u * t, lo, hi) with t chosen so that sum(P s) = target * sum(P).

    offset, slope, numel: ``(units,)``; slope_u > 0. The weighted sum is continuous, piecewise linear
    and non-decreasing in t with breakpoints where a unit hits a bound; the target's segment is found
    and solved in closed form (no iteration tolerance). Without clipping this is the strategy's own
    formula (e.g. ``S r sum(P) / sum(P r)``); targets in [lo, hi] are always reachable.
    """
    total = target * numel.sum()
    t_free = (total - np.dot(numel, offset)) / np.dot(numel, slope)
    free_solution = offset + slope * t_free
    if free_solution.min() >= lo and free_solution.max() <= hi:
        return free_solution

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
