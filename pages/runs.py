"""Runs: every run and reference result set — filter, sort, pick rows into Compare, annotate."""

from __future__ import annotations

import streamlit as st

from pages._common import (
    clear_caches,
    enter_page,
    runs,
    select_runs,
    selected_model,
    show_run,
    stop_with_info,
)

COLUMNS = [
    "run_id",
    "kind",
    "model",
    "method",
    "preset",
    "metric",
    "epsilon",
    "sparsity",
    "nm",
    "ppl",
    "ppl_protocol",
    "zeroshot_mean",
    "status",
    "tags",
    "label",
    "notes",
    "created_at",
    "source",
]

enter_page()
st.title("Runs and reference results")
if flash := st.session_state.pop("runs_flash", None):
    st.success(flash)
table = runs()
if table.empty:
    stop_with_info("The results store is empty: import the notes (`python -m pruning import-notes`) or launch a run.")

model = selected_model()
c1, c2, c3, c4 = st.columns([1, 2, 1, 2])
kinds = c1.multiselect("Kind", ["run", "reference"], default=["run", "reference"])
methods = c2.multiselect("Method", sorted(table["method"].dropna().unique()))
statuses = c3.multiselect("Status", sorted(table["status"].dropna().unique()))
text = c4.text_input("Search (run id, label, tag, preset)", placeholder="e.g. QKVout", key="runs_search")

view = table[table["kind"].isin(kinds)]
if model:
    view = view[view["model"] == model]
if methods:
    view = view[view["method"].isin(methods)]
if statuses:
    view = view[view["status"].isin(statuses)]
if text:
    needle = text.lower()
    hay = (
        view["run_id"].astype(str)
        + " "
        + view["label"].fillna("").astype(str)
        + " "
        + view["preset"].fillna("").astype(str)
        + " "
        + view["tags"].map(lambda t: " ".join(t))
    )
    view = view[hay.str.lower().str.contains(needle, regex=False)]
n_budgeted = int(view["ppl_budgeted"].fillna(False).astype(bool).sum()) if "ppl_budgeted" in view else 0
view = view[[c for c in COLUMNS if c in view.columns]].reset_index(drop=True)

st.caption(
    f"{len(view)} of {len(table)} rows"
    + (f" · model {model}" if model else "")
    + (f" · {n_budgeted} budgeted (smoke) run(s): their perplexity covers part of the text only" if n_budgeted else "")
    + " · click rows to select them; sort by clicking a header"
)
event = st.dataframe(
    view,
    key="runs_table",
    on_select="rerun",
    selection_mode="multi-row",
    hide_index=True,
    height=420,
    column_config={
        "ppl": st.column_config.NumberColumn("perplexity", format="%.2f"),
        "ppl_protocol": st.column_config.TextColumn(
            "protocol", help="how the perplexity was measured; values of different protocols "
            "are not comparable (budgeted = a smoke run's window budget)"),
        "zeroshot_mean": st.column_config.NumberColumn("zero-shot mean", format="%.4f"),
        "epsilon": st.column_config.NumberColumn("ε", format="%g"),
        "sparsity": st.column_config.NumberColumn("sparsity", format="percent"),
        "tags": st.column_config.ListColumn("tags"),
    },
)
picked = view.iloc[event.selection.rows]["run_id"].tolist() if event and event.selection.rows else []
st.session_state["picked_runs"] = picked
if not picked:
    stop_with_info("Select rows to compare them, see their details or edit their notes and tags.")

if st.button(f"Compare {len(picked)} selected run(s)", type="primary", disabled=len(picked) < 1):
    select_runs(picked)
    st.switch_page("pages/compare.py")

focus = st.selectbox("Run", picked, key="runs_focus")
show_run(focus)
with st.form("annotate", clear_on_submit=True):
    st.markdown("**Notes and tags**")
    note = st.text_area("Add a note", placeholder="What did we learn from this run?")
    tags = st.text_input("Tags (comma separated)", placeholder="baseline, to-rerun")
    remove = st.checkbox("Remove these tags instead of adding them")
    saved = st.form_submit_button("Save")
if saved:
    from pruning.store.annotations import add_note, set_tags
    from pruning.store.errors import StoreError

    try:
        if note.strip():
            add_note(focus, note)
        if tags.strip():
            set_tags(focus, tags.split(","), remove=remove)
    except StoreError as exc:
        st.error(str(exc))
    else:
        clear_caches()
        st.session_state["runs_flash"] = f"Saved the annotation of {focus}."
        st.rerun()
