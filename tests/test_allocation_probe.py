"""The ``probe`` allocation (issue 28: per-block sensitivity): one block pruned at the run's sparsity, the
others dense — in the allocator, in the config (its run id, its errors), and end to end on a tiny model,
where the probe of block 0 prunes exactly as a uniform run prunes block 0 (the same dense inputs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pruning.allocation import allocate, allocation_config
from pruning.config.run_config import RunConfig
from pruning.errors import ConfigError


def _matrices(blocks: int = 4) -> pd.DataFrame:
    rows = []
    for b in range(blocks):
        for t, numel in (("q", 100), ("k", 25), ("v", 25), ("o", 100), ("gate", 300), ("up", 300), ("down", 300)):
            rows.append({"block": b, "matrix_type": t, "name": f"model.layers.{b}.{t}", "numel": numel})
    return pd.DataFrame(rows)


def test_probe_prunes_one_block_at_the_target_and_leaves_the_rest_dense() -> None:
    out = allocate(_matrices(), allocation_config(strategy="probe", probe_block=2), 0.8)
    assert out.loc[out["block"] == 2, "sparsity"].eq(0.8).all()
    assert out.loc[out["block"] != 2, "sparsity"].eq(0.0).all()
    assert out.groupby("block")["score"].first().tolist() == [0.0, 0.0, 1.0, 0.0]
    mean = float((out["sparsity"] * out["numel"]).sum() / out["numel"].sum())
    assert mean == pytest.approx(0.2)  # one block of four: the mean is not the target


def test_probe_names_a_block_the_model_does_not_have() -> None:
    with pytest.raises(ConfigError, match=r"allocation.probe_block: 4 is not a block of this model; accepted: 0 to 3"):
        allocate(_matrices(), allocation_config(strategy="probe", probe_block=4), 0.8)


def test_probe_config_needs_its_block_and_keeps_other_run_ids() -> None:
    with pytest.raises(ConfigError, match="strategy 'probe' needs probe_block"):
        allocation_config(strategy="probe")
    with pytest.raises(ConfigError, match="probe_block: 3 is read only by strategy 'probe'"):
        allocation_config(strategy="uniform", probe_block=3)
    base = RunConfig.from_dict({"model": {"name": "m"}, "pruning": {"method": "wanda", "sparsity": 0.7}})
    # a config without a probe hashes as before the field existed (shipped run ids stay valid)
    assert "probe_block" not in base.canonical_json()
    a = base.with_overrides({"allocation.strategy": "probe", "allocation.probe_block": 0})
    b = base.with_overrides({"allocation.strategy": "probe", "allocation.probe_block": 1})
    assert len({base.run_id, a.run_id, b.run_id}) == 3


@pytest.fixture()
def tiny_dir(tiny_model_dir):
    return tiny_model_dir


def _config(model_dir, **overrides) -> RunConfig:
    base = RunConfig.from_dict({
        "model": {"name": str(model_dir)},
        "calibration": {"dataset": "wiki", "nsamples": 4, "seqlen": 64, "seed": 0},
        "pruning": {"method": "wanda", "sparsity": 0.6},
        "allocation": {"strategy": "uniform"},
        "evaluation": {"perplexity": ["wiki"], "seqlen": 64, "limit_windows": 2},
    })
    return base.with_overrides(overrides) if overrides else base


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_probe_run_prunes_its_block_as_a_block_sequential_run_does(tiny_dir, data_dir, method) -> None:
    """End to end: block 0's masks of a probe run equal block 0's of a uniform run (both see the dense
    inputs), every other block stays dense, and another probed block costs a different perplexity."""
    import torch

    from pruning.model.load import load_model
    from pruning.run.pipeline import execute_run

    probe = execute_run(_config(tiny_dir, **{"pruning.method": method, "allocation.strategy": "probe",
                                             "allocation.probe_block": 0}), publish=False)
    assert probe.status == "succeeded"
    alloc = probe.tables["allocation"]
    assert alloc.loc[alloc["block"] == 0, "sparsity_achieved"].between(0.55, 0.65).all()
    assert alloc.loc[alloc["block"] != 0, "sparsity_achieved"].eq(0.0).all()
    ppl = probe.tables["perplexity"].set_index("stage")["ppl"]
    other = execute_run(_config(tiny_dir, **{"pruning.method": method, "allocation.strategy": "probe",
                                             "allocation.probe_block": 1}), publish=False)
    dense = execute_run(_config(tiny_dir, **{"pruning.method": "dense", "pruning.sparsity": 0.0}), publish=False)
    assert ppl["pruned"] != dense.tables["perplexity"].set_index("stage").at["dense", "ppl"]
    assert other.tables["perplexity"].set_index("stage").at["pruned", "ppl"] != ppl["pruned"]

    # the same masks as block 0 of a uniform run: prune both ways in process and compare the weights
    from pruning.text.data import calibration_batch
    from pruning.run.prune import prune_model, uniform_sparsity

    def block0(sparsity_by_name):
        loaded = load_model(str(tiny_dir), device="cpu", dtype="float32")
        ids = calibration_batch(loaded.tokenizer, "wiki", nsamples=4, seqlen=64, seed=0)
        prune_model(loaded, method, sparsity_by_name(loaded), ids)
        return {n: p.detach().clone() for n, p in loaded.model.named_parameters() if ".layers.0." in n}

    uniform = block0(lambda m: uniform_sparsity(m, 0.6))
    only0 = block0(lambda m: {k: v for k, v in uniform_sparsity(m, 0.6).items() if ".layers.0." in k})
    for name, weight in uniform.items():
        assert torch.equal((weight == 0), (only0[name] == 0)), name
        assert torch.equal(weight, only0[name]), name
    assert np.isfinite(ppl["pruned"])


def test_probes_offer_no_grid_option(data_dir) -> None:
    """A probe at 80 % beside runs at 70 %: the grid's cells (and so its sparsity options) hold no probe."""
    from pruning.app_support.grid import build_grid, grid_cells
    from pruning.store import publish_run
    from pruning.store.queries import perplexity_cells

    base = RunConfig.from_dict({"model": {"name": "m"}, "pruning": {"method": "wanda", "sparsity": 0.7}})
    table = {"perplexity": pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "ppl": 30.0, "seqlen": 2048}])}
    publish_run(base, tables=table)
    publish_run(base.with_overrides({"pruning.sparsity": 0.8, "allocation.strategy": "probe",
                                     "allocation.probe_block": 0}), tables=table)
    cells = perplexity_cells()
    assert sorted(cells["sparsity"].unique()) == [0.7, 0.8]
    assert sorted(grid_cells(cells)["sparsity"].unique()) == [0.7]
    assert build_grid(cells, model="m", sparsity=0.8, dataset="wiki").empty
