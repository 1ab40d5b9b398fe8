"""The results store: immutable run artifacts (Parquet) published atomically, queried with DuckDB.

See docs/store.md. Writers: :func:`publish_run`, :func:`publish_outcome`, :func:`publish_bundle`
(importers), :func:`compact`, :func:`add_note`, :func:`set_tags`. Readers: the helpers of
:mod:`pruning.store.queries` (each returns a pandas DataFrame).
"""

from pruning.store.annotations import add_note, all_annotations, read_annotation, set_tags
from pruning.store.catalog import snapshot
from pruning.store.compaction import bulk_append, compact
from pruning.store.errors import ImportFormatError, QueryRejectedError, RunNotFoundError, StoreError
from pruning.store.layout import store_root
from pruning.store.publish import PublishResult, environment, publish_bundle, publish_outcome, publish_run
from pruning.store.queries import (
    attention_stats, list_runs, metric_grid, models, perplexity_cells, perplexity_grid, run_attempts, run_detail,
    run_exists, run_sql, run_status, run_table, zeroshot_scores,
)
from pruning.store.schema import SCHEMA_VERSION, TABLES

__all__ = [
    "ImportFormatError", "PublishResult", "QueryRejectedError", "RunNotFoundError", "SCHEMA_VERSION", "StoreError",
    "TABLES", "add_note", "all_annotations", "attention_stats", "bulk_append", "compact", "environment",
    "list_runs", "metric_grid", "models", "perplexity_cells", "perplexity_grid", "publish_bundle",
    "publish_outcome", "publish_run", "read_annotation", "run_attempts", "run_detail", "run_exists", "run_sql",
    "run_status", "run_table", "set_tags", "snapshot", "store_root", "zeroshot_scores",
]
