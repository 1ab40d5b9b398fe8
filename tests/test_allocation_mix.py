"""``allocation.metric_mix``: the ``linear`` allocation (AlphaPruning, Lu et al. 2024) scored by the mean
of two metrics' min-max normalised unit scores, n_u = (n_u^metric + n_u^metric_mix) / 2, checked on a
hand-computed case where the plausible wrong variants (either metric alone, averaging the raw values
before normalising, renormalising the average) give other sparsities; a flat metric; bad input; the
run id of configs without the field; where the mix reaches the stages, the store, the grid and the form."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pruning.allocation import allocate, allocation_config
from pruning.app_support.grid_labels import column_label
from pruning.app_support.launch import FORM_SECTIONS, validate_form
from pruning.config.run_config import RunConfig
from pruning.errors import ConfigError
from pruning.run.stages import wants_calibration
from pruning.store.publish import run_row
from pruning.run.validation import check_names

S, EPS = 0.6, 0.2
#: three blocks of one equal-sized matrix each; the two metrics order the blocks oppositely
#: weight alpha [1, 2, 4] -> n = [0, 1/3, 1]; Hessian alpha [10, 2, 0] -> n = [1, 1/5, 0]
#: mix n = [1/2, 4/15, 1/2]; raw average [5.5, 2, 2] -> n = [1, 0, 0]
ALPHA = [1.0, 2.0, 4.0]
HESSIAN = [10.0, 2.0, 0.0]


def _matrices(alpha: list[float] = ALPHA, hessian: list[float] = HESSIAN) -> pd.DataFrame:
    return pd.DataFrame({"block": [0, 1, 2], "matrix_type": ["q"] * 3, "name": [f"b{i}.q" for i in range(3)],
                         "numel": [100] * 3, "alpha_peak": alpha, "hessian_alpha": hessian})


def _expected(normalised: list[float]) -> np.ndarray:
    """s_u = c r_u, r_u = (1 - eps) + 2 eps n_u, c = S sum(P) / sum(P r) (equal P)."""
    ratios = (1 - EPS) + 2 * EPS * np.asarray(normalised)
    return S * len(ratios) * ratios / ratios.sum()


def _linear(**fields) -> pd.DataFrame:
    return allocate(_matrices(**fields.pop("table", {})),
                    allocation_config(strategy="linear", preset="all", epsilon=EPS, **fields), S)


def test_mix_averages_the_normalised_scores_exactly() -> None:
    out = _linear(metric="hessian_alpha", metric_mix="alpha_peak")
    # r = [1, 68/75, 1], c = 1.8 / (218/75) = 135/218
    np.testing.assert_allclose(out["sparsity"], [135 / 218, 306 / 545, 135 / 218], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["sparsity"], _expected([1 / 2, 4 / 15, 1 / 2]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["score"], [1 / 2, 4 / 15, 1 / 2], rtol=0, atol=1e-12)  # the stored score is n_u
    assert (out["sparsity"] * out["numel"]).sum() / out["numel"].sum() == pytest.approx(S, abs=1e-12)
    # the plausible wrong variants allocate otherwise
    wrong = {
        "weight alpha alone": _expected([0, 1 / 3, 1]),
        "Hessian alpha alone": _expected([1, 1 / 5, 0]),
        "raw values averaged, then normalised": _expected([1, 0, 0]),
        "the average renormalised to [0, 1]": _expected([1, 0, 1]),
    }
    for name, sparsity in wrong.items():
        assert np.abs(out["sparsity"].to_numpy() - sparsity).max() > 1e-3, name
    np.testing.assert_allclose(_linear(metric="alpha_peak")["sparsity"], wrong["weight alpha alone"], atol=1e-12)
    np.testing.assert_allclose(_linear(metric="hessian_alpha")["sparsity"], wrong["Hessian alpha alone"], atol=1e-12)
    # the order of the two metrics does not matter; the direction applies to both
    swapped = _linear(metric="alpha_peak", metric_mix="hessian_alpha")
    np.testing.assert_allclose(swapped["sparsity"], out["sparsity"], rtol=0, atol=1e-15)
    lower = _linear(metric="hessian_alpha", metric_mix="alpha_peak", higher_prunes_more=False)
    np.testing.assert_allclose(lower["sparsity"], _expected([1 / 2, 11 / 15, 1 / 2]), rtol=0, atol=1e-12)


def test_a_flat_metric_contributes_one_half_to_every_unit() -> None:
    out = _linear(metric="hessian_alpha", metric_mix="alpha_peak", table={"hessian": [3.0, 3.0, 3.0]})
    # n = (0.5 + [0, 1/3, 1]) / 2 = [1/4, 5/12, 3/4]: half the spread of the weight alpha alone
    np.testing.assert_allclose(out["sparsity"], _expected([1 / 4, 5 / 12, 3 / 4]), rtol=0, atol=1e-12)
    both_flat = _linear(metric="hessian_alpha", metric_mix="alpha_peak",
                        table={"hessian": [3.0] * 3, "alpha": [2.0] * 3})
    assert both_flat["ratio"].tolist() == [1.0, 1.0, 1.0] and both_flat["sparsity"].tolist() == [S] * 3


def test_split_normalises_each_metric_inside_each_sub_block() -> None:
    table = pd.DataFrame({"block": [0, 0, 1, 1], "matrix_type": ["q", "up", "q", "up"],
                          "name": ["b0.q", "b0.up", "b1.q", "b1.up"], "numel": [100, 300, 100, 300],
                          "alpha_peak": [1.0, 5.0, 2.0, 9.0], "hessian_alpha": [4.0, 7.0, 3.0, 7.0]})
    out = allocate(table, allocation_config(strategy="linear", preset="split", epsilon=EPS,
                                            metric="hessian_alpha", metric_mix="alpha_peak"), S)
    # attention: Hessian [4, 3] -> [1, 0], weight [1, 2] -> [0, 1]: n = [1/2, 1/2]
    # MLP: Hessian flat -> 1/2 each, weight [5, 9] -> [0, 1]: n = [1/4, 3/4]
    np.testing.assert_allclose(out["score"], [0.5, 0.25, 0.5, 0.75], rtol=0, atol=1e-15)
    ratios = (1 - EPS) + 2 * EPS * np.array([0.5, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(out["ratio"], ratios, rtol=0, atol=1e-15)
    assert (out["sparsity"] * out["numel"]).sum() / out["numel"].sum() == pytest.approx(S, abs=1e-12)


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"metric_mix: 'alpha_peak' equals metric"):
        allocation_config(strategy="linear", metric="alpha_peak", metric_mix="alpha_peak")
    with pytest.raises(ConfigError, match=r"metric_mix: 'alpha_peak' is read only by strategy 'linear' \(strategy is"):
        RunConfig.from_dict({"allocation": {"strategy": "owl", "metric_mix": "alpha_peak"}})
    with pytest.raises(ConfigError, match=r"allocation\.metric_mix: 'Alpha Peak' is invalid"):
        RunConfig.from_dict({"allocation": {"strategy": "linear", "metric_mix": "Alpha Peak"}})
    with pytest.raises(ConfigError, match=r"^allocation\.metric_mix: column 'alpha_mid' is not in the matrix table"):
        _linear(metric="hessian_alpha", metric_mix="alpha_mid")
    with pytest.raises(ConfigError, match=r"^allocation\.metric_mix: 'alpha_peak' is NaN or infinite for 1 matrices"):
        _linear(metric="hessian_alpha", metric_mix="alpha_peak", table={"alpha": [1.0, float("nan"), 3.0]})
    with pytest.raises(ConfigError, match=r"^allocation\.metric: 'hessian_alpha' is NaN"):
        _linear(metric="hessian_alpha", metric_mix="alpha_peak", table={"hessian": [1.0, float("inf"), 3.0]})
    config = RunConfig.from_dict({"allocation": {"strategy": "linear", "metric_mix": "alpha_nope"}})
    with pytest.raises(ConfigError, match=r"^allocation\.metric_mix: 'alpha_nope' is not a spectral metric; accepted"):
        check_names(config)


def test_configs_without_metric_mix_keep_their_run_ids() -> None:
    # run ids computed before the field existed
    assert RunConfig().run_id == "wanda-b63a46b33958"
    hessian = RunConfig.from_dict({"pruning": {"method": "wanda", "sparsity": 0.7},
                                   "allocation": {"strategy": "linear", "preset": "all", "metric": "hessian_alpha",
                                                  "epsilon": 0.2}})
    assert hessian.run_id == "wanda-15a1cccfc093" and "metric_mix" not in hessian.canonical_json()
    mixed = hessian.with_overrides({"allocation.metric_mix": "alpha_peak"})
    assert mixed.run_id != hessian.run_id and '"metric_mix":"alpha_peak"' in mixed.canonical_json()
    assert RunConfig.from_dict(mixed.to_dict()) == mixed and mixed.allocation.metrics == ("hessian_alpha", "alpha_peak")


def test_a_hessian_metric_in_either_position_needs_calibration() -> None:
    weight = RunConfig.from_dict({"allocation": {"strategy": "linear", "metric": "alpha_peak"}})
    assert weight.pruning.method == "wanda" and not weight.allocation.wants_hessian
    mixed = weight.with_overrides({"allocation.metric_mix": "hessian_alpha"})
    assert mixed.allocation.wants_hessian and wants_calibration(mixed)
    assert not wants_calibration(weight.with_overrides({"pruning.method": "magnitude"}))
    assert wants_calibration(mixed.with_overrides({"pruning.method": "magnitude"}))


def test_store_row_grid_column_and_cli_say_both_metrics() -> None:
    config = RunConfig.from_dict({"allocation": {"strategy": "linear", "preset": "all", "metric": "hessian_alpha",
                                                 "metric_mix": "alpha_peak"}})
    row = run_row(config, status="succeeded", error=None, timings=None, env=None, created_at=None)
    assert row["metric"] == "hessian_alpha+alpha_peak"
    single = run_row(config.with_overrides({"allocation.metric_mix": None}), status="succeeded", error=None,
                     timings=None, env=None, created_at=None)
    assert single["metric"] == "hessian_alpha"
    assert column_label("all", False, "all", "linear", row["metric"], "run") == "all · hessian_alpha+alpha_peak"
    assert column_label("all", False, "all", "linear", single["metric"], "run") == "all · hessian_alpha"

    from pruning.cli.run import build_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["run", "--strategy", "linear", "--metric", "hessian_alpha", "--metric-mix", "alpha_peak"])
    assert build_config(args).allocation.metrics == ("hessian_alpha", "alpha_peak")


def test_launch_form_sends_metric_mix_only_for_linear(tmp_path: Path) -> None:
    fields = FORM_SECTIONS["Allocation"]
    assert fields.index("allocation.metric_mix") == fields.index("allocation.metric") + 1
    base = {"pruning.method": "wanda", "allocation.strategy": "linear", "allocation.metric": "hessian_alpha"}
    config, errors = validate_form({**base, "allocation.metric_mix": "alpha_peak"})
    assert errors == {} and config.allocation.metrics == ("hessian_alpha", "alpha_peak")
    # the form's values of that config give it back
    again, _ = validate_form({**base, "allocation.metric_mix": config.allocation.metric_mix})
    assert again.run_id == config.run_id
    off, errors = validate_form({**base, "allocation.metric_mix": ""})  # blank = off
    assert errors == {} and off.allocation.metric_mix is None
    assert off.run_id == validate_form(base)[0].run_id
    owl, errors = validate_form({**base, "allocation.strategy": "owl", "allocation.metric_mix": "alpha_peak"})
    assert errors == {} and owl.allocation.metric_mix is None  # hidden for other strategies, not sent
    _, errors = validate_form({**base, "allocation.metric_mix": "hessian_alpha"})
    assert list(errors) == ["allocation.metric_mix"] and "equals metric" in errors["allocation.metric_mix"]
