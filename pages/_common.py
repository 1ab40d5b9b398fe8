"""Shared Streamlit glue of the pages: cached loaders over ``pruning.store.queries`` (keyed on
the store's catalog version, so a newly published run shows on the next rerun), the shared
sidebar (model and run pickers) and small page helpers. Pure logic lives in
``pruning.app_support``; nothing here holds a database connection open (every query opens and
closes an in-memory DuckDB view over the store's Parquet files)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import pandas as pd
import streamlit as st

from pages._url import PageAddress
from pruning.app_support.access import configured_password, password_matches, session_is_open, session_token
from pruning.app_support.formatting import format_ppl, unique_run_labels
from pruning.app_support.plain import plain
from pruning.app_support.urlstate import list_field, text_field

log = logging.getLogger(__name__)

ALL_MODELS = "(all models)"
MODEL_KEY = "sb_model"
RUNS_KEY = "sb_runs"
PENDING_RUNS_KEY = "_pending_runs"
FOCUS_RUN_KEY = "focus_run"
MAX_RUN_OPTIONS = 1000
CACHE_TTL_S = 600
_IN_FRAME: ContextVar[bool] = ContextVar("pruning_lab_in_frame", default=False)  # True while app.py runs a page
AUTH_KEY = "_auth_token"  # session_state: pruning.app_support.access.session_token of the app's password
WRONG_PASSWORD_DELAY_S = 1.0


# ---- store access (cached, keyed on the catalog version) -----------------------------------------
def catalog_version() -> str:
    """A string that changes whenever the store's visible content changes (new or re-published
    bundles, compaction, annotations). Cheap: one manifest stat and one directory listing."""
    try:
        from pruning.store.catalog import snapshot

        return repr(snapshot().key)
    except Exception as exc:  # an unreadable store must not take the whole app down
        log.warning("store snapshot failed: %s", exc)
        return "unavailable"


def _queries():
    from pruning.store import queries

    return queries


@st.cache_data(ttl=CACHE_TTL_S, max_entries=8, show_spinner=False)
def load_runs(version: str) -> pd.DataFrame:
    """All runs and reference result sets (``queries.list_runs()``)."""
    return _queries().list_runs()


@st.cache_data(ttl=CACHE_TTL_S, max_entries=8, show_spinner=False)
def load_perplexity_cells(version: str, model: str | None = None, stage: str | None = "pruned") -> pd.DataFrame:
    """Long perplexity table of runs and references (``queries.perplexity_cells``)."""
    return _queries().perplexity_cells(model=model, stage=stage)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def load_run_detail(version: str, run_id: str) -> dict[str, Any]:
    """One run's row + config (``queries.run_detail``), as a plain dict."""
    from pruning.store.errors import RunNotFoundError

    try:
        return dict(_queries().run_detail(run_id))
    except RunNotFoundError:
        return {}


@st.cache_data(ttl=CACHE_TTL_S, max_entries=128, show_spinner=False)
def load_run_attempts(version: str, run_id: str) -> pd.DataFrame:
    """Every published attempt of a run (``queries.run_attempts``; empty for reference sets)."""
    from pruning.store.errors import RunNotFoundError

    try:
        return _queries().run_attempts(run_id)
    except RunNotFoundError:
        return pd.DataFrame()


