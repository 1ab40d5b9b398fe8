"""Unit tests of the app's pure helpers (no Streamlit): formatting, grid pivot, launch
validation, config diff, zero-shot table, plot builders."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pruning.app_support.compare import config_diff, flatten
from pruning.app_support.formatting import format_delta, format_epsilon, format_ppl, format_sparsity
from pruning.app_support.grid import BASELINE_COLUMN, OWN_RUN_MARK, UNLABELED_METHOD, build_grid, multi_value_cells
from pruning.app_support.launch import (
    build_run_config,
    check_model_reference,
    field_errors,
    grid_size,
    looks_like_local_path,
    parse_value_list,
    submission_token,
    validate_form,
)
from pruning.app_support.grid_plots import grid_heatmap
from pruning.app_support.plots import esd_figure, metric_by_block, sparsity_per_block
from pruning.app_support.tables import MEAN_ROW, zeroshot_table
from pruning.errors import ConfigError


@pytest.mark.parametrize(
    "value, text",
    [
        (22.01, "22.01"),
        (192.69, "192.69"),
        (17.756, "17.76"),
        (2845, "2845"),
        (54888, "54.9k"),
        (219402, "219k"),
        (1_234_567, "1.2M"),
        (float("nan"), "nan"),
        (None, "nan"),
        ("x", "nan"),
        (float("inf"), "inf"),
        (999.999, "1000"),
        (9999.7, "10.0k"),
        (99_960, "100k"),
    ],
)
def test_format_ppl(value, text):
    assert format_ppl(value) == text


def test_format_delta_pct_relative_to_the_baseline():
    from pruning.app_support.formatting import format_delta_pct

    assert format_delta_pct(22.01, 23.52) == "-6.4 %"  # not the absolute -1.51, not a ratio 0.936
    assert format_delta_pct(51.33, 23.52) == "+118 %"
    assert format_delta_pct(23.52, 23.52) == "±0 %"
    assert format_delta_pct(219402, 23.52) == "×9328"  # a ratio from 10x on, never "+932,700 %"
    assert format_delta_pct(30.0, 0.0) == "" and format_delta_pct(float("nan"), 2.0) == ""


def test_format_delta_and_others():
    assert format_delta(22.01, 23.52) == "-1.51"
    assert format_delta(54888, 219402) == "-165k"
    assert format_delta(23.52, 23.52) == "±0"
    assert format_delta(30.0, float("nan")) == ""
    assert format_epsilon(None) == "default" and format_epsilon(0.162) == "0.162"
    assert format_sparsity(0.7) == "70%"


def _cells(rows):
    cols = [
        "kind",
        "run_id",
        "model",
        "method",
        "preset",
        "preset_raw",
        "epsilon",
        "sparsity",
        "dataset",
        "ppl",
        "is_baseline",
        "raw_text",
        "source_line",
    ]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows], columns=cols)


CELLS = _cells(
    [
        ("reference", "r1", "M", "wanda", "QKVout", "QKV output", None, 0.7, "wikitext2", 22.01, False, "w 22.01", 17),
        ("reference", "r2", "M", "wanda", "all", "GT", 0.22, 0.7, "wikitext2", 23.52, True, "w 23.52 0.22ww", 18),
        ("reference", "r3", "M", "wanda", "all", "GT", None, 0.7, "wikitext2", 24.0, True, "24 GT", 6),
        (
            "reference",
            "r4",
            "M",
            "sparsegpt",
            "QKVout + split",
            "QKVout + split",
            None,
            0.7,
            "wikitext2",
            17.76,
            False,
            "s 17.76",
            19,
        ),
        ("reference", "r5", "M", "sparsegpt", "all", "GT", None, 0.7, "wikitext2", 19.326, True, "GT-19.326", 7),
        ("reference", "r6", "M", "magnitude", "all", "GT", None, 0.7, "wikitext2", float("nan"), True, "nan GT", 11),
        (
            "reference",
            "r7",
            "M",
            "magnitude",
            "Q out",
            "Q out",
            None,
            0.7,
            "wikitext2",
            219402.0,
            False,
            "m 219402",
            47,
        ),
        (
            "reference",
            "r8",
            "M",
            None,
            "QKVout + split",
            "QKVout + split",
            None,
            0.7,
            "wikitext2",
            21.47,
            False,
            "21.47",
            18,
        ),
        ("run", "wanda-abc", "M", "wanda", "QKVout", "QKVout", 0.2, 0.7, "wiki", 21.5, False, None, None),
        ("reference", "r9", "M", "wanda", "QKVout", "QKVout", 0.3, 0.7, "wikitext2", 25.0, False, "w 25", 30),
        ("reference", "other", "M", "wanda", "QKV", "QKV", None, 0.5, "wikitext2", 10.0, False, "w 10", 40),
    ]
)


def test_grid_pins_baseline_first_and_orders_methods():
    grid = build_grid(CELLS, model="M", sparsity=0.7)
    assert grid.columns[0] == BASELINE_COLUMN
    assert grid.rows == ["magnitude", "Wanda", "SparseGPT", UNLABELED_METHOD]
    assert "QKV" not in grid.columns  # the 50% value is filtered out


def test_grid_best_delta_count_and_text():
    grid = build_grid(CELLS, model="M", sparsity=0.7, source="reference")
    assert grid.value("Wanda", "QKVout") == pytest.approx(22.01)  # best of 22.01 and 25 (own run excluded)
    assert grid.count.loc["Wanda", "QKVout"] == 2
    # baseline of a row = its best GT value (23.52 < 24)
    assert grid.value("Wanda", BASELINE_COLUMN) == pytest.approx(23.52)
    assert grid.delta.loc["Wanda", "QKVout"] == pytest.approx(22.01 - 23.52)
    assert grid.baseline == BASELINE_COLUMN
    assert grid.text.loc["Wanda", "QKVout"] == "22.01<br>(-6.4%)<br>×2"  # 22.01 / 23.52 - 1, not the absolute -1.51
    assert grid.delta_pct.loc["Wanda", "QKVout"] == pytest.approx((22.01 / 23.52 - 1) * 100)
    assert grid.text.loc["SparseGPT", "QKVout + split"].startswith("17.76<br>(-8.1%)")
    # NaN baseline and a huge value stay legible; no delta against a NaN baseline
    assert grid.text.loc["magnitude", BASELINE_COLUMN] == "nan"
    assert grid.text.loc["magnitude", "Q out"] == "219k"
    assert math.isnan(grid.delta.loc["magnitude", "Q out"])
    # an unlabeled-method cell is kept with its raw text
    assert grid.cell(UNLABELED_METHOD, "QKVout + split")["raw_text"].tolist() == ["21.47"]
    multi = multi_value_cells(grid)
    assert set(zip(multi["row"], multi["column"])) == {("Wanda", "QKVout"), ("Wanda", BASELINE_COLUMN)}


def test_grid_marks_own_runs():
    grid = build_grid(CELLS, model="M", sparsity=0.7, source="all")
    assert grid.value("Wanda", "QKVout") == pytest.approx(21.5)
    assert grid.text.loc["Wanda", "QKVout"].startswith(OWN_RUN_MARK + " 21.50")
    assert grid.source.loc["Wanda", "QKVout"] == "run"
    only_runs = build_grid(CELLS, model="M", sparsity=0.7, source="run")
    assert only_runs.rows == ["Wanda"] and only_runs.columns == ["QKVout"]
    assert build_grid(CELLS, model="nope").empty


def test_grid_epsilon_filter_keeps_values_without_epsilon():
    from pruning.app_support.grid import epsilon_options

    assert epsilon_options(CELLS, model="M", sparsity=0.7) == [0.2, 0.22, 0.3]
    assert epsilon_options(CELLS, model="M", sparsity=0.7, source="run") == [0.2]
    grid = build_grid(CELLS, model="M", sparsity=0.7, source="reference", epsilon=0.3)
    # Wanda QKVout: 22.01 has no ε (kept), 25.0 has ε 0.3 (kept) -> best 22.01 of two values
    assert grid.value("Wanda", "QKVout") == pytest.approx(22.01) and grid.count.loc["Wanda", "QKVout"] == 2
    # the GT 23.52 (ε 0.22) is dropped; the GT 24 (no ε) stays and becomes the row's baseline
    assert grid.value("Wanda", BASELINE_COLUMN) == pytest.approx(24.0) and grid.count.loc["Wanda", BASELINE_COLUMN] == 1
    assert grid.delta.loc["Wanda", "QKVout"] == pytest.approx(22.01 - 24.0)
    only_02 = build_grid(CELLS, model="M", sparsity=0.7, epsilon=0.2)
    assert 25.0 not in set(only_02.detail["ppl"]) and 21.5 in set(only_02.detail["ppl"])
    with pytest.raises(ValueError, match="epsilon must be a finite number >= 0"):
        build_grid(CELLS, model="M", epsilon=float("nan"))
    with pytest.raises(ValueError, match="got -0.1"):
        build_grid(CELLS, model="M", epsilon=-0.1)


def test_epsilon_curve_sorted_per_kind_and_none_without_a_sweep():
    from pruning.app_support.grid_plots import epsilon_curve

    detail = pd.DataFrame({
        "epsilon": [0.3, 0.1, None, 0.2, 0.2],
        "ppl": [25.0, 22.0, 30.0, float("nan"), 21.5],
        "kind": ["reference", "reference", "reference", "reference", "run"],
    })
    fig = epsilon_curve(detail)
    ref, run = fig.data  # kinds in name order
    assert (ref.name, list(ref.x), list(ref.y)) == ("reference", [0.1, 0.3], [22.0, 25.0])  # no-ε and NaN rows dropped
    assert (run.name, list(run.x), list(run.y)) == ("run", [0.2], [21.5])
    assert fig.layout.yaxis.type == "log"
    assert epsilon_curve(detail[detail["epsilon"].isna() | (detail["epsilon"] == 0.2)]) is None  # one ε: no curve


def _trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def test_grid_heatmap_has_text_for_every_nonempty_cell_and_tells_nan_from_empty():
    grid = build_grid(CELLS, model="M", sparsity=0.7)
    fig = grid_heatmap(grid)
    heat, cells = _trace(fig, "ppl"), _trace(fig, "cells")
    assert list(heat.x) == grid.columns and list(heat.y) == grid.rows
    assert len(cells.text) == int((grid.count > 0).sum().sum())
    assert "nan" in cells.text and "219k" in cells.text
    nan_layer = np.asarray(_trace(fig, "nan").z, dtype=float)
    empty_layer = np.asarray(_trace(fig, "no result").z, dtype=float)
    r, c = grid.rows.index("magnitude"), grid.columns.index(BASELINE_COLUMN)  # a "nan" value: dark, not empty
    assert nan_layer[r, c] == 0 and np.isnan(empty_layer[r, c]) and grid.is_nan_result("magnitude", BASELINE_COLUMN)
    e = grid.columns.index("QKVout")
    assert np.isnan(nan_layer[r, e]) and empty_layer[r, e] == 0 and not grid.is_nan_result("magnitude", "QKVout")
    assert cells.textfont.color[cells.text.index("nan")] == "white"
    # a click selects a cell: nothing fades (selected and unselected look the same)
    assert cells.selected.marker.opacity == cells.unselected.marker.opacity == 0


def test_grid_heatmap_colours_by_delta_and_text_contrasts_with_its_cell():
    grid = build_grid(CELLS, model="M", sparsity=0.7, source="reference")
    fig = grid_heatmap(grid, color_by="delta")
    heat = _trace(fig, "delta")
    z = np.asarray(heat.z, dtype=float)
    w = grid.rows.index("Wanda")
    assert z[w, grid.columns.index(BASELINE_COLUMN)] == pytest.approx(0.0)  # the baseline itself: white
    assert z[w, grid.columns.index("QKVout")] == pytest.approx(np.log10(22.01 / 23.52))  # better: below 0 (blue)
    assert heat.zmin == pytest.approx(-heat.zmax) and heat.colorscale[0][1] != heat.colorscale[-1][1]
    with pytest.raises(ValueError, match="color_by must be one of"):
        grid_heatmap(grid, color_by="viridis")
    # dark cells get white text, light ones black (WCAG luminance)
    from pruning.app_support.grid_plots import _text_color

    assert _text_color("RdYlGn_r", 0.0) == "white" and _text_color("RdYlGn_r", 0.5) == "black"
    assert _text_color("RdBu_r", 0.5) == "black" and _text_color("RdBu_r", 1.0) == "white"


def test_presentation_mode_enlarges_text_and_turns_wide_grids():
    grid = build_grid(CELLS, model="M", sparsity=0.7)
    normal, big = grid_heatmap(grid), grid_heatmap(grid, presentation=True)
    assert _trace(big, "cells").textfont.size >= 14 > _trace(normal, "cells").textfont.size
    assert big.layout.xaxis.tickangle == 0 and big.layout.xaxis.tickfont.size > normal.layout.xaxis.tickfont.size
    wide = CELLS.copy()
    extra = [wide.iloc[-2].copy() for _ in range(8)]
    for i, row in enumerate(extra):
        row["preset"] = row["preset_raw"] = f"P{i}"
        row["sparsity"] = 0.7
    wide = pd.concat([wide, pd.DataFrame(extra)], ignore_index=True)
    wgrid = build_grid(wide, model="M", sparsity=0.7)
    from pruning.app_support.grid_plots import PRESENTATION_MAX_COLUMNS

    assert len(wgrid.columns) > PRESENTATION_MAX_COLUMNS
    assert len(grid.columns) <= PRESENTATION_MAX_COLUMNS and list(_trace(big, "ppl").x) == grid.columns  # not turned
    turned = grid_heatmap(wgrid, presentation=True)
    assert list(_trace(turned, "ppl").x) == wgrid.rows and list(_trace(turned, "ppl").y) == wgrid.columns
    cells = _trace(turned, "cells")
    first = cells.customdata[0]
    assert (cells.x[0], cells.y[0]) == (first[0], first[1])  # x = method, y = preset; customdata stays (row, column)


def test_grid_without_gt_takes_uniform_as_baseline_and_pins_the_dense_model():
    rows = CELLS[(CELLS["kind"] == "run")].copy()
    uniform = rows.iloc[0].copy()
    uniform["run_id"], uniform["preset"], uniform["preset_raw"], uniform["ppl"] = "wanda-uni", None, None, 25.0
    rows = pd.concat([rows, pd.DataFrame([uniform])], ignore_index=True)
    rows["strategy"] = ["linear", "uniform"]
    with pytest.raises(ValueError, match="dense must be a positive finite perplexity"):
        build_grid(rows, model="M", sparsity=0.7, dense=float("nan"))
    grid = build_grid(rows, model="M", sparsity=0.7, dense=19.21)
    assert grid.columns[:2] == ["dense", "uniform"] and grid.baseline == "uniform"
    assert grid.value("Wanda", "dense") == pytest.approx(19.21) and grid.text.loc["Wanda", "dense"] == "19.21"
    assert grid.text.loc["Wanda", "QKVout"] == OWN_RUN_MARK + " 21.50<br>(-14.0%)"  # 21.5 / 25 - 1
    assert grid.detail.set_index("run_id").loc["wanda-abc", "delta_to_baseline"] == pytest.approx(-3.5)
    from pruning.app_support.grid import cell_options

    assert ("Wanda", "dense") not in cell_options(grid)  # no values behind it: not a cell to open
    heat = _trace(grid_heatmap(grid, color_by="delta"), "delta")  # the dense model (-23 %) sets no colour range
    assert heat.zmax == pytest.approx(abs(np.log10(21.5 / 25.0))) and np.isnan(np.asarray(heat.z, dtype=float)[0, 0])
    # with the notes' GT present the dense model is not added (GT is the baseline)
    assert "dense" not in build_grid(CELLS, model="M", sparsity=0.7, dense=19.21).columns


def test_validate_form_names_each_bad_field(tmp_path: Path):
    config, errors = validate_form(
        {
            "pruning.sparsity": 1.2,
            "allocation.epsilon": -0.1,
            "allocation.preset": "no such preset",
            "model.name": "/etc",
        },
        roots=[tmp_path],
    )
    assert config is None
    assert set(errors) == {"pruning.sparsity", "allocation.epsilon", "allocation.preset", "model.name"}
    assert "1.2" in errors["pruning.sparsity"] and "accepted" in errors["allocation.preset"]
    assert "outside the allowed model roots" in errors["model.name"]


def test_validate_form_accepts_a_good_config(tmp_path: Path):
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    config, errors = validate_form(
        {
            "model.name": str(model_dir),
            "pruning.method": "magnitude",
            "pruning.sparsity": 0.5,
            "allocation.preset": "QKVout + split",
            "pruning.nm": "",
            "tags": "a, b",
            "evaluation.limit_windows": None,
        },
        roots=[tmp_path],
    )
    assert errors == {}
    assert config.allocation.granularity == "split" and config.pruning.nm is None
    assert config.tags == ("a", "b") and config.evaluation.limit_windows is None


def test_form_fields_are_runconfig_fields_with_valid_defaults():
    from pruning.app_support.launch import FORM_FIELDS, FORM_SECTIONS

    assert sorted(f for fields in FORM_SECTIONS.values() for f in fields) == sorted(FORM_FIELDS)
    defaults = {}
    for field, (kind, _label, options) in FORM_FIELDS.items():
        if "value" in options:
            defaults[field] = options["value"]
        elif "default" in options:
            defaults[field] = options["default"]
        else:
            defaults[field] = options["options"][options.get("index", 0)]
    config = build_run_config(defaults)  # a misspelled key would be an "unknown field" ConfigError
    flat = flatten(config.to_dict())
    assert all(field in flat for field in FORM_FIELDS)
    # every offered corpus is one the engine knows, with a split it holds (text:PATH is typed in)
    from pruning.text.data import check_dataset_spec

    for field in ("calibration.dataset", "evaluation.perplexity"):
        offered = FORM_FIELDS[field][2]["options"]
        assert offered[0] == "wiki" and {"wiki:train", "wiki:validation", "lee", "wikitext2", "c4"} <= set(offered)
        for spec in offered:
            check_dataset_spec(spec, field)


def test_launch_form_shows_and_sends_a_strategys_knobs_only_for_that_strategy():
    from pruning.app_support.launch import FORM_SECTIONS, form_field, shown_fields

    knobs = {"allocation.dlp_alpha", "allocation.dlp_statistic", "allocation.depth_beta"}
    assert knobs <= set(FORM_SECTIONS["Allocation"])
    assert not knobs & set(shown_fields("Allocation", "linear"))
    assert knobs & set(shown_fields("Allocation", "dlp")) == {"allocation.dlp_alpha", "allocation.dlp_statistic"}
    assert knobs & set(shown_fields("Allocation", "depth")) == {"allocation.depth_beta"}
    base = {"pruning.method": "wanda", "allocation.dlp_alpha": 0.05, "allocation.dlp_statistic": "mean",
            "allocation.depth_beta": 0.004}
    dlp, errors = validate_form({**base, "allocation.strategy": "dlp"})
    assert errors == {} and (dlp.allocation.dlp_alpha, dlp.allocation.dlp_statistic) == (0.05, "mean")
    assert dlp.allocation.depth_beta is None  # ATP's β is no knob of a DLP run
    depth, _ = validate_form({**base, "allocation.strategy": "depth"})
    assert depth.allocation.depth_beta == 0.004 and depth.allocation.dlp_alpha == 0.15
    # a hidden knob never changes the run id of another strategy's run
    linear, _ = validate_form({**base, "allocation.strategy": "linear"})
    assert linear.run_id == build_run_config({"pruning.method": "wanda", "allocation.strategy": "linear"}).run_id
    # ATP without β: the config's message, under the β field
    config, errors = validate_form({**base, "allocation.strategy": "depth", "allocation.depth_beta": None})
    assert config is None and list(errors) == ["allocation.depth_beta"]
    assert errors["allocation.depth_beta"].startswith("allocation.depth_beta: strategy 'depth' needs depth_beta")
    _, errors = validate_form({**base, "allocation.strategy": "depth", "allocation.depth_beta": 1.5})
    assert "accepted range [0, 1)" in errors["allocation.depth_beta"]
    # the validation split for choosing knobs, the train split for calibrating apart from it
    config, errors = validate_form({**base, "allocation.strategy": "depth", "calibration.dataset": "wiki:train",
                                    "evaluation.perplexity": ["wiki:validation"]})
    assert errors == {} and config.calibration.dataset == "wiki:train"
    assert config.evaluation.perplexity == ("wiki:validation",)
    # a typed calibration text stays listed (so the select keeps it selected)
    assert form_field("calibration.dataset", "text:notes.txt")[2]["options"][-1] == "text:notes.txt"
    assert form_field("calibration.dataset", "wiki:train")[2]["options"].count("wiki:train") == 1


def test_model_roots_resolve_links(tmp_path: Path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (root / "link").symlink_to(outside)
    check_model_reference(str(root / "m"), [root])
    check_model_reference("smollm2-135m", [root])  # an alias is no path
    check_model_reference("meta-llama/Llama-2-7b-hf", [root])  # nor is a hub id
    with pytest.raises(ConfigError, match="model.name"):
        check_model_reference(str(root / "link"), [root])
    with pytest.raises(ConfigError, match="model.name"):
        check_model_reference(str(root / ".." / "outside"), [root])
    assert looks_like_local_path("x.gguf") and not looks_like_local_path("org/name")


def test_field_errors_reads_flat_and_nested_messages():
    flat = ConfigError(
        "pruning.sparsity: 1.2 is invalid: too big; allocation.preset: 'x' is invalid: unknown; accepted: 'all', 'QKV'"
    )
    assert field_errors(flat) == {
        "pruning.sparsity": "pruning.sparsity: 1.2 is invalid: too big",
        "allocation.preset": "allocation.preset: 'x' is invalid: unknown; accepted: 'all', 'QKV'",
    }
    nested = ConfigError(
        "config: {...} is invalid: allocation: {...} is invalid: epsilon: -0.1 is invalid: >= 0; "
        "pruning: {...} is invalid: sparsity: 1.2 is invalid: < 1"
    )
    assert set(field_errors(nested)) == {"allocation.epsilon", "pruning.sparsity"}


def test_sweep_helpers():
    assert parse_value_list("0.1, 0.2 0.3", "allocation.epsilon") == [0.1, 0.2, 0.3]
    with pytest.raises(ConfigError, match="allocation.epsilon"):
        parse_value_list("0.1, abc", "allocation.epsilon")
    assert grid_size({"a": [1, 2], "b": [], "c": [1, 2, 3]}) == 6
    config = build_run_config({"pruning.method": "magnitude"})
    assert submission_token([config], "local") == f"local:{config.run_id}"


def test_config_diff_only_changed_keys():
    a = {"pruning": {"method": "wanda", "sparsity": 0.7}, "allocation": {"epsilon": 0.2, "groups": ["q", "k"]}}
    b = {"pruning": {"method": "wanda", "sparsity": 0.5}, "allocation": {"epsilon": 0.2, "groups": ["q"]}, "x": 1}
    diff = config_diff({"A": a, "B": b})
    assert list(diff.index) == ["allocation.groups", "pruning.sparsity", "x"]
    assert diff.loc["x", "A"] == "—" and diff.loc["pruning.sparsity", "B"] == "0.5"
    assert config_diff({"A": a, "B": a}).empty
    assert flatten({"a": {"b": [1]}}) == {"a.b": (1,)}


def test_zeroshot_table_mean_and_stderr():
    scores = pd.DataFrame(
        {
            "run_id": ["r"] * 3,
            "task": ["boolq", "rte", "rte"],
            "metric": ["acc", "acc", "acc_norm"],
            "value": [0.6623853211009174, 0.5234657039711191, 0.9],
            "stderr": [0.008271, 0.030063, 0.1],
            "harness_version": ["0.3"] * 3,
            "task_version": ["1", "0", "0"],
            "stage": ["pruned"] * 3,
        }
    )
    table, meta = zeroshot_table(scores, metric="acc")
    assert table.loc["boolq", "r"] == "0.6624 ± 0.0083"
    assert table.loc[MEAN_ROW, "r"].startswith(f"{(0.6623853211009174 + 0.5234657039711191) / 2:.4f}")
    assert meta.loc[0, "harness_version"] == "0.3" and meta.loc[0, "task_versions"] == "boolq=1, rte=0"


def test_plot_builders():
    spectra = pd.DataFrame(
        {
            "block": [0, 0, 1, 1, 2, 2],
            "matrix_type": ["q", "k"] * 3,
            "alpha": [2, 3, 4, 5, 6, 7.0],
            "series": ["run"] * 6,
        }
    )
    fig = metric_by_block(spectra, "alpha")
    assert len(fig.data) == 2 and list(fig.data[0].x) == [0, 1, 2]
    alloc = pd.DataFrame({"block": [0, 0, 1], "numel": [1, 3, 1], "sparsity_target": [0.4, 0.8, 0.5]})
    per_block = sparsity_per_block(alloc)
    assert per_block["sparsity"].tolist() == pytest.approx([0.7, 0.5])
    rng = np.random.default_rng(0)
    eig = np.sort((rng.pareto(2.0, 500) + 1.0))
    fig = esd_figure([("weight", eig, 3.0, 1.5), ("hessian", eig, None, None)])
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert any("fit" in (t.name or "") for t in fig.data)


def test_grid_columns_separate_uniform_owl_and_non_default_metrics():
    from pruning.app_support.grid import build_grid, column_label

    assert column_label("all", False, None, "uniform", "alpha_peak") == "uniform"
    assert column_label("all", False, None, "owl", None) == "OWL"
    assert column_label("all", False, None, "linear", "alpha_peak") == "all"
    assert column_label("QKVout", False, None, "linear", "alpha") == "QKVout"  # the notes' "ww"
    assert column_label("all", False, None, "linear", "hessian_alpha") == "all · hessian_alpha"
    assert column_label("all", True, None, "linear", "alpha") == "GT"
    # own runs: WeightWatcher's alpha is not the grid sweeps' alpha_peak, so it gets its own column
    assert column_label("all", False, None, "linear", "alpha", "run") == "all · alpha"
    assert column_label("all", False, None, "linear", "alpha_peak", "run") == "all"
    assert column_label("QKVout", False, None, "linear", "alpha", "reference") == "QKVout"
    cells = pd.DataFrame({
        "kind": "run", "run_id": ["a", "b", "c", "d"], "model": "m", "method": "wanda",
        "preset": ["all", "all", "all", None], "preset_raw": None, "epsilon": 0.2, "sparsity": 0.6,
        "dataset": "wiki", "ppl": [102.45, 100.53, 123.16, 119.57], "is_baseline": False,
        "strategy": ["linear", "linear", "owl", "uniform"], "metric": ["alpha_peak", "hessian_alpha", None, None],
    })
    grid = build_grid(cells, model="m", sparsity=0.6, dataset="wiki")
    assert grid.columns[:2] == ["uniform", "OWL"]
    assert grid.value("Wanda", "all") == 102.45 and grid.value("Wanda", "all · hessian_alpha") == 100.53
    assert grid.value("Wanda", "OWL") == 123.16 and grid.value("Wanda", "uniform") == 119.57
    # DLP and ATP (depth) runs get their own columns whatever their preset, next to uniform and OWL;
    # the AlphaPruning column keeps its own runs only (a DLP run of preset "all" no longer lands there)
    assert column_label("all", False, None, "dlp", None, "run") == "DLP"
    assert column_label("QKVout", False, None, "depth", "alpha_peak", "run") == "ATP"
    assert column_label("all", True, None, "dlp", None, "run") == "GT"
    more = pd.concat([cells, pd.DataFrame({
        "kind": "run", "run_id": ["e", "f", "g"], "model": "m", "method": "wanda", "preset": ["all", "all", None],
        "preset_raw": None, "epsilon": None, "sparsity": 0.6, "dataset": "wiki", "ppl": [95.0, 99.0, 110.0],
        "is_baseline": False, "strategy": ["dlp", "dlp", "depth"], "metric": None,
    })], ignore_index=True)
    grid = build_grid(more, model="m", sparsity=0.6, dataset="wiki")
    assert grid.columns == ["uniform", "OWL", "DLP", "ATP", "all", "all · hessian_alpha"]
    assert grid.value("Wanda", "DLP") == 95.0 and int(grid.count.loc["Wanda", "DLP"]) == 2
    assert grid.value("Wanda", "ATP") == 110.0 and int(grid.count.loc["Wanda", "all"]) == 1
    assert grid.value("Wanda", "all") == 102.45  # unchanged: 95.0 (DLP) would have won the cell
    with_gt = pd.concat([more, pd.DataFrame({"kind": "reference", "run_id": ["gt"], "model": "m", "method": "wanda",
                                             "preset": "all", "sparsity": 0.6, "dataset": "wiki", "ppl": [101.0],
                                             "is_baseline": True, "strategy": None, "metric": "alpha"})],
                        ignore_index=True)
    assert build_grid(with_gt, model="m", sparsity=0.6, dataset="wiki").columns[:5] == [
        "GT", "uniform", "OWL", "DLP", "ATP"]


def test_esd_plot_spans_the_data_and_places_xmin_in_data_units():
    """Issue 17's broken ESD: xmin = 150 drawn as a shape landed at 10^150 on the log axis. Now the
    λ axis spans the eigenvalues (within a decade), xmin is a trace at λ = 150, the fit runs from
    xmin to λmax."""
    import math

    from pruning.app_support.plots import esd_figure

    rng = np.random.default_rng(0)
    eig = np.sort(np.concatenate([rng.uniform(1.0, 100.0, 400), 150.0 * (rng.pareto(2.0, 100) + 1.0)]))
    fig = esd_figure([("weight · q", eig, 3.0, 150.0), ("hessian · q", eig, 2.5, 120.0)])
    lo, hi = math.log10(eig.min()), math.log10(eig.max())
    for axis in (fig.layout.xaxis, fig.layout.xaxis2):
        assert axis.type == "log"
        assert lo - 1 <= axis.range[0] <= lo and hi <= axis.range[1] <= hi + 1  # within a decade of the data
    xmin = next(t for t in fig.data if (t.name or "").startswith("weight xmin"))
    assert list(xmin.x) == [150.0, 150.0]
    fit = next(t for t in fig.data if (t.name or "").startswith("weight fit"))
    assert fit.x[0] == pytest.approx(150.0) and fit.x[-1] == pytest.approx(eig.max())
    assert not fig.layout.shapes  # no shape on a log axis (they take log10 units)
    # an xmin outside the data (a stale row) draws no fit instead of stretching the axis
    fig = esd_figure([("weight", eig, 3.0, 1e150)])
    assert fig.layout.xaxis.range[1] <= hi + 1 and not any("fit" in (t.name or "") for t in fig.data)


@pytest.mark.parametrize("alpha, n_tail, expected", [
    (3.5, 120, ""),
    (22.0, 120, "α 22.00 > 6 (weightwatcher: under-trained, fit unreliable)"),
    (1.6, 120, "α 1.60 < 2 (weightwatcher: over-trained)"),
    (4.0, 12, "only 12 tail eigenvalues (< 20)"),
    (float("nan"), 0, "no fit"),
    (None, None, "no fit"),
])
def test_fit_warning_follows_weightwatcher(alpha, n_tail, expected):
    from pruning.app_support.spectra import fit_warning

    assert fit_warning(alpha, n_tail) == expected


def test_collapse_dense_draws_each_dense_model_once():
    """Issue 17: 18 runs of one model drew 36 attention lines (their identical dense rows once per
    run). Identical dense rows collapse to one series per model; a differing dense measurement keeps
    its own; pruned rows stay one series per run."""
    from pruning.app_support.tables import collapse_dense

    rows = []
    for run, model, dense_value in (("a", "m", 1.0), ("b", "m", 1.0), ("c", "m", 1.5), ("d", "n", 2.0)):
        for block in (0, 1):
            rows.append({"run_id": run, "model": model, "stage": "dense", "block": block, "head": None,
                         "statistic": "v_entropy", "value": dense_value + block})
            rows.append({"run_id": run, "model": model, "stage": "pruned", "block": block, "head": None,
                         "statistic": "v_entropy", "value": 0.5 + block})
    out = collapse_dense(pd.DataFrame(rows), labels={"a": "run A"})
    assert sorted(out.loc[out["stage"] == "dense", "series"].unique()) == ["m · dense", "m · dense (2)", "n · dense"]
    assert len(out[out["stage"] == "dense"]) == 3 * 2  # three distinct dense measurements, two blocks each
    assert sorted(out.loc[out["stage"] == "pruned", "series"].unique()) == [
        "b · pruned", "c · pruned", "d · pruned", "run A · pruned"]


def test_run_label_names_sparsity_and_metric_and_labels_are_unique():
    """Issue 17: three 'wanda · QKVout · ε 0.2' entries could not be told apart: the label now holds
    model · method · preset · metric · sparsity · ε, and a repeated label gets the run's hash."""
    from pruning.app_support.formatting import run_label, unique_run_labels

    base = {"kind": "run", "model": "m", "method": "wanda", "strategy": "linear", "preset": "QKVout",
            "metric": "alpha_peak", "epsilon": 0.2}
    rows = [{**base, "run_id": "wanda-aaaaaa111111", "sparsity": 0.5},
            {**base, "run_id": "wanda-bbbbbb222222", "sparsity": 0.7, "ppl": 452.2316, "ppl_budgeted": True},
            {**base, "run_id": "wanda-cccccc333333", "sparsity": 0.7}]
    assert run_label(rows[0]) == "[run] m · wanda · QKVout · alpha_peak · 50% · ε 0.2"
    assert run_label(rows[1]) == "[run] m · wanda · QKVout · alpha_peak · 70% · ε 0.2 · ppl 452.23 (budgeted)"
    assert run_label({"kind": "run", "model": "m", "method": "wanda", "strategy": "owl", "sparsity": 0.7,
                      "metric": "alpha_peak", "epsilon": float("nan")}) == "[run] m · wanda · OWL · 70%"
    # per-block strategies are named as their grid column, not by the preset field ("all" in the store)
    assert run_label({"kind": "run", "model": "m", "method": "wanda", "strategy": "depth", "preset": "all",
                      "sparsity": 0.7}) == "[run] m · wanda · ATP · 70%"
    assert run_label({"kind": "run", "model": "m", "method": "sparsegpt", "strategy": "dlp", "preset": "all",
                      "sparsity": 0.6}) == "[run] m · sparsegpt · DLP · 60%"
    assert run_label({**base, "strategy": "uniform", "preset": None, "metric": None, "epsilon": None,
                      "sparsity": 0.7}) == "[run] m · wanda · uniform · 70%"
    labels = unique_run_labels(rows)
    assert labels["wanda-aaaaaa111111"] == "[run] m · wanda · QKVout · alpha_peak · 50% · ε 0.2"
    assert labels["wanda-bbbbbb222222"].endswith("· bbbbbb") and labels["wanda-cccccc333333"].endswith("· cccccc")
    assert len(set(labels.values())) == 3


