"""One registry of the allocation strategies (issue 30: adding DLP touched 12 files, and each of
``probe`` and ``evopress`` added an if-branch in several more): what every part of the product needs to
know about a strategy, in one place, like the method registry (:mod:`pruning.methods.registry`). The
config validates ``allocation.strategy`` against it, :func:`pruning.allocation.allocate` calls the
strategy's ``rule``, a run's allocation stage calls its ``prepare`` hook (the statistics or the search it
needs from the model) and measures spectra when it reads them, and the CLI, the launch form, the grid
and the Runs table read its columns and knobs. A new strategy is one :func:`register_strategy` call.

Rules and hooks are given as callables or as ``"module:function"`` text, imported on first use, so the
registry stays pure data (no torch, pandas or pydantic) and the config and the pages read it cheaply.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ContextManager, Literal, get_args

from pruning.registries import Registry, resolve

#: what every strategy is bounded by (the exact bounded solve, pruning.allocation.solve)
_BOUNDS = ("min_sparsity", "max_sparsity")
#: the position metric of ``linear``: a matrix's block index (pruning.allocation.linear), accepted
#: wherever a spectral metric is; here so that a job submit checks metric names without pandas
DEPTH_METRIC = "depth"
#: the units a strategy allocates: the config's granularity (block, split or matrix), or always blocks
#: (its statistics are per block), or always matrices (its search gives every matrix a level)
Units = Literal["config", "block", "matrix"]
UNITS: tuple[str, ...] = get_args(Units)
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class StrategySpec:
    """One allocation strategy.

    ``column``: its perplexity-grid column (None: ``linear`` runs are columns of their preset and
    metric); ``units``: what gets one sparsity (:data:`UNITS`); ``fields``: the
    :class:`~pruning.config.allocation.AllocationConfig` fields it reads (the others keep defaults it
    never used: Compare leaves them out); ``rule``: ``rule(ctx: UnitContext) -> UnitAllocation``
    (:mod:`pruning.allocation.rules`), the sparsity per unit; ``prepare``: a run hook
    ``prepare(step: AllocationStep) -> dict`` that measures what the rule reads in ``ctx.inputs`` from the
    model (OWL's outlier ratios, DLP's unimportance, EvoPress's search; None: nothing); ``spectra``: the
    rule reads the spectral metrics (the run measures them first); ``form_knobs``: dotted keys the launch
    form shows only under it; ``required``: a knob without a default; ``calibration``: it needs
    calibration tokens (its statistics or its search; ``linear`` needs them only for a Hessian metric);
    ``run_only``: why the ``allocate`` command cannot compute it (it needs the model during a run), None
    when it can; ``runs_columns``: its knobs as columns of the Runs table; ``source``: the paper."""

    name: str
    column: str | None
    units: Units
    fields: tuple[str, ...]
    rule: Callable[..., Any] | str
    prepare: Callable[..., Any] | str | None = None
    spectra: bool = False
    form_knobs: tuple[str, ...] = ()
    required: str | None = None
    calibration: bool = False
    run_only: str | None = None
    runs_columns: tuple[str, ...] = ()
    source: str = ""
    keeps_mean: bool = True

    @property
    def per_block(self) -> bool:
        """Its units are transformer blocks whatever the granularity."""
        return self.units == "block"

    def resolved_rule(self) -> Callable[..., Any]:
        """The rule as a callable (imports ``"module:function"`` on first use)."""
        return resolve(self.rule)

    def resolved_prepare(self) -> Callable[..., Any] | None:
        """The run hook as a callable, or None when the rule reads nothing from the model."""
        return None if self.prepare is None else resolve(self.prepare)


_RULES = "pruning.allocation.rules"
_HOOKS = "pruning.run.allocation_inputs"
STRATEGY_SPECS: tuple[StrategySpec, ...] = (
    StrategySpec("uniform", "uniform", "config", _BOUNDS, f"{_RULES}:uniform", source="every matrix at the target"),
    StrategySpec("linear", None, "config",
                 ("metric", "metric_mix", "higher_prunes_more", "epsilon", "preset", "score_groups", "granularity",
                  *_BOUNDS, "eig_dtype"), f"{_RULES}:linear_rule", spectra=True,
                 form_knobs=("allocation.metric_mix",), source="AlphaPruning, Lu et al., NeurIPS 2024"),
    StrategySpec("owl", "OWL", "block", ("owl_threshold_m", "owl_lambda", *_BOUNDS), f"{_RULES}:owl",
                 prepare=f"{_HOOKS}:owl_inputs", calibration=True,
                 runs_columns=("owl_lambda",), source="OWL, Yin et al. 2023"),
    StrategySpec("dlp", "DLP", "block", ("dlp_alpha", "dlp_statistic", *_BOUNDS), f"{_RULES}:dlp",
                 prepare=f"{_HOOKS}:dlp_inputs",
                 form_knobs=("allocation.dlp_alpha", "allocation.dlp_statistic"), calibration=True,
                 runs_columns=("dlp_alpha", "dlp_statistic"), source="DLP, Chen et al., ICML 2025"),
    StrategySpec("depth", "ATP", "block", ("depth_beta", *_BOUNDS), f"{_RULES}:depth", form_knobs=("allocation.depth_beta",),
                 required="depth_beta", runs_columns=("depth_beta",),
                 source="ATP, Huang et al., ICML 2025, arXiv:2502.14770"),
    StrategySpec("evopress", "EvoPress", "matrix",
                 ("evopress_levels", "evopress_generations", "evopress_offspring", "evopress_survivors",
                  "evopress_windows", "evopress_first_windows", "evopress_units", "evopress_start", *_BOUNDS),
                 f"{_RULES}:evopress", prepare=f"{_HOOKS}:evopress_inputs",
                 form_knobs=("allocation.evopress_generations", "allocation.evopress_offspring",
                             "allocation.evopress_levels", "allocation.evopress_windows",
                             "allocation.evopress_units", "allocation.evopress_start"),
                 calibration=True,
                 run_only="searches levels on the model (use `python -m pruning run --set allocation.strategy=evopress`)",
                 source="EvoPress, Sieberling et al., ICML 2025, arXiv:2410.14649"),
    StrategySpec("kl_slope", "KL slope", "block", ("kl_spread", "evopress_windows", *_BOUNDS), f"{_RULES}:kl_slope",
                 prepare=f"{_HOOKS}:kl_slope_inputs", form_knobs=("allocation.kl_spread", "allocation.evopress_windows"),
                 calibration=True, runs_columns=("kl_spread",),
                 run_only="measures each block's KL slope on the model (use `python -m pruning run --set "
                          "allocation.strategy=kl_slope`)",
                 source="ours v4b: OWL's additive form on each block's measured marginal KL (docs/allocation.md)"),
    StrategySpec("probe", "block probe", "block", ("probe_block",), f"{_RULES}:probe", form_knobs=("allocation.probe_block",),
                 required="probe_block",
                 run_only="prunes one block of a run (use `python -m pruning run --set allocation.strategy=probe "
                          "--set allocation.probe_block=N`)",
                 source="one block at the target, the others dense: per-block sensitivity", keeps_mean=False),
)
#: the built-in strategies' names and the block strategies among them, as shipped (module constants for
#: import-time readers; what is registered now: strategy_names(), block_strategies())
STRATEGY_NAMES: tuple[str, ...] = tuple(s.name for s in STRATEGY_SPECS)
BLOCK_STRATEGIES: tuple[str, ...] = tuple(s.name for s in STRATEGY_SPECS if s.per_block)


def _validate(spec: StrategySpec) -> None:
    if not isinstance(spec.name, str) or not _NAME.fullmatch(spec.name):
        raise ValueError(f"strategy name {spec.name!r} is invalid; accepted: 1-32 characters of a-z, 0-9 and _ "
                         "starting with a letter")
    if spec.units not in UNITS:
        raise ValueError(f"strategy {spec.name!r}: units {spec.units!r} is invalid; accepted: {', '.join(UNITS)}")
    if spec.rule is None:
        raise ValueError(f"strategy {spec.name!r} has no rule; accepted: a callable or 'module:function'")
    if spec.required is not None and spec.required not in spec.fields:
        raise ValueError(f"strategy {spec.name!r}: required knob {spec.required!r} is not among its fields "
                         f"{list(spec.fields)}")


_REGISTRY: Registry[StrategySpec] = Registry(
    "strategy", _validate,
    lambda name, names: KeyError(f"allocation strategy {name!r} is not registered; accepted: {', '.join(names)}"))


def register_strategy(spec: StrategySpec, *, replace: bool = False) -> StrategySpec:
    """Add ``spec`` to the registry (``replace=True`` to swap an existing entry); returns it. Raises
    ValueError on an invalid name or units, a missing rule, or a name already registered."""
    return _REGISTRY.register(spec, replace=replace)


def unregister_strategy(name: str) -> StrategySpec:
    """Remove a strategy (tests, plug-ins); returns its entry."""
    return _REGISTRY.unregister(name)


def strategy_registered(spec: StrategySpec, *, replace: bool = False) -> ContextManager[StrategySpec]:
    """Register ``spec`` for the duration of a ``with`` block, then restore the previous entry (or remove it)."""
    return _REGISTRY.registered(spec, replace=replace)


def strategy_names() -> tuple[str, ...]:
    """The registered strategies' names, in registration order (the built-ins first)."""
    return _REGISTRY.names()


def registered_specs() -> tuple[StrategySpec, ...]:
    """The registered strategies, in registration order."""
    return _REGISTRY.specs()


def block_strategies() -> tuple[str, ...]:
    """The registered strategies whose units are always transformer blocks."""
    return tuple(s.name for s in _REGISTRY.specs() if s.per_block)


def strategy_spec(name: str) -> StrategySpec:
    """The registered strategy ``name``; KeyError naming the accepted ones."""
    return _REGISTRY.get(name)


for _spec in STRATEGY_SPECS:
    register_strategy(_spec)