@st.cache_data(ttl=CACHE_TTL_S, max_entries=128, show_spinner=False)
def load_run_table(version: str, run_id: str, table: str) -> pd.DataFrame:
    """One artifact table of a run (spectra, allocation, perplexity, zeroshot, attention, metrics)."""
    return _queries().run_table(run_id, table)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_zeroshot(version: str, run_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Zero-shot rows of the given runs (all when None)."""
    return _queries().zeroshot_scores(run_ids=list(run_ids) if run_ids else None)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_attention(version: str, run_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Attention statistics of the given runs (all when None)."""
    return _queries().attention_stats(run_ids=list(run_ids) if run_ids else None)


def runs() -> pd.DataFrame:
    """All runs at the current catalog version."""
    return load_runs(catalog_version())


def clear_caches() -> None:
    """Drop every cached store read (after an annotation or a publish from this process)."""
    st.cache_data.clear()


@st.cache_data(ttl=CACHE_TTL_S, max_entries=4, show_spinner=False)
def load_quarantined(version: str) -> list[tuple[str, str]]:
    """(store-relative path, reason) of every quarantined store file (``pruning.store.health``)."""
    from pruning.store.annotations import annotation_problems
    from pruning.store.catalog import snapshot

    snap = snapshot()
    problems = [*snap.problems, *annotation_problems(snap.root)]
    return [(p.relative(snap.root), p.reason) for p in problems]


def quarantine_banner(max_listed: int = 8) -> None:
    """A warning naming the store files left out of every view (unreadable or not matching the
    schema) and how to set them aside; nothing when the store is clean. Cached on the catalog
    version, so a page run pays one dictionary lookup."""
    try:
        problems = load_quarantined(catalog_version())
    except Exception as exc:  # the banner must never take a page down
        log.warning("quarantine check failed: %s", exc)
        return
    if not problems:
        return
    lines = [f"- {plain(path)}: {plain(reason)}" for path, reason in problems[:max_listed]]
    if len(problems) > max_listed:
        lines.append(f"- and {len(problems) - max_listed} more")
    st.warning(
        f"{len(problems)} store file(s) cannot be read and are left out of every view (never deleted):\n\n"
        + "\n".join(lines)
        + "\n\nRun `python -m pruning verify --repair` to move them aside and rebuild the catalog.",
        icon=":material/report:",
    )


# ---- the password gate (docs/security.md) ------------------------------------------------------------------
def app_password() -> str | None:
    """``PRUNING_LAB_PASSWORD``, else ``password`` of Streamlit secrets; None when neither is set
    (a missing secrets file is no error: ``load_if_toml_exists`` only probes)."""
    secrets = st.secrets if st.secrets.load_if_toml_exists() else None
    return configured_password(os.environ, secrets)


def logged_in() -> bool:
    """True when the app has no password or this session gave the current one."""
    return session_is_open(st.session_state.get(AUTH_KEY), app_password())


def login_form() -> None:
    """Draw only the password form and end the script run: no sidebar, no store read, no page code."""
    password = app_password()
    st.title("Pruning Lab")
    st.caption("This server asks for a password.")
    with st.form("login", clear_on_submit=True):  # keyed: the same widgets whether app.py or a page drew them
        typed = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary", key="login_submit")
    if submitted and password is not None:
        if password_matches(typed, password):
            st.session_state[AUTH_KEY] = session_token(password)
            del st.session_state["login_password"]  # the typed password does not stay in the session
            st.rerun()
        time.sleep(WRONG_PASSWORD_DELAY_S)  # slows guessing down
        st.error("Wrong password.")
    st.stop()


def log_out() -> None:
    """Forget this session's login (the sidebar's Log out button)."""
    st.session_state.pop(AUTH_KEY, None)


# ---- the frame -------------------------------------------------------------------------------------------
@contextmanager
def app_frame() -> Iterator[None]:
    """app.py runs the sidebar and the chosen page inside this block; pages check it with
    :func:`enter_page`. The flag is reset on exit (also on st.stop / st.rerun), so a later script
    run of the same thread starts outside the frame again."""
    token = _IN_FRAME.set(True)
    try:
        yield
    finally:
        _IN_FRAME.reset(token)


def enter_page() -> None:
    """First call of every page: make sure the page runs inside app.py's ``st.navigation`` frame.

    Streamlit starts a process in its legacy ``pages/``-directory mode and leaves it only when the
    entry script calls ``st.navigation``; if the very first request of a fresh server is a page URL
    (a bookmark of /grid), it runs that page file alone — no sidebar, no page config. Then leave
    that mode and rerun, so app.py (and the same page) run in the frame."""
    if _IN_FRAME.get():
        return
    from streamlit import config

    if config.get_option("global.appTest"):
        # AppTest resets that mode before every run, so a page runs alone there each time; a rerun
        # would drop the button click being tested. Gate it and draw the shared sidebar in place.
        if not logged_in():
            login_form()  # ends the run
        quarantine_banner()
        render_sidebar()
        return
    from streamlit.runtime.pages_manager import PagesManager

    log.info("page started outside app.py (Streamlit's legacy pages/ mode); rerunning inside the frame")
    PagesManager.uses_pages_directory = False
    st.rerun()  # raises: nothing of the page runs; app.py's password gate comes first in the frame


# ---- shared sidebar --------------------------------------------------------------------------------
def run_label(row: pd.Series | dict) -> str:
    """One readable label of a run row (``pruning.app_support.formatting.run_label``)."""
    from pruning.app_support.formatting import run_label as label

    return label(dict(row))


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
        labels = unique_run_labels(table[table["run_id"].isin(options)].to_dict("records"))
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


def stop_with_info(message: str) -> None:
    """End the page with an info box (missing input)."""
    st.info(message)
    st.stop()


# ---- small renderers ---------------------------------------------------------------------------------
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


# ---- eigenvalues for ESD plots -----------------------------------------------------------------------
@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def _eigenvalues(version: str, run_id: str, name: str, source: str, eig_dtype: str = "float64"):
    from pruning.app_support.spectra import run_eigenvalues

    return run_eigenvalues(run_id, name, source, eig_dtype)


def load_eigenvalues(run_id: str, name: str, source: str, eig_dtype: str = "float64"):
    """Ascending eigenvalues (numpy) of one matrix of a run's model for the ESD plot, in the
    precision its stored row was computed in, from the store's spectra sets; None when the store
    holds none (the run published no spectra set)."""
    try:
        return _eigenvalues(catalog_version(), run_id, name, source, eig_dtype)
    except Exception as exc:  # the page shows an info box instead of failing
        log.info("no eigenvalues for %s %s (%s): %s", run_id, name, source, exc)
        return None


def table(data: pd.DataFrame, key: str, **kwargs: Any) -> None:
    """``st.dataframe`` inside a keyed container (a plain dataframe keeps no key; tests and the
    page's CSS find it by the container's key)."""
    with st.container(key=key):
        st.dataframe(data, **kwargs)