def test_eta_from_earlier_runs_else_from_progress():
    import json

    from pruning.app_support.eta import eta_seconds, format_duration, history_totals

    runs = [{"status": "succeeded", "model": "m", "method": "wanda", "timings_json": json.dumps({"total": t})}
            for t in (100.0, 200.0, 160.0)]
    runs += [{"status": "failed", "model": "m", "method": "wanda", "timings_json": json.dumps({"total": 5.0})},
             {"status": "succeeded", "model": "m", "method": "sparsegpt", "timings_json": json.dumps({"total": 900.0})},
             {"status": "succeeded", "model": "m", "method": "wanda", "timings_json": "not json"}]
    totals = history_totals(runs, "m", "wanda")
    assert sorted(totals) == [100.0, 160.0, 200.0]
    assert eta_seconds(60.0, 0.1, totals) == (100.0, "median of 3 earlier runs")  # median 160 - 60, not 540
    assert eta_seconds(400.0, 0.9, totals) == (0.0, "median of 3 earlier runs")   # never negative
    assert eta_seconds(60.0, 0.25, []) == (180.0, "from progress so far")
    assert eta_seconds(5.0, 0.0, []) == (None, "no estimate yet")
    assert [format_duration(x) for x in (42, 185, 3720, None, -1)] == ["42 s", "3 min 05 s", "1 h 02 min", "—", "—"]


