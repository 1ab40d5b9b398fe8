"""Queries of stored spectra sets (:mod:`pruning.store.spectra_sets`): the eigenvalues behind a run's
ESD plot, the sets stored for a model, and one whole set for a run that reuses it.

A run's ``spectra`` row names its set in ``spectra_key``. Rows published before sets existed have
none: their set is found by the run's model fingerprint (``env.model_fingerprint``) or, since
fingerprints of that time changed with the transformers version, the row's model name, with the
same source and precision, and accepted only when its lambda_max agrees with the run's row within
:data:`LAMBDA_MAX_RTOL` (relative), so the plot never shows a spectrum other than the one the run's
metrics were computed from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pruning.store.sql import memoized, query_df
from pruning.config.precision import check_eig_dtype
from pruning.store.spectra_sets import SPECTRA_SOURCES

# a set recomputed elsewhere matches a run's rows to this relative tolerance: Hessians are accumulated
# in float32 over ~262k tokens, and SmolLM2's recomputed on a CPU differ from the H200's by up to
# 1.04e-6 (weights: < 1e-6); 10x that margin still tells another model or calibration batch apart
LAMBDA_MAX_RTOL = 1e-5

_SET_OF_RUN_SQL = """
WITH r AS (SELECT json_extract_string(env_json, '$.model_fingerprint') AS fp FROM runs WHERE run_id = $1),
     s AS (SELECT spectra_key, lambda_max, eig_dtype, model FROM spectra WHERE run_id = $1 AND name = $2 AND source = $3)
SELECT ss.spectra_key
FROM spectra_sets ss, s LEFT JOIN r ON true
WHERE ss.name = $2 AND ss.source = $3 AND ss.eig_dtype = coalesce($4, s.eig_dtype)
  AND (ss.spectra_key = s.spectra_key
       OR (s.spectra_key IS NULL AND (ss.fingerprint = r.fp OR ss.model = s.model)
           AND abs(ss.lambda_max - s.lambda_max) <= $5 * abs(s.lambda_max)))
ORDER BY (ss.spectra_key = s.spectra_key) DESC NULLS LAST, (ss.fingerprint = r.fp) DESC NULLS LAST,
         ss.spectra_version DESC, ss.spectra_key
LIMIT 1
"""


def _check(source: str, eig_dtype: str | None) -> None:
    if source not in SPECTRA_SOURCES:
        raise ValueError(f"source: {source!r} is invalid; accepted: {', '.join(SPECTRA_SOURCES)}")
    if eig_dtype is not None:
        check_eig_dtype(eig_dtype)


def spectra_key_of(run_id: str, name: str, source: str, eig_dtype: str | None = None,
                   root: Path | str | None = None) -> str | None:
    """The stored set holding the ``source`` spectrum of matrix ``name`` as run ``run_id`` computed
    it (``eig_dtype``: demand that precision; default the run row's), or None."""
    _check(source, eig_dtype)
    params = [run_id, name, source, eig_dtype, LAMBDA_MAX_RTOL]
    hit = memoized("spectra_key_of", tuple(params), root, lambda: query_df(_SET_OF_RUN_SQL, params, root))
    return None if hit.empty else str(hit["spectra_key"].iloc[0])


def set_eigenvalues(spectra_key: str, name: str, source: str, root: Path | str | None = None) -> np.ndarray | None:
    """Ascending eigenvalues ``(n,)`` float64 of matrix ``name`` in the stored set ``spectra_key``, or None."""
    _check(source, None)
    sql = "SELECT eigenvalue FROM eigenvalues WHERE spectra_key = ? AND name = ? AND source = ? ORDER BY eigenvalue"
    params = [spectra_key, name, source]
    frame = memoized("set_eigenvalues", tuple(params), root, lambda: query_df(sql, params, root))
    return frame["eigenvalue"].to_numpy(dtype=np.float64) if len(frame) else None


def stored_eigenvalues(run_id: str, name: str, source: str, eig_dtype: str | None = None,
                       root: Path | str | None = None) -> np.ndarray | None:
    """Ascending eigenvalues ``(n,)`` of matrix ``name`` (e.g. ``model.layers.0.self_attn.q_proj``)
    behind run ``run_id``'s ``source`` (weight | hessian) spectra row, from the store only; None when
    no stored set holds them. Never loads a model, never reads a cache directory."""
    key = spectra_key_of(run_id, name, source, eig_dtype, root)
    return None if key is None else set_eigenvalues(key, name, source, root)


def stored_spectra(fingerprint: str, source: str | None = None, eig_dtype: str | None = None,
                   root: Path | str | None = None) -> pd.DataFrame:
    """The sets stored for a model: one row per set with spectra_key, source, eig_dtype,
    spectra_version, calibration, n_matrices, n_eigenvalues (newest version first)."""
    if source is not None:
        _check(source, eig_dtype)
    sql = """
        WITH e AS (SELECT spectra_key, count(*) AS n_eigenvalues FROM eigenvalues GROUP BY spectra_key)
        SELECT ss.spectra_key, any_value(ss.source) AS source, any_value(ss.eig_dtype) AS eig_dtype,
               any_value(ss.spectra_version) AS spectra_version, any_value(ss.calibration) AS calibration,
               count(*) AS n_matrices, coalesce(any_value(e.n_eigenvalues), 0) AS n_eigenvalues
        FROM spectra_sets ss LEFT JOIN e USING (spectra_key)
        WHERE ss.fingerprint = $1 AND ($2 IS NULL OR ss.source = $2) AND ($3 IS NULL OR ss.eig_dtype = $3)
        GROUP BY ss.spectra_key ORDER BY spectra_version DESC, source DESC, spectra_key"""
    params = [fingerprint, source, eig_dtype]
    return memoized("stored_spectra", tuple(params), root, lambda: query_df(sql, params, root))


def spectra_set(spectra_key: str, root: Path | str | None = None) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """One whole stored set: (metric rows in their published order, eigenvalues ``name, source,
    eigenvalue`` ascending per matrix), or None unless every row that has a spectrum (``n_eigs`` >
    0 and not failed) has exactly ``n_eigs`` stored eigenvalues — a partly readable set (a file
    quarantined) is no set."""

    def compute() -> tuple[pd.DataFrame, pd.DataFrame] | None:
        rows = query_df("SELECT * FROM spectra_sets WHERE spectra_key = ?", [spectra_key], root)
        if rows.empty:
            return None
        eigs = query_df("SELECT name, source, eigenvalue FROM eigenvalues WHERE spectra_key = ? "
                        "ORDER BY name, eigenvalue", [spectra_key], root)
        counts = eigs.groupby("name").size()
        expected = rows[rows["status"] != "failed"].set_index("name")["n_eigs"]
        if not counts.reindex(expected.index).fillna(0).astype(int).equals(expected.astype(int)):
            return None
        order = {n: i for i, n in enumerate(rows["name"])}
        eigs = eigs.sort_values("name", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
        return rows.drop(columns=["bundle", "run_id"]), eigs

    found = memoized("spectra_set", (spectra_key,), root, compute)
    return None if found is None else (found[0].copy(), found[1].copy())
