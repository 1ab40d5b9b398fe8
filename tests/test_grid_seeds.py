"""The grid's cell statistic (pruning.app_support.grid, CELL_STATS): by default a cell shows the lowest
mean over the calibration seeds of one setting, as the allocation study reports it (mean ± sample std
over 3 seeds, docs/FINDINGS.md), not the luckiest seed; "lowest" keeps the best single value."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from pruning.app_support.grid import CELL_STATS, build_grid, cell_legend, shown_values
from pruning.app_support.grid_plots import grid_heatmap
from pruning.store.queries_results import config_setting
import pruning.study

REPO = Path(__file__).resolve().parents[1]
STORE = REPO / "data" / "store"
STUDY_CALIBRATION = "wiki:train · 128 × 2048"


def _value(run_id: str, strategy: str, ppl: float, setting: str | None, seed: float | None,
           kind: str = "run") -> dict:
    """One perplexity row of Wanda at 70 % on wiki, as ``perplexity_cells`` gives it."""
    return {"kind": kind, "run_id": run_id, "model": "m", "method": "wanda", "preset": None, "preset_raw": None,
            "epsilon": None, "sparsity": 0.7, "dataset": "wiki", "ppl": ppl, "is_baseline": False,
            "strategy": strategy, "metric": None, "seed": math.nan if seed is None else float(seed),
            "setting": setting}


#: uniform (the baseline): one setting, seeds 800 / 900 / 1000 (mean 900, std 100; lowest 800).
#: ATP: setting A's seeds 300 / 310 / 338 (mean 316, std 19.70) lose to setting B's single 312, whose
#: value is no seed's lowest (300 is). DLP: setting D's seeds 330 / 340 / 350 (mean 340, std 10) beat a
#: reference's single 345, while the lowest value is a seed (330) and the mean of all four is 341.25.
#: OWL: setting W's seeds NaN / 400 / 420 (a diverged seed: mean 410 over n = 2).
CELLS = pd.DataFrame([
    _value("u0", "uniform", 800.0, "U", 0), _value("u1", "uniform", 900.0, "U", 1),
    _value("u2", "uniform", 1000.0, "U", 2),
    _value("a0", "depth", 300.0, "A", 0), _value("a1", "depth", 310.0, "A", 1), _value("a2", "depth", 338.0, "A", 2),
    _value("b0", "depth", 312.0, "B", 0),
    _value("d0", "dlp", 330.0, "D", 0), _value("d1", "dlp", 340.0, "D", 1), _value("d2", "dlp", 350.0, "D", 2),
    _value("ref", "dlp", 345.0, None, None, kind="reference"),
    _value("w0", "owl", math.nan, "W", 0), _value("w1", "owl", 400.0, "W", 1), _value("w2", "owl", 420.0, "W", 2),
])


def test_mean_shows_the_setting_of_lowest_mean_with_its_spread():
    grid = build_grid(CELLS, model="m", sparsity=0.7, dataset="wiki")  # the default: mean
    assert grid.cell_stat == "mean" and grid.baseline == "uniform"
    assert grid.value("Wanda", "uniform") == pytest.approx(900.0)
    assert grid.std("Wanda", "uniform") == pytest.approx(100.0)
    # ATP: B's single 312 beats A's mean 316 (and A's std 19.70 is not shown: not the shown group)
    assert grid.value("Wanda", "ATP") == 312.0 and math.isnan(grid.std("Wanda", "ATP"))
    assert int(grid.seeds.loc["Wanda", "ATP"]) == 1 and int(grid.count.loc["Wanda", "ATP"]) == 4
    # DLP: D's mean 340 beats the reference's 345 (the lowest value 330 and the mean of all, 341.25, lose)
    assert grid.value("Wanda", "DLP") == pytest.approx(340.0) and grid.std("Wanda", "DLP") == pytest.approx(10.0)
    assert int(grid.seeds.loc["Wanda", "DLP"]) == 3 and grid.source.loc["Wanda", "DLP"] == "run"
    # OWL: the diverged seed is left out of mean, std and n
    assert grid.value("Wanda", "OWL") == pytest.approx(410.0) and int(grid.seeds.loc["Wanda", "OWL"]) == 2
    assert grid.std("Wanda", "OWL") == pytest.approx(math.sqrt(200.0))
    # Δ % from the baseline's mean (900), not its best seed (800): 340 / 900 - 1 = -62.2 %, 312 / 900 - 1 = -65.3 %
    assert grid.delta_pct.loc["Wanda", "DLP"] == pytest.approx((340 / 900 - 1) * 100)
    assert grid.delta.loc["Wanda", "ATP"] == pytest.approx(312.0 - 900.0)
    assert grid.text.loc["Wanda", "DLP"] == "● 340.00 ± 10.00<br>(-62.2%)<br>×4"
    assert grid.text.loc["Wanda", "ATP"] == "● 312.00<br>(-65.3%)<br>×4"  # one value: no ±
    assert grid.text.loc["Wanda", "uniform"] == "● 900.00 ± 100.00<br>×3"
    # the cell table: each value's seed and setting, the shown ones first and ticked
    dlp = grid.cell("Wanda", "DLP")
    assert dlp["run_id"].tolist() == ["d0", "d1", "d2", "ref"] and dlp["shown"].tolist() == [True, True, True, False]
    assert dlp["seed"].tolist()[:3] == [0.0, 1.0, 2.0] and math.isnan(dlp["seed"].iloc[3])
    assert dlp["setting"].tolist()[:3] == ["D"] * 3 and pd.isna(dlp["setting"].iloc[3])
    assert grid.cell("Wanda", "ATP")["run_id"].iloc[0] == "b0"
    # the detail's Δ is to the baseline's mean as well
    assert dlp.set_index("run_id").loc["d0", "delta_to_baseline"] == pytest.approx(330.0 - 900.0)


def test_lowest_keeps_the_best_single_value():
    grid = build_grid(CELLS, model="m", sparsity=0.7, dataset="wiki", cell="lowest")
    assert grid.cell_stat == "lowest"
    assert grid.value("Wanda", "uniform") == 800.0 and grid.value("Wanda", "ATP") == 300.0
    assert grid.value("Wanda", "DLP") == 330.0 and grid.value("Wanda", "OWL") == 400.0
    assert grid.delta_pct.loc["Wanda", "ATP"] == pytest.approx((300 / 800 - 1) * 100)
    assert grid.text.loc["Wanda", "ATP"] == "● 300.00<br>(-62.5%)<br>×4" and "±" not in "".join(grid.text.stack())
    assert int(grid.seeds.loc["Wanda", "DLP"]) == 1 and math.isnan(grid.std("Wanda", "DLP"))
    assert grid.cell("Wanda", "ATP")["run_id"].iloc[0] == "a0"


def test_seeds_of_one_setting_give_the_study_numbers():
    """One cell of 3 seeds and nothing else: mean 316, sample std (ddof 1) 19.70 — not the population
    std (16.08) and not the lowest seed (300)."""
    atp = CELLS[CELLS["setting"] == "A"]
    labels, mean, std, n = shown_values(atp, "mean")
    assert (mean, n) == (pytest.approx(316.0), 3) and std == pytest.approx(19.6977, abs=1e-4)
    assert sorted(atp.loc[labels, "run_id"]) == ["a0", "a1", "a2"]
    grid = build_grid(atp, model="m", sparsity=0.7, dataset="wiki")
    assert grid.text.loc["Wanda", "ATP"] == "● 316.00 ± 19.70<br>×3"
    labels, lowest, std, n = shown_values(atp, "lowest")
    assert atp.loc[labels, "run_id"].tolist() == ["a0"] and (lowest, n) == (300.0, 1) and math.isnan(std)
    labels, mean, std, n = shown_values(CELLS[CELLS["run_id"] == "w0"], "mean")  # only a diverged seed
    assert labels == [] and n == 0 and math.isnan(mean) and math.isnan(std)


def _frames(grid) -> dict[str, pd.DataFrame]:
    return {"best": grid.best, "count": grid.count, "delta": grid.delta, "text": grid.text, "source": grid.source,
            "seeds": grid.seeds, "spread": grid.spread}


def _notes_value(kind: str, run_id: str, method: str, preset: str | None, ppl: float, baseline: bool = False,
                 setting: str | None = None) -> dict:
    return {**_value(run_id, "linear", ppl, setting, 0 if kind == "run" else None, kind=kind), "method": method,
            "preset": preset, "preset_raw": preset, "is_baseline": baseline}


#: a notes-like table of single values: GT baselines (one NaN), a cell of two references, a run and a
#: reference of equal value (a tie: the first one wins), a diverged run
SINGLE_VALUES = pd.DataFrame([
    _notes_value("reference", "g1", "wanda", "all", 24.0, baseline=True),
    _notes_value("reference", "g2", "wanda", "all", 23.52, baseline=True),
    _notes_value("reference", "g3", "magnitude", "all", math.nan, baseline=True),
    _notes_value("reference", "r1", "wanda", "QKVout", 25.0), _notes_value("reference", "r2", "wanda", "QKVout", 22.01),
    _notes_value("run", "own", "wanda", "QKVout", 21.5), _notes_value("reference", "tie", "wanda", "QKVout", 21.5),
    _notes_value("run", "nan-run", "magnitude", "QKVout", math.nan),
    _notes_value("reference", "m1", "magnitude", "QKVout", 50.0),
    _notes_value("run", "s1", "sparsegpt", "QKVout", 19.0), _notes_value("run", "s2", "sparsegpt", "QKVout", 18.0),
])


@pytest.mark.parametrize("with_settings", [False, True])
def test_mean_equals_lowest_where_every_setting_holds_one_value(with_settings: bool):
    """Each value its own setting (or no setting column at all, as in older frames): the two modes agree
    on every frame, ties included (a run and a reference of equal value: the first wins in both)."""
    cells = SINGLE_VALUES.drop(columns="setting")
    if with_settings:
        cells = cells.assign(setting=[f"s{i}" if k == "run" else None for i, k in enumerate(cells["kind"])])
    for source in ("all", "reference", "run"):
        mean = build_grid(cells, model="m", sparsity=0.7, source=source, cell="mean")
        lowest = build_grid(cells, model="m", sparsity=0.7, source=source, cell="lowest")
        for name, frame in _frames(mean).items():
            pd.testing.assert_frame_equal(frame, _frames(lowest)[name], obj=f"{source}: {name}")
        pd.testing.assert_frame_equal(mean.detail, lowest.detail)
    grid = build_grid(cells, model="m", sparsity=0.7)
    assert grid.value("Wanda", "QKVout") == 21.5 and grid.source.loc["Wanda", "QKVout"] == "run"
    assert grid.value("Wanda", "GT") == 23.52 and grid.text.loc["magnitude", "GT"] == "nan"
    assert grid.value("SparseGPT", "QKVout") == 18.0 and "±" not in "".join(grid.text.stack())
    # the same two SparseGPT runs as seeds of one setting: now they are averaged
    seeded = cells.assign(setting=["same" if r in ("s1", "s2") else None for r in cells["run_id"]])
    assert build_grid(seeded, model="m", sparsity=0.7).value("SparseGPT", "QKVout") == pytest.approx(18.5)


def test_bad_cell_statistic_is_named():
    with pytest.raises(ValueError) as err:
        build_grid(CELLS, model="m", sparsity=0.7, cell="median")
    assert "'median'" in str(err.value) and "('mean', 'lowest')" in str(err.value)
    with pytest.raises(ValueError, match="'best'"):
        shown_values(CELLS, "best")
    with pytest.raises(ValueError, match="'min'"):
        cell_legend("min", None)
    assert CELL_STATS == ("mean", "lowest")


def _hovers(grid) -> dict[tuple[str, str], str]:
    cells = grid_heatmap(grid).data[-1]  # the invisible scatter layer that carries the cells' text
    return {tuple(c): h for c, h in zip(cells.customdata, cells.hovertext)}


def test_caption_and_hover_say_what_the_cell_is():
    assert cell_legend("lowest", "uniform") == "cell = best value, (Δ % to uniform), ×count"
    assert cell_legend("mean", None).startswith("cell = mean ± std over the calibration seeds of one setting")
    assert "the lowest such mean" in cell_legend("mean", "uniform")
    hovers = _hovers(build_grid(CELLS, model="m", sparsity=0.7))
    assert "mean 340.00 ± 10.00 over 3 seeds · 4 value(s) in the cell" in hovers[("Wanda", "DLP")]
    assert "312.00, a single value" in hovers[("Wanda", "ATP")]
    assert "best 300.00" in _hovers(build_grid(CELLS, model="m", sparsity=0.7, cell="lowest"))[("Wanda", "ATP")]


def test_setting_ignores_only_the_calibration_seed_label_and_tags():
    config = {"calibration": {"dataset": "wiki:train", "seed": 0}, "allocation": {"epsilon": 0.2},
              "label": "a", "tags": ["x"], "seed": 0}
    replicate = {"calibration": {"dataset": "wiki:train", "seed": 2}, "allocation": {"epsilon": 0.2},
                 "label": "b", "tags": [], "seed": 0}
    assert config_setting(config) == config_setting(replicate)
    assert len(config_setting(config)) == 12 and int(config_setting(config), 16) >= 0
    assert config["calibration"]["seed"] == 0 and config["label"] == "a"  # the input is left as it is
    for other in ({**replicate, "allocation": {"epsilon": 0.3}}, {**replicate, "seed": 1},
                  {**replicate, "calibration": {"dataset": "wiki", "seed": 2}}):
        assert config_setting(other) != config_setting(config)


def test_a_run_config_is_one_setting_across_code_versions():
    """A seed stored before a config field existed (the key absent) and one stored after (the key at
    its default) are one setting, as they are one run id; the field at another value is another."""
    from pruning.config.run_config import RunConfig

    base = RunConfig.from_dict({"pruning": {"method": "wanda", "sparsity": 0.7},
                                "allocation": {"strategy": "linear", "metric": "hessian_alpha", "epsilon": 0.3}})
    new = base.with_overrides({"calibration.seed": 1}).to_dict()
    old = base.with_overrides({"calibration.seed": 2}).to_dict()
    assert "metric_mix" in old["allocation"] and old["allocation"].pop("metric_mix") is None  # before the field
    assert config_setting(new) == config_setting(old) == config_setting(base.to_dict())
    mixed = base.with_overrides({"allocation.metric_mix": "depth"}).to_dict()
    assert config_setting(mixed) != config_setting(new)
    assert config_setting({**new, "tags": ["other"], "label": "x"}) == config_setting(new)


# ---- the shipped store: the grid says what docs/FINDINGS.md says --------------------------------------------
def _study():
    return pruning.study


@pytest.mark.shipped
def test_shipped_grid_cell_is_the_study_mean_and_std():
    """SmolLM2 Wanda 70 % ATP on wiki, calibration wiki:train (the study's final runs): the grid's mean
    mode gives the study table's mean ± std (316.24 ± 6.28, n = 3), the lowest mode the best seed. The
    study family ``depth`` is the grid's column "ATP" (strategy depth); the cell holds only the three
    chosen final runs (validation runs read wiki:validation, another dataset), so the lowest-mean rule
    cannot pick another group here."""
    from pruning.calibration.protocol import by_calibration
    from pruning.store.queries import perplexity_cells

    study = _study()
    runs = study.study_runs(str(STORE))
    summary = study.summarize(runs).set_index(["model", "method", "sparsity", "family"])
    row = summary.loc[("smollm2-135m", "wanda", 0.7, "depth")]
    cells = by_calibration(perplexity_cells(root=STORE), STUDY_CALIBRATION)
    grid = build_grid(cells, model="smollm2-135m", sparsity=0.7, dataset="wiki")
    assert grid.value("Wanda", "ATP") == pytest.approx(row["wiki_mean"], abs=1e-9)
    assert grid.std("Wanda", "ATP") == pytest.approx(row["wiki_std"], abs=1e-9)
    assert int(grid.seeds.loc["Wanda", "ATP"]) == row["wiki_n"] == 3
    assert grid.text.loc["Wanda", "ATP"].startswith("● 316.24 ± 6.28<br>")
    # the cell's values are exactly the study's chosen final runs of that family, one setting, seeds 0, 1, 2
    cell = grid.cell("Wanda", "ATP")
    final = runs[(runs["model"] == "smollm2-135m") & (runs["method"] == "wanda") & (runs["sparsity"] == 0.7)
                 & (runs["family"] == "depth") & (runs["phase"] == "final") & runs["chosen"].astype(bool)]
    assert set(cell["run_id"]) == set(final["run_id"]) and len(cell) == 3
    assert sorted(cell["seed"]) == [0.0, 1.0, 2.0] and cell["setting"].nunique() == 1 and cell["shown"].all()
    lowest = build_grid(cells, model="smollm2-135m", sparsity=0.7, dataset="wiki", cell="lowest")
    assert lowest.value("Wanda", "ATP") == pytest.approx(float(final["wiki"].min()))
    assert lowest.text.loc["Wanda", "ATP"].startswith("● 310.71<br>")