def test_esd_bins_hold_every_eigenvalue_the_largest_included():
    """Issue 29: in 243 of 420 panels of a shipped run the largest (sometimes the smallest) eigenvalue
    was not binned, so it was not drawn; np.logspace rounded the end edges past the data. Random
    heavy-tailed spectra of SmolLM2's sizes: every eigenvalue counted, λmax in the last bin."""
    import numpy as np

    from pruning.app_support.plots import esd_bins

    rng = np.random.default_rng(0)
    for _ in range(200):
        lam = (rng.pareto(2.0, 576) + 1e-3) * rng.uniform(1, 600)
        edges, counts = esd_bins(lam, 60)
        assert counts.sum() == lam.size and counts[-1] >= 1 and counts[0] >= 1
        assert edges[0] == lam.min() and edges[-1] == lam.max()


def test_esd_of_a_shipped_panel_draws_its_largest_eigenvalue():
    """The panel the issue names: wanda-6473769a5d74, layers.20.down_proj (λmax 505.9)."""
    import numpy as np

    from pruning.app_support.plots import esd_figure
    from pruning.store.queries_spectra import stored_eigenvalues

    lam = stored_eigenvalues("wanda-6473769a5d74", "model.layers.20.mlp.down_proj", "weight")
    assert lam.size > 100 and 505 < lam.max() < 507
    fig = esd_figure([("weight", lam, None, None)])
    markers = next(t for t in fig.data if t.mode == "markers")
    edges = np.logspace(np.log10(lam.min()), np.log10(lam.max()), 61)
    last_bin_center = np.sqrt(edges[-2] * edges[-1])
    assert max(markers.x) == pytest.approx(last_bin_center, rel=1e-9)  # the bin of λmax is drawn


