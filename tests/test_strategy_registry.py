"""The allocation strategies' registry (issue 30: strategies had no registry; adding one touched a dozen
files): the config, the allocator, the CLI, the launch form, the grid and the Runs table all read it, and
it has to agree with the config's own list of strategies and fields."""

from __future__ import annotations

from typing import get_args

import pytest

from pruning.allocation.registry import BLOCK_STRATEGIES, STRATEGY_NAMES, STRATEGY_SPECS, strategy_spec
from pruning.config.run_config import AllocationConfig, RunConfig
from pruning.config.allocation import STRATEGY_FIELDS, Strategy


def test_the_registry_names_exactly_the_configs_strategies() -> None:
    assert set(STRATEGY_NAMES) == set(get_args(Strategy)) and len(STRATEGY_NAMES) == len(STRATEGY_SPECS)
    with pytest.raises(KeyError, match="'nope' is not registered; accepted: uniform, linear, owl"):
        strategy_spec("nope")


@pytest.mark.parametrize("spec", STRATEGY_SPECS, ids=lambda s: s.name)
def test_every_field_a_strategy_names_is_a_config_field(spec) -> None:
    fields = set(AllocationConfig.model_fields)
    assert set(spec.fields) <= fields and set(spec.runs_columns) <= fields
    assert {k.removeprefix("allocation.") for k in spec.form_knobs} <= fields
    if spec.required:  # a knob without a default: the config refuses the strategy without it
        assert AllocationConfig.model_fields[spec.required].default is None
        with pytest.raises(ValueError, match=spec.required):
            AllocationConfig(strategy=spec.name)
    assert STRATEGY_FIELDS[spec.name] == spec.fields


@pytest.mark.parametrize("spec", STRATEGY_SPECS, ids=lambda s: s.name)
def test_the_consumers_read_the_registry(spec) -> None:
    from pruning.allocation.core import BLOCK_STRATEGIES as CORE_BLOCK
    from pruning.app_support.formatting import PER_BLOCK_STRATEGIES
    from pruning.app_support.launch import REQUIRED_KNOBS, STRATEGY_FIELDS as FORM
    from pruning.cli.allocate import RUN_STRATEGIES
    from pruning.config.presets import strategy_column
    from pruning.run.stages import wants_calibration

    assert (spec.name in CORE_BLOCK) == (spec.name in PER_BLOCK_STRATEGIES) == spec.per_block
    assert CORE_BLOCK == BLOCK_STRATEGIES
    assert strategy_column(spec.name) == spec.column
    assert FORM.get(spec.name, ()) == spec.form_knobs
    assert REQUIRED_KNOBS.get(spec.name) == (f"allocation.{spec.required}" if spec.required else None)
    assert RUN_STRATEGIES.get(spec.name) == spec.run_only
    overrides = {"allocation.strategy": spec.name, "pruning.method": "magnitude", "pruning.sparsity": 0.5}
    if spec.required:
        overrides[f"allocation.{spec.required}"] = 0 if spec.required == "probe_block" else 0.004
    config = RunConfig.from_dict({"model": {"name": "m"}}).with_overrides(overrides)
    # magnitude reads no calibration: only the strategy's own statistics or search can ask for it
    assert wants_calibration(config) == spec.calibration
