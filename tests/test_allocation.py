"""Allocation (AlphaPruning linear, OWL, uniform): hand-computed cases, properties, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pruning.allocation import allocate, allocation_config, summarize
from pruning.config.run_config import AllocationConfig
from pruning.errors import ConfigError
from pruning.config.presets import MATRIX_TYPES, preset_names


def frame_from(
    metric_by_block: list[dict[str, float]], numel_by_block: list[int], metric: str = "alpha_peak"
) -> pd.DataFrame:
    """Seven matrices per block; ``metric_by_block[b][type]`` (missing types -> the block's 'all' entry)."""
    rows = []
    for block, (values, numel) in enumerate(zip(metric_by_block, numel_by_block)):
        for mtype in MATRIX_TYPES:
            value = values.get(mtype, values.get("all", np.nan))
            name = f"model.layers.{block}.{mtype}"
            rows.append({"block": block, "matrix_type": mtype, "name": name, "numel": numel, metric: value})
    return pd.DataFrame(rows)


def weighted_mean(result: pd.DataFrame) -> float:
    return float((result["sparsity"] * result["numel"]).sum() / result["numel"].sum())


def per_unit(result: pd.DataFrame) -> dict[str, float]:
    return result.groupby("unit", sort=False)["sparsity"].first().to_dict()


# ---- hand-computed cases ---------------------------------------------------------------------

# Three blocks; block scores 2, 4, 3; matrices of 10, 20, 10 parameters -> P = 70, 140, 70 (sum 280).
THREE = frame_from([{"all": 2.0}, {"all": 4.0}, {"all": 3.0}], [10, 20, 10])


def test_linear_block_by_hand() -> None:
    # n = (m - 2)/2 = 0, 1, 0.5 ; r = 0.8 + 0.4 n = 0.8, 1.2, 1.0
    # sum P r = 56 + 168 + 70 = 294 ; c = 0.5 * 280 / 294 = 10/21 ; s = 8/21, 12/21, 10/21
    cfg = AllocationConfig(strategy="linear", epsilon=0.2)
    result = allocate(THREE, cfg, 0.5)
    assert per_unit(result) == pytest.approx({"block0": 8 / 21, "block1": 12 / 21, "block2": 10 / 21}, abs=1e-12)
    assert result.groupby("unit", sort=False)["ratio"].first().tolist() == pytest.approx([0.8, 1.2, 1.0])
    assert result.groupby("unit", sort=False)["score"].first().tolist() == pytest.approx([2.0, 4.0, 3.0])
    assert list(result.columns[-4:]) == ["unit", "score", "ratio", "sparsity"]
    assert result["name"].tolist() == THREE["name"].tolist()  # input order kept
    assert weighted_mean(result) == pytest.approx(0.5, abs=1e-12)


def test_linear_reversed_direction_by_hand() -> None:
    # n = (4 - m)/2 = 1, 0, 0.5 ; r = 1.2, 0.8, 1.0 ; sum P r = 84 + 112 + 70 = 266
    # c = 140 / 266 = 10/19 ; s = 12/19, 8/19, 10/19
    cfg = AllocationConfig(strategy="linear", epsilon=0.2, higher_prunes_more=False)
    assert per_unit(allocate(THREE, cfg, 0.5)) == pytest.approx(
        {"block0": 12 / 19, "block1": 8 / 19, "block2": 10 / 19}, abs=1e-12
    )


def test_max_bound_redistributes_by_hand() -> None:
    # unbounded block1 = 12/21 = 0.571 > 0.55 -> 0.55 (77 of the 140 pruned parameters);
    # 63 left for blocks 0, 2 in proportion to r: c = 63 / (56 + 70) = 0.5 -> s0 = 0.4, s2 = 0.5
    cfg = AllocationConfig(strategy="linear", epsilon=0.2, max_sparsity=0.55)
    result = allocate(THREE, cfg, 0.5)
    assert per_unit(result) == pytest.approx({"block0": 0.4, "block1": 0.55, "block2": 0.5}, abs=1e-12)
    assert weighted_mean(result) == pytest.approx(0.5, abs=1e-12)


def test_min_bound_redistributes_by_hand() -> None:
    # unbounded block0 = 8/21 = 0.381 < 0.4 -> 0.4 (28 parameters); 112 left for blocks 1, 2:
    # c = 112 / (168 + 70) = 8/17 -> s1 = 1.2 * 8/17 = 9.6/17, s2 = 8/17
    cfg = AllocationConfig(strategy="linear", epsilon=0.2, min_sparsity=0.4)
    assert per_unit(allocate(THREE, cfg, 0.5)) == pytest.approx(
        {"block0": 0.4, "block1": 9.6 / 17, "block2": 8 / 17}, abs=1e-12
    )


def test_owl_by_hand() -> None:
    # lambda 0.08: Dn = 0.16 * (D - 0.01)/0.02 = 0, 0.16, 0.08 ; weighted mean of Dn with
    # P = 70, 140, 70: (0 + 22.4 + 5.6)/280 = 0.1 ; s = 0.7 - (Dn - 0.1) = 0.80, 0.64, 0.72
    cfg = AllocationConfig(strategy="owl", owl_lambda=0.08)
    result = allocate(THREE, cfg, 0.7, owl_outlier_ratio={0: 0.01, 1: 0.03, 2: 0.02})
    assert per_unit(result) == pytest.approx({"block0": 0.80, "block1": 0.64, "block2": 0.72}, abs=1e-12)
    assert weighted_mean(result) == pytest.approx(0.7, abs=1e-12)


def test_owl_equal_blocks_matches_reference_spread() -> None:
    # equal blocks: s = S - (Dn - mean Dn) = 0.7 - (0, 0.16, 0.08) + 0.08 = 0.78, 0.62, 0.70 (spread 2 lambda)
    frame = frame_from([{"all": 1.0}] * 3, [10, 10, 10])
    result = allocate(frame, AllocationConfig(strategy="owl"), 0.7, owl_outlier_ratio={0: 0.01, 1: 0.03, 2: 0.02})
    assert per_unit(result) == pytest.approx({"block0": 0.78, "block1": 0.62, "block2": 0.70}, abs=1e-12)


def test_uniform_ignores_metrics() -> None:
    frame = THREE.drop(columns="alpha_peak")
    result = allocate(frame, AllocationConfig(strategy="uniform"), 0.7)
    assert (result["sparsity"] == 0.7).all()


@pytest.mark.parametrize("strategy", ["uniform", "linear", "owl"])
def test_zero_target_is_dense_without_metrics(strategy: str) -> None:
    frame = THREE.drop(columns="alpha_peak")
    result = allocate(frame, AllocationConfig(strategy=strategy), 0.0)
    assert (result["sparsity"] == 0.0).all()


def test_split_differs_from_block() -> None:
    # scored by {o, gate}: block means (1+3)/2 = (3+1)/2 = 2 are equal -> block-wise is uniform;
    # split scores attn by o (1 vs 3) and MLP by gate (3 vs 1): r attn = 0.8, 1.2 ; r mlp = 1.2, 0.8 ;
    # P attn 40, mlp 30 ; sum P r = 32 + 36 + 48 + 24 = 140 = sum P -> c = S = 0.5
    frame = frame_from(
        [{"q": 1, "k": 1, "v": 1, "o": 1, "gate": 3, "up": 3, "down": 3},
         {"q": 3, "k": 3, "v": 3, "o": 3, "gate": 1, "up": 1, "down": 1}],
        [10, 10],
    )
    block = allocate(frame, AllocationConfig(strategy="linear", score_groups="o,gate"), 0.5)
    split = allocate(frame, AllocationConfig(strategy="linear", score_groups="o,gate", granularity="split"), 0.5)
    assert block["sparsity"].to_numpy() == pytest.approx(0.5, abs=1e-12)
    assert per_unit(split) == pytest.approx(
        {"block0.attn": 0.4, "block0.mlp": 0.6, "block1.attn": 0.6, "block1.mlp": 0.4}, abs=1e-12
    )


def test_split_normalises_attention_and_mlp_separately() -> None:
    # attn scores 1, 2 and MLP scores 10, 20: each group spans [0.8, 1.2] on its own
    # (a joint min/max would give attn 0.8 and 0.8 + 0.4/19). r = 0.8, 0.8 | 1.2, 1.2 ; sum P r = 140 -> c = S
    frame = frame_from(
        [{"q": 1, "k": 1, "v": 1, "o": 1, "gate": 10, "up": 10, "down": 10},
         {"q": 2, "k": 2, "v": 2, "o": 2, "gate": 20, "up": 20, "down": 20}],
        [10, 10],
    )
    result = allocate(frame, AllocationConfig(strategy="linear", granularity="split"), 0.5)
    assert per_unit(result) == pytest.approx(
        {"block0.attn": 0.4, "block0.mlp": 0.4, "block1.attn": 0.6, "block1.mlp": 0.6}, abs=1e-12
    )


def test_split_preset_scores_unlisted_mlp_by_all_its_types() -> None:
    # "QKVout + split": attention scored by q,k,v,o (equal -> r 1); MLP has no listed type, so it
    # is scored by mean(gate, up, down): block0 (1+1+4)/3 = 2, block1 3 -> r 0.8, 1.2
    frame = frame_from(
        [{"q": 5, "k": 5, "v": 5, "o": 5, "gate": 1, "up": 1, "down": 4},
         {"q": 5, "k": 5, "v": 5, "o": 5, "gate": 3, "up": 3, "down": 3}],
        [10, 10],
    )
    cfg = AllocationConfig(strategy="linear", preset="QKVout + split")
    assert cfg.granularity == "split"
    result = allocate(frame, cfg, 0.5)
    scores = result.groupby("unit", sort=False)["score"].first().to_dict()
    assert scores == pytest.approx({"block0.attn": 5, "block0.mlp": 2, "block1.attn": 5, "block1.mlp": 3})
    # r = 1, 0.8, 1, 1.2 ; sum P r = 40 + 24 + 40 + 36 = 140 = sum P -> c = 0.5
    assert per_unit(result) == pytest.approx(
        {"block0.attn": 0.5, "block0.mlp": 0.4, "block1.attn": 0.5, "block1.mlp": 0.6}, abs=1e-12
    )


def test_matrix_granularity_only_listed_types_vary() -> None:
    # q metrics 1, 3 -> r 0.8, 1.2 ; other matrices r 1 ; sum P r = 8 + 12 + 120 = 140 = sum P -> c = S
    frame = frame_from([{"all": 7.0, "q": 1.0}, {"all": 9.0, "q": 3.0}], [10, 10])
    result = allocate(frame, AllocationConfig(strategy="linear", score_groups="q", granularity="matrix"), 0.5)
    sparsity = dict(zip(result["name"], result["sparsity"]))
    assert sparsity["model.layers.0.q"] == pytest.approx(0.4, abs=1e-12)
    assert sparsity["model.layers.1.q"] == pytest.approx(0.6, abs=1e-12)
    others = result[result["matrix_type"] != "q"]
    assert others["sparsity"].to_numpy() == pytest.approx(0.5, abs=1e-12)
    assert others["score"].isna().all()


def test_score_groups_select_the_metric_types() -> None:
    # block0 has high q, block1 high v: the preset decides which block is pruned more
    frame = frame_from([{"all": 1.0, "q": 9.0}, {"all": 1.0, "v": 9.0}], [10, 10])
    by_q = per_unit(allocate(frame, AllocationConfig(strategy="linear", preset="Q"), 0.5))
    by_v = per_unit(allocate(frame, AllocationConfig(strategy="linear", preset="V"), 0.5))
    assert by_q["block0"] > by_q["block1"]
    assert by_v["block0"] < by_v["block1"]


def test_summarize_per_unit_and_block() -> None:
    result = allocate(THREE, AllocationConfig(strategy="linear"), 0.5)
    table = summarize(result)
    assert table["unit"].tolist() == ["block0", "block1", "block2"]
    assert table["numel"].tolist() == [70, 140, 70]
    assert table["sparsity"].tolist() == pytest.approx([8 / 21, 12 / 21, 10 / 21])
    assert len(summarize(result, by="block")) == 3


# ---- properties ------------------------------------------------------------------------------

blocks_st = st.integers(min_value=2, max_value=10)


@st.composite
def allocation_case(draw: st.DrawFn) -> tuple[pd.DataFrame, float, float, float, float]:
    n = draw(blocks_st)
    scores = draw(st.lists(st.floats(0.5, 20.0), min_size=n, max_size=n))
    sizes = draw(st.lists(st.integers(1, 10**7), min_size=n, max_size=n))
    eps = draw(st.floats(0.0, 0.99))
    target = draw(st.floats(0.01, 0.95))
    lo = draw(st.floats(0.0, target))
    hi = draw(st.floats(target, 1.0))
    frame = frame_from([{"all": s} for s in scores], sizes)
    return frame, eps, target, lo, hi


@settings(max_examples=150, deadline=None)
@given(allocation_case(), st.booleans())
def test_linear_properties(case: tuple[pd.DataFrame, float, float, float, float], higher: bool) -> None:
    frame, eps, target, lo, hi = case
    cfg = AllocationConfig(strategy="linear", epsilon=eps, min_sparsity=lo, max_sparsity=hi, higher_prunes_more=higher)
    result = allocate(frame, cfg, target)
    assert abs(weighted_mean(result) - target) <= 1e-9
    assert result["sparsity"].min() >= lo - 1e-12 and result["sparsity"].max() <= hi + 1e-12
    units = result.groupby("unit", sort=False).agg(score=("score", "first"), sparsity=("sparsity", "first"))
    ordered = units.sort_values("score", kind="stable")["sparsity"].to_numpy()
    steps = np.diff(ordered) if higher else -np.diff(ordered)
    assert (steps >= -1e-12).all()  # monotone in the score, in the configured direction


@settings(max_examples=50, deadline=None)
@given(allocation_case())
def test_epsilon_zero_is_uniform(case: tuple[pd.DataFrame, float, float, float, float]) -> None:
    frame, _, target, lo, hi = case
    cfg = AllocationConfig(strategy="linear", epsilon=0.0, min_sparsity=lo, max_sparsity=hi)
    assert allocate(frame, cfg, target)["sparsity"].to_numpy() == pytest.approx(target, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(allocation_case(), st.sampled_from(["split", "matrix"]))
def test_other_granularities_keep_mean_and_bounds(
    case: tuple[pd.DataFrame, float, float, float, float], granularity: str
) -> None:
    frame, eps, target, lo, hi = case
    rng = np.random.default_rng(len(frame))
    frame = frame.assign(alpha_peak=rng.uniform(1, 10, len(frame)), numel=rng.integers(1, 10**6, len(frame)))
    cfg = AllocationConfig(strategy="linear", epsilon=eps, min_sparsity=lo, max_sparsity=hi, granularity=granularity)
    result = allocate(frame, cfg, target)
    assert abs(weighted_mean(result) - target) <= 1e-9
    assert result["sparsity"].between(lo - 1e-12, hi + 1e-12).all()


@settings(max_examples=100, deadline=None)
@given(allocation_case(), st.floats(0.0, 0.3))
def test_owl_properties(case: tuple[pd.DataFrame, float, float, float, float], lam: float) -> None:
    frame, _, target, lo, hi = case
    n = frame["block"].nunique()
    outliers = {b: float(v) for b, v in enumerate(np.random.default_rng(n).uniform(0, 0.1, n))}
    cfg = AllocationConfig(strategy="owl", owl_lambda=lam, min_sparsity=lo, max_sparsity=hi)
    result = allocate(frame, cfg, target, owl_outlier_ratio=outliers)
    assert abs(weighted_mean(result) - target) <= 1e-9
    assert result["sparsity"].between(lo - 1e-12, hi + 1e-12).all()
    units = result.groupby("block")["sparsity"].first()
    order = sorted(outliers, key=outliers.get)
    assert (np.diff(units[order].to_numpy()) <= 1e-12).all()  # more outliers -> less pruning


def test_owl_direction() -> None:
    frame = frame_from([{"all": 1.0}] * 4, [10, 10, 10, 10])
    outliers = {0: 0.05, 1: 0.01, 2: 0.03, 3: 0.02}
    result = allocate(frame, AllocationConfig(strategy="owl"), 0.7, owl_outlier_ratio=outliers)
    s = result.groupby("block")["sparsity"].first()
    assert s[0] < s[2] < s[3] < s[1]
    assert s.max() - s.min() == pytest.approx(0.16)


# ---- bad input -------------------------------------------------------------------------------


def test_unknown_preset_lists_accepted() -> None:
    with pytest.raises(ConfigError, match="QKVout \\+ split"):
        allocation_config(strategy="linear", preset="QKVZ")
    with pytest.raises(ValueError, match="accepted"):
        AllocationConfig(preset="QKVZ")
    assert "QKVout + split" in preset_names()


def test_unknown_matrix_type_lists_accepted() -> None:
    with pytest.raises(ConfigError, match="q, k, v, o, gate, up, down"):
        allocation_config(score_groups="q,x")
    bad = THREE.assign(matrix_type=THREE["matrix_type"].replace({"up": "w_up"}))
    with pytest.raises(ConfigError, match="w_up.*accepted: q, k, v, o, gate, up, down"):
        allocate(bad, AllocationConfig(strategy="linear"), 0.5)


@pytest.mark.parametrize("eps", [1.0, -0.1, 1.5])
def test_epsilon_outside_range(eps: float) -> None:
    with pytest.raises(ConfigError, match="epsilon"):
        allocation_config(strategy="linear", epsilon=eps)
    unchecked = AllocationConfig.model_construct(strategy="linear", epsilon=eps)
    with pytest.raises(ConfigError, match=r"epsilon.*\[0, 1\)"):
        allocate(THREE, unchecked, 0.5)


def test_unreachable_target_names_range() -> None:
    cfg = AllocationConfig(strategy="linear", min_sparsity=0.6, max_sparsity=0.9)
    with pytest.raises(ConfigError, match=r"reachable range \[0\.6, 0\.9\]"):
        allocate(THREE, cfg, 0.5)
    with pytest.raises(ConfigError, match=r"reachable range \[0\.0, 0\.5\]"):
        allocate(THREE, AllocationConfig(strategy="uniform", max_sparsity=0.5), 0.7)


def test_nan_metric_names_matrices() -> None:
    frame = THREE.copy()
    frame.loc[frame["name"] == "model.layers.1.k", "alpha_peak"] = np.nan
    with pytest.raises(ConfigError, match="model.layers.1.k"):
        allocate(frame, AllocationConfig(strategy="linear"), 0.5)
    # not needed when k does not score: no error
    result = allocate(frame, AllocationConfig(strategy="linear", preset="Q out"), 0.5)
    assert math.isfinite(weighted_mean(result))


def test_missing_metric_lists_available() -> None:
    frame = THREE.assign(stable_rank=1.0, alpha=2.0)
    with pytest.raises(ConfigError, match="available metric columns: alpha_peak, stable_rank, alpha"):
        allocate(frame, AllocationConfig(strategy="linear", metric="hessian_alpha"), 0.5)


def test_owl_needs_ratios_for_every_block() -> None:
    with pytest.raises(ConfigError, match="owl_outlier_ratio"):
        allocate(THREE, AllocationConfig(strategy="owl"), 0.7)
    with pytest.raises(ConfigError, match=r"missing blocks \[2\]"):
        allocate(THREE, AllocationConfig(strategy="owl"), 0.7, owl_outlier_ratio={0: 0.1, 1: 0.2})


def test_bad_target_and_table() -> None:
    with pytest.raises(ConfigError, match="target"):
        allocate(THREE, AllocationConfig(), 1.2)
    with pytest.raises(ConfigError, match="numel"):
        allocate(THREE.drop(columns="numel"), AllocationConfig(), 0.5)


# ---- CLI -------------------------------------------------------------------------------------


def test_cli_with_spectra_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pruning.cli import main

    spectra = tmp_path / "spectra.csv"
    THREE.to_csv(spectra, index=False)
    out = tmp_path / "alloc.csv"
    rc = main(["allocate", "--spectra", str(spectra), "--sparsity", "0.5", "--epsilon", "0.2",
               "--preset", "all", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "block1" in printed and "weighted mean 0.5000000000" in printed
    written = pd.read_csv(out)
    assert len(written) == 21
    assert written.groupby("unit")["sparsity"].first().to_dict() == pytest.approx(
        {"block0": 8 / 21, "block1": 12 / 21, "block2": 10 / 21}
    )


def test_cli_conflicting_preset_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pruning.cli import main

    spectra = tmp_path / "spectra.csv"
    THREE.to_csv(spectra, index=False)
    rc = main(["allocate", "--spectra", str(spectra), "--sparsity", "0.5", "--preset", "QKVout + split",
               "--granularity", "block"])
    assert rc == 2
    assert "preset" in capsys.readouterr().err
