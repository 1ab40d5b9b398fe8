"""Queries about runs: the list of runs with their main perplexity, one run's detail, its
published attempts and its tables (see :mod:`pruning.store.sql` for the engine and its cache)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from pruning.evaluation.protocol import is_budgeted, ppl_protocol_short
from pruning.store.annotations import all_annotations, read_annotation
from pruning.store.errors import RunNotFoundError, StoreError
from pruning.store.health import check_parquet
from pruning.store.layout import published_attempts, store_root
from pruning.store.schema import RUN_KINDS, RUN_STATUSES, TABLES
from pruning.store.sql import memoized, query_df

log = logging.getLogger(__name__)

LIST_FILTERS: tuple[str, ...] = ("model", "method", "status", "tag", "kind", "preset", "strategy", "label", "bundle")

_LIST_SQL = """
WITH p AS (
    SELECT run_id,
           arg_min(struct_pack(ppl, dataset, seqlen, n_windows, total_windows),
                   (CASE WHEN stage = 'pruned' THEN 0 ELSE 2 END) + (CASE WHEN dataset = 'wiki' THEN 0 ELSE 1 END)) AS best
    FROM perplexity WHERE dataset IN ('wiki', 'wikitext2') AND stage IN ('pruned', 'dense') GROUP BY run_id
), z AS (
    SELECT run_id, coalesce(avg(value) FILTER (WHERE stage = 'pruned'), avg(value)) AS zeroshot_mean
    FROM zeroshot WHERE metric = 'acc' AND coalesce("filter", 'none') = 'none' GROUP BY run_id
)
SELECT r.run_id, r.kind, r.model, r.method, r.strategy, r.preset, r.metric, r.epsilon, r.sparsity, r.nm, r.status,
       r.label, r.config_tags, r.created_at, p.best.ppl AS ppl, z.zeroshot_mean, r.source_file AS source,
       r.preset_raw, r.sparsity_assumed, r.is_baseline, r.error, r.note, r.bundle,
       p.best.dataset AS ppl_dataset, p.best.seqlen AS ppl_seqlen, p.best.n_windows AS ppl_n_windows,
       p.best.total_windows AS ppl_total_windows
