"""Ours v4b, strategy ``kl_slope`` (issue 31): each block's marginal KL per pruned weight at the target,
measured on the model, mapped by OWL's additive form — in the rule (known numbers), in the config (its
knob keeps old run ids) and end to end on a tiny model with one block made fragile."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pruning.allocation import allocate, allocation_config
from pruning.config.run_config import RunConfig
from pruning.errors import ConfigError


def _matrices(blocks: int = 4) -> pd.DataFrame:
    return pd.DataFrame([{"block": b, "matrix_type": t, "name": f"model.layers.{b}.{t}", "numel": 100}
                         for b in range(blocks) for t in ("q", "down")])


def test_a_steeper_block_is_pruned_less_on_the_log_scale() -> None:
    """Slopes 100, 1, 1, 1: log scores 4.61, 0, 0, 0 -> min-max to [0.2, 0, 0, 0] (2 x 0.1) -> centred
    [0.15, -0.05, -0.05, -0.05] -> the steep block 15 points below S, the others 5 above. On the raw scale
    (no log) the result would be the same here; with slopes 100, 10, 1, 1 it is not: 10 sits halfway (log)."""
    config = allocation_config(strategy="kl_slope", kl_spread=0.1)
    out = allocate(_matrices(), config, 0.5, inputs={"kl_slope": {0: 100.0, 1: 1.0, 2: 1.0, 3: 1.0}})
    per_block = out.groupby("block")["sparsity"].first()
    assert per_block.tolist() == pytest.approx([0.35, 0.55, 0.55, 0.55], abs=1e-12)
    out = allocate(_matrices(), config, 0.5, inputs={"kl_slope": {0: 100.0, 1: 10.0, 2: 1.0, 3: 1.0}})
    per_block = out.groupby("block")["sparsity"].first()
    # scaled [0.2, 0.1, 0, 0], mean 0.075 -> deviations [-0.125, -0.025, +0.075, +0.075]
    assert per_block.tolist() == pytest.approx([0.375, 0.475, 0.575, 0.575], abs=1e-12)
    assert out.groupby("block")["score"].first().tolist() == [100.0, 10.0, 1.0, 1.0]


def test_noise_at_or_below_zero_and_missing_blocks() -> None:
    config = allocation_config(strategy="kl_slope", kl_spread=0.1)
    out = allocate(_matrices(), config, 0.5, inputs={"kl_slope": {0: 4.0, 1: -0.5, 2: 0.0, 3: 1.0}})
    per_block = out.groupby("block")["sparsity"].first()
    # -0.5 and 0 count as 1.0 (the smallest positive slope): as cheap as block 3, not cheaper
    assert per_block[1] == per_block[2] == per_block[3] > 0.5 > per_block[0]
    assert per_block.tolist() == pytest.approx([0.35, 0.55, 0.55, 0.55], abs=1e-12)
    mean = float((out["sparsity"] * out["numel"]).sum() / out["numel"].sum())
    assert math.isclose(mean, 0.5, abs_tol=1e-12)
    with pytest.raises(ConfigError, match=r"kl_slope: missing blocks \[3\]"):
        allocate(_matrices(), config, 0.5, inputs={"kl_slope": {0: 1.0, 1: 1.0, 2: 1.0}})
    with pytest.raises(ConfigError, match="'kl_slope' needs each block's measured KL slope"):
        allocate(_matrices(), config, 0.5)


def test_its_knob_keeps_every_other_run_id() -> None:
    base = RunConfig.from_dict({"model": {"name": "m"}, "pruning": {"method": "wanda", "sparsity": 0.7}})
    assert "kl_spread" not in base.canonical_json()
    a = base.with_overrides({"allocation.strategy": "kl_slope"})
    b = base.with_overrides({"allocation.strategy": "kl_slope", "allocation.kl_spread": 0.2})
    assert len({base.run_id, a.run_id, b.run_id}) == 3
    with pytest.raises(ValueError, match="kl_spread"):
        allocation_config(strategy="kl_slope", kl_spread=1.0)


def test_on_a_tiny_model_the_fragile_block_gets_the_lowest_sparsity(tmp_path, data_dir, monkeypatch) -> None:
    """Block 1 of a 3-block model made fragile (its MLP output scaled 30x): its measured KL slope is the
    steepest, so it is pruned least; the mean is exact and the slopes are the allocation's scores."""
    import torch

    from pruning.run import allocation_inputs

    monkeypatch.setattr(allocation_inputs, "cache_dir", lambda: tmp_path / "cache")  # a measurement of its own
    from transformers import AutoTokenizer

    from pruning.model.load import resolve_model, save_model
    from pruning.model.synthetic import random_llama
    from pruning.run.pipeline import execute_run

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m").location)
    model = random_llama(hidden=64, layers=3, intermediate=128, heads=4, kv_heads=2, vocab=len(tokenizer), seed=0)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(30.0)
    path = save_model(model, tokenizer, tmp_path / "fragile")
    config = RunConfig.from_dict({
        "model": {"name": str(path)},
        "calibration": {"dataset": "wiki", "nsamples": 4, "seqlen": 64, "seed": 0},
        "pruning": {"method": "wanda", "sparsity": 0.6},
        "allocation": {"strategy": "kl_slope", "kl_spread": 0.1, "evopress_windows": 4},
        "evaluation": {"perplexity": ["wiki"], "seqlen": 64, "limit_windows": 2},
    })
    out = execute_run(config, publish=False)
    assert out.status == "succeeded", out.error
    assert "kl_slope" in out.timings and "kl_slope_reused" not in out.timings
    # another spread reads the same measurement (same model, calibration, method, target, windows)
    wider = execute_run(config.with_overrides({"allocation.kl_spread": 0.2}), publish=False)
    assert "kl_slope_reused" in wider.timings and "kl_slope" not in wider.timings
    assert wider.tables["allocation"]["score"].tolist() == out.tables["allocation"]["score"].tolist()
    spread = wider.tables["allocation"].groupby("block")["sparsity_target"].first()
    assert spread.max() - spread.min() == pytest.approx(0.4, abs=1e-9)
    # another target is another measurement
    other = execute_run(config.with_overrides({"pruning.sparsity": 0.5}), publish=False)
    assert "kl_slope" in other.timings
    alloc = out.tables["allocation"]
    per_block = alloc.groupby("block")["sparsity_target"].agg(["min", "max"])
    assert (per_block["max"] - per_block["min"]).abs().max() < 1e-12  # one sparsity per block
    assert per_block["min"].idxmin() == 1 and per_block.at[1, "min"] < 0.6 - 0.05, per_block.to_dict()
    scores = alloc.groupby("block")["score"].first()
    assert scores.idxmax() == 1 and np.all(np.isfinite(scores))
    mean = float((alloc["sparsity_target"] * alloc["numel"]).sum() / alloc["numel"].sum())
    assert mean == pytest.approx(0.6, abs=1e-9)
    # the spread: min-max over 2 x 0.1, so the blocks span at most 0.2
    assert per_block["min"].max() - per_block["min"].min() == pytest.approx(0.2, abs=1e-9)


