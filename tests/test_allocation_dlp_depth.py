"""DLP (Chen et al., ICML 2025) and ATP `depth` (Huang et al., ICML 2025) allocations: hand-computed
cases on which the plausible wrong formulas give other numbers, exact weighted mean, bounds, bad
hyper-parameters, run ids, the DLP calibration statistic, and the family registry's sub-blocks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pruning.allocation import allocate, allocation_config
from pruning.config.run_config import AllocationConfig, RunConfig
from pruning.errors import ConfigError
from pruning.model.families import FAMILIES, family_for, prunable_matrices
from pruning.calibration.layer_stats import dlp_unimportance, wanda_score_statistic
from pruning.model.load import LoadedModel, ModelSource
from pruning.config.presets import MATRIX_TYPES, STRATEGY_COLUMNS, strategy_column


def blocks_frame(numel_per_matrix: list[int]) -> pd.DataFrame:
    """Seven matrices per block, each of ``numel_per_matrix[b]`` parameters (block P = 7x that)."""
    return pd.DataFrame([
        {"block": b, "matrix_type": t, "name": f"model.layers.{b}.{t}", "numel": n}
        for b, n in enumerate(numel_per_matrix) for t in MATRIX_TYPES
    ])


def by_block(result: pd.DataFrame) -> list[float]:
    return result.groupby("block", sort=True)["sparsity"].first().tolist()


def weighted_mean(result: pd.DataFrame) -> float:
    return float((result["sparsity"] * result["numel"]).sum() / result["numel"].sum())


# Four blocks of unequal size: P = 70, 140, 70, 140 (sum 420), so weighted and unweighted means differ.
FOUR = blocks_frame([10, 20, 10, 20])
U = {0: 1.0, 1: 3.0, 2: 2.0, 3: 4.0}


# ---- DLP ------------------------------------------------------------------------------------------


def test_dlp_by_hand() -> None:
    # I = 1 - U/10 = 0.9, 0.7, 0.8, 0.6 ; In = 0.3 (I - 0.6)/0.3 = 0.3, 0.1, 0.2, 0.0
    # mean_P(In) = (21 + 14 + 14 + 0)/420 = 7/60 ; s = 0.7 - (In - 7/60) = 31/60, 43/60, 37/60, 49/60
    result = allocate(FOUR, AllocationConfig(strategy="dlp"), 0.7, dlp_unimportance=U)
    assert by_block(result) == pytest.approx([31 / 60, 43 / 60, 37 / 60, 49 / 60], abs=1e-12)
    assert weighted_mean(result) == pytest.approx(0.7, abs=1e-12)
    assert result.groupby("block")["score"].first().tolist() == [1.0, 3.0, 2.0, 4.0]
    assert set(result["unit"]) == {"block0", "block1", "block2", "block3"}
    # the wrong variants give other numbers: an unweighted mean (0.55, 0.75, 0.65, 0.85), inverted
    # importance (more pruning where U is low) and a spread of alpha instead of 2 alpha
    s = np.array(by_block(result))
    assert not np.allclose(s, [0.55, 0.75, 0.65, 0.85])
    assert s[3] > s[1] > s[2] > s[0]  # higher unimportance -> more pruning
    assert s.max() - s.min() == pytest.approx(0.3, abs=1e-12)  # 2 alpha, not alpha


def test_dlp_equal_blocks_is_the_reference_formula() -> None:
    # ironartisan/DLP get_dlp_ratios: density = scaled - mean(scaled) + (1 - S), scaled = 2 alpha minmax(1 - U/sum U)
    frame = blocks_frame([10] * 5)
    values = {0: 0.012, 1: 0.020, 2: 0.015, 3: 0.031, 4: 0.027}
    u = np.array(list(values.values()))
    imp = 1 - u / u.sum()
    scaled = (imp - imp.min()) / (imp.max() - imp.min()) * 0.15 * 2
    density = scaled - scaled.mean() + (1 - 0.7)
    result = allocate(frame, AllocationConfig(strategy="dlp", dlp_alpha=0.15), 0.7, dlp_unimportance=values)
    assert by_block(result) == pytest.approx((1 - density).tolist(), abs=1e-12)


def test_dlp_bounds_redistribute_exactly() -> None:
    # max 0.8 clips block 3 (49/60); the common shift t over blocks 0-2 solves
    # 70 (31/60 + t) + 140 (43/60 + t) + 70 (37/60 + t) + 140 * 0.8 = 294 -> t = 1/120
    cfg = AllocationConfig(strategy="dlp", max_sparsity=0.8)
    result = allocate(FOUR, cfg, 0.7, dlp_unimportance=U)
    assert by_block(result) == pytest.approx([0.525, 0.725, 0.625, 0.8], abs=1e-12)
    assert weighted_mean(result) == pytest.approx(0.7, abs=1e-12)  # a bare clip would give 0.6944


@pytest.mark.parametrize("seed", range(12))
def test_dlp_and_depth_keep_mean_and_bounds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    frame = blocks_frame(rng.integers(1, 10**6, n).tolist())
    lo = float(rng.choice([0.0, 0.3]))
    hi = float(rng.choice([0.75, 0.9, 1.0]))
    target = float(rng.uniform(max(lo, 0.4), min(hi, 0.8)))
    values = {b: float(v) for b, v in enumerate(rng.uniform(0.01, 1.0, n))}
    for cfg, kwargs in (
        (AllocationConfig(strategy="dlp", dlp_alpha=float(rng.uniform(0, 0.5)), min_sparsity=lo, max_sparsity=hi),
         {"dlp_unimportance": values}),
        (AllocationConfig(strategy="depth", depth_beta=float(rng.uniform(0, 0.05)), min_sparsity=lo, max_sparsity=hi),
         {}),
    ):
        result = allocate(frame, cfg, target, **kwargs)
        assert abs(weighted_mean(result) - target) <= 1e-9
        assert result["sparsity"].between(lo - 1e-12, hi + 1e-12).all()


def test_dlp_needs_statistics_for_every_block() -> None:
    with pytest.raises(ConfigError, match="dlp_unimportance"):
        allocate(FOUR, AllocationConfig(strategy="dlp"), 0.7)
    with pytest.raises(ConfigError, match=r"missing blocks \[3\]"):
        allocate(FOUR, AllocationConfig(strategy="dlp"), 0.7, dlp_unimportance={0: 1.0, 1: 2.0, 2: 3.0})
    with pytest.raises(ConfigError, match=">= 0 with a positive sum"):
        allocate(FOUR, AllocationConfig(strategy="dlp"), 0.7, dlp_unimportance={0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0})


# ---- ATP depth ------------------------------------------------------------------------------------


def test_depth_equal_blocks_is_atp_progression() -> None:
    # wzhuang-xmu/ATP main.py: s_i = S - beta (L - 1)/2 + i beta = 0.67, 0.69, 0.71, 0.73
    result = allocate(blocks_frame([10] * 4), AllocationConfig(strategy="depth", depth_beta=0.02), 0.7)
    assert by_block(result) == pytest.approx([0.67, 0.69, 0.71, 0.73], abs=1e-12)


def test_depth_by_hand_unequal_blocks() -> None:
    # mean_P(i) = (0*70 + 1*140 + 2*70 + 3*140)/420 = 5/3 ; s = 0.7 + 0.02 (i - 5/3)
    result = allocate(FOUR, AllocationConfig(strategy="depth", depth_beta=0.02), 0.7)
    expected = [0.7 + 0.02 * (i - 5 / 3) for i in range(4)]
    assert by_block(result) == pytest.approx(expected, abs=1e-12)
    assert weighted_mean(result) == pytest.approx(0.7, abs=1e-12)
    s = np.array(by_block(result))
    assert not np.allclose(s, [0.67, 0.69, 0.71, 0.73])  # the unweighted mean misses S here
    assert np.diff(s) == pytest.approx([0.02] * 3, abs=1e-12)  # per block, not per normalised depth (0.02/3)


def test_depth_bounds_redistribute_exactly() -> None:
    # max 0.72 clips block 3; blocks 0-2 shift by t: 192.2667 + 280 t = 294 - 100.8 -> t = 1/300
    cfg = AllocationConfig(strategy="depth", depth_beta=0.02, max_sparsity=0.72)
    result = allocate(FOUR, cfg, 0.7)
    assert by_block(result) == pytest.approx([0.67, 0.69, 0.71, 0.72], abs=1e-12)
    assert weighted_mean(result) == pytest.approx(0.7, abs=1e-12)


def test_depth_beta_zero_is_uniform_and_granularity_is_block() -> None:
    cfg = AllocationConfig(strategy="depth", depth_beta=0.0, granularity="split")
    result = allocate(FOUR, cfg, 0.6)
    assert result["sparsity"].to_numpy() == pytest.approx(0.6, abs=1e-12)
    assert set(result["unit"]) == {"block0", "block1", "block2", "block3"}


# ---- hyper-parameters, run ids ----------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [("dlp_alpha", 1.5), ("dlp_alpha", -0.1), ("depth_beta", 1.0),
                                              ("depth_beta", -0.01), ("dlp_alpha", float("nan"))])
def test_bad_hyper_parameters_name_value_and_range(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"{field}: {value!r} is invalid: .*accepted range \[0, 1\)"):
        allocation_config(strategy="dlp", **{field: value})
    fields = {"strategy": "depth", "depth_beta": 0.01, field: value}
    with pytest.raises(ConfigError, match=rf"allocation\.{field}: "):
        RunConfig.from_dict({"allocation": fields})
    unchecked = AllocationConfig.model_construct(**fields)
    with pytest.raises(ConfigError, match=rf"allocation\.{field}: .* accepted range \[0, 1\)"):
        allocate(FOUR, unchecked, 0.7, dlp_unimportance=U)


def test_depth_needs_beta_and_statistic_is_checked() -> None:
    with pytest.raises(ConfigError, match="depth_beta"):
        allocation_config(strategy="depth")
    with pytest.raises(ConfigError, match="depth_beta"):
        allocate(FOUR, AllocationConfig.model_construct(strategy="depth", depth_beta=None), 0.7)
    with pytest.raises(ConfigError, match="dlp_statistic.*'median'.*'mean'"):
        allocation_config(strategy="dlp", dlp_statistic="max")


def test_new_fields_keep_existing_run_ids() -> None:
    old = RunConfig.from_dict({"pruning": {"sparsity": 0.7}})
    assert old.run_id == "wanda-084e39377b97"  # computed before the fields existed
    explicit = RunConfig.from_dict({"pruning": {"sparsity": 0.7},
                                    "allocation": {"dlp_alpha": 0.15, "dlp_statistic": "median", "depth_beta": None}})
    assert explicit.run_id == old.run_id
    assert "dlp_alpha" not in old.canonical_json() and "depth_beta" not in old.canonical_json()
    dlp = RunConfig.from_dict({"pruning": {"sparsity": 0.7}, "allocation": {"strategy": "dlp"}})
    wider = RunConfig.from_dict({"pruning": {"sparsity": 0.7}, "allocation": {"strategy": "dlp", "dlp_alpha": 0.2}})
    mean = RunConfig.from_dict({"pruning": {"sparsity": 0.7},
                                "allocation": {"strategy": "dlp", "dlp_statistic": "mean"}})
    assert len({old.run_id, dlp.run_id, wider.run_id, mean.run_id}) == 4


# ---- DLP statistic from calibration -----------------------------------------------------------------


def test_wanda_score_statistic_by_hand() -> None:
    # scores |W| * ||x||: [[1, 3]] * [2, 1] = [2, 3] and [[4]] * [0.5] = [2] -> union [2, 3, 2]
    weights = [torch.tensor([[1.0, -3.0]]), torch.tensor([[4.0]])]
    norms = [torch.tensor([2.0, 1.0]), torch.tensor([0.5])]
    assert wanda_score_statistic(weights, norms, "median") == 2.0
    assert wanda_score_statistic(weights, norms, "mean") == pytest.approx(7 / 3)
    # an even count takes the lower middle value (torch.median, as the reference): [1, 2, 3, 4] -> 2
    assert wanda_score_statistic([torch.tensor([[1.0, 2.0, 3.0, 4.0]])], [torch.ones(4)]) == 2.0
    with pytest.raises(ConfigError, match="dlp_statistic"):
        wanda_score_statistic(weights, norms, "max")


def as_loaded(model: nn.Module) -> LoadedModel:
    return LoadedModel(model, None, family_for(model), ModelSource("local", "memory", "tiny"), "test", 0.0)


def test_dlp_unimportance_on_tiny_model_by_hand(tiny_llama: nn.Module) -> None:
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    loaded = as_loaded(tiny_llama)
    median = dlp_unimportance(loaded, ids)
    mean = dlp_unimportance(loaded, ids, "mean")
    assert sorted(median) == [0, 1] and all(v > 0 for v in median.values())
    # block 0 by hand: Wanda scores from the directly measured inputs of its seven matrices
    refs = [ref for ref in prunable_matrices(tiny_llama) if ref.block == 0]
    seen: dict[str, list[torch.Tensor]] = {ref.name: [] for ref in refs}
    handles = [ref.module.register_forward_hook(
        lambda _m, i, _o, n=ref.name: seen[n].append(i[0].reshape(-1, i[0].shape[-1]))) for ref in refs]
    with torch.no_grad():
        tiny_llama(input_ids=ids)
    for h in handles:
        h.remove()
    with torch.no_grad():
        union = torch.cat([(ref.module.weight.abs() * torch.cat(seen[ref.name]).norm(dim=0)).reshape(-1)
                           for ref in refs])
    assert median[0] == pytest.approx(float(union.median()), rel=1e-5)
    assert mean[0] == pytest.approx(float(union.double().mean()), rel=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in tiny_llama.state_dict().items())  # dense model untouched
    table = pd.DataFrame([{"block": r.block, "matrix_type": r.matrix_type, "name": r.name, "numel": r.numel}
                          for r in prunable_matrices(tiny_llama)])
    result = allocate(table, AllocationConfig(strategy="dlp"), 0.6, dlp_unimportance=median)
    assert weighted_mean(result) == pytest.approx(0.6, abs=1e-12)
    with pytest.raises(ConfigError, match="dlp_statistic"):
        dlp_unimportance(loaded, ids, "sum")


# ---- sub-blocks from the family registry ------------------------------------------------------------


def test_sub_block_comes_from_the_family_layout() -> None:
    llama = FAMILIES["llama"]
    assert [llama.sub_block(t) for t in MATRIX_TYPES] == ["attn"] * 4 + ["mlp"] * 3
    # a layout that keeps the gate projection under its attention module (made up) moves it to 'attn'
    odd = dataclasses.replace(llama, name="odd", matrices={**llama.matrices, "gate": "self_attn.gate_proj"})
    assert odd.sub_block("gate") == "attn"
    frame = blocks_frame([10, 10]).assign(alpha_peak=[1.0] * 7 + [2.0] * 7)
    cfg = AllocationConfig(strategy="linear", granularity="split")
    units = allocate(frame, cfg, 0.5, family=odd).set_index("name")["unit"]
    assert units["model.layers.0.gate"] == "block0.attn"
    assert allocate(frame, cfg, 0.5).set_index("name")["unit"]["model.layers.0.gate"] == "block0.mlp"
    stray = dataclasses.replace(llama, name="stray", matrices={**llama.matrices, "up": "ffn.up_proj"})
    with pytest.raises(ConfigError, match="neither 'self_attn' nor 'mlp'"):
        stray.sub_block("up")


def test_every_strategy_but_linear_has_its_grid_column() -> None:
    from pruning.config.run_config import STRATEGIES

    assert {s for s in STRATEGIES if strategy_column(s) is None} == {"linear"}
    assert strategy_column("dlp") == "DLP" and strategy_column("depth") == "ATP" and strategy_column("owl") == "OWL"
    assert strategy_column(float("nan")) is None and len(set(STRATEGY_COLUMNS.values())) == len(STRATEGY_COLUMNS)


def test_cli_allocates_dlp_and_depth(tmp_path, capsys) -> None:
    from pruning.cli import main

    spectra = tmp_path / "spectra.csv"
    FOUR.to_csv(spectra, index=False)
    stats = tmp_path / "dlp.csv"
    pd.DataFrame({"block": list(U), "unimportance": list(U.values())}).to_csv(stats, index=False)
    out = tmp_path / "alloc.csv"
    assert main(["allocate", "--spectra", str(spectra), "--sparsity", "0.7", "--strategy", "dlp",
                 "--dlp-unimportance", str(stats), "--out", str(out)]) == 0
    assert by_block(pd.read_csv(out)) == pytest.approx([31 / 60, 43 / 60, 37 / 60, 49 / 60], abs=1e-9)
    assert main(["allocate", "--spectra", str(spectra), "--sparsity", "0.7", "--strategy", "depth",
                 "--depth-beta", "0.02", "--out", str(out)]) == 0
    assert by_block(pd.read_csv(out)) == pytest.approx([0.7 + 0.02 * (i - 5 / 3) for i in range(4)], abs=1e-9)
    capsys.readouterr()
    assert main(["allocate", "--spectra", str(spectra), "--sparsity", "0.7", "--strategy", "dlp"]) == 2
    assert "--dlp-unimportance" in capsys.readouterr().err
    assert main(["allocate", "--spectra", str(spectra), "--sparsity", "0.7", "--strategy", "depth",
                 "--depth-beta", "2"]) == 2
    assert "depth_beta: 2.0 is invalid: accepted range [0, 1)" in capsys.readouterr().err
