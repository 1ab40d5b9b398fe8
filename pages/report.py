"""Meeting report: pick runs and views, download one self-contained HTML file (grid, spectra, compare,
zero-shot; interactive plotly that works offline) to attach to the minutes."""

from __future__ import annotations

import streamlit as st

from pages_support.common import run_label, stop_with_info, table
from pages_support.frame import enter_page
from pages_support.loaders import catalog_version, load_eigenvalues, runs
from pages_support.sidebar import selected_model, selected_runs
from pruning.app_support.formatting import format_ppl
from pruning.app_support.plain import plain
from pruning.app_support.report import DEFAULT_TITLE, VIEW_TITLES, VIEWS, build_report, report_filename
from pruning.errors import PruningLabError

enter_page()
st.title("Meeting report")
all_runs = runs()
if all_runs.empty:
    stop_with_info("No runs in the store yet.")
pool = all_runs if selected_model() is None else all_runs[all_runs["model"] == selected_model()]
options = list(dict.fromkeys([*selected_runs(), *pool["run_id"]]))
labels = {r["run_id"]: run_label(r) for r in all_runs[all_runs["run_id"].isin(options)].to_dict("records")}
chosen = st.multiselect("Runs (default: the sidebar's)", options, default=selected_runs(), key="report_runs",
                        format_func=lambda r: labels.get(r, r))
columns = st.columns(len(VIEWS))
views = [v for v, c in zip(VIEWS, columns) if c.checkbox(VIEW_TITLES[v], value=True, key=f"report_view_{v}")]
title = st.text_input("Title", value=DEFAULT_TITLE, key="report_title")
if not chosen:
    stop_with_info("Pick the runs of the report (here, on the Runs page, or in the sidebar).")
if not views:
    stop_with_info("Tick at least one view.")

summary = all_runs.set_index("run_id").loc[chosen, ["kind", "model", "sparsity", "ppl", "ppl_protocol", "zeroshot_mean"]]
summary.insert(0, "run", [labels.get(r, r) for r in chosen])
st.caption(f"{len(chosen)} run(s) · views: {', '.join(VIEW_TITLES[v] for v in views)} · "
           "one HTML file with plotly.js inside (about 5 MB), opens offline")
table(summary.assign(ppl=summary["ppl"].map(format_ppl)), "report_summary")

inputs = (catalog_version(), tuple(chosen), tuple(views), title)
if st.button("Build report", type="primary", key="report_build"):
    with st.spinner("building the report…"):
        try:
            document = build_report(chosen, views, title=title or DEFAULT_TITLE, eigenvalues=load_eigenvalues)
        except PruningLabError as exc:  # e.g. a run removed from the store since the page was drawn
            st.error(plain(exc))
            st.stop()
        st.session_state["report_html"] = (inputs, document)
built = st.session_state.get("report_html")
if not built or built[0] != inputs:
    stop_with_info("Press *Build report*; the download appears here.")
st.download_button("Download report (HTML)", data=built[1], file_name=report_filename(), mime="text/html",
                   key="report_download", icon=":material/download:")
st.caption(f"{len(built[1]) / 1e6:.1f} MB")