def test_a_damaged_slopes_file_is_measured_again(tmp_path, data_dir, monkeypatch) -> None:
    from pruning.run import allocation_inputs as ai

    monkeypatch.setattr(ai, "cache_dir", lambda: tmp_path)
    ai._write_slopes("k1", {0: 1.5, 1: 2.5})
    assert ai._read_slopes("k1") == {0: 1.5, 1: 2.5}
    (tmp_path / "kl_slope" / "k1.json").write_text("{not json")
    assert ai._read_slopes("k1") is None and ai._read_slopes("absent") is None


def test_two_spreads_started_together_measure_once(tmp_path, data_dir, monkeypatch) -> None:
    """Workers of one sweep start its spreads together: the second waits for the first's measurement
    and reads it (without the lock both measure: build_database is slowed so the two overlap). The two
    runs are threads of this process, so their model loads are serialised: loading patches module-level
    state of transformers (empty-weight initialisation) that two loads at once would leave patched."""
    import threading
    import time

    from pruning.model.synthetic import save_tiny_model_dir
    from pruning.run import allocation_inputs, evopress, stages
    from pruning.run.pipeline import execute_run

    one_load = threading.Lock()
    real_load = stages.load

    def serial_load(*args, **kwargs):
        with one_load:
            return real_load(*args, **kwargs)

    monkeypatch.setattr(stages, "load", serial_load)

    monkeypatch.setattr(allocation_inputs, "cache_dir", lambda: tmp_path / "cache")
    builds: list[float] = []
    real_build = evopress.build_database

    def slow_build(*args, **kwargs):
        builds.append(time.monotonic())
        time.sleep(1.0)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(evopress, "build_database", slow_build)
    config = RunConfig.from_dict({
        "model": {"name": str(save_tiny_model_dir(tmp_path / "tiny"))},
        "calibration": {"dataset": "wiki", "nsamples": 2, "seqlen": 32, "seed": 0},
        "pruning": {"method": "wanda", "sparsity": 0.6},
        "allocation": {"strategy": "kl_slope", "kl_spread": 0.1, "evopress_windows": 2},
        "evaluation": {"perplexity": ["wiki"], "seqlen": 32, "limit_windows": 1},
    })
    outcomes: dict[float, object] = {}

    def run(spread: float) -> None:
        outcomes[spread] = execute_run(config.with_overrides({"allocation.kl_spread": spread}), publish=False)

    threads = [threading.Thread(target=run, args=(s,)) for s in (0.1, 0.2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    measured = sorted("kl_slope" in o.timings for o in outcomes.values())
    reused = sorted("kl_slope_reused" in o.timings for o in outcomes.values())
    assert measured == [False, True] and reused == [False, True]
