"""Every branch of pruning.run.pipeline on a tiny random model with a real tokenizer (issue 18): the
dense run, OWL, DLP, a Hessian metric, the attention statistics, reuse of stored spectra, and the
placement the run records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pruning.run.spectra_cache as spectra_cache
from pruning.config.run_config import RunConfig
from pruning.run.pipeline import execute_run
from pruning.store import run_detail
from pruning.model.synthetic import save_tiny_model_dir


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def fresh_spectra(tmp_path, monkeypatch, data_dir):
    """An empty spectra cache and an empty store: the first run computes its spectra."""
    path = tmp_path / "spectra-cache"
    path.mkdir()
    monkeypatch.setattr(spectra_cache, "spectra_cache_dir", lambda: path)
    return path


def _config(model_dir, **overrides) -> RunConfig:
    base = RunConfig.from_dict({
        "model": {"name": str(model_dir)},
        "calibration": {"dataset": "wiki", "nsamples": 4, "seqlen": 64, "seed": 0},
        "pruning": {"method": "wanda", "sparsity": 0.6},
        "allocation": {"strategy": "uniform"},
        "evaluation": {"perplexity": ["wiki"], "seqlen": 64, "limit_windows": 2},
    })
    return base.with_overrides(overrides) if overrides else base


def _weighted_mean(alloc: pd.DataFrame, column: str) -> float:
    return float((alloc[column] * alloc["numel"]).sum() / alloc["numel"].sum())


def test_dense_run_prunes_nothing_and_measures_the_reference_spectra(tiny_dir, fresh_spectra):
    out = execute_run(_config(tiny_dir, **{"pruning.method": "dense", "pruning.sparsity": 0.0,
                                           "evaluation.attention": True, "evaluation.attention_tokens": 32}),
                      publish=False)
    assert out.status == "succeeded"
    assert out.tables["allocation"]["sparsity_achieved"].eq(0.0).all()
    assert out.tables["allocation"]["sparsity_target"].eq(0.0).all()
    assert out.tables["perplexity"]["stage"].tolist() == ["dense"]
    assert set(out.tables["spectra"]["source"]) == {"weight"}
    assert "prune" not in out.timings and "calibration_sample" not in out.timings
    assert "prune" not in out.placement
    # the attention table of a dense run is the dense model's, once (no second copy as "dense")
    attention = out.tables["attention"]
    assert set(attention["stage"]) == {"dense"}
    assert not attention.duplicated().any()


def test_pruning_run_with_attention_has_dense_and_pruned_statistics(tiny_dir, data_dir):
    out = execute_run(_config(tiny_dir, **{"evaluation.attention": True, "evaluation.attention_tokens": 32}),
                      publish=False)
    attention = out.tables["attention"]
    assert set(attention["stage"]) == {"dense", "pruned"}
    dense = attention[attention["stage"] == "dense"].drop(columns="stage").reset_index(drop=True)
    pruned = attention[attention["stage"] == "pruned"].drop(columns="stage").reset_index(drop=True)
    assert len(dense) == len(pruned) and not dense.equals(pruned)  # pruning changed the statistics
    assert out.placement == {"prune": "gpu", "evaluation": "cpu"}  # on the CPU: "gpu" = the whole model on the device


def test_owl_allocates_from_outlier_ratios(tiny_dir, data_dir):
    out = execute_run(_config(tiny_dir, **{"allocation.strategy": "owl", "allocation.owl_lambda": 0.08,
                                           "allocation.owl_threshold_m": 2.0}), publish=False)
    alloc = out.tables["allocation"]
    assert "owl" in out.timings
    per_block = alloc.groupby("block")["sparsity_target"].first()
    assert per_block.nunique() == 2  # the two blocks get different sparsities
    assert abs(_weighted_mean(alloc, "sparsity_target") - 0.6) < 1e-9
    assert (per_block.max() - per_block.min()) <= 2 * 0.08 + 1e-9  # OWL's lambda bounds the spread


def test_dlp_allocates_from_block_unimportance(tiny_dir, data_dir):
    out = execute_run(_config(tiny_dir, **{"allocation.strategy": "dlp"}), publish=False)
    alloc = out.tables["allocation"]
    assert "dlp" in out.timings
    assert alloc.groupby("block")["sparsity_target"].first().nunique() == 2
    assert abs(_weighted_mean(alloc, "sparsity_target") - 0.6) < 1e-9
    assert abs(_weighted_mean(alloc, "sparsity_achieved") - 0.6) < 1e-2


def test_hessian_metric_measures_hessian_spectra_and_allocates_from_them(tiny_dir, fresh_spectra):
    linear = {"allocation.strategy": "linear", "allocation.epsilon": 0.2, "allocation.granularity": "matrix"}
    by_hessian = execute_run(_config(tiny_dir, **linear, **{"allocation.metric": "hessian_alpha"}), publish=False)
    by_weight = execute_run(_config(tiny_dir, **linear, **{"allocation.metric": "alpha"}), publish=False)
    assert set(by_hessian.tables["spectra"]["source"]) == {"weight", "hessian"}
    assert set(by_weight.tables["spectra"]["source"]) == {"weight"}
    h = by_hessian.tables["allocation"]["sparsity_target"].to_numpy()
    w = by_weight.tables["allocation"]["sparsity_target"].to_numpy()
    assert not np.allclose(h, w)  # the Hessian's alphas, not the weights', set the allocation
    assert abs(_weighted_mean(by_hessian.tables["allocation"], "sparsity_target") - 0.6) < 1e-9


def test_hessian_alpha_mixed_with_weight_alpha_is_stored_with_both_names(tiny_dir, fresh_spectra):
    from pruning.store.queries import list_runs, run_table

    config = _config(tiny_dir, **{"allocation.strategy": "linear", "allocation.epsilon": 0.2,
                                  "allocation.granularity": "matrix", "allocation.metric": "hessian_alpha",
                                  "allocation.metric_mix": "alpha_peak"})
    out = execute_run(config)
    assert out.status == "succeeded" and set(out.tables["spectra"]["source"]) == {"weight", "hessian"}
    alloc = run_table(config.run_id, "allocation")
    assert alloc["score"].between(0.0, 1.0).all() and alloc["score"].nunique() > 2  # n_u, not a metric value
    assert abs(_weighted_mean(alloc, "sparsity_target") - 0.6) < 1e-9
    runs = list_runs()
    assert runs.set_index("run_id").at[config.run_id, "metric"] == "hessian_alpha+alpha_peak"


def test_second_run_of_the_same_model_skips_the_spectra_stage(tiny_dir, fresh_spectra):
    linear = {"allocation.strategy": "linear", "allocation.epsilon": 0.2, "allocation.metric": "alpha"}
    first = execute_run(_config(tiny_dir, **linear))
    assert "spectra" in first.timings and "spectra_reused" not in first.timings
    for path in fresh_spectra.iterdir():  # the local cache gone: the second run reads the store
        path.unlink()
    assert run_detail(first.run_id)["env"]["placement"] == {"prune": "gpu", "evaluation": "cpu"}
    second = execute_run(_config(tiny_dir, **linear, **{"pruning.sparsity": 0.5}))
    assert "spectra_reused" in second.timings and "spectra" not in second.timings
    pd.testing.assert_frame_equal(first.tables["spectra"].reset_index(drop=True),
                                  second.tables["spectra"].reset_index(drop=True))
    # another precision is another spectrum: computed, not reused
    third = execute_run(_config(tiny_dir, **linear, **{"allocation.eig_dtype": "float32"}), publish=False)
    assert "spectra" in third.timings
