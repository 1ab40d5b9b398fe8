"""The position metric ``depth`` of the ``linear`` allocation (pruning.allocation.linear.DEPTH_METRIC):
the block index, alone ATP's rising progression (Huang et al., ICML 2025) with beta = 2 S eps / (L - 1),
mixed with a spectral metric the mean of the two normalised scores. Checked on hand-computed cases where
the plausible wrong variants (depth reversed, depth not normalised, the mix renormalised, the block
index of the wrong unit) give other sparsities, and on bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pruning.allocation import allocate, allocation_config
from pruning.app_support.launch import validate_form
from pruning.config.run_config import RunConfig
from pruning.errors import ConfigError
from pruning.run.stages import wants_calibration
from pruning.store.publish import run_row
from pruning.run.validation import allocation_metrics, check_names

S = 0.7
#: five equal blocks; Hessian alpha [3, 1, 4, 1.5, 9] -> n = [0.25, 0, 0.375, 0.0625, 1]
HESSIAN = [3.0, 1.0, 4.0, 1.5, 9.0]


def _blocks(hessian: list[float] = HESSIAN, numel: list[int] | None = None) -> pd.DataFrame:
    n = len(hessian)
    return pd.DataFrame({"block": list(range(n)), "matrix_type": ["q"] * n, "name": [f"b{i}.q" for i in range(n)],
                         "numel": numel or [100] * n, "hessian_alpha": hessian})


def _expected(normalised: np.ndarray, eps: float) -> np.ndarray:
    """s_u = c r_u, r_u = (1 - eps) + 2 eps n_u, c = S sum(P) / sum(P r) (equal P)."""
    ratios = (1 - eps) + 2 * eps * np.asarray(normalised)
    return S * len(ratios) * ratios / ratios.sum()


def _linear(table: pd.DataFrame, **fields) -> pd.DataFrame:
    return allocate(table, allocation_config(strategy="linear", preset="all", **fields), S)


def test_depth_alone_is_atp_with_beta_two_s_eps_over_l_minus_one() -> None:
    eps = 0.3
    out = _linear(_blocks(), metric="depth", epsilon=eps)
    # n = i / 4, r = 0.7 + 0.6 i / 4, c = S: s = 0.49 + 0.105 i
    np.testing.assert_allclose(out["sparsity"], [0.49, 0.595, 0.70, 0.805, 0.91], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["score"], [0, 1, 2, 3, 4], rtol=0, atol=0)  # the score is the block index
    atp = allocate(_blocks(), allocation_config(strategy="depth", depth_beta=2 * S * eps / 4), S)
    np.testing.assert_allclose(out["sparsity"], atp["sparsity"], rtol=0, atol=1e-12)
    # falling with depth when lower prunes more
    down = _linear(_blocks(), metric="depth", epsilon=eps, higher_prunes_more=False)
    np.testing.assert_allclose(down["sparsity"], [0.91, 0.805, 0.70, 0.595, 0.49], rtol=0, atol=1e-12)


def test_depth_mixed_with_hessian_alpha_averages_the_normalised_scores() -> None:
    eps = 0.3
    out = _linear(_blocks(), metric="hessian_alpha", metric_mix="depth", epsilon=eps)
    normalised = (np.array([0.25, 0.0, 0.375, 0.0625, 1.0]) + np.arange(5) / 4) / 2  # [1/8, 1/8, 7/16, 13/32, 1]
    np.testing.assert_allclose(out["score"], normalised, rtol=0, atol=1e-15)
    np.testing.assert_allclose(out["sparsity"], _expected(normalised, eps), rtol=0, atol=1e-12)
    assert float(out["sparsity"].mean()) == pytest.approx(S, abs=1e-12)
    wrong = {
        "Hessian alpha alone": _linear(_blocks(), metric="hessian_alpha", epsilon=eps)["sparsity"],
        "depth alone": _linear(_blocks(), metric="depth", epsilon=eps)["sparsity"],
        "depth reversed": _expected((np.array([0.25, 0, 0.375, 0.0625, 1]) + (4 - np.arange(5)) / 4) / 2, eps),
        "depth not normalised (block index)": _expected((np.array([0.25, 0, 0.375, 0.0625, 1]) + np.arange(5)) / 2,
                                                        eps),
        "the mean renormalised to [0, 1]": _expected((normalised - 0.125) / 0.875, eps),
    }
    for name, sparsity in wrong.items():
        assert np.abs(out["sparsity"].to_numpy() - np.asarray(sparsity)).max() > 1e-3, name
    # the order of the two metrics does not matter
    swapped = _linear(_blocks(), metric="depth", metric_mix="hessian_alpha", epsilon=eps)
    np.testing.assert_allclose(swapped["sparsity"], out["sparsity"], rtol=0, atol=1e-15)


def test_depth_is_the_block_of_each_unit_with_unequal_blocks_and_split() -> None:
    # two blocks, each a q (100) and an up (300); split units: attention and MLP normalised apart
    table = pd.DataFrame({"block": [0, 0, 1, 1], "matrix_type": ["q", "up", "q", "up"],
                          "name": ["b0.q", "b0.up", "b1.q", "b1.up"], "numel": [100, 300, 100, 300]})
    out = allocate(table, allocation_config(strategy="linear", preset="split", metric="depth", epsilon=0.5), S)
    # every group holds blocks 0 and 1: n = [0, 0, 1, 1], r = [0.5, 0.5, 1.5, 1.5], c = S
    np.testing.assert_allclose(out["ratio"], [0.5, 0.5, 1.5, 1.5], rtol=0, atol=1e-15)
    assert (out["sparsity"] * out["numel"]).sum() / out["numel"].sum() == pytest.approx(S, abs=1e-12)
    # the bound 0.99 clips block 1 (1.05 unbounded); the excess goes to block 0: 0.41, 0.99
    np.testing.assert_allclose(out["sparsity"], [0.41, 0.41, 0.99, 0.99], rtol=0, atol=1e-12)


def test_a_table_with_its_own_depth_column_is_read_as_is() -> None:
    table = _blocks().assign(depth=[4.0, 3.0, 2.0, 1.0, 0.0])  # a column of that name wins over the block index
    out = _linear(table, metric="depth", epsilon=0.3)
    np.testing.assert_allclose(out["sparsity"], [0.91, 0.805, 0.70, 0.595, 0.49], rtol=0, atol=1e-12)


def test_names_config_store_and_form_accept_depth_and_reject_near_misses() -> None:
    assert "depth" in allocation_metrics()
    config = RunConfig.from_dict({"pruning": {"method": "wanda", "sparsity": 0.7},
                                  "allocation": {"strategy": "linear", "preset": "all", "metric": "hessian_alpha",
                                                 "metric_mix": "depth", "epsilon": 0.3}})
    check_names(config)
    assert config.allocation.wants_hessian and wants_calibration(config)
    depth_only = config.with_overrides({"allocation.metric": "depth", "allocation.metric_mix": None})
    assert not depth_only.allocation.wants_hessian
    row = run_row(config, status="succeeded", error=None, timings=None, env=None, created_at=None)
    assert row["metric"] == "hessian_alpha+depth"
    with pytest.raises(ConfigError, match=r"^allocation\.metric_mix: 'depht' is not a spectral metric; accepted: .*depth"):
        check_names(config.with_overrides({"allocation.metric_mix": "depht"}))
    with pytest.raises(ConfigError, match=r"metric_mix: 'depth' equals metric"):
        allocation_config(strategy="linear", metric="depth", metric_mix="depth")
    with pytest.raises(ConfigError, match=r"metric_mix: 'depth' is read only by strategy 'linear'"):
        allocation_config(strategy="depth", depth_beta=0.01, metric_mix="depth")
    formed, errors = validate_form({"pruning.method": "wanda", "allocation.strategy": "linear",
                                    "allocation.metric": "hessian_alpha", "allocation.metric_mix": "depth"})
    assert errors == {} and formed.allocation.metrics == ("hessian_alpha", "depth")
