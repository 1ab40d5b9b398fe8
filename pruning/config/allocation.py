"""Layer-wise sparsity allocation settings of a run (:class:`AllocationConfig`, the ``allocation``
section of :class:`pruning.config.run_config.RunConfig`; pruning.allocation reads it)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from pruning.allocation.registry import STRATEGY_NAMES, STRATEGY_SPECS, strategy_names, strategy_spec
from pruning.config.sections import ConfigSection, matching
from pruning.errors import ConfigError
from pruning.config.precision import DEFAULT_EIG_DTYPE, EigDtypeName
from pruning.config.presets import MATRIX_TYPES, get_preset, parse_score_groups

#: the built-in strategies (pruning.allocation.registry); a config accepts every registered one
STRATEGIES: tuple[str, ...] = STRATEGY_NAMES
MetricName = Annotated[str, matching(r"(hessian_)?[a-z][a-z0-9_]*", "must be a spectral-table column such as "
                                      "'alpha_peak', 'alpha', 'stable_rank', 'hessian_alpha'")]


#: the allocation fields each strategy reads; the others keep defaults it never used (the Compare page
#: leaves them out of a run's config differences: a uniform run has no metric, an OWL run no preset)
STRATEGY_FIELDS: dict[str, tuple[str, ...]] = {spec.name: spec.fields for spec in STRATEGY_SPECS}
#: EvoPress's knobs and their defaults (pruning.allocation.evopress; the run ids of configs that leave
#: them at these values do not change)
EVOPRESS_DEFAULTS: dict[str, int | str] = {"evopress_levels": 8, "evopress_generations": 50, "evopress_offspring": 16,
                                           "evopress_survivors": 4, "evopress_windows": 8, "evopress_first_windows": 2,
                                           "evopress_units": "matrix", "evopress_start": "uniform"}


class AllocationConfig(ConfigSection):
    """Layer-wise sparsity allocation (see pruning.allocation and DESIGN.md 'Allocation').

    ``preset`` (a notes column header such as ``"QKVout + split"``) sets ``score_groups`` and
    ``granularity``; giving both a preset and different explicit values is an error.
    """

    strategy: str = Field("uniform", max_length=32)
    metric: MetricName = Field("alpha_peak", max_length=64)
    # a second spectral metric averaged with ``metric`` after each is min-max normalised (strategy
    # 'linear' only; pruning.allocation.linear); None = one metric, as before the field existed
    metric_mix: MetricName | None = Field(None, max_length=64)
    higher_prunes_more: bool = True
    epsilon: float = Field(0.2, ge=0.0, lt=1.0)
    preset: str | None = Field(None, max_length=256)
    score_groups: tuple[str, ...] = MATRIX_TYPES
    granularity: Literal["block", "split", "matrix"] = "block"
    min_sparsity: float = Field(0.0, ge=0.0, lt=1.0)
    max_sparsity: float = Field(0.99, gt=0.0, le=1.0)
    owl_threshold_m: float = Field(5.0, gt=0.0, le=1000.0)
    owl_lambda: float = Field(0.08, ge=0.0, lt=1.0)
    # DLP (Chen et al., ICML 2025): sparsity spread 2 alpha around S; alpha 0.15 in the reference
    # code and every published table. The per-block unimportance is the median (the paper) or the
    # mean (the reference's unstructured path) of the block's Wanda scores (pruning.allocation.dlp).
    dlp_alpha: float = 0.15
    dlp_statistic: Literal["median", "mean"] = "median"
    # ATP (Huang et al., ICML 2025): common difference per block of the sparsity progression; no
    # default in the paper (searched from 0.002 in steps of 0.002), so strategy 'depth' needs it.
    depth_beta: float | None = None
    # the block a 'probe' run prunes (at pruning.sparsity; every other block stays dense): one point of a
    # per-block sensitivity profile (pruning.allocation.probe)
    probe_block: int | None = Field(None, ge=0, le=100_000)
    # EvoPress (Sieberling et al., ICML 2025): per-matrix sparsity levels searched by evolution on the KL
    # divergence from the dense model on calibration windows (pruning.allocation.evopress, pruning.run.evopress)
    evopress_levels: int = Field(8, ge=1, le=64)
    evopress_generations: int = Field(50, ge=0, le=100_000)
    evopress_offspring: int = Field(16, ge=1, le=4096)
    evopress_survivors: int = Field(4, ge=1, le=4096)
    evopress_windows: int = Field(8, ge=1, le=100_000)
    evopress_first_windows: int = Field(2, ge=1, le=100_000)
    # what gets a level: every prunable matrix (the paper), or every block (its matrices share the level)
    evopress_units: Literal["matrix", "block"] = "matrix"
    # where the evolution starts: uniform (the paper), or "additive": each unit's KL at each level measured
    # alone, and the levels that minimise their sum with the mean exact (SPDY's dynamic programme;
    # pruning.allocation.evopress.solve_additive). With evopress_generations 0 that programme is the result.
    evopress_start: Literal["uniform", "additive"] = "uniform"
    # ours v4b (strategy 'kl_slope'): the sparsity spread 2 kl_spread around S, from each block's measured
    # marginal KL per pruned weight (pruning.allocation.rules.kl_slope)
    kl_spread: float = Field(0.1, ge=0.0, lt=1.0)
    # eigen-solver precision of the weight and Hessian spectra the allocation reads. float64 is
    # device-independent (agrees with a float64 SVD of W within 1e-3 in every metric); float32
    # loses the small eigenvalues that decide alpha_peak (pruning.spectral.esd) and is an option only.
    eig_dtype: EigDtypeName = DEFAULT_EIG_DTYPE

    @property
    def metrics(self) -> tuple[str, ...]:
        """The spectral metric columns the allocation reads: ``metric``, then ``metric_mix`` if set."""
        return (self.metric,) if self.metric_mix is None else (self.metric, self.metric_mix)

    @property
    def wants_hessian(self) -> bool:
        """Whether a ``linear`` allocation reads a Hessian metric (``hessian_*``) in either position,
        so the run needs calibration and the Hessian spectra."""
        return self.strategy == "linear" and any(m.startswith("hessian_") for m in self.metrics)

    @field_validator("strategy")
    @classmethod
    def _registered_strategy(cls, v: str) -> str:
        if v not in strategy_names():
            raise ValueError(f"{v!r} is not a registered strategy; accepted: {', '.join(strategy_names())}")
        return v

    @field_validator("dlp_alpha", "depth_beta")
    @classmethod
    def _spread_range(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and 0.0 <= v < 1.0):
            raise ValueError("accepted range [0, 1)")
        return v

    @field_validator("score_groups", mode="before")
    @classmethod
    def _groups(cls, v: Any) -> tuple[str, ...]:
        try:
            return parse_score_groups(v)
        except ConfigError as exc:
            raise ValueError(str(exc).split(": ", 1)[1]) from None

    @field_validator("preset")
    @classmethod
    def _preset_known(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return get_preset(v).name
        except ConfigError as exc:
            raise ValueError(str(exc).split(": ", 1)[1]) from None

    @model_validator(mode="after")
    def _apply_preset(self) -> "AllocationConfig":
        if self.min_sparsity > self.max_sparsity:
            raise ValueError(f"min_sparsity {self.min_sparsity} exceeds max_sparsity {self.max_sparsity}")
        required = strategy_spec(self.strategy).required
        if self.strategy == "depth" and self.depth_beta is None:
            raise ValueError("strategy 'depth' needs depth_beta (ATP's common difference per block, "
                             "accepted range [0, 1); the paper searches 0.002, 0.004, ...)")
        if required is not None and getattr(self, required, None) is None:
            raise ValueError(f"strategy {self.strategy!r} needs {required} (it has no default)")
        if self.evopress_first_windows > self.evopress_windows:
            raise ValueError(f"evopress_first_windows {self.evopress_first_windows} exceeds evopress_windows "
                             f"{self.evopress_windows}; accepted: at most evopress_windows")
        if self.strategy == "probe" and self.probe_block is None:
            raise ValueError("strategy 'probe' needs probe_block (the one block it prunes, 0 = the first)")
        if self.probe_block is not None and self.strategy != "probe":
            raise ValueError(f"probe_block: {self.probe_block} is read only by strategy 'probe' (strategy is "
                             f"{self.strategy!r}); accepted with {self.strategy!r}: None")
        if self.metric_mix is not None:
            if self.strategy != "linear":
                raise ValueError(f"metric_mix: {self.metric_mix!r} is read only by strategy 'linear' (strategy is "
                                 f"{self.strategy!r}); accepted with {self.strategy!r}: None")
            if self.metric_mix == self.metric:
                raise ValueError(f"metric_mix: {self.metric_mix!r} equals metric; accepted: None or a spectral "
                                 "metric other than metric")
        if self.preset is not None:
            preset = get_preset(self.preset)
            explicit = self.model_fields_set
            if "score_groups" in explicit and tuple(self.score_groups) != preset.score_groups:
                raise ValueError(
                    f"preset {preset.name!r} fixes score_groups={','.join(preset.score_groups)}, "
                    f"but score_groups={','.join(self.score_groups)} was also given"
                )
            if "granularity" in explicit and self.granularity != preset.granularity:
                raise ValueError(
                    f"preset {preset.name!r} fixes granularity={preset.granularity!r}, "
                    f"but granularity={self.granularity!r} was also given"
                )
            object.__setattr__(self, "score_groups", preset.score_groups)
            object.__setattr__(self, "granularity", preset.granularity)
        return self
