"""Zero-shot: task x run table (value ± stderr), mean over tasks, and the harness version."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages_support.common import stop_with_info, table
from pages_support.frame import enter_page
from pages_support.loaders import catalog_version, load_zeroshot, runs
from pages_support.sidebar import selected_model, selected_runs
from pages_support.url import PageAddress
from pruning.app_support.formatting import unique_run_labels
from pruning.app_support.urlstate import text_field
from pruning.app_support.plain import plain
from pruning.app_support.plots import zeroshot_means_chart
from pruning.app_support.tables import MEAN_ROW, zeroshot_protocol_options, zeroshot_table
from pruning.calibration.protocol import by_calibration, calibration_options
from pruning.evaluation.protocol import add_zeroshot_protocol

address = PageAddress("zeroshot", [  # ?metric=acc&stage=pruned&protocol=…; the runs: the sidebar's ?runs=
    text_field("metric", "zeroshot_metric"), text_field("stage", "zeroshot_stage"),
    text_field("protocol", "zeroshot_protocol"), text_field("calibration", "zeroshot_calibration"),
])
enter_page()
st.title("Zero-shot accuracy")
scores = load_zeroshot(catalog_version())
if scores.empty:
    stop_with_info("No zero-shot results in the store yet.")
if selected_model():
    scores = scores[scores["model"] == selected_model()]
chosen = [r for r in selected_runs() if r in set(scores["run_id"])]
if chosen:
    scores = scores[scores["run_id"].isin(chosen)]
if scores.empty:
    stop_with_info("No zero-shot results for this model / these runs.")

c1, c2 = st.columns(2)
metrics = sorted(scores["metric"].dropna().unique())
address.restore("zeroshot_metric", metrics)
if st.session_state.get("zeroshot_metric") not in metrics:
    st.session_state["zeroshot_metric"] = "acc" if "acc" in metrics else metrics[0]
metric = c1.selectbox("Metric", metrics, key="zeroshot_metric")
stages = sorted(scores["stage"].dropna().unique()) if "stage" in scores else []
address.restore("zeroshot_stage", stages)
if st.session_state.get("zeroshot_stage") not in stages and stages:
    st.session_state["zeroshot_stage"] = "pruned" if "pruned" in stages else stages[0]
stage = c2.selectbox("Stage", stages, key="zeroshot_stage") if len(stages) > 1 else None

protocol = address.select_one(
    "Evaluation protocol", "zeroshot_protocol", zeroshot_protocol_options(scores[scores["metric"] == metric]),
    help="few-shot count, example limit and harness version: scores measured differently never share a table")
# one calibration per table (pruning.calibration.protocol), among the runs of this protocol; dense runs and
# references stay in every one
of_protocol = add_zeroshot_protocol(scores[scores["metric"] == metric])
calibration = address.select_one(
    "Calibration", "zeroshot_calibration",
    calibration_options(of_protocol[of_protocol["protocol_label"] == protocol] if protocol else of_protocol),
    help="calibration text × windows × tokens of the pruned runs: runs calibrated on other data never share a table")
scores = by_calibration(scores, calibration)
address.write({"zeroshot_metric": metric, "zeroshot_stage": stage, "zeroshot_protocol": protocol,
               "zeroshot_calibration": calibration})
by_task, meta = zeroshot_table(scores, metric=metric, stage=stage, protocol=protocol)
if protocol and "budgeted" in protocol:
    st.warning("Budgeted protocol (an example limit): these accuracies cover part of each task only.")
st.caption(f"protocol: {plain(protocol)}" + (f" · calibration {plain(calibration)}" if calibration else "")
           + " · value ± stderr per task; MEAN = unweighted mean over tasks "
           "(the notes' 'MEAN'; lm-eval's own aggregate rows are not counted as tasks)")
shown = runs()
shown = shown[shown["run_id"].isin(set(by_task.columns))]  # labels made unique among the runs in this table
labels = unique_run_labels(shown.to_dict("records"))  # one readable label per run (columns were bare ids)
wide = by_task.rename(columns=labels)
if wide.shape[1] > wide.shape[0]:  # more runs than rows: one row per run reads better (86 runs made 86 columns)
    wide = wide.T
    wide.index.name = "run"
table(wide, "zeroshot_table")
if len(labels) > 1 and MEAN_ROW in by_task.index:
    means = by_task.loc[MEAN_ROW].rename(index=labels)
    means = pd.to_numeric(means.str.split(" ").str[0], errors="coerce")
    st.plotly_chart(zeroshot_means_chart(means, metric), key="zeroshot_means")
meta.insert(0, "run", meta["run_id"].map(labels))
st.subheader("Provenance")
table(meta, "zeroshot_meta", hide_index=True)
