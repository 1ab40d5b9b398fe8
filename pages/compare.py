"""Compare: two or more runs side by side — config diff (changed keys only), results,
per-layer sparsity and spectral-metric overlays."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages_support.common import stop_with_info, table
from pages_support.frame import enter_page
from pages_support.loaders import catalog_version, load_run_detail, load_run_table, runs
from pages_support.sidebar import selected_runs
from pages_support.url import PageAddress
from pruning.app_support.colors import recolor, run_colors
from pruning.app_support.compare import blank_unused_columns, config_diff
from pruning.app_support.formatting import unique_run_labels
from pruning.app_support.urlstate import text_field
from pruning.app_support.plain import plain
from pruning.app_support.plots import metric_by_block, sparsity_overlay

IDENTITY = ("kind", "model", "method", "strategy", "preset", "metric", "epsilon", "sparsity", "nm", "status", "label")

enter_page()
st.title("Compare runs")
chosen = selected_runs()
if len(chosen) < 2:
    stop_with_info("Pick two or more runs: select rows on the Runs page and press Compare, or use the sidebar.")
version = catalog_version()
all_runs = runs().set_index("run_id")
chosen = [r for r in chosen if r in all_runs.index]
labels = unique_run_labels(all_runs.reset_index().to_dict("records"))  # one readable label per run
colors = run_colors([labels.get(r, r) for r in chosen])  # one colour per run in every chart of the page

st.subheader("Results")
results = all_runs.loc[
    chosen,
    [
        c
        for c in ("model", "method", "strategy", "preset", "epsilon", "sparsity", "ppl", "ppl_protocol",
                  "zeroshot_mean", "status", "tags")
        if c in all_runs.columns
    ],
]
results = blank_unused_columns(results)  # no preset 'all' beside an OWL, DLP or ATP run
if "ppl_protocol" in results and results["ppl_protocol"].dropna().nunique() > 1:
    st.warning("These runs' perplexities were measured with different protocols ("
               + plain("; ".join(sorted(results["ppl_protocol"].dropna().unique())))
               + "): they are shown side by side, not comparable.")
table(
    results,
    "compare_results",
    column_config={
        "ppl": st.column_config.NumberColumn("perplexity", format="%.2f"),
        "ppl_protocol": st.column_config.TextColumn("perplexity protocol"),
        "zeroshot_mean": st.column_config.NumberColumn("zero-shot mean", format="%.4f"),
    },
)

st.subheader("Config differences")
configs = {}
for run_id in chosen:
    detail = load_run_detail(version, run_id)
    identity = {k: detail.get(k) for k in IDENTITY}
    configs[run_id] = detail.get("config") or {"reference": identity}
diff = config_diff(configs)
if diff.empty:
    st.success("The configs are identical (apart from label and tags).")
else:
    table(diff, "compare_diff")

allocations = {labels.get(r, r): load_run_table(version, r, "allocation") for r in chosen}
allocations = {r: a for r, a in allocations.items() if not a.empty}
if allocations:
    st.subheader("Sparsity per block")
    st.plotly_chart(recolor(sparsity_overlay(allocations), colors), key="compare_sparsity")
frames = [load_run_table(version, r, "spectra").assign(series=labels.get(r, r)) for r in chosen]
frames = [f for f in frames if not f.empty]
if frames:
    spectra = pd.concat(frames, ignore_index=True)
    spectra = spectra[spectra["source"] == "weight"] if "source" in spectra else spectra
    overlays = [m for m in ("alpha_peak", "alpha", "stable_rank", "entropy_norm", "log_spectral_norm")
                if m in spectra.columns]
    address = PageAddress("compare", [text_field("metric", "compare_metric")])  # the runs: the sidebar's ?runs=
    address.restore("compare_metric", overlays)
    metric = st.selectbox("Metric overlay", overlays, key="compare_metric")
    address.write({"compare_metric": metric})
    if metric:
        st.plotly_chart(recolor(metric_by_block(spectra, metric), colors), key="compare_metric_plot")
