"""Table shapes of the results store, schema version and ordered migrations.

Every artifact table carries ``bundle`` (the published directory it came from) and ``run_id``.
Known columns get fixed Arrow types so that files written at different times union cleanly
(DuckDB ``read_parquet(..., union_by_name=true)``); extra columns are allowed and kept. Metrics
that have no column of their own go to the long ``metrics`` table (``name, value``), so a new
metric never needs a migration.

A migration is a function ``tables -> tables`` on a bundle's DataFrames; :func:`apply_migrations` applies
the ``MIGRATIONS`` a bundle still needs (:func:`pending_migrations`: those whose ``to_version`` is above
the bundle's ``schema_version``) in order. None is registered yet (``MIGRATIONS`` is empty, every stored
bundle is at ``SCHEMA_VERSION``), so no command walks the store with them: the first migration comes with
that command (read each bundle, apply, write it back atomically, recompact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import pandas as pd
import pyarrow as pa

from pruning.evaluation.protocol import is_missing
from pruning.store.errors import StoreError

SCHEMA_VERSION = 1

STR, F64, I64, BOOL = pa.string(), pa.float64(), pa.int64(), pa.bool_()

# columns every table has (first), and provenance columns that reference rows may carry
KEY_COLUMNS: dict[str, pa.DataType] = {"bundle": STR, "run_id": STR}
PROVENANCE_COLUMNS: dict[str, pa.DataType] = {
    "raw_text": STR, "source_file": STR, "source_line": I64, "note": STR,
}

RUN_COLUMNS: dict[str, pa.DataType] = {
    **KEY_COLUMNS,
    "kind": STR,             # run | reference
    "model": STR, "method": STR, "strategy": STR, "preset": STR, "preset_raw": STR, "metric": STR,
    "epsilon": F64, "sparsity": F64, "sparsity_assumed": BOOL, "nm": STR,
    "status": STR,           # succeeded | failed (references: succeeded)
    "error": STR, "label": STR, "config_tags": pa.list_(STR), "is_baseline": BOOL,
    "created_at": STR,       # ISO-8601 UTC, null for imported references
    "source_file": STR, "source_line": I64, "note": STR,
    "config_json": STR, "env_json": STR, "timings_json": STR,
    "schema_version": I64,
}

TABLE_COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "spectra": {
        "model": STR, "block": I64, "matrix_type": STR, "name": STR, "source": STR,
        "alpha": F64, "alpha_peak": F64, "alpha_mid": F64, "alpha_weighted": F64, "log_norm": F64,
        "log_spectral_norm": F64, "stable_rank": F64, "entropy": F64, "entropy_norm": F64,
        "num_rank": F64, "rank_ratio": F64, "effective_rank": F64, "D": F64, "xmin": F64,
        "n_tail": I64, "n_eigs": I64, "lambda_max": F64, "eig_dtype": STR, "status": STR, "message": STR,
        "spectra_key": STR,  # the stored spectra set these rows came from (``spectra_sets``), null before 2026-12
    },
    # a stored spectra set (one bundle ``spectra-<key>`` per model fingerprint, source, eig_dtype,
    # spectra code version and, for Hessians, calibration batch; ``run_id`` = the bundle id): its
    # metric rows (the columns of ``pruning.spectral.summary.COLUMNS``) and its eigenvalues
    "spectra_sets": {
        "spectra_key": STR, "fingerprint": STR, "spectra_version": STR, "calibration": STR,
        "model": STR, "block": I64, "matrix_type": STR, "name": STR, "source": STR, "n_rows": I64, "n_cols": I64,
        "n_eigs": I64, "lambda_max": F64, "eig_dtype": STR, "status": STR, "message": STR,
    },
    "eigenvalues": {"spectra_key": STR, "name": STR, "source": STR, "eigenvalue": F64},
    "allocation": {
        "block": I64, "matrix_type": STR, "name": STR, "numel": I64, "score": F64, "ratio": F64,
        "sparsity_target": F64, "sparsity_achieved": F64,
    },
    "perplexity": {
        "stage": STR, "dataset": STR, "text_digest": STR, "seqlen": I64, "limit_windows": I64, "n_windows": I64,
        "total_windows": I64, "n_tokens": I64, "nll": F64, "ppl": F64,
    },
    "zeroshot": {
        "stage": STR, "task": STR, "metric": STR, "filter": STR, "value": F64, "stderr": F64,
        "task_version": STR, "num_fewshot": I64, "limit": F64, "harness_version": STR,
    },
    "attention": {"stage": STR, "block": I64, "head": I64, "statistic": STR, "value": F64},
    "metrics": {"stage": STR, "name": STR, "value": F64},
}

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "spectra": ("block", "matrix_type", "name"),
    "spectra_sets": ("spectra_key", "fingerprint", "source", "eig_dtype", "name"),
    "eigenvalues": ("spectra_key", "name", "source", "eigenvalue"),
    "allocation": ("block", "matrix_type", "name", "sparsity_target"),
    "perplexity": ("stage", "dataset", "ppl"),
    "zeroshot": ("stage", "task", "metric", "value"),
    "attention": ("stage", "statistic", "value"),
    "metrics": ("name", "value"),
}

TABLES: tuple[str, ...] = tuple(TABLE_COLUMNS)
RUN_STATUSES: tuple[str, ...] = ("succeeded", "failed")
RUN_KINDS: tuple[str, ...] = ("run", "reference")


def column_types(table: str) -> dict[str, pa.DataType]:
    """All known columns of ``table`` ('runs' or one of TABLES) with their Arrow types."""
    if table == "runs":
        return dict(RUN_COLUMNS)
    if table not in TABLE_COLUMNS:
        raise StoreError(f"unknown table {table!r}; accepted: runs, {', '.join(TABLES)}")
    return {**KEY_COLUMNS, **TABLE_COLUMNS[table], **PROVENANCE_COLUMNS}


def to_arrow(table: str, df: pd.DataFrame) -> pa.Table:
    """Validate a tidy DataFrame and convert it with the store's column types.

    Missing required columns raise :class:`StoreError` naming them; known columns are cast
    (so ``int`` and ``float`` files union cleanly); unknown columns are kept as inferred.
    """
    types = column_types(table)
    required = ("bundle", "run_id", *REQUIRED_COLUMNS.get(table, ("kind", "status")))
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise StoreError(f"table {table!r} lacks required column(s) {missing}; it has {list(df.columns)}")
    df = df.reset_index(drop=True)
    arrays, names = [], []
    ordered = [c for c in types if c in df.columns] + [c for c in df.columns if c not in types]
    for col in ordered:
        values = df[col]
        try:
            if col in types:
                typ = types[col]
                if pa.types.is_list(typ):
                    arr = pa.array([None if v is None else list(v) for v in values], type=typ)
                elif typ == STR:
                    arr = pa.array([None if is_missing(v) else str(v) for v in values], type=STR)
                else:
                    arr = pa.array(values.astype(object).where(values.notna(), None).tolist(), type=typ)
            else:
                arr = pa.Array.from_pandas(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise StoreError(f"table {table!r}, column {col!r}: cannot store values {values.head(3).tolist()!r}: {exc}") from None
        arrays.append(arr)
        names.append(str(col))
    return pa.Table.from_arrays(arrays, names=names)


def empty_select(table: str) -> str:
    """SQL for an empty relation with the table's known columns (used when no file exists)."""
    cols = ", ".join(f"CAST(NULL AS {_duck_type(t)}) AS \"{c}\"" for c, t in column_types(table).items())
    return f"SELECT {cols} WHERE false"


