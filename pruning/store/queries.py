"""Query helpers for the app and the CLI; each returns a pandas DataFrame (or a dict, or an array).

The one read interface of the store: pages, ``pruning.app_support`` and the CLI import from here.
The helpers live in modules of one concern each — :mod:`pruning.store.queries_runs` (runs, one
run's detail, attempts and tables), :mod:`pruning.store.queries_results` (perplexity, metric grids,
zero-shot, attention, models), :mod:`pruning.store.queries_spectra` (stored spectra and their
eigenvalues) — over the engine :mod:`pruning.store.sql` (snapshots, the in-process cache, user SQL).
"""

from __future__ import annotations

from pruning.store.queries_results import (
    MAIN_PPL_DATASETS, PPL_CELL_COLUMNS, TEXT_DIGEST_SQL, attention_stats, metric_grid, models, perplexity_cells,
    perplexity_grid, zeroshot_scores,
)
from pruning.store.queries_runs import (
    LIST_COLUMNS, LIST_FILTERS, gpu_peaks, list_runs, mixed_tokenizers, run_attempts, run_detail, run_exists, run_status,
    run_table,
)
from pruning.store.queries_spectra import (
    set_eigenvalues, spectra_key_of, spectra_set, stored_eigenvalues, stored_spectra,
)
from pruning.store.sql import READ_ONLY_KEYWORDS, check_read_only, clear_cache, run_sql

__all__ = [
    "LIST_COLUMNS", "LIST_FILTERS", "MAIN_PPL_DATASETS", "PPL_CELL_COLUMNS", "READ_ONLY_KEYWORDS", "TEXT_DIGEST_SQL",
    "attention_stats", "check_read_only", "clear_cache", "gpu_peaks", "list_runs", "metric_grid", "mixed_tokenizers",
    "models",
    "perplexity_cells", "perplexity_grid", "run_attempts", "run_detail", "run_exists", "run_sql", "run_status", "run_table",
    "set_eigenvalues", "spectra_key_of", "spectra_set", "stored_eigenvalues", "stored_spectra", "zeroshot_scores",
]
