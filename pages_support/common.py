"""Small widgets the pages share: a run's detail, a keyed table, the info box that ends a page.
The pages' other shared parts: cached store reads in :mod:`pages_support.loaders`, the sidebar in
:mod:`pages_support.sidebar`, the password gate and the frame in :mod:`pages_support.frame`. Pure logic lives in
``pruning.app_support``."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from pages_support.loaders import catalog_version, load_run_attempts, load_run_detail, load_run_table
from pages_support.url import PageAddress
from pruning.app_support.formatting import run_label as format_run_label
from pruning.app_support.plain import plain

# Re-exported for pages/spectra.py, which imports them from here.
from pages_support.frame import enter_page
from pages_support.loaders import load_eigenvalues, runs
from pages_support.sidebar import selected_model, selected_runs

__all__ = ["catalog_version", "enter_page", "load_eigenvalues", "load_run_table", "parse_json", "pick_runs_here",
           "run_label", "runs", "selected_model", "selected_runs", "show_run", "stop_with_info", "table"]


def run_label(row: pd.Series | dict) -> str:
    """One readable label of a run row (``pruning.app_support.formatting.run_label``)."""
    return format_run_label(dict(row))


def pick_runs_here(address: PageAddress, key: str, options: list[str], none_message: str) -> list[str]:
    """The page's own run picker, for when the sidebar picked none of its runs: ``options`` with the
    first preselected, kept in the address under ``key``. Ends the page with ``none_message`` when
    there is nothing to pick."""
    if not options:
        stop_with_info(none_message)
    address.restore(key, options)
    st.session_state.setdefault(key, options[:1])
    picked = st.multiselect("Runs (or pick them in the sidebar)", options, key=key)
    address.write({key: picked})
    return picked


def stop_with_info(message: str) -> None:
    """End the page with an info box (missing input)."""
    st.info(message)
    st.stop()


def parse_json(text: Any) -> dict[str, Any]:
    """A JSON column value as a dict ({} when missing or invalid)."""
    if isinstance(text, dict):
        return text
    if isinstance(text, str) and text.strip():
        try:
            value = json.loads(text)
            return value if isinstance(value, dict) else {}
        except json.JSONDecodeError:
            return {}
    return {}


def show_run(run_id: str) -> None:
    """Compact detail of one run or reference set: key facts, provenance, config and tables."""
    detail = load_run_detail(catalog_version(), run_id)
    if not detail:
        st.warning(f"run {plain(repr(run_id))} is not in the store")
        return
    st.markdown(
        f"**{plain(run_label(detail))}**  \n`{run_id}` · {plain(detail.get('kind', '?'))} · "
        f"status **{plain(detail.get('status', '?'))}**"
    )
    if detail.get("error"):
        st.error(plain(str(detail["error"])[:2000]))
    if detail.get("tags") or detail.get("notes"):  # the team's annotations, as plain text (never Markdown)
        with st.container(key="run_annotations", border=True):
            if detail.get("tags"):
                st.text("tags: " + ", ".join(map(str, detail["tags"])))
            if detail.get("notes"):
                st.text("notes:\n" + str(detail["notes"]))
    attempts = load_run_attempts(catalog_version(), run_id) if detail.get("kind") != "reference" else pd.DataFrame()
    if len(attempts) > 1:
        st.caption(f"attempt {int(attempts['attempt'].max())} of {len(attempts)}: every view shows the latest; "
                   "the earlier attempts stay in the store as history")
        table(attempts, key="run_attempts", hide_index=True,
              column_config={c: st.column_config.NumberColumn(c, format="%.2f") for c in attempts if c.startswith("ppl_")})
    if detail.get("kind") == "reference":
        st.caption(
            plain(f"source {detail.get('source_file') or '?'} line {detail.get('source_line') or '?'}: "
                  f"{detail.get('note') or ''}")
        )
    tables = {t: n for t, n in (detail.get("tables") or {}).items() if n}
    if tables:
        st.caption("tables: " + ", ".join(f"{t} ({n} rows)" for t, n in tables.items()))
    config = parse_json(detail.get("config"))
    if config:
        with st.expander("config"):
            st.json(config, expanded=False)
    if tables.get("perplexity"):
        ppl = load_run_table(catalog_version(), run_id, "perplexity")
        st.dataframe(ppl.drop(columns=[c for c in ("bundle", "run_id") if c in ppl]), hide_index=True)
    if tables.get("metrics"):  # a search's trace (EvoPress: KL to the dense model per generation)
        from pruning.app_support.plots import search_trace_chart
        from pruning.run.evopress_trace import trace_from_metrics

        trace = trace_from_metrics(load_run_table(catalog_version(), run_id, "metrics"))
        if not trace.empty:
            st.plotly_chart(search_trace_chart(trace), key=f"search_trace_{run_id}")


def table(data: pd.DataFrame, key: str, **kwargs: Any) -> None:
    """``st.dataframe`` inside a keyed container (a plain dataframe keeps no key; tests and the
    page's CSS find it by the container's key)."""
    with st.container(key=key):
        st.dataframe(data, **kwargs)
