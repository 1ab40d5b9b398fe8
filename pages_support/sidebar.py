"""The shared sidebar of every page: the model picker, the run picker and the run-id box, kept in
session state and in the address (``?m=MODEL&runs=ID,ID``), and what pages read from it."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from pages_support.loaders import runs
from pages_support.url import PageAddress
from pruning.app_support.formatting import unique_run_labels
from pruning.app_support.plain import plain
from pruning.app_support.urlstate import list_field, text_field

ALL_MODELS = "(all models)"
MODEL_KEY = "sb_model"
RUNS_KEY = "sb_runs"
PENDING_RUNS_KEY = "_pending_runs"
MAX_RUN_OPTIONS = 1000
FIND_KEY = "sb_find"
FIND_ERROR_KEY = "_sb_find_error"


def _find_run(table: pd.DataFrame) -> None:
    """Callback of the sidebar's id box: add the run whose id is typed (or the one run whose id
    contains it, e.g. the hash a label shows) to the selection; otherwise say what matched."""
    typed = str(st.session_state.get(FIND_KEY) or "").strip()
    st.session_state.pop(FIND_ERROR_KEY, None)
    if not typed:
        return
    ids = table["run_id"].astype(str)
    hits = ids[ids == typed].tolist() or ids[ids.str.contains(typed, regex=False)].tolist()
    if len(hits) != 1:
        st.session_state[FIND_ERROR_KEY] = (
            f"no run id is or contains {typed!r}" if not hits
            else f"{len(hits)} run ids match {typed!r} (e.g. {', '.join(hits[:3])}): type more of it"
        )
        return
    st.session_state[RUNS_KEY] = list(dict.fromkeys([*st.session_state.get(RUNS_KEY, []), hits[0]]))
    st.session_state[FIND_KEY] = ""


def render_sidebar() -> None:
    """Model picker and run picker shared by all pages (values in session_state and in the
    address: ``?m=MODEL&runs=ID,ID``, so a link opens the same selection)."""
    table = runs()
    if PENDING_RUNS_KEY in st.session_state:  # a page asked to select runs (e.g. "compare selected")
        st.session_state[RUNS_KEY] = list(st.session_state.pop(PENDING_RUNS_KEY))
    models = sorted(m for m in table["model"].dropna().unique()) if not table.empty else []
    address = PageAddress("sidebar", [text_field("m", MODEL_KEY), list_field("runs", RUNS_KEY)])
    all_ids = set(table["run_id"]) if not table.empty else set()
    with st.sidebar:
        address.restore(MODEL_KEY, [ALL_MODELS, *models])
        st.selectbox("Model", [ALL_MODELS, *models], key=MODEL_KEY)
        model = selected_model()
        sub = table if model is None else table[table["model"] == model]
        sub = sub.sort_values("created_at", ascending=False, na_position="last") if "created_at" in sub else sub
        options = list(sub["run_id"].head(MAX_RUN_OPTIONS))
        address.restore(RUNS_KEY, sorted(all_ids))
        chosen = [r for r in st.session_state.get(RUNS_KEY, []) if r in all_ids]
        options += [r for r in chosen if r not in options]
        st.session_state[RUNS_KEY] = chosen
        # short labels, what tells runs apart first: a chip is cut after ~20 characters
        labels = unique_run_labels(table[table["run_id"].isin(options)].to_dict("records"), short=True)
        picked = st.multiselect(
            "Runs",
            options,
            key=RUNS_KEY,
            format_func=lambda r: labels.get(r, r),
            help="Runs for Spectra, Attention, Zero-shot and Compare; pick rows on the Runs page too.",
        )
        st.text_input("Add a run by id", key=FIND_KEY, on_change=_find_run, args=(table,),
                      placeholder="run id or its hash, e.g. 7c13a24b", help="adds it to the runs above")
        if FIND_ERROR_KEY in st.session_state:
            st.caption(plain(st.session_state[FIND_ERROR_KEY]))  # it quotes what was typed
        st.caption(f"{len(table)} runs and reference sets in the store")
    address.write({MODEL_KEY: model, RUNS_KEY: picked})


def selected_model() -> str | None:
    """The sidebar's model, or None for all models."""
    value = st.session_state.get(MODEL_KEY, ALL_MODELS)
    return None if value in (None, ALL_MODELS) else value


def selected_runs() -> list[str]:
    """Run ids picked in the sidebar."""
    return list(st.session_state.get(RUNS_KEY, []))


def select_runs(run_ids: Sequence[str]) -> None:
    """Ask the sidebar to select ``run_ids`` on the next rerun (widgets cannot change after render)."""
    st.session_state[PENDING_RUNS_KEY] = list(dict.fromkeys(run_ids))
