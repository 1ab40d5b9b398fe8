"""Cached loaders of the pages over ``pruning.store.queries``, keyed on the store's catalog version
(so a newly published run shows on the next rerun). Nothing here holds a database connection open:
every query opens and closes an in-memory DuckDB view over the store's Parquet files."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from pruning.app_support.runs_view import ALLOCATION_KNOBS_SQL, with_allocation_knobs
from pruning.app_support.spectra import run_eigenvalues
from pruning.config.precision import DEFAULT_EIG_DTYPE
from pruning.store import queries
from pruning.store.annotations import annotation_problems
from pruning.store.catalog import snapshot
from pruning.store.errors import RunNotFoundError, StoreError

log = logging.getLogger(__name__)

CACHE_TTL_S = 600


def catalog_version() -> str:
    """A string that changes whenever the store's visible content changes (new or re-published
    bundles, compaction, annotations). Cheap: one manifest stat and one directory listing."""
    try:
        return repr(snapshot().key)
    except Exception as exc:  # an unreadable store must not take the whole app down
        log.warning("store snapshot failed: %s", exc)
        return "unavailable"


@st.cache_data(ttl=CACHE_TTL_S, max_entries=8, show_spinner=False)
def load_runs(version: str) -> pd.DataFrame:
    """All runs and reference result sets (``queries.list_runs()``)."""
    return queries.list_runs()


@st.cache_data(ttl=CACHE_TTL_S, max_entries=8, show_spinner=False)
def load_perplexity_cells(version: str, model: str | None = None, stage: str | None = "pruned") -> pd.DataFrame:
    """Long perplexity table of runs and references (``queries.perplexity_cells``)."""
    return queries.perplexity_cells(model=model, stage=stage)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def load_run_detail(version: str, run_id: str) -> dict[str, Any]:
    """One run's row + config (``queries.run_detail``), as a plain dict."""
    try:
        return dict(queries.run_detail(run_id))
    except RunNotFoundError:
        return {}


@st.cache_data(ttl=CACHE_TTL_S, max_entries=128, show_spinner=False)
def load_run_attempts(version: str, run_id: str) -> pd.DataFrame:
    """Every published attempt of a run (``queries.run_attempts``; empty for reference sets)."""
    try:
        return queries.run_attempts(run_id)
    except RunNotFoundError:
        return pd.DataFrame()


@st.cache_data(ttl=CACHE_TTL_S, max_entries=128, show_spinner=False)
def load_run_table(version: str, run_id: str, table: str) -> pd.DataFrame:
    """One artifact table of a run (spectra, allocation, perplexity, zeroshot, attention, metrics)."""
    return queries.run_table(run_id, table)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_zeroshot(version: str, run_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Zero-shot rows of the given runs (all when None)."""
    return queries.zeroshot_scores(run_ids=list(run_ids) if run_ids else None)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_attention(version: str, run_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Attention statistics of the given runs (all when None)."""
    return queries.attention_stats(run_ids=list(run_ids) if run_ids else None)


def runs() -> pd.DataFrame:
    """All runs at the current catalog version."""
    return load_runs(catalog_version())


@st.cache_data(ttl=CACHE_TTL_S, max_entries=8, show_spinner=False)
def load_allocation_knobs(version: str) -> pd.DataFrame:
    """Each run's strategy knobs from its stored config (``runs_view.ALLOCATION_KNOBS_SQL``); empty
    when the store cannot answer (the runs table then shows no knob values)."""
    try:
        return queries.run_sql(ALLOCATION_KNOBS_SQL)
    except StoreError as exc:
        log.warning("allocation knobs unavailable: %s", exc)
        return pd.DataFrame(columns=["run_id"])


def runs_with_knobs() -> pd.DataFrame:
    """All runs with the knobs of OWL, DLP and ATP (``runs_view.with_allocation_knobs``)."""
    version = catalog_version()
    return with_allocation_knobs(load_runs(version), load_allocation_knobs(version))


def clear_caches() -> None:
    """Drop every cached store read (after an annotation or a publish from this process)."""
    st.cache_data.clear()


@st.cache_data(ttl=CACHE_TTL_S, max_entries=4, show_spinner=False)
def load_quarantined(version: str) -> list[tuple[str, str]]:
    """(store-relative path, reason) of every quarantined store file (``pruning.store.health``)."""
    snap = snapshot()
    problems = [*snap.problems, *annotation_problems(snap.root)]
    return [(p.relative(snap.root), p.reason) for p in problems]


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def _eigenvalues(version: str, run_id: str, name: str, source: str, eig_dtype: str = DEFAULT_EIG_DTYPE) -> np.ndarray | None:
    return run_eigenvalues(run_id, name, source, eig_dtype)


def load_eigenvalues(run_id: str, name: str, source: str, eig_dtype: str = DEFAULT_EIG_DTYPE) -> np.ndarray | None:
    """Ascending eigenvalues (numpy) of one matrix of a run's model for the ESD plot, in the
    precision its stored row was computed in, from the store's spectra sets; None when the store
    holds none (the run published no spectra set)."""
    try:
        return _eigenvalues(catalog_version(), run_id, name, source, eig_dtype)
    except Exception as exc:  # the page shows an info box instead of failing
        log.info("no eigenvalues for %s %s (%s): %s", run_id, name, source, exc)
        return None


@st.cache_data(ttl=CACHE_TTL_S, max_entries=4, show_spinner=False)
def load_study(version: str, choices_stamp: str = "") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The allocation study from the store (``pruning.study``): its runs, the summary (mean ± std per
    family) and the verdicts on wiki test and lee. ``choices_stamp`` (the choices files' names and
    modification times) re-reads them when a choice changes; empty frames without study runs."""
    from pruning.study import study_runs, summarize, verdicts

    study = study_runs()
    summary = summarize(study) if not study.empty else pd.DataFrame()
    verdict = (pd.concat([verdicts(summary, "wiki"), verdicts(summary, "lee")], ignore_index=True)
               if not summary.empty else pd.DataFrame())
    return study, summary, verdict


@st.cache_data(ttl=CACHE_TTL_S, max_entries=4, show_spinner=False)
def load_sensitivity(version: str, choices_stamp: str = "", tag: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The allocation study's per-block sensitivity profiles (runs tagged ``tag``, default the full
    protocol's) and the Spearman correlation of each metric with them (``pruning.study.sensitivity``);
    empty frames when the store holds no such probe runs."""
    from pruning.study.sensitivity import SENSITIVITY_TAG, block_metrics, correlations, sensitivity_profiles

    profiles = sensitivity_profiles(tag=tag or SENSITIVITY_TAG)
    if profiles.empty:
        return profiles, pd.DataFrame()
    return profiles, correlations(profiles, {m: block_metrics(m) for m in sorted(set(profiles["model"]))})


def choices_stamp() -> str:
    """Names and modification times of the study's choices files (the cache key of :func:`load_study`)."""
    from pruning.study import CHOICES_DIR

    files = sorted(CHOICES_DIR.glob("choices-*.json")) if CHOICES_DIR.is_dir() else []
    return ";".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in files)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=8, show_spinner=False)
def load_choices(model: str, stamp: str = "") -> dict[str, Any] | None:
    """``docs/study/choices-MODEL.json`` (the knobs chosen on wiki:validation); None when absent or unreadable."""
    import json

    from pruning.study import CHOICES_DIR

    path = CHOICES_DIR / f"choices-{model}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.info("no choices for %s: %s", model, exc)
        return None
