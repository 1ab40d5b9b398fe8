"""The runs table's filters, grouping and knob view (pruning.app_support.runs_view)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pruning.app_support.runs_view import (
    RunFilters, filter_runs, group_runs, knobs_figure, preset_text, with_allocation_knobs,
)

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


STUDY = pd.DataFrame([
    # the allocation study's validation runs: DLP at two α (one config without the knob written), ATP
    # at two β, one linear run whose stored config carries DLP's default, one OWL run, one reference
    ("dlp-1", "run", "wanda", "dlp", 0.2, 60.0, FULL),
    ("dlp-2", "run", "wanda", "dlp", None, 58.0, FULL),
    ("atp-1", "run", "wanda", "depth", None, 61.0, FULL),
    ("atp-2", "run", "wanda", "depth", None, 64.0, FULL),
    ("lin", "run", "wanda", "linear", 0.2, 59.0, FULL),
    ("owl", "run", "wanda", "owl", None, 63.0, FULL),
    ("ref", "reference", "wanda", None, 0.2, 20.0, "wikitext2 as published"),
], columns=["run_id", "kind", "method", "strategy", "epsilon", "ppl", "ppl_protocol"])
STORED_KNOBS = pd.DataFrame({  # rows of ALLOCATION_KNOBS_SQL: the config's values as JSON text
    "run_id": ["dlp-1", "dlp-2", "atp-1", "atp-2", "lin", "owl", "atp-1"],
    "owl_lambda": [None, None, None, None, "0.08", "0.1", None],
    "dlp_alpha": ["0.05", None, None, None, "0.15", None, None],
    "dlp_statistic": ["mean", None, None, None, "median", None, None],
    "depth_beta": [None, None, "0.004", "0.008", None, None, "0.004"],  # a second attempt of atp-1
})


def test_strategy_knobs_join_the_runs_of_their_strategy_only():
    table = with_allocation_knobs(STUDY, STORED_KNOBS).set_index("run_id")
    assert table["dlp_alpha"].tolist()[:2] == [0.05, 0.15]  # dlp-2 wrote no α: the default
    assert table.loc["dlp-1", "dlp_statistic"] == "mean" and table.loc["dlp-2", "dlp_statistic"] == "median"
    assert table.loc[["atp-1", "atp-2"], "depth_beta"].tolist() == [0.004, 0.008]
    assert table.loc["owl", "owl_lambda"] == 0.1
    # a knob of another strategy stays blank: the linear run's stored DLP default is no DLP α
    assert math.isnan(table.loc["lin", "dlp_alpha"]) and table.loc["lin", "dlp_statistic"] is None
    assert table.loc[["lin", "ref", "dlp-1"], "depth_beta"].isna().all() and len(table) == len(STUDY)
    empty = with_allocation_knobs(STUDY, pd.DataFrame(columns=["run_id"]))  # the store could not answer
    assert empty.loc[empty["strategy"] == "dlp", "dlp_alpha"].tolist() == [0.15, 0.15]
    assert empty["depth_beta"].isna().all()


def test_filters_and_groups_by_strategy_dlp_alpha_and_atp_beta():
    table = with_allocation_knobs(STUDY, STORED_KNOBS)
    ours = filter_runs(table, RunFilters(strategies=("dlp", "depth")))
    assert list(ours["run_id"]) == ["dlp-1", "dlp-2", "atp-1", "atp-2"]
    assert list(filter_runs(table, RunFilters(dlp_alphas=(0.05,)))["run_id"]) == ["dlp-1"]
    assert list(filter_runs(table, RunFilters(depth_betas=(0.008,)))["run_id"]) == ["atp-2"]
    atp = group_runs(table[table["strategy"] == "depth"], "depth_beta")
    assert atp["ATP β"].tolist() == [0.004, 0.008] and atp["best ppl"].tolist() == [61.0, 64.0]
    fig = knobs_figure(table)
    axes = {d.label: list(d["values"]) for d in fig.data[0].dimensions}
    assert sorted(axes["DLP α"]) == [-0.05] * 4 + [0.05, 0.15]  # runs without α below the axis' values
    assert sorted(axes["ATP β"])[-2:] == [0.004, 0.008]


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


def test_calibration_and_seed_come_from_the_sql_on_the_real_store_shape(data_dir):
    """Issue 29: the runs table had no seed or calibration column. ALLOCATION_KNOBS_SQL reads both from
    each stored config (a dense run and a reference read none), and with_allocation_knobs joins them."""
    from pruning.app_support.runs_view import ALLOCATION_KNOBS_SQL
    from pruning.config.run_config import RunConfig
    from pruning.store.publish import publish_run
    from pruning.store.queries import list_runs, run_sql

    ids = {}
    for name, overrides in {"s2": {"calibration.seed": 2, "calibration.dataset": "wiki:train"},
                            "s0": {"calibration.nsamples": 16}, "dense": {"pruning.method": "dense",
                                                                         "pruning.sparsity": 0.0}}.items():
        config = RunConfig.from_dict({"model": {"name": "tiny"}, "pruning": {"method": "wanda", "sparsity": 0.5}}
                                     ).with_overrides(overrides)
        publish_run(config, tables={"perplexity": pd.DataFrame({"stage": ["pruned"], "dataset": ["wiki"],
                                                                 "ppl": [9.0]})})
        ids[name] = config.run_id
    table = with_allocation_knobs(list_runs(), run_sql(ALLOCATION_KNOBS_SQL)).set_index("run_id")
    assert table.loc[ids["s2"], "calibration"] == "wiki:train · 128 × 2048" and table.loc[ids["s2"], "seed"] == 2
    assert table.loc[ids["s0"], "calibration"] == "wiki · 16 × 2048" and table.loc[ids["s0"], "seed"] == 0
    assert table.loc[ids["dense"], "calibration"] is None or pd.isna(table.loc[ids["dense"], "calibration"])
    assert pd.isna(table.loc[ids["dense"], "seed"])


def test_short_run_labels_put_what_tells_runs_apart_first():
    """Issue 29: every sidebar chip read "[run] smollm2-135…"."""
    from pruning.app_support.formatting import short_run_label, unique_run_labels

    atp = {"run_id": "wanda-6bc128f1d109", "model": "smollm2-135m", "method": "wanda", "strategy": "depth",
           "sparsity": 0.7, "kind": "run"}
    assert short_run_label(atp) == "wanda · ATP · 70% · smollm2-135m"
    ref = {"run_id": "r", "model": "LLaMA-7B", "method": "wanda", "preset": "all", "metric": "alpha_peak",
           "sparsity": 0.7, "epsilon": 0.2, "kind": "reference", "ppl": 22.0}
    assert short_run_label(ref) == "ref · wanda · all · alpha_peak · 70% · ε 0.2 · LLaMA-7B"
    twin = {**atp, "run_id": "wanda-0123456789ab"}
    labels = unique_run_labels([atp, twin], short=True)
    assert labels == {"wanda-6bc128f1d109": "wanda · ATP · 70% · smollm2-135m · 6bc128",
                      "wanda-0123456789ab": "wanda · ATP · 70% · smollm2-135m · 012345"}
