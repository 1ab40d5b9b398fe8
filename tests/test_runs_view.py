"""The runs table's filters, grouping and knob view (pruning.app_support.runs_view)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pruning.app_support.runs_view import RunFilters, filter_runs, group_runs, knobs_figure, preset_text

FULL = "wiki full 175×2048"
RUNS = pd.DataFrame([
    # run_id, kind, model, method, strategy, preset, preset_raw, metric, epsilon, sparsity, ppl, protocol, notes
    ("a", "run", "m", "wanda", "linear", "all", None, "alpha_peak", 0.2, 0.7, 400.0, FULL, ""),
    ("b", "run", "m", "wanda", "linear", "all", None, "hessian_alpha", 0.2, 0.7, 350.0, FULL, "best so far"),
    ("c", "run", "m", "sparsegpt", "uniform", None, None, None, None, 0.7, 203.5, FULL, ""),
    ("d", "run", "m", "sparsegpt", "linear", "all", None, "hessian_alpha", 0.3, 0.6, 90.0, FULL, ""),
    ("e", "reference", "L", "sparsegpt", None, "QKVout", "QKVout + split", None, 0.2, 0.7, 17.76, "wikitext2 as published", ""),
    ("f", "run", "m", "wanda", "linear", "all", None, "alpha_peak", 0.2000000001, 0.7, float("nan"), FULL, ""),
], columns=["run_id", "kind", "model", "method", "strategy", "preset", "preset_raw", "metric", "epsilon", "sparsity",
            "ppl", "ppl_protocol", "notes"])


def test_filters_match_numbers_within_tolerance_and_presets_by_their_full_text():
    assert list(filter_runs(RUNS, RunFilters(epsilons=(0.2,)))["run_id"]) == ["a", "b", "e", "f"]
    assert list(filter_runs(RUNS, RunFilters(sparsities=(0.6,)))["run_id"]) == ["d"]
    assert list(filter_runs(RUNS, RunFilters(presets=("QKVout + split",)))["run_id"]) == ["e"]  # not "QKVout"
    assert filter_runs(RUNS, RunFilters(presets=("QKVout",))).empty
    both = RunFilters(methods=("sparsegpt",), metrics=("hessian_alpha",))
    assert list(filter_runs(RUNS, both)["run_id"]) == ["d"]
    assert list(filter_runs(RUNS, RunFilters(text="BEST so"))["run_id"]) == ["b"]  # notes, any case
    assert len(filter_runs(RUNS, RunFilters())) == len(RUNS)
    assert preset_text(RUNS).tolist() == ["all", "all", "", "all", "QKVout + split", "all"]


def test_group_by_reports_best_and_median_and_refuses_mixed_protocols():
    with pytest.raises(ValueError, match="2 protocols"):
        group_runs(RUNS, "method")
    ours = RUNS[RUNS["kind"] == "run"]
    groups = group_runs(ours, "method").set_index("method")
    assert groups.loc["wanda", "runs"] == 3 and groups.loc["wanda", "with ppl"] == 2  # NaN not counted
    assert groups.loc["wanda", "best ppl"] == 350.0 and groups.loc["wanda", "best run"] == "b"
    assert groups.loc["wanda", "median ppl"] == pytest.approx(375.0)
    assert groups.loc["sparsegpt", "best run"] == "d"
    by_metric = group_runs(ours, "metric").set_index("metric")
    assert "—" in by_metric.index  # uniform has no metric: its own visible group
    assert len(group_runs(RUNS, "ppl_protocol")) == 2  # grouping by protocol is always allowed
    with pytest.raises(ValueError, match="group by must be one of"):
        group_runs(ours, "colour")


def test_knobs_figure_one_line_per_run_with_a_perplexity_of_one_protocol():
    assert knobs_figure(RUNS[RUNS["ppl_protocol"] != FULL]) is None  # references only: no run
    fig = knobs_figure(RUNS)  # the reference is left out: runs only, one protocol
    par = fig.data[0]
    labels = [d.label for d in par.dimensions]
    assert labels[-1] == "perplexity (log)" and "allocation" in labels and "metric" in labels
    ppl_axis = np.asarray(par.dimensions[-1]["values"], dtype=float)
    assert sorted(ppl_axis) == pytest.approx(sorted(math.log10(v) for v in (400, 350, 203.5, 90)))  # NaN run out
    metric = next(d for d in par.dimensions if d.label == "metric")
    assert list(metric.ticktext) == ["alpha_peak", "hessian_alpha", "—"]
    mixed = RUNS.copy()
    mixed.loc[0, "ppl_protocol"] = "wiki budgeted 1/44,778×8"
    assert knobs_figure(mixed) is None


def test_run_colors_are_distinct_stable_and_follow_a_run_into_its_stage_series():
    import plotly.graph_objects as go

    from pruning.app_support.colors import RUN_PALETTE, SHARED_COLOR, recolor, run_colors, series_color

    keys = [f"run {i}" for i in range(20)]
    colors = run_colors(keys)
    assert len(set(colors.values())) == 20  # plotly's default colourway repeats after 10
    assert run_colors(["b", "a", "b"]) == {"b": RUN_PALETTE[0], "a": RUN_PALETTE[1]}
    assert series_color("run 1 · pruned", colors) == colors["run 1"]
    assert series_color("run 10 · pruned", colors) == colors["run 10"]  # the longest key wins, not "run 1"
    assert series_color("run 1x", colors) is None
    fig = go.Figure([go.Scatter(name="run 3 · pruned"), go.Scatter(name="m · dense"), go.Scatter(name="other")])
    recolor(fig, colors)
    assert fig.data[0].line.color == colors["run 3"] and fig.data[1].line.color == SHARED_COLOR
    assert fig.data[1].line.dash == "dash" and fig.data[2].line.color is None
