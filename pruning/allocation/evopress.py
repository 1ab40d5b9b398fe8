"""EvoPress's search over per-matrix sparsity levels, without a model (Sieberling, Kuznedelev, Kurtic and
Alistarh, "EvoPress: Accurate Dynamic Model Compression via Evolutionary Search", ICML 2025,
arXiv:2410.14649; reference code IST-DASLab/EvoPress, read, not copied).

Levels. Every unit (a prunable matrix) has integer levels l; level 0 is the run's target sparsity S and
each level prunes the same *number* of weights, ``delta``, more (l > 0) or fewer (l < 0):
``s_u(l) = S + l * delta / numel_u``. A unit's levels stop where its sparsity would leave
``[min_sparsity, max_sparsity]`` or at ``±levels``. Because every level is worth the same number of
weights in every unit, moving one unit up a level and another down keeps the number of pruned weights —
the parameter-weighted mean sparsity — exactly S (the sum of the levels stays 0).

Search. A (1 + λ) evolution from the all-zero point (uniform): each generation makes ``offspring``
distinct mutants of the parent (each 1-3 level switches, fewer more likely), keeps the ``survivors``
best on a few calibration windows (``first_windows``, drawn anew each generation), then picks the best
of the survivors and the parent (elitist) on every fitness window. The fitness is a callable
(levels, window indices) -> float, lower better: the model-side code (:mod:`pruning.run.evopress`)
measures the KL divergence of the candidate's next-token distribution from the dense model's on
calibration text — never on test or validation text. Seeded (numpy's PCG64), so the same inputs give
the same levels; the state after each generation (:class:`SearchState`) resumes an interrupted search.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pruning.errors import ConfigError

#: fitness of a candidate: (levels (units,), indices of the fitness windows to read) -> lower is better
Fitness = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Ladder:
    """The levels of every unit: ``names`` and ``numel`` (units,), the target S, ``delta`` (weights per
    level), and each unit's lowest and highest level ``lo`` <= 0 <= ``hi`` (units,)."""

    names: tuple[str, ...]
    numel: np.ndarray
    target: float
    delta: int
    lo: np.ndarray
    hi: np.ndarray

    def sparsity(self, levels: np.ndarray) -> np.ndarray:
        """Sparsity of every unit at ``levels`` (units,): ``S + l * delta / numel``."""
        return self.target + np.asarray(levels, dtype=float) * self.delta / self.numel

    def unit_sparsity(self, unit: int, level: int) -> float:
        """Sparsity of unit ``unit`` at ``level`` (one entry of :meth:`sparsity`)."""
        return self.target + level * self.delta / float(self.numel[unit])

    def mean_sparsity(self, levels: np.ndarray) -> float:
        """Parameter-weighted mean sparsity at ``levels`` (S whenever the levels sum to 0)."""
        return float(np.dot(self.sparsity(levels), self.numel) / self.numel.sum())


def make_ladder(names: Sequence[str], numel: Sequence[int], target: float, levels: int = 8,
                min_sparsity: float = 0.0, max_sparsity: float = 0.99) -> Ladder:
    """The ladder of ``names`` at target ``target``: ``delta`` = 0.5 min(S, 1 - S) / levels x the mean unit
    size (the reference uses the q matrix's size), so the average unit moves up to half the way to 0 or 1
    at ``±levels``; smaller units move more per level and run out of levels sooner. Raises ConfigError
    naming a bad target, level count or unit size."""
    numel_arr = np.asarray(numel, dtype=np.int64)
    if len(names) != len(numel_arr) or len(names) < 2:
        raise ConfigError(f"evopress: {len(names)} units with {len(numel_arr)} sizes; accepted: two or more units")
    if (numel_arr <= 0).any():
        raise ConfigError(f"evopress: unit sizes must be positive, got {int(numel_arr.min())}")
    if not 0.0 < target < 1.0:
        raise ConfigError(f"evopress: target sparsity {target} is invalid; accepted: (0, 1)")
    if not isinstance(levels, int) or levels < 1:
        raise ConfigError(f"allocation.evopress_levels: {levels!r} is invalid; accepted: an integer >= 1")
    delta = max(1, int(0.5 * min(target, 1.0 - target) / levels * float(numel_arr.mean())))
    step = delta / numel_arr.astype(float)  # sparsity per level of each unit
    lo = -np.minimum(np.floor((target - min_sparsity) / step + 1e-9), levels).astype(np.int64)
    hi = np.minimum(np.floor((max_sparsity - target) / step + 1e-9), levels).astype(np.int64)
    return Ladder(tuple(names), numel_arr, float(target), delta, np.minimum(lo, 0), np.maximum(hi, 0))


