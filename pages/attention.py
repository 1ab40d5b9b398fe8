"""Attention: entropy and rank per layer and head, dense vs pruned, against the notes' averages."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages_support.common import pick_runs_here, stop_with_info, table
from pages_support.frame import enter_page
from pages_support.loaders import catalog_version, load_attention, runs as all_runs
from pages_support.sidebar import selected_model, selected_runs
from pages_support.url import PageAddress
from pruning.app_support.colors import recolor, run_colors
from pruning.app_support.urlstate import list_field, text_field
from pruning.app_support.plots import attention_by_layer, attention_heads
from pruning.app_support.formatting import unique_run_labels
from pruning.app_support.tables import collapse_dense

address = PageAddress("attention", [  # ?stat=…&ref=…&heads=… (runs picked here: &pick=ID,ID)
    list_field("pick", "attention_runs"), text_field("stat", "attention_statistic"), text_field("ref", "attention_ref"),
    text_field("heads", "attention_heads_of"),
])
enter_page()
st.title("Attention statistics")
stats = load_attention(catalog_version())
if stats.empty:
    stop_with_info("No attention statistics in the store yet (runs with `evaluation.attention: true` add them).")

stats = stats.reindex(columns=[*stats.columns, *[c for c in ("block", "head", "stage") if c not in stats]])
refs = stats[stats["block"].isna()]  # the notes' per-model averages
per_layer = stats[stats["block"].notna()]
st.subheader("Averages")
summary = stats.assign(stage=stats["stage"].fillna("notes average"))
if selected_model():  # the sidebar's model (the notes' averages of other models stay as references below)
    summary = summary[summary["model"] == selected_model()]
table(
    summary.pivot_table(
        index=["kind", "model", "run_id", "stage"], columns="statistic", values="value", aggfunc="mean"
    ).reset_index(),
    "attention_summary",
    hide_index=True,
)

runs = [r for r in selected_runs() if r in set(per_layer["run_id"])]
if not runs:
    pool = per_layer
    if selected_model():
        pool = pool[pool["model"] == selected_model()]
    runs = pick_runs_here(address, "attention_runs", list(dict.fromkeys(pool["run_id"])),
                          "No run with per-layer attention statistics (pick another model or launch a run with "
                          "attention).")
if not runs:
    stop_with_info("Pick at least one run.")
chosen_rows = per_layer[per_layer["run_id"].isin(runs)]
labels = unique_run_labels(all_runs().to_dict("records"))
data = collapse_dense(chosen_rows, labels)  # one dense line per model
colors = run_colors([labels.get(r, r) for r in runs])  # a run's pruned line keeps its colour on every page

c1, c2 = st.columns(2)
statistics = sorted(data["statistic"].unique())
address.restore("attention_statistic", statistics)
statistic = c1.selectbox("Statistic", statistics, key="attention_statistic")
ref_models = sorted(refs.loc[refs["statistic"] == statistic, "model"].dropna().unique())
address.restore("attention_ref", ["(none)", *ref_models])
if st.session_state.get("attention_ref") not in ["(none)", *ref_models]:
    st.session_state.pop("attention_ref", None)
ref_model = c2.selectbox("Reference (the notes' average)", ["(none)", *ref_models], key="attention_ref")
address.write({"attention_statistic": statistic, "attention_ref": None if ref_model == "(none)" else ref_model})
reference = None
if ref_model != "(none)":
    reference = float(refs[(refs["model"] == ref_model) & (refs["statistic"] == statistic)]["value"].mean())
st.plotly_chart(recolor(attention_by_layer(data, statistic, reference), colors), key="attention_layers")

with_heads = data[(data["statistic"] == statistic) & data["head"].notna()]
if not with_heads.empty:
    head_series = sorted(with_heads["series"].unique())
    address.restore("attention_heads_of", head_series)
    if st.session_state.get("attention_heads_of") not in head_series:
        st.session_state.pop("attention_heads_of", None)
    series = st.selectbox("Per head of", head_series, key="attention_heads_of")
    address.write({"attention_heads_of": series})
    st.plotly_chart(
        attention_heads(with_heads[with_heads["series"] == series], statistic, title=f"{statistic} · {series}"),
        key="attention_heads",
    )
dense_pruned = chosen_rows[chosen_rows["statistic"] == statistic].pivot_table(  # each run's own dense rows
    index=["run_id", "block"], columns="stage", values="value", aggfunc="mean"
)
if {"dense", "pruned"} <= set(dense_pruned.columns):
    dense_pruned = dense_pruned.assign(change=dense_pruned["pruned"] - dense_pruned["dense"])
table(pd.DataFrame(dense_pruned).reset_index(), "attention_dense_pruned", hide_index=True)