FROM runs r LEFT JOIN p USING (run_id) LEFT JOIN z USING (run_id)
ORDER BY r.created_at DESC NULLS LAST, r.kind, r.model, r.source_line, r.run_id
"""

LIST_COLUMNS: list[str] = [
    "run_id", "kind", "model", "method", "strategy", "preset", "metric", "epsilon", "sparsity", "nm", "status",
    "label", "tags", "notes", "created_at", "ppl", "ppl_protocol", "ppl_budgeted", "zeroshot_mean", "source",
    "preset_raw", "sparsity_assumed", "is_baseline", "error", "note", "bundle",
]


def _list_all(root: Path | str | None) -> pd.DataFrame:
    def compute() -> pd.DataFrame:
        df = query_df(_LIST_SQL, root=root)
        ann = all_annotations(root).set_index("run_id")
        tags, notes = [], []
        for run_id, config_tags in zip(df["run_id"], df["config_tags"]):
            own = list(config_tags) if hasattr(config_tags, "__iter__") and not isinstance(config_tags, str) else []
            extra = ann.at[run_id, "tags"] if run_id in ann.index else []
            tags.append(sorted(set(own) | set(extra)))
            notes.append("\n".join(ann.at[run_id, "notes"]) if run_id in ann.index else "")
        df["tags"] = tags
        df["notes"] = notes
        proto = list(zip(df["ppl_dataset"], df["ppl_seqlen"], df["ppl_n_windows"], df["ppl_total_windows"]))
        df["ppl_protocol"] = [None if pd.isna(ds) else f"{ds} {ppl_protocol_short(sl, n, t)}" for ds, sl, n, t in proto]
        df["ppl_budgeted"] = [is_budgeted(n, t) for _, _, n, t in proto]
        return df[LIST_COLUMNS]

    return memoized("list_all", (), root, compute)


def list_runs(root: Path | str | None = None, **filters: Any) -> pd.DataFrame:
    """One row per run or reference result set, newest first.

    Columns: run_id, kind (run|reference), model, method, strategy, preset, metric, epsilon,
    sparsity, nm, status, label, tags (list), notes (text), created_at, ppl (main WikiText/wiki
    perplexity, pruned stage), ppl_protocol (how that ppl was measured, ``pruning.evaluation.protocol``:
    ``wiki full 175×2048``, ``wiki budgeted 1/44,778×8``, ``wikitext2 as published``), ppl_budgeted (a window budget was applied), zeroshot_mean (mean acc), source, plus preset_raw,
    sparsity_assumed, is_baseline, error, note, bundle. Filters (exact match; a list means any
    of): model, method, status, tag, kind, preset, strategy, label, bundle.
    """
    bad = [k for k in filters if k not in LIST_FILTERS]
    if bad:
        raise StoreError(f"unknown run filter(s) {bad}; accepted: {', '.join(LIST_FILTERS)}")
    for key, accepted in (("status", RUN_STATUSES), ("kind", RUN_KINDS)):
        value = filters.get(key)
        values = list(value) if isinstance(value, (list, tuple, set)) else [] if value is None else [value]
        unknown = [v for v in values if v not in accepted]
        if unknown:
            raise StoreError(f"unknown run {key} {', '.join(map(repr, unknown))}; accepted: {', '.join(accepted)}")
    df = _list_all(root)
    for key, value in filters.items():
        if value is None:
            continue
        wanted = set(value) if isinstance(value, (list, tuple, set)) else {value}
        if key == "tag":
            df = df[df["tags"].map(lambda tags: bool(wanted & set(tags)))]
        else:
            df = df[df[key].isin(wanted)]
    return df.reset_index(drop=True)


def run_exists(run_id: str, root: Path | str | None = None) -> bool:
    """Whether the store holds ``run_id`` (a run or a reference result set)."""
    return bool((_list_all(root)["run_id"] == run_id).any())


def run_status(run_id: str, root: Path | str | None = None) -> str | None:
    """``succeeded`` / ``failed`` of the latest published attempt, or None if not in the store."""
    df = _list_all(root)
    hit = df[df["run_id"] == run_id]
    return None if hit.empty else str(hit["status"].iloc[0])


def run_detail(run_id: str, root: Path | str | None = None) -> dict[str, Any]:
    """Everything about one run: identity columns, ``config`` (dict), ``env``, ``timings``,
    ``status``, ``error``, tags, notes, and row counts of its tables. Raises RunNotFoundError."""
    rows = query_df("SELECT * FROM runs WHERE run_id = ?", [run_id], root)
    if rows.empty:
        raise RunNotFoundError(f"run {run_id!r} is not in the store; see `python -m pruning runs`")
    row = rows.iloc[0].to_dict()
    detail: dict[str, Any] = {k: _plain(v) for k, v in row.items() if not k.endswith("_json")}
    for key in ("config", "env", "timings"):
        text = row.get(f"{key}_json")
        detail[key] = json.loads(text) if isinstance(text, str) and text else {}
    ann = read_annotation(run_id, root)
    detail["tags"] = sorted(set(detail.get("config_tags") or []) | set(ann["tags"]))
    detail["notes"] = "\n".join(n["text"] for n in ann["notes"])
    counts = query_df(" UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t} WHERE run_id = $1" for t in TABLES),
                  [run_id], root)
    detail["tables"] = {t: int(n) for t, n in zip(counts["t"], counts["n"])}
    return detail


def run_attempts(run_id: str, root: Path | str | None = None) -> pd.DataFrame:
    """Every published attempt of ``run_id`` (``runs/<id>/``, ``runs/<id>~2/``, …), oldest first.

    Queries read only the latest attempt; the earlier ones stay on disk as history (e.g. a run re-run
    after its input text changed). Columns: attempt, latest (bool), status, created_at, commit
    (git commit, first 10 characters, or None), source_sha256, eig_dtype (precision of its stored
    spectra, None without spectra), reused / computed (the cached stages it looked up or measured:
    ``spectra``, ``dense_stats``), and ``ppl_<dataset>`` for each
    dataset of its pruned-stage perplexity (the dense stage for a dense run). Read from the attempt
    directories themselves, so it also sees attempts that compaction dropped from the catalog.
    Raises RunNotFoundError when no attempt is published.
    """
    store = store_root(root)
    found = [(attempt, dirname) for bundle, attempt, dirname in published_attempts(store)
             if bundle == run_id and (store / "runs" / dirname / "runs.parquet").exists()]
    if not found:
        raise RunNotFoundError(f"run {run_id!r} has no published attempt; see `python -m pruning runs`")
    rows = []
    for attempt, dirname in sorted(found):
        path = store / "runs" / dirname
        try:
            row = _attempt_row(attempt, path)
        except (OSError, ValueError, KeyError, IndexError, StoreError) as exc:  # pyarrow errors are OSError/ValueError
            log.warning("attempt %d of %s is unreadable: %s", attempt, run_id, exc)
            row = {"attempt": attempt, "status": "unreadable", "problem": str(exc)}
        rows.append(row)
    out = pd.DataFrame(rows)
    readable = out.loc[out["status"] != "unreadable", "attempt"]
    out.insert(1, "latest", out["attempt"] == (readable.max() if len(readable) else -1))
    return out


def _attempt_row(attempt: int, path: Path) -> dict[str, Any]:
    """One row of :func:`run_attempts`, read from the attempt directory ``path``; raises StoreError
    naming the file when one of its tables is unreadable or foreign."""
    for table in ("runs", "spectra", "perplexity"):
        file = path / f"{table}.parquet"
        if file.exists():
            reason = check_parquet(file, table, path.name.split("~")[0])
            if reason is not None:
                raise StoreError(f"{file}: {reason}")
    head = pd.read_parquet(path / "runs.parquet").iloc[0]
    env = json.loads(head["env_json"]) if isinstance(head.get("env_json"), str) and head["env_json"] else {}
    revision = env.get("code_revision") or {}
    commit = revision.get("commit")
    row: dict[str, Any] = {"attempt": attempt, "status": head.get("status"), "created_at": head.get("created_at"),
                           "commit": str(commit)[:10] if commit else None,
                           "source_sha256": revision.get("source_sha256"), "eig_dtype": None}
    row.update(_reuse(head.get("timings_json")))
    if (path / "spectra.parquet").exists():  # the precision its spectra (and so its allocation) were computed in
        spectra = pd.read_parquet(path / "spectra.parquet")
        if "eig_dtype" in spectra.columns:
            row["eig_dtype"] = ",".join(sorted(spectra["eig_dtype"].dropna().astype(str).unique())) or None
    if (path / "perplexity.parquet").exists():
        ppl = pd.read_parquet(path / "perplexity.parquet")
        stage = "pruned" if (ppl["stage"] == "pruned").any() else "dense"
        for dataset, value in ppl[ppl["stage"] == stage].groupby("dataset")["ppl"].min().items():
            row[f"ppl_{dataset}"] = float(value)
    return row


#: stages whose results are cached per (model, calibration): a run's timings name them, or ``<stage>_reused``
CACHED_STAGES: tuple[str, ...] = ("spectra", "dense_stats")


def _reuse(timings_json: Any) -> dict[str, str | None]:
    """``reused`` and ``computed``: the cached stages (:data:`CACHED_STAGES`) this attempt looked up and
    the ones it measured, comma-separated (None when none), from its timings."""
    try:
        timings = json.loads(timings_json) if isinstance(timings_json, str) and timings_json else {}
    except ValueError:
        timings = {}
    reused = sorted(k.removesuffix("_reused") for k in timings if k.endswith("_reused"))
    computed = sorted(k for k in timings if k in CACHED_STAGES)
    return {"reused": ",".join(reused) or None, "computed": ",".join(computed) or None}


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if value is pd.NA:
        return None
    return value


def run_table(run_id: str, table: str, root: Path | str | None = None) -> pd.DataFrame:
    """Rows of one table (spectra, allocation, perplexity, zeroshot, attention, metrics) of a run,
    including rows added later by other bundles (e.g. an lm-eval import attached to the run)."""
    if table not in TABLES:
        raise StoreError(f"unknown table {table!r}; accepted: {', '.join(TABLES)}")
    return memoized("run_table", (run_id, table), root,
                 lambda: query_df(f"SELECT * FROM {table} WHERE run_id = ?", [run_id], root).dropna(axis=1, how="all"))


_MIXED_TOKENIZERS_SQL = """
WITH t AS (
    SELECT model, run_id, json_extract_string(env_json, '$.tokenizer_fingerprint') AS tokenizer_fingerprint
    FROM runs WHERE kind = 'run'
), known AS (SELECT * FROM t WHERE tokenizer_fingerprint IS NOT NULL)
SELECT model, tokenizer_fingerprint, count(*) AS runs, min(run_id) AS example_run_id
FROM known
WHERE model IN (SELECT model FROM known GROUP BY model HAVING count(DISTINCT tokenizer_fingerprint) > 1)
GROUP BY model, tokenizer_fingerprint
ORDER BY model, runs DESC, tokenizer_fingerprint
"""


def mixed_tokenizers(root: Path | str | None = None) -> pd.DataFrame:
    """The models whose runs were made with more than one tokenizer (``env.tokenizer_fingerprint``,
    :func:`pruning.model.tokenizer.tokenizer_fingerprint`): one row per (model, tokenizer fingerprint)
    with ``runs`` (how many) and ``example_run_id``; empty when every model has one. Runs without the
    fingerprint (published before it was recorded) are left out. Such runs cut the same text into other
    windows (gemma3-270m: 155 against 34) and must not be compared."""
    return query_df(_MIXED_TOKENIZERS_SQL, root=root)


_GPU_PEAKS_SQL = """
WITH p AS (
    SELECT model, run_id, try_cast(json_extract_string(env_json, '$.peak_gpu_gib') AS DOUBLE) AS peak
    FROM runs WHERE kind = 'run' AND status = 'succeeded'
)
SELECT model, count(*) AS runs, max(peak) AS max_gib, quantile_cont(peak, 0.5) AS median_gib,
       arg_max(run_id, peak) AS max_run_id
FROM p WHERE peak IS NOT NULL GROUP BY model ORDER BY model
"""


def gpu_peaks(root: Path | str | None = None) -> pd.DataFrame:
    """Per model, the GPU memory its runs' processes held at most (``env.peak_gpu_gib``,
    :class:`pruning.run.pipeline.RunOutcome`): ``model, runs, max_gib, median_gib, max_run_id``, over the
    succeeded runs that recorded it (runs on the CPU, or published before 2026-12-05, did not). The
    per-worker peaks ``scripts/gpu.sh`` caps its workers by (``PEAK_GIB``) are read from here."""
    return query_df(_GPU_PEAKS_SQL, [], root)