def test_overlaid_runs_differ_in_dash_and_marker_and_sparsity_ticks_are_tenths():
    """Issue 29, item 5: three identical runs showed one colour; the sparsity axis ticked 22/44/67/90 %."""
    import pandas as pd

    from pruning.app_support.plots import metric_by_block, metric_with_allocation

    rows = [{"series": f"run {r}", "block": b, "matrix_type": "q", "alpha": 3.0 + b} for r in range(3) for b in range(4)]
    fig = metric_by_block(pd.DataFrame(rows), "alpha")
    styles = {(t.line.dash, t.marker.symbol) for t in fig.data}
    assert len(styles) == 3
    alloc = pd.DataFrame({"block": [0, 1, 2, 3], "numel": [10] * 4, "sparsity_achieved": [0.6, 0.7, 0.8, 0.83]})
    fig = metric_with_allocation(pd.DataFrame(rows[:4]), alloc, "alpha")
    axis = fig.layout.yaxis2
    assert axis.dtick == 0.1 and tuple(axis.range) == (0.0, 0.9) and axis.tickformat == ".0%"


def test_config_diff_leaves_out_settings_a_run_never_read():
    """Issue 29, item 3: the Compare diff listed a uniform run's metric alpha_peak and owl_lambda."""
    from pruning.app_support.compare import NOT_USED, config_diff
    from pruning.config.run_config import RunConfig

    base = RunConfig().with_overrides({"pruning.method": "wanda", "pruning.sparsity": 0.7})
    uniform = base.to_dict()
    owl = base.with_overrides({"allocation.strategy": "owl", "allocation.owl_lambda": 0.12}).to_dict()
    linear = base.with_overrides({"allocation.strategy": "linear", "allocation.preset": "all",
                                  "allocation.metric": "hessian_alpha"}).to_dict()
    diff = config_diff({"uniform": uniform, "owl": owl})
    assert set(diff.index) == {"allocation.strategy", "allocation.owl_lambda", "allocation.owl_threshold_m"}
    assert diff.loc["allocation.owl_lambda"].tolist() == [NOT_USED, "0.12"]
    diff = config_diff({"owl": owl, "linear": linear})
    assert diff.loc["allocation.metric"].tolist() == [NOT_USED, "hessian_alpha"]
    assert "allocation.preset" in diff.index and "allocation.owl_lambda" in diff.index
    magnitude = RunConfig().with_overrides({"pruning.method": "magnitude", "pruning.sparsity": 0.7}).to_dict()
    diff = config_diff({"magnitude": magnitude, "wanda": uniform})  # magnitude reads no calibration
    assert diff.loc["calibration.seed"].tolist() == [NOT_USED, "0"] and "allocation.metric" not in diff.index


