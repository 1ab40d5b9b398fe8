"""One registry of the allocation strategies (issue 30: adding DLP touched 12 files, and each of
``probe`` and ``evopress`` added an if-branch in several more): what every part of the product needs to
know about a strategy, in one place. Pure data (no torch, pandas or pydantic), so the config, the CLI and
the pages read it cheaply. The formulas live in one module each (:mod:`pruning.allocation`);
``pruning.config.allocation.Strategy`` must name exactly these strategies (a test holds them together).
"""

from __future__ import annotations

from dataclasses import dataclass

#: what every strategy is bounded by (the exact bounded solve, pruning.allocation.solve)
_BOUNDS = ("min_sparsity", "max_sparsity")
#: the position metric of ``linear``: a matrix's block index (pruning.allocation.linear), accepted
#: wherever a spectral metric is; here so that a job submit checks metric names without pandas
DEPTH_METRIC = "depth"


@dataclass(frozen=True)
class StrategySpec:
    """One allocation strategy.

    ``column``: its perplexity-grid column (None: ``linear`` runs are columns of their preset and
    metric); ``per_block``: its units are transformer blocks whatever the granularity; ``fields``: the
    :class:`~pruning.config.allocation.AllocationConfig` fields it reads (the others keep defaults it
    never used: Compare leaves them out); ``form_knobs``: dotted keys the launch form shows only under
    it; ``required``: a knob without a default; ``calibration``: it needs calibration tokens (its
    statistics or its search; ``linear`` needs them only for a Hessian metric); ``run_only``: why the
    ``allocate`` command cannot compute it (it needs the model during a run), None when it can;
    ``runs_columns``: its knobs as columns of the Runs table; ``source``: the paper."""

    name: str
    column: str | None
    per_block: bool
    fields: tuple[str, ...]
    form_knobs: tuple[str, ...] = ()
    required: str | None = None
    calibration: bool = False
    run_only: str | None = None
    runs_columns: tuple[str, ...] = ()
    source: str = ""


STRATEGY_SPECS: tuple[StrategySpec, ...] = (
    StrategySpec("uniform", "uniform", False, _BOUNDS, source="every matrix at the target"),
    StrategySpec("linear", None, False,
                 ("metric", "metric_mix", "higher_prunes_more", "epsilon", "preset", "score_groups", "granularity",
                  *_BOUNDS, "eig_dtype"),
                 form_knobs=("allocation.metric_mix",), source="AlphaPruning, Lu et al., NeurIPS 2024"),
    StrategySpec("owl", "OWL", True, ("owl_threshold_m", "owl_lambda", *_BOUNDS), calibration=True,
                 runs_columns=("owl_lambda",), source="OWL, Yin et al. 2023"),
    StrategySpec("dlp", "DLP", True, ("dlp_alpha", "dlp_statistic", *_BOUNDS),
                 form_knobs=("allocation.dlp_alpha", "allocation.dlp_statistic"), calibration=True,
                 runs_columns=("dlp_alpha", "dlp_statistic"), source="DLP, Chen et al., ICML 2025"),
    StrategySpec("depth", "ATP", True, ("depth_beta", *_BOUNDS), form_knobs=("allocation.depth_beta",),
                 required="depth_beta", runs_columns=("depth_beta",),
                 source="ATP, Huang et al., ICML 2025, arXiv:2502.14770"),
    StrategySpec("evopress", "EvoPress", False,
                 ("evopress_levels", "evopress_generations", "evopress_offspring", "evopress_survivors",
                  "evopress_windows", "evopress_first_windows", "evopress_units", "evopress_start", *_BOUNDS),
                 form_knobs=("allocation.evopress_generations", "allocation.evopress_offspring",
                             "allocation.evopress_levels", "allocation.evopress_windows",
                             "allocation.evopress_units", "allocation.evopress_start"),
                 calibration=True,
                 run_only="searches levels on the model (use `python -m pruning run --set allocation.strategy=evopress`)",
                 source="EvoPress, Sieberling et al., ICML 2025, arXiv:2410.14649"),
    StrategySpec("probe", "block probe", True, ("probe_block",), form_knobs=("allocation.probe_block",),
                 required="probe_block",
                 run_only="prunes one block of a run (use `python -m pruning run --set allocation.strategy=probe "
                          "--set allocation.probe_block=N`)",
                 source="one block at the target, the others dense: per-block sensitivity"),
)
STRATEGY_BY_NAME: dict[str, StrategySpec] = {s.name: s for s in STRATEGY_SPECS}
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGY_BY_NAME)
#: strategies whose units are always transformer blocks
BLOCK_STRATEGIES: tuple[str, ...] = tuple(s.name for s in STRATEGY_SPECS if s.per_block)


def strategy_spec(name: str) -> StrategySpec:
    """The registered strategy ``name``; KeyError naming the accepted ones."""
    try:
        return STRATEGY_BY_NAME[name]
    except KeyError:
        raise KeyError(f"allocation strategy {name!r} is not registered; accepted: {', '.join(STRATEGY_NAMES)}") from None
