"""Spectra: a spectral metric per block for every matrix type (runs overlaid), the metric beside
the run's allocated sparsity, and the ESD of one matrix (weight | Hessian) with its power-law fit."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages_support.common import (
    catalog_version,
    enter_page,
    load_eigenvalues,
    load_run_table,
    runs,
    selected_model,
    selected_runs,
    stop_with_info,
    table,
)
from pages_support.url import PageAddress
from pruning.app_support.colors import recolor, run_colors
from pruning.app_support.formatting import unique_run_labels
from pruning.app_support.plain import plain
from pruning.app_support.plots import esd_figure, metric_by_block, metric_with_allocation
from pruning.app_support.spectra import fit_warning
from pruning.app_support.urlstate import list_field, text_field
from pruning.config.precision import DEFAULT_EIG_DTYPE, EIG_DTYPE_NAMES

NON_METRICS = {"block", "n_tail", "n_eigs", "source_line", "head"}

# the view in the address: ?source=weight&metric=alpha&run=ID&matrix=NAME (runs picked here: &pick=ID,ID)
address = PageAddress("spectra", [
    list_field("pick", "spectra_runs"), text_field("source", "spectra_source"), text_field("metric", "spectra_metric"),
    text_field("run", "spectra_focus"), text_field("matrix", "spectra_matrix"),
])
enter_page()
#: matrix types that read one input, so share one layer-wise Hessian (SparseGPT's H = 2XᵀX/N)
SHARED_INPUT = {t: "q, k and v" for t in ("q", "k", "v")} | {t: "gate and up" for t in ("gate", "up")}

st.title("Spectra")
version = catalog_version()
all_runs = runs()
candidates = all_runs[(all_runs["kind"] == "run") & (all_runs["status"] == "succeeded")]
if selected_model():
    candidates = candidates[candidates["model"] == selected_model()]
chosen = [r for r in selected_runs() if r in set(candidates["run_id"])]
if not chosen:
    # runs that computed spectra first (spectral allocations and dense runs), newest first: the page
    # opens on a chart, not on the newest run whatever it is (a uniform run has no spectra to draw)
    with_spectra = (candidates["strategy"] == "linear") | (candidates["method"] == "dense")
    pool = pd.concat([candidates[with_spectra], candidates[~with_spectra]])["run_id"].head(200).tolist()
    if not pool:
        stop_with_info("No succeeded runs to show. Launch one, or pick another model in the sidebar.")
    address.restore("spectra_runs", pool)
    st.session_state.setdefault("spectra_runs", pool[:1])
    chosen = st.multiselect("Runs (or pick them in the sidebar)", pool, key="spectra_runs")
    address.write({"spectra_runs": chosen})
if not chosen:
    stop_with_info("Pick at least one run.")

labels = unique_run_labels(all_runs.to_dict("records"))  # the same run label as on every other page
colors = run_colors([labels.get(r, r) for r in chosen])
frames = []
for run_id in chosen:
    spectra = load_run_table(version, run_id, "spectra")
    if not spectra.empty:
        frames.append(spectra.assign(series=labels.get(run_id, run_id)))
if not frames:
    stop_with_info("The chosen runs have no spectra (uniform or OWL allocation does not compute them).")
spectra = pd.concat(frames, ignore_index=True)

c1, c2 = st.columns(2)
sources = sorted(spectra["source"].dropna().unique()) if "source" in spectra else ["weight"]
address.restore("spectra_source", sources)
source = c1.radio("Spectrum of", sources, horizontal=True, key="spectra_source", format_func=plain)  # Markdown options
of_source = spectra[spectra["source"] == source] if "source" in spectra else spectra
metrics = [
    c
    for c in of_source.columns
    if c not in NON_METRICS and pd.api.types.is_numeric_dtype(of_source[c]) and of_source[c].notna().any()
]
address.restore("spectra_metric", metrics)
if st.session_state.get("spectra_metric") not in metrics:
    st.session_state["spectra_metric"] = "alpha_peak" if "alpha_peak" in metrics else metrics[0]
metric = c2.selectbox("Metric", metrics, key="spectra_metric")
address.write({"spectra_source": source, "spectra_metric": metric})

n_blocks = int(of_source["block"].nunique())
st.caption(f"{n_blocks} blocks · {len(chosen)} run(s) · {plain(source)} spectra")
st.plotly_chart(recolor(metric_by_block(of_source, metric), colors), key="spectra_by_block")

st.subheader("Metric and allocated sparsity")
address.restore("spectra_focus", chosen)
if st.session_state.get("spectra_focus") not in chosen:
    st.session_state.pop("spectra_focus", None)
focus = st.selectbox("Run", chosen, format_func=lambda r: labels.get(r, r), key="spectra_focus")
address.write({"spectra_focus": focus})
focus_rows = of_source[of_source["series"] == labels.get(focus, focus)]
allocation = load_run_table(version, focus, "allocation")
st.plotly_chart(metric_with_allocation(focus_rows, allocation, metric), key="spectra_alloc")

st.subheader("ESD of one matrix")
names = sorted(focus_rows["name"].dropna().unique(), key=lambda n: (len(n), n))
if not names:
    stop_with_info("This run has no per-matrix rows.")
address.restore("spectra_matrix", names)
if st.session_state.get("spectra_matrix") not in names:  # start from the first matrix whose fit is reliable
    reliable = [n for n, a, t in zip(focus_rows["name"], focus_rows.get("alpha", []), focus_rows.get("n_tail", []))
                if not fit_warning(a, t)]
    st.session_state["spectra_matrix"] = min(reliable, key=lambda n: (len(n), n)) if reliable else names[0]
name = st.selectbox("Matrix", names, key="spectra_matrix",
                    help="⚠ in the ESD title and the table: a fit WeightWatcher would not trust")
address.write({"spectra_matrix": name})
rows = spectra[(spectra["series"] == labels.get(focus, focus)) & (spectra["name"] == name)]
panels, missing = [], []
for _, row in rows.sort_values("source", ascending=False).iterrows():  # weight first, then hessian
    source = str(row.get("source", "weight"))
    precision = row.get("eig_dtype")
    eig = load_eigenvalues(focus, name, source, precision if precision in EIG_DTYPE_NAMES else DEFAULT_EIG_DTYPE)
    if eig is None:
        missing.append(source)
        continue
    warning = fit_warning(row.get("alpha", float("nan")), row.get("n_tail", float("nan")))
    panels.append((f"{source} · {name}" + (f" · ⚠ {warning}" if warning else ""), eig, row.get("alpha"), row.get("xmin")))
if panels:
    st.plotly_chart(esd_figure(panels), key="spectra_esd")
    mtype = str(rows["matrix_type"].iloc[0]) if "matrix_type" in rows and len(rows) else ""
    if any(p[0].startswith("hessian") for p in panels) and mtype in SHARED_INPUT:
        st.caption(f"{SHARED_INPUT[mtype]} read the same input X, so their Hessians H = 2XᵀX/N are one matrix: "
                   "their Hessian panels and metrics coincide.")
if missing:
    st.info(f"No stored eigenvalues of the {' and '.join(missing)} spectrum of this matrix: the run published "
            "no spectra set for it (`python -m pruning spectra-backfill` stores them for runs made before sets existed).")
rows = rows.assign(fit_warning=[fit_warning(a, n) for a, n in zip(rows.get("alpha", []), rows.get("n_tail", []))])
table(rows.drop(columns=["series"]), "spectra_rows", hide_index=True)