def mutate(levels: np.ndarray, ladder: Ladder, rng: np.random.Generator) -> np.ndarray:
    """A mutant of ``levels``: 1-3 level switches (min of two draws from 1..3, so 1 is likeliest), each
    moving one unit down a level and another up, within every unit's levels; the sum of the levels, and
    so the mean sparsity, is unchanged. Returns a new array."""
    out = np.array(levels, dtype=np.int64, copy=True)
    flips = min(int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    for _ in range(flips):
        down = np.flatnonzero(out > ladder.lo)
        up = np.flatnonzero(out < ladder.hi)
        if len(down) == 0 or len(up) == 0:
            break
        i = int(rng.choice(down))
        choices = up[up != i]
        if len(choices) == 0:
            continue
        j = int(rng.choice(choices))
        out[i] -= 1
        out[j] += 1
    return out


@dataclass
class SearchState:
    """Where a search stands after a generation: the parent, its fitness on every window, the trace
    (one row per generation) and the generator's state; :meth:`to_dict` / :meth:`from_dict` round-trip it
    through JSON (the checkpoint of :mod:`pruning.run.evopress`)."""

    generation: int
    parent: np.ndarray
    fitness: float
    trace: list[dict[str, Any]] = field(default_factory=list)
    rng_state: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"generation": self.generation, "parent": [int(x) for x in self.parent], "fitness": self.fitness,
                "trace": self.trace, "rng_state": self.rng_state}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchState":
        return cls(int(data["generation"]), np.asarray(data["parent"], dtype=np.int64), float(data["fitness"]),
                   list(data.get("trace", [])), data.get("rng_state"))


def search(ladder: Ladder, fitness: Fitness, *, windows: int, generations: int, offspring: int = 16,
           survivors: int = 4, first_windows: int = 2, seed: int = 0, state: SearchState | None = None,
           on_generation: Callable[[SearchState], None] | None = None) -> SearchState:
    """Run (or resume from ``state``) the evolution for ``generations`` generations over a fitness read
    on ``windows`` windows; returns the final state (its ``parent`` is the chosen levels, its ``trace``
    one row per generation: generation, fitness of the parent on every window, candidates scored).
    ``on_generation`` sees the state after each generation (to checkpoint it, or report progress)."""
    for name, value, least in (("evopress_generations", generations, 0), ("evopress_offspring", offspring, 1),
                               ("evopress_survivors", survivors, 1), ("evopress_windows", windows, 1),
                               ("evopress_first_windows", first_windows, 1)):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise ConfigError(f"allocation.{name}: {value!r} is invalid; accepted: an integer >= {least}")
    if first_windows > windows:
        raise ConfigError(f"allocation.evopress_first_windows: {first_windows} exceeds evopress_windows {windows}")
    survivors = min(survivors, offspring)
    every = np.arange(windows)
    rng = np.random.default_rng(seed)
    if state is None:
        parent = np.zeros(len(ladder.names), dtype=np.int64)
        state = SearchState(0, parent, float(fitness(parent, every)))
    elif state.rng_state is not None:
        rng.bit_generator.state = state.rng_state
    if len(state.parent) != len(ladder.names):
        raise ConfigError(f"evopress: a saved search of {len(state.parent)} units cannot resume over "
                          f"{len(ladder.names)} units")
    while state.generation < generations:
        seen = {state.parent.tobytes()}
        children: list[np.ndarray] = []
        for _ in range(offspring * 20):  # distinct mutants; a small ladder may have fewer than asked
            child = mutate(state.parent, ladder, rng)
            if child.tobytes() not in seen:
                seen.add(child.tobytes())
                children.append(child)
            if len(children) == offspring:
                break
        first = np.sort(rng.choice(windows, size=first_windows, replace=False))
        quick = [float(fitness(child, first)) for child in children]
        kept = [children[i] for i in np.argsort(quick, kind="stable")[:survivors]]
        full = [float(fitness(child, every)) for child in kept]
        best = int(np.argmin(full)) if full else -1
        if best >= 0 and full[best] < state.fitness:  # elitist: the parent stays unless beaten
            state.parent, state.fitness = kept[best], full[best]
        state.generation += 1
        state.trace.append({"generation": state.generation, "fitness": state.fitness,
                            "candidates": len(children), "first_best": min(quick) if quick else math.nan})
        state.rng_state = rng.bit_generator.state
        if on_generation is not None:
            on_generation(state)
    return state