def _duck_type(typ: pa.DataType) -> str:
    if pa.types.is_list(typ):
        return "VARCHAR[]"
    return {STR: "VARCHAR", F64: "DOUBLE", I64: "BIGINT", BOOL: "BOOLEAN"}[typ]


@dataclass(frozen=True)
class Migration:
    """One schema step: ``upgrade`` maps a bundle's tables (name -> DataFrame, incl. 'runs') of
    version ``to_version - 1`` to version ``to_version``."""

    to_version: int
    description: str
    upgrade: Callable[[dict[str, pd.DataFrame]], dict[str, pd.DataFrame]]


# Ordered; append new steps here and bump SCHEMA_VERSION. Version 1 is the first schema.
MIGRATIONS: list[Migration] = []


def pending_migrations(version: int, migrations: list[Migration] | None = None,
                       target: int | None = None) -> list[Migration]:
    """The migrations that take a bundle of ``version`` to ``target`` (default SCHEMA_VERSION),
    in order; raises StoreError if a step is missing or the version is newer than this code."""
    migrations = MIGRATIONS if migrations is None else migrations
    target = SCHEMA_VERSION if target is None else target
    if version > target:
        raise StoreError(f"store schema version {version} is newer than this code's {target}; update the code")
    steps = sorted((m for m in migrations if version < m.to_version <= target), key=lambda m: m.to_version)
    expected = list(range(version + 1, target + 1))
    if [m.to_version for m in steps] != expected:
        raise StoreError(f"no complete migration path from schema {version} to {target}: have steps {[m.to_version for m in steps]}")
    return steps


def apply_migrations(tables: Mapping[str, pd.DataFrame], version: int,
                     migrations: list[Migration] | None = None, target: int | None = None) -> dict[str, pd.DataFrame]:
    """Apply the pending migrations in order and stamp ``runs.schema_version``."""
    out = dict(tables)
    steps = pending_migrations(version, migrations, target)
    for step in steps:
        out = step.upgrade(out)
        if "runs" in out:
            out["runs"] = out["runs"].assign(schema_version=step.to_version)
    return out
