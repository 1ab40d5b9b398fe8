"""EvoPress (issue 31): the level ladder and the level-switch mutation keep the parameter-weighted mean
sparsity exact and every unit within its bounds; on a designed fitness with one fragile unit the search
moves sparsity away from it; the same seed gives the same levels, and a search stopped and resumed from
its saved state ends where an uninterrupted one does; end to end on a tiny model the strategy runs as a
stage of a run, stores its trace, keeps the mean exact and prunes at the searched levels."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from pruning.allocation.evopress import SearchState, additive_start, make_ladder, mutate, search, solve_additive
from pruning.errors import ConfigError

NUMEL = [100, 25, 25, 100, 300, 300, 300] * 3  # q k v o gate up down, three blocks
NAMES = [f"m{i}" for i in range(len(NUMEL))]


def test_ladder_levels_are_equal_weight_counts_within_the_bounds() -> None:
    ladder = make_ladder(NAMES, NUMEL, 0.7, levels=8, min_sparsity=0.0, max_sparsity=0.99)
    assert ladder.delta == int(0.5 * 0.3 / 8 * np.mean(NUMEL))  # 3 weights per level
    for level in (ladder.lo, ladder.hi):
        s = ladder.sparsity(level)
        assert (s >= -1e-12).all() and (s <= 0.99 + 1e-12).all()
    # a small matrix moves more per level and so has fewer levels; a big one keeps all eight
    assert ladder.hi[1] < ladder.hi[4] == 8 and ladder.lo[4] == -8
    with pytest.raises(ConfigError, match="target sparsity 1.0 is invalid"):
        make_ladder(NAMES, NUMEL, 1.0)
    with pytest.raises(ConfigError, match="evopress_levels: 0 is invalid"):
        make_ladder(NAMES, NUMEL, 0.7, levels=0)
    with pytest.raises(ConfigError, match="two or more units"):
        make_ladder(NAMES[:1], NUMEL[:1], 0.7)


def test_mutations_keep_the_mean_exact_and_the_bounds() -> None:
    ladder = make_ladder(NAMES, NUMEL, 0.7, levels=4)
    rng = np.random.default_rng(0)
    levels = np.zeros(len(NAMES), dtype=np.int64)
    moved = 0
    for _ in range(2000):
        child = mutate(levels, ladder, rng)
        assert child.sum() == 0  # one level down for every level up: the same number of pruned weights
        assert (child >= ladder.lo).all() and (child <= ladder.hi).all()
        assert ladder.mean_sparsity(child) == pytest.approx(0.7, abs=1e-12)
        moved = max(moved, int(np.abs(child - levels).sum()))
        levels = child
    assert 2 <= moved <= 6  # 1-3 switches of two units each
    assert np.abs(levels).max() > 0


def _fitness_with_a_fragile_unit(ladder, fragile: int):
    """Cost of a candidate: every unit's sparsity squared, the fragile unit's 50 times over."""
    weight = np.ones(len(ladder.names))
    weight[fragile] = 50.0

    def fitness(levels: np.ndarray, windows: np.ndarray) -> float:
        return float(np.sum(weight * ladder.sparsity(levels) ** 2)) + 1e-3 * len(windows)

    return fitness


def test_search_moves_sparsity_away_from_a_fragile_unit_and_is_reproducible() -> None:
    ladder = make_ladder(NAMES, NUMEL, 0.7, levels=6)
    fragile = 4  # a gate matrix
    fit = _fitness_with_a_fragile_unit(ladder, fragile)
    result = search(ladder, fit, windows=4, generations=60, offspring=8, survivors=2, first_windows=2, seed=3)
    assert result.parent[fragile] == ladder.lo[fragile]  # as dense as its ladder allows
    assert result.parent.sum() == 0 and ladder.mean_sparsity(result.parent) == pytest.approx(0.7, abs=1e-12)
    fitnesses = [row["fitness"] for row in result.trace]
    assert len(fitnesses) == 60 and fitnesses[-1] < fit(np.zeros(len(NAMES), dtype=np.int64), np.arange(4))
    assert all(b <= a for a, b in zip(fitnesses, fitnesses[1:]))  # elitist: never worse
    again = search(ladder, fit, windows=4, generations=60, offspring=8, survivors=2, first_windows=2, seed=3)
    assert np.array_equal(again.parent, result.parent) and again.trace == result.trace


def test_a_resumed_search_ends_where_an_uninterrupted_one_does() -> None:
    ladder = make_ladder(NAMES, NUMEL, 0.6, levels=4)
    fit = _fitness_with_a_fragile_unit(ladder, 0)
    whole = search(ladder, fit, windows=4, generations=12, offspring=6, survivors=2, seed=1)
    saved: list[str] = []
    search(ladder, fit, windows=4, generations=5, offspring=6, survivors=2, seed=1,
           on_generation=lambda s: saved.append(json.dumps(s.to_dict())))
    state = SearchState.from_dict(json.loads(saved[-1]))
    assert state.generation == 5
    resumed = search(ladder, fit, windows=4, generations=12, offspring=6, survivors=2, seed=1, state=state)
    assert np.array_equal(resumed.parent, whole.parent) and resumed.trace == whole.trace


def test_the_additive_programme_finds_the_exhaustive_optimum() -> None:
    """solve_additive against brute force over every level vector that sums to 0, on random costs and
    ladders whose units run out of levels at different points."""
    rng = np.random.default_rng(0)
    for _ in range(150):
        n, half = int(rng.integers(2, 5)), int(rng.integers(1, 3))
        ladder = make_ladder([f"m{i}" for i in range(n)], rng.integers(50, 200, size=n), 0.5, half)
        cost = rng.random((n, 2 * half + 1))
        levels = solve_additive(ladder, cost)
        assert levels.sum() == 0 and (levels >= ladder.lo).all() and (levels <= ladder.hi).all()
        assert ladder.mean_sparsity(levels) == pytest.approx(0.5, abs=1e-12)
        brute = min(sum(cost[u, half + l[u]] for u in range(n))
                    for l in itertools.product(*[range(ladder.lo[u], ladder.hi[u] + 1) for u in range(n)]) if sum(l) == 0)
        assert sum(cost[u, half + levels[u]] for u in range(n)) == pytest.approx(brute, abs=1e-12)


def test_the_additive_programme_spares_the_expensive_unit_and_names_a_bad_table() -> None:
    ladder = make_ladder(["a", "b", "c"], [100, 100, 100], 0.5, 2)
    # cost of each unit at levels -2..2 relative to level 0 (pruning less helps, more hurts)
    cost = np.array([[-20.0, -10.0, 0.0, 10.0, 20.0],  # a is fragile: each level is worth 10
                     [-0.2, -0.1, 0.0, 0.1, 0.2],  # b is robust
                     [-1.0, -0.5, 0.0, 1.0, 2.0]])  # c in between, and convex
    levels = solve_additive(ladder, cost)
    assert levels.tolist() == [-2, 2, 0]  # a down two levels, b up two, c untouched (ties stay at 0)
    assert solve_additive(ladder, np.zeros((3, 5))).tolist() == [0, 0, 0]
    with pytest.raises(ConfigError, match=r"shape \(3, 3\) for 3 units whose levels reach ±2"):
        solve_additive(ladder, np.zeros((3, 3)))
    bad = np.zeros((3, 5))
    bad[1, 4] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        solve_additive(ladder, bad)


def test_the_additive_start_measures_each_unit_alone_and_solves_the_programme() -> None:
    """On an additive fitness (each unit's cost a convex function of its level, one unit 20x dearer) the
    measured table is the true one and the start is the brute-force optimum; one evaluation for the base
    point and one per (unit, non-zero level)."""
    ladder = make_ladder(["a", "b", "c", "d"], [100, 100, 100, 100], 0.5, 2)
    weight = np.array([20.0, 1.0, 1.0, 0.5])
    calls = []

    def fitness(levels: np.ndarray, windows: np.ndarray) -> float:
        calls.append(len(windows))
        x = np.asarray(levels, dtype=float)
        return 1.0 + float(np.sum(weight * (x + 0.1 * x ** 2)))

    levels, cost = additive_start(ladder, fitness, windows=3)
    assert len(calls) == 1 + 4 * 4 and set(calls) == {3}
    assert cost[0, 2 + 1] == pytest.approx(20.0 * 1.1) and cost[3, 2 - 2] == pytest.approx(0.5 * (-2 + 0.4))
    brute = min(itertools.product(range(-2, 3), repeat=4), key=lambda l: fitness(np.array(l), np.arange(1)) if sum(l) == 0 else np.inf)
    assert levels.tolist() == list(brute) and levels[0] < 0 and levels.sum() == 0


def test_bad_search_knobs_are_named() -> None:
    ladder = make_ladder(NAMES, NUMEL, 0.7)
    fit = _fitness_with_a_fragile_unit(ladder, 0)
    with pytest.raises(ConfigError, match="evopress_first_windows: 5 exceeds evopress_windows 4"):
        search(ladder, fit, windows=4, generations=1, first_windows=5)
    with pytest.raises(ConfigError, match="evopress_offspring: 0 is invalid"):
        search(ladder, fit, windows=4, generations=1, offspring=0)


# ---- end to end on a tiny model ---------------------------------------------------------------------------
@pytest.fixture()
def tiny_dir(tiny_model_dir):
    return tiny_model_dir


def _config(model_dir, **overrides):
    from pruning.config.run_config import RunConfig

    base = RunConfig.from_dict({
        "model": {"name": str(model_dir)},
        "calibration": {"dataset": "wiki", "nsamples": 4, "seqlen": 32, "seed": 0},
        "pruning": {"method": "wanda", "sparsity": 0.6},
        "allocation": {"strategy": "evopress", "evopress_levels": 3, "evopress_generations": 4,
                       "evopress_offspring": 4, "evopress_survivors": 2, "evopress_windows": 4,
                       "evopress_first_windows": 2},
        "evaluation": {"perplexity": ["wiki"], "seqlen": 32, "limit_windows": 2},
    })
    return base.with_overrides(overrides) if overrides else base


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_evopress_runs_as_a_stage_with_an_exact_mean_and_its_trace(tiny_dir, data_dir, method) -> None:
    from pruning.run.evopress import checkpoint_path
    from pruning.run.evopress_trace import trace_from_metrics
    from pruning.run.pipeline import execute_run

    config = _config(tiny_dir, **{"pruning.method": method})
    out = execute_run(config, publish=False)
    assert out.status == "succeeded" and "evopress" in out.timings
    alloc = out.tables["allocation"]
    mean = float((alloc["sparsity_target"] * alloc["numel"]).sum() / alloc["numel"].sum())
    assert mean == pytest.approx(0.6, abs=1e-9)
    assert alloc["unit"].tolist() == alloc["name"].tolist()  # one unit per matrix
    assert alloc["score"].sum() == 0 and set(alloc["score"]) <= set(range(-3, 4))  # the levels
    assert (alloc["sparsity_achieved"] - alloc["sparsity_target"]).abs().max() < 0.05
    trace = trace_from_metrics(out.tables["metrics"])
    assert trace["generation"].tolist() == [1, 2, 3, 4] and trace["fitness"].is_monotonic_decreasing
    assert (trace["fitness"] > 0).all()
    assert not checkpoint_path(config.run_id).exists()  # removed once the levels are chosen
    again = execute_run(config, publish=False)  # same config, same levels and perplexity
    assert again.tables["allocation"]["score"].tolist() == alloc["score"].tolist()
    assert again.tables["perplexity"]["ppl"].tolist() == out.tables["perplexity"]["ppl"].tolist()


def test_evopress_refuses_fewer_calibration_samples_than_fitness_windows(tiny_dir, data_dir) -> None:
    from pruning.run.pipeline import execute_run

    with pytest.raises(ConfigError, match="evopress_windows: 4 fitness windows need as many calibration samples; "
                                          "calibration.nsamples is 2"):
        execute_run(_config(tiny_dir, **{"calibration.nsamples": 2}), publish=False)


def test_on_a_tiny_model_the_search_spares_a_fragile_block(tmp_path, data_dir) -> None:
    """Block 1 of a 3-block model made fragile (its MLP output scaled 30x, so pruning it moves the
    residual stream far): the searched levels leave that block the densest of the three, its scaled matrix
    below the target, with the mean still exact (no search would leave every block at the target)."""
    import torch
    from transformers import AutoTokenizer

    from pruning.model.load import resolve_model, save_model
    from pruning.run.pipeline import execute_run
    from pruning.model.synthetic import random_llama

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m").location)
    model = random_llama(hidden=64, layers=3, intermediate=128, heads=4, kv_heads=2, vocab=len(tokenizer), seed=0)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(30.0)
    path = save_model(model, tokenizer, tmp_path / "fragile")
    config = _config(path, **{"allocation.evopress_generations": 25, "allocation.evopress_offspring": 8,
                              "allocation.evopress_levels": 4, "calibration.nsamples": 6,
                              "allocation.evopress_windows": 6})
    out = execute_run(config, publish=False)
    alloc = out.tables["allocation"]
    per_block = alloc.assign(w=alloc["sparsity_target"] * alloc["numel"]).groupby("block")[["w", "numel"]].sum()
    per_block = per_block["w"] / per_block["numel"]
    assert per_block.idxmin() == 1 and per_block[1] < 0.6 - 0.02, per_block.to_dict()  # the densest block
    down = alloc.set_index("name").at["model.layers.1.mlp.down_proj", "score"]
    assert down < 0  # the scaled matrix itself went below the target
    mean = float((alloc["sparsity_target"] * alloc["numel"]).sum() / alloc["numel"].sum())
    assert mean == pytest.approx(0.6, abs=1e-9)


def test_block_units_with_the_additive_start_spare_the_fragile_block(tmp_path, data_dir) -> None:
    """The same fragile model with one level per block (its matrices share it) and the additive programme
    alone (0 generations): block 1 is the densest, every matrix of a block has the block's sparsity, the
    mean is exact."""
    import torch
    from transformers import AutoTokenizer

    from pruning.model.load import resolve_model, save_model
    from pruning.run.pipeline import execute_run
    from pruning.model.synthetic import random_llama

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m").location)
    model = random_llama(hidden=64, layers=3, intermediate=128, heads=4, kv_heads=2, vocab=len(tokenizer), seed=0)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(30.0)
    path = save_model(model, tokenizer, tmp_path / "fragile")
    config = _config(path, **{"allocation.evopress_generations": 0, "allocation.evopress_units": "block",
                              "allocation.evopress_start": "additive", "allocation.evopress_levels": 4,
                              "calibration.nsamples": 6, "allocation.evopress_windows": 6})
    out = execute_run(config, publish=False)
    assert out.status == "succeeded"
    alloc = out.tables["allocation"]
    per_block = alloc.groupby("block")["sparsity_target"].agg(["min", "max"])
    assert (per_block["max"] - per_block["min"]).abs().max() < 1e-12  # one level per block
    assert per_block["min"].idxmin() == 1 and per_block.at[1, "min"] < 0.6 - 0.02, per_block.to_dict()
    assert set(alloc.groupby("block")["score"].nunique()) == {1}
    mean = float((alloc["sparsity_target"] * alloc["numel"]).sum() / alloc["numel"].sum())
    assert mean == pytest.approx(0.6, abs=1e-9)
    assert _knobs_enter_the_run_id_off_default(config)


def _knobs_enter_the_run_id_off_default(config) -> bool:
    """The new knobs enter the run id only when they leave their defaults."""
    plain = config.with_overrides({"allocation.evopress_units": "matrix", "allocation.evopress_start": "uniform"})
    assert '"evopress_units"' not in plain.canonical_json() and '"evopress_start"' not in plain.canonical_json()
    return plain.run_id != config.run_id


def test_a_runs_trace_is_drawn_in_its_detail(tiny_dir, data_dir) -> None:
    """The app plots fitness against generation for a run that searched (the Runs page's run detail)."""
    import json as _json
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from pruning.run.pipeline import execute_run

    config = _config(tiny_dir)
    execute_run(config)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.session_state["runs_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    charts = [_json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    trace = next(c for c in charts if "EvoPress" in str(c["layout"].get("title", "")))
    from test_app_pages import decode

    assert trace["layout"]["xaxis"]["title"]["text"] == "generation" and decode(trace["data"][0]["x"]) == [1, 2, 3, 4]