def test_compare_results_show_no_preset_for_runs_that_read_none():
    import pandas as pd

    from pruning.app_support.compare import blank_unused_columns

    runs = pd.DataFrame({"strategy": ["owl", "linear", "dlp", None], "preset": ["all", "all", "all", None],
                         "epsilon": [0.2, 0.3, 0.2, None]})
    out = blank_unused_columns(runs)
    assert out["preset"].tolist()[:3] == [None, "all", None] and out["epsilon"].tolist()[:3] == [None, 0.3, None]
    assert runs["preset"].tolist()[0] == "all"  # the input is untouched


def test_presentation_cells_and_headers_are_short_lines():
    """Issue 29: on a projector the grid's mean ± std ran into the next cell and three long headers
    printed over each other. Presentation text: the spread on its own line, three significant digits,
    Δ % whole; headers split at " · " and "+" with the long metric names abbreviated, and a legend."""
    from pruning.app_support.grid_plots import presentation_header, presentation_legend, presentation_text

    assert presentation_text("• 698.80 ± 76.15<br>(-31.7%)<br>×3") == "• 699<br>± 76.2<br>-32%<br>×3"
    assert presentation_text("19.21") == "19.2" and presentation_text("5.123<br>(+0.5%)") == "5.12<br>+1%"
    assert presentation_text("• 1024 ± 135.99") == "• 1024<br>± 136"
    assert presentation_header("all · hessian_alpha+alpha_peak") == "all<br>Hα<br>+α-pk"
    assert presentation_header("QKVout + split") == "QKVout<br>+split"
    assert presentation_header("uniform") == "uniform"
    assert presentation_legend(["all", "all · hessian_alpha"]) == "Hα = hessian_alpha"
    assert presentation_legend(["uniform", "OWL"]) == ""