def solve_additive(ladder: Ladder, cost: np.ndarray) -> np.ndarray:
    """The levels that minimise ``sum_u cost[u, l_u]`` with ``sum_u l_u = 0`` (the mean sparsity exactly S)
    and every ``l_u`` within its ladder: an exact dynamic programme over the units, the state being the
    running sum of the levels (the knapsack of SPDY's and OWL-free layer-wise allocations under an
    additive-error model: Frantar and Alistarh, "SPDY", ICML 2022). ``cost``: ``(units, 2 L + 1)``, column
    ``L + l`` the cost of unit u at level l (e.g. the KL of the model with u alone at l); entries outside
    a unit's ladder are ignored. Ties go to the level nearer 0, then the lower level. Returns ``(units,)``
    int64 levels. O(units x (2 L units) x (2 L + 1)) time.

    Raises ConfigError when ``cost`` has the wrong shape or a NaN inside a unit's ladder."""
    units = len(ladder.names)
    span = int(max(-ladder.lo.min(), ladder.hi.max()))
    width = cost.shape[1] if cost.ndim == 2 else -1
    if cost.ndim != 2 or cost.shape[0] != units or width % 2 != 1 or (width - 1) // 2 < span:
        raise ConfigError(f"evopress: a cost table of shape {tuple(cost.shape)} for {units} units whose levels reach "
                          f"±{span}; accepted: ({units}, 2 L + 1) with L >= {span}")
    half = (width - 1) // 2
    levels_axis = np.arange(-half, half + 1)
    inside = (levels_axis[None, :] >= ladder.lo[:, None]) & (levels_axis[None, :] <= ladder.hi[:, None])
    if np.isnan(cost[inside]).any():
        raise ConfigError("evopress: the cost table has NaN inside a unit's levels")
    unit_cost = np.where(inside, cost, np.inf)
    # reachable running sums: [-lo_total, hi_total]; offset so index 0 is the lowest sum
    low, high = int(ladder.lo.sum()), int(ladder.hi.sum())
    size = high - low + 1
    best = np.full(size, np.inf)
    best[-low] = 0.0  # the empty sum 0
    choice = np.zeros((units, size), dtype=np.int64)
    # prefer levels near 0 on ties: scan levels in that order and keep strictly better sums only
    order = sorted(range(width), key=lambda j: (abs(levels_axis[j]), levels_axis[j]))
    for u in range(units):
        nxt = np.full(size, np.inf)
        pick = np.zeros(size, dtype=np.int64)
        for j in order:
            c = unit_cost[u, j]
            if not np.isfinite(c):
                continue
            level = int(levels_axis[j])
            shifted = np.full(size, np.inf)
            if level >= 0:
                shifted[level:] = best[: size - level] + c
            else:
                shifted[:level] = best[-level:] + c
            better = shifted < nxt
            nxt[better], pick[better] = shifted[better], level
        best, choice[u] = nxt, pick
    if not np.isfinite(best[-low]):
        raise ConfigError("evopress: no levels sum to 0 within the ladder")
    out = np.zeros(units, dtype=np.int64)
    at = -low
    for u in range(units - 1, -1, -1):
        out[u] = choice[u, at]
        at -= int(out[u])
    return out


def additive_start(ladder: Ladder, fitness: Fitness, windows: int,
                   progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The additive warm start of a search: every unit's cost at every one of its levels measured alone
    (the others at level 0), ``fitness(l e_u) - fitness(0)`` on all ``windows`` fitness windows, then the
    levels that minimise the summed costs with the mean exact (:func:`solve_additive`). Returns (levels
    ``(units,)``, cost table ``(units, 2 L + 1)``). Costs ``sum_u (hi_u - lo_u)`` fitness evaluations, e.g.
    30 blocks x 16 levels = 480 for SmolLM2-135M's blocks; ``progress(done, units)`` after each unit."""
    units = len(ladder.names)
    half = int(max(-ladder.lo.min(), ladder.hi.max()))
    every = np.arange(windows)
    zero = np.zeros(units, dtype=np.int64)
    base = float(fitness(zero, every))
    cost = np.zeros((units, 2 * half + 1))
    for u in range(units):
        for level in range(int(ladder.lo[u]), int(ladder.hi[u]) + 1):
            if level:
                point = zero.copy()
                point[u] = level
                cost[u, half + level] = float(fitness(point, every)) - base
        if progress is not None:
            progress(u + 1, units)
    return solve_additive(ladder, cost), cost
