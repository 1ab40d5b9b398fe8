"""The allocation strategies' registry (issue 30: strategies had no registry; adding one touched a dozen
files): the config, the allocator, the CLI, the launch form, the grid and the Runs table all read it, and
it has to agree with the config's own list of strategies and fields."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pruning.allocation.registry import (
    BLOCK_STRATEGIES, STRATEGY_NAMES, STRATEGY_SPECS, StrategySpec, register_strategy, strategy_names,
    strategy_registered, strategy_spec,
)
from pruning.allocation.rules import UnitAllocation, UnitContext, additive
from pruning.config.run_config import AllocationConfig, RunConfig
from pruning.config.allocation import STRATEGIES, STRATEGY_FIELDS
from pruning.errors import ConfigError


def test_the_registry_names_exactly_the_configs_strategies() -> None:
    assert STRATEGY_NAMES == STRATEGIES == strategy_names()[:len(STRATEGY_NAMES)]
    assert len(STRATEGY_NAMES) == len(STRATEGY_SPECS) == 8
    with pytest.raises(KeyError, match="'nope' is not registered; accepted: uniform, linear, owl"):
        strategy_spec("nope")
    with pytest.raises(ValueError, match="'nope' is not a registered strategy; accepted: uniform, linear, owl"):
        AllocationConfig(strategy="nope")


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


# ---- a new strategy through the registry alone ---------------------------------------------------------------


def front_heavy(ctx: UnitContext) -> UnitAllocation:
    """A test strategy: the first half of the blocks pruned ``depth_beta`` above S, the second half below
    (the opposite of ATP's ramp), mean exactly S through the shared additive solve."""
    blocks = ctx.unit_frame["block"].to_numpy(dtype=float)
    front = np.where(blocks < blocks.max() / 2, 1.0, -1.0)
    numel = ctx.numel
    deviation = ctx.config.depth_beta * (front - np.dot(front, numel) / numel.sum())
    return additive(ctx, blocks, deviation)


FRONT = StrategySpec("front_heavy", "front heavy", "block", ("depth_beta", "min_sparsity", "max_sparsity"),
                     front_heavy, required="depth_beta", source="a test: the registry alone adds a strategy")


def _matrices(blocks: int = 4) -> pd.DataFrame:
    rows = [{"block": b, "matrix_type": t, "name": f"model.layers.{b}.{t}", "numel": n}
            for b in range(blocks) for t, n in (("q", 100), ("k", 25), ("v", 25), ("o", 100), ("down", 300))]
    return pd.DataFrame(rows)


def test_a_registered_strategy_is_configured_allocated_and_offered_without_other_edits() -> None:
    from pruning.allocation import allocate
    from pruning.app_support.launch import form_field

    with strategy_registered(FRONT):
        config = AllocationConfig(strategy="front_heavy", depth_beta=0.1)
        out = allocate(_matrices(), config, 0.5)
        per_block = out.groupby("block")["sparsity"].first().round(12).tolist()
        assert per_block == [0.6, 0.6, 0.4, 0.4]  # blocks 0, 1 < 3 / 2: +0.1; blocks 2, 3: -0.1
        assert float((out["sparsity"] * out["numel"]).sum() / out["numel"].sum()) == pytest.approx(0.5, abs=1e-12)
        assert "front_heavy" in form_field("allocation.strategy")[2]["options"]
        with pytest.raises(ValueError, match="strategy 'front_heavy' needs depth_beta"):
            AllocationConfig(strategy="front_heavy")
        with pytest.raises(ValueError, match="'front_heavy' is already registered"):
            register_strategy(FRONT)
    with pytest.raises(ValueError, match="'front_heavy' is not a registered strategy"):
        AllocationConfig(strategy="front_heavy", depth_beta=0.1)
    assert "front_heavy" not in form_field("allocation.strategy")[2]["options"]


def test_a_rule_that_misses_the_target_or_the_units_is_refused() -> None:
    from pruning.allocation import allocate

    def off_target(ctx: UnitContext) -> UnitAllocation:
        n = len(ctx.numel)
        return UnitAllocation(np.zeros(n), np.ones(n), np.full(n, ctx.target + 0.01))

    def short(ctx: UnitContext) -> UnitAllocation:
        return UnitAllocation(np.zeros(1), np.ones(1), np.full(1, ctx.target))

    for rule, message in ((off_target, "mean sparsity 0.51"), (short, r"shape \(1,\); accepted: one value per unit, \(4,\)")):
        with strategy_registered(StrategySpec("bad", None, "block", (), rule)):
            with pytest.raises(ConfigError, match=message):
                allocate(_matrices(), AllocationConfig(strategy="bad"), 0.5)
    with pytest.raises(ValueError, match="units 'layer' is invalid; accepted: config, block, matrix"):
        register_strategy(StrategySpec("bad", None, "layer", (), off_target))  # type: ignore[arg-type]


def test_a_registered_strategy_runs_end_to_end_and_the_cli_allocates_it(tiny_model_dir, data_dir, tmp_path) -> None:
    """A run of the new strategy prunes each block at the sparsity its rule gave (the allocation table the
    run stores), and ``python -m pruning allocate`` computes the same table from a spectra file."""
    from pruning.cli import main
    from pruning.run.pipeline import execute_run

    config = RunConfig.from_dict({
        "model": {"name": str(tiny_model_dir)},
        "calibration": {"dataset": "wiki", "nsamples": 4, "seqlen": 64, "seed": 0},
        "pruning": {"method": "magnitude", "sparsity": 0.5},
        "allocation": {"strategy": "uniform"},
        "evaluation": {"perplexity": ["wiki"], "seqlen": 64, "limit_windows": 2},
    })
    with strategy_registered(FRONT):
        run = execute_run(config.with_overrides({"allocation.strategy": "front_heavy", "allocation.depth_beta": 0.2}),
                          publish=False)
        assert run.status == "succeeded", run.error
        alloc = run.tables["allocation"]
        blocks = sorted(alloc["block"].unique())
        half = max(blocks) / 2
        for block, group in alloc.groupby("block"):
            want = 0.5 + (0.2 if block < half else -0.2) if len(blocks) % 2 == 0 else None
            if want is not None:
                assert group["sparsity_target"].round(9).eq(round(want, 9)).all()
            # magnitude keeps its matrices' targets (up to rounding to whole weights)
            assert (group["sparsity_achieved"] - group["sparsity_target"]).abs().max() < 0.02
        assert alloc.loc[alloc["block"] < half, "sparsity_achieved"].min() > alloc.loc[alloc["block"] >= half,
                                                                                          "sparsity_achieved"].max()
        table = _matrices()
        table.to_csv(tmp_path / "m.csv", index=False)
        assert main(["allocate", "--spectra", str(tmp_path / "m.csv"), "--sparsity", "0.5", "--strategy", "front_heavy",
                     "--depth-beta", "0.1", "--out", str(tmp_path / "a.csv")]) == 0
        assert pd.read_csv(tmp_path / "a.csv").groupby("block")["sparsity"].first().round(12).tolist() == [0.6, 0.6, 0.4, 0.4]
