"""Query helpers for the app and the CLI; each returns a pandas DataFrame (or a dict).

Every call takes a cheap snapshot of the store (catalog manifest stat + one directory listing).
While the snapshot is unchanged, the in-memory DuckDB connection with its views and the results of
the helpers are reused from an in-process cache; a publish, a compaction or an annotation changes
the snapshot key and so invalidates both. Nothing holds a database file open.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

import duckdb
import pandas as pd

from pruning.protocol import add_ppl_protocol, is_budgeted, ppl_protocol_short
from pruning.store.annotations import all_annotations, read_annotation
from pruning.store.catalog import Snapshot, connect, deep_check, published_attempts, snapshot, store_root
from pruning.store.errors import QueryRejectedError, RunNotFoundError, StoreError
from pruning.store.health import check_parquet
from pruning.store.schema import RUN_KINDS, RUN_STATUSES, TABLES

log = logging.getLogger(__name__)

MAIN_PPL_DATASETS: tuple[str, ...] = ("wiki", "wikitext2")
LIST_FILTERS: tuple[str, ...] = ("model", "method", "status", "tag", "kind", "preset", "strategy", "label", "bundle")
READ_ONLY_KEYWORDS: tuple[str, ...] = ("SELECT", "WITH", "DESCRIBE", "SHOW", "SUMMARIZE", "FROM", "(")

_lock = threading.Lock()
_connections: dict[str, tuple[tuple, duckdb.DuckDBPyConnection]] = {}
_results: "OrderedDict[tuple, Any]" = OrderedDict()
_RESULT_CACHE_SIZE = 256


def clear_cache(results_only: bool = False) -> None:
    """Drop the in-process result cache and (unless ``results_only``) the cached connections.
    Both also invalidate themselves whenever the store changes."""
    with _lock:
        _results.clear()
        if not results_only:
            _connections.clear()


def _cursor(snap: Snapshot) -> duckdb.DuckDBPyConnection:
    with _lock:
        cached = _connections.get(str(snap.root))
        if cached is None or cached[0] != snap.key:
            cached = (snap.key, connect(snap))
            _connections[str(snap.root)] = cached
        return cached[1].cursor()


# errors of the SQL text itself; any other DuckDB error may come from a damaged or vanished file
# (a corrupt page raises anything from IOException to a bare duckdb.Error)
_SQL_ERRORS = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException, duckdb.PermissionException,
               duckdb.ConversionException, duckdb.OutOfRangeException)


def _quarantine_after(snap: Snapshot, exc: duckdb.Error) -> bool:
    """After a query failed on a file: decode the snapshot's files, so that the next snapshot
    quarantines the bad ones; True when one was found (then the query is worth retrying)."""
    bad = deep_check(snap)
    for problem in bad:
        log.warning("query failed on %s; quarantined", problem.line(snap.root))
    if not bad:
        log.debug("store changed under a query (%s); retrying on a fresh snapshot", exc)
    with _lock:
        _connections.pop(str(snap.root), None)
    return bool(bad)


def _sql(sql: str, params: list[Any] | None = None, root: Path | str | None = None) -> pd.DataFrame:
    """Run SQL on the store's views; retried on a fresh snapshot if a file vanished or turned out
    to be damaged (it is then quarantined, see :func:`_quarantine_after`)."""
    for attempt in range(4):
        snap = snapshot(root)
        try:
            cur = _cursor(snap)
            try:
                return cur.execute(sql, params or []).df()
            finally:
                cur.close()
        except _SQL_ERRORS as exc:
            raise StoreError(f"store query failed: {exc}\nSQL: {sql}") from exc
        except duckdb.Error as exc:
            found = _quarantine_after(snap, exc)
            if attempt == 0 or (found and attempt < 3):
                continue
            raise StoreError(f"store query failed: {' '.join(str(exc).split())[:500]}") from None
    raise AssertionError("unreachable")


def _memo(name: str, args: tuple, root: Path | str | None, compute) -> Any:
    """Cache ``compute()`` under the current snapshot key; return a copy for DataFrames."""
    snap = snapshot(root)
    key = (snap.key, name, args)
    with _lock:
        if key in _results:
            _results.move_to_end(key)
            value = _results[key]
            return value.copy() if isinstance(value, pd.DataFrame) else value
    value = compute()
    with _lock:
        _results[key] = value
        while len(_results) > _RESULT_CACHE_SIZE:
            _results.popitem(last=False)
    return value.copy() if isinstance(value, pd.DataFrame) else value


# ---- runs -------------------------------------------------------------------------------------------
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
        df = _sql(_LIST_SQL, root=root)
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

    return _memo("list_all", (), root, compute)


def list_runs(root: Path | str | None = None, **filters: Any) -> pd.DataFrame:
    """One row per run or reference result set, newest first.

    Columns: run_id, kind (run|reference), model, method, strategy, preset, metric, epsilon,
    sparsity, nm, status, label, tags (list), notes (text), created_at, ppl (main WikiText/wiki
    perplexity, pruned stage), ppl_protocol (how that ppl was measured, ``pruning.protocol``:
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
    rows = _sql("SELECT * FROM runs WHERE run_id = ?", [run_id], root)
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
    counts = _sql(" UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t} WHERE run_id = $1" for t in TABLES),
                  [run_id], root)
    detail["tables"] = {t: int(n) for t, n in zip(counts["t"], counts["n"])}
    return detail


def run_attempts(run_id: str, root: Path | str | None = None) -> pd.DataFrame:
    """Every published attempt of ``run_id`` (``runs/<id>/``, ``runs/<id>~2/``, …), oldest first.

    Queries read only the latest attempt; the earlier ones stay on disk as history (e.g. a run re-run
    after its input text changed). Columns: attempt, latest (bool), status, created_at, commit
    (git commit, first 10 characters, or None), source_sha256, eig_dtype (precision of its stored
    spectra, None without spectra), and ``ppl_<dataset>`` for each
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
    return _memo("run_table", (run_id, table), root,
                 lambda: _sql(f"SELECT * FROM {table} WHERE run_id = ?", [run_id], root).dropna(axis=1, how="all"))


# ---- perplexity -------------------------------------------------------------------------------------
PPL_CELL_COLUMNS = [
    "kind", "run_id", "model", "method", "preset", "preset_raw", "epsilon", "sparsity", "sparsity_assumed",
    "dataset", "ppl", "is_baseline", "limit_windows", "raw_text", "source_file", "source_line",
    "stage", "strategy", "metric", "label", "note",
    "text_digest", "seqlen", "n_windows", "total_windows", "n_tokens", "protocol", "protocol_label", "budgeted",
]
#: the digest of the text a perplexity scored: recorded in the row since 2026-11-30, before that
#: the run's environment recorded the digests of the offline corpora it read (``wiki.test``, ``lee``)
TEXT_DIGEST_SQL = """coalesce(p.text_digest,
    json_extract_string(r.env_json, '$.corpora."' || p.dataset || '.test"'),
    json_extract_string(r.env_json, '$.corpora."' || p.dataset || '"'))"""


def _filter_runs(where: list[str], params: list, model: str | None, sparsity: float | None) -> None:
    """Append the model / sparsity conditions on the ``runs`` alias ``r`` (in place)."""
    if model is not None:
        where.append("r.model = ?")
        params.append(model)
    if sparsity is not None:
        where.append("abs(r.sparsity - ?) < 1e-9")
        params.append(float(sparsity))


def perplexity_cells(model: str | None = None, sparsity: float | None = None, stage: str | None = "pruned",
                     root: Path | str | None = None) -> pd.DataFrame:
    """Long table of perplexities of succeeded runs and reference cells: kind, run_id, model,
    method, preset (canonical), preset_raw, epsilon, sparsity, sparsity_assumed, dataset, ppl
    (NaN kept), is_baseline, limit_windows, raw_text, source_file, source_line, stage, strategy, metric,
    label, note. ``stage=None`` returns dense and pruned rows."""
    where, params = ["r.status = 'succeeded'"], []
    _filter_runs(where, params, model, sparsity)
    if stage is not None:
        where.append("p.stage = ?")
        params.append(stage)
    sql = f"""
        SELECT r.kind, r.run_id, r.model, r.method, r.preset, r.preset_raw, r.epsilon, r.sparsity,
               coalesce(r.sparsity_assumed, false) AS sparsity_assumed, p.dataset, p.ppl,
               coalesce(r.is_baseline, false) AS is_baseline, p.limit_windows, p.raw_text,
               coalesce(p.source_file, r.source_file) AS source_file, coalesce(p.source_line, r.source_line) AS source_line,
               p.stage, r.strategy, r.metric, r.label, coalesce(p.note, r.note) AS note,
               {TEXT_DIGEST_SQL} AS text_digest, p.seqlen, p.n_windows, p.total_windows, p.n_tokens
        FROM perplexity p JOIN runs r USING (run_id)
        WHERE {' AND '.join(where)}
        ORDER BY r.model, source_line NULLS LAST, r.run_id, p.dataset"""
    return _memo("perplexity_cells", (model, sparsity, stage), root,
                 lambda: add_ppl_protocol(_sql(sql, params, root))[PPL_CELL_COLUMNS])


def _grid_label(df: pd.DataFrame) -> pd.Series:
    label = df["preset"].fillna(df["preset_raw"]).fillna(df["strategy"]).fillna("?")
    return label.where(~df["is_baseline"].astype(bool), "GT")


def perplexity_grid(model: str, sparsity: float | None = None, dataset: str | None = None, aggregate: str = "min",
                    root: Path | str | None = None) -> pd.DataFrame:
    """Method-by-layer-group grid of one model: index = layer group (preset; baselines as 'GT'),
    columns = method, values = ``aggregate`` (min|mean|median|max|count) of pruned perplexity."""
    if aggregate not in ("min", "mean", "median", "max", "count"):
        raise StoreError(f"unknown aggregate {aggregate!r}; accepted: min, mean, median, max, count")
    cells = perplexity_cells(model=model, sparsity=sparsity, root=root)
    if dataset is not None:
        cells = cells[cells["dataset"] == dataset]
    cells = cells.assign(group=_grid_label(cells), method=cells["method"].fillna("(unlabeled)"))
    return cells.pivot_table(index="group", columns="method", values="ppl", aggfunc=aggregate, dropna=False)


def metric_grid(name: str, model: str | None = None, sparsity: float | None = None, stat: str = "mean",
                root: Path | str | None = None) -> pd.DataFrame:
    """Method-by-layer-group grid of a long-form metric (``metrics`` table, rows named ``name``):
    ``stat`` (avg|min|max|median|count) over all matching rows of succeeded runs."""
    funcs = {"mean": "avg", "min": "min", "max": "max", "median": "median", "count": "count"}
    if stat not in funcs:
        raise StoreError(f"unknown stat {stat!r}; accepted: {', '.join(funcs)}")
    where, params = ["m.name = ?", "r.status = 'succeeded'"], [name]
    _filter_runs(where, params, model, sparsity)
    sql = f"""
        SELECT coalesce(r.preset, r.preset_raw, r.strategy, '?') AS "group", coalesce(r.method, '(unlabeled)') AS method,
               {funcs[stat]}(m.value) AS value
        FROM metrics m JOIN runs r USING (run_id) WHERE {' AND '.join(where)} GROUP BY ALL"""

    def compute() -> pd.DataFrame:
        long = _sql(sql, params, root)
        return long.pivot(index="group", columns="method", values="value").sort_index()

    return _memo("metric_grid", (name, model, sparsity, stat), root, compute)


# ---- zero-shot and attention ------------------------------------------------------------------------
def _with_runs(table: str, run_ids: Iterable[str] | None, root: Path | str | None) -> pd.DataFrame:
    ids = None if run_ids is None else sorted(set(run_ids))
    where, params = "", []
    if ids is not None:
        where = "WHERE t.run_id IN (SELECT unnest(?::VARCHAR[]))"
        params = [ids]
    sql = f"""
        SELECT r.kind, r.model, r.method, r.preset, r.preset_raw, r.sparsity, r.label, t.*
        FROM {table} t JOIN runs r USING (run_id) {where}
        ORDER BY r.kind, r.model, t.run_id"""
    key = None if ids is None else tuple(ids)
    return _memo(table, (key,), root, lambda: _sql(sql, params, root).drop(columns=["bundle"]).dropna(axis=1, how="all"))


def zeroshot_scores(run_ids: Iterable[str] | None = None, root: Path | str | None = None) -> pd.DataFrame:
    """Zero-shot rows (task, metric, filter, value, stderr, task_version, num_fewshot, limit,
    harness_version, stage) with run identity (kind, model, method, preset, label), including the
    reference scores imported from the notes and lm-eval files."""
    return _with_runs("zeroshot", run_ids, root)


def attention_stats(run_ids: Iterable[str] | None = None, root: Path | str | None = None) -> pd.DataFrame:
    """Attention statistics (stage, block, head, statistic, value) with run identity, including the
    notes' per-model averages (block and head null)."""
    return _with_runs("attention", run_ids, root)


def models(root: Path | str | None = None) -> pd.DataFrame:
    """Models in the store: model, n_runs, n_reference (result sets of each kind)."""
    sql = """SELECT model, count(*) FILTER (WHERE kind = 'run') AS n_runs,
                    count(*) FILTER (WHERE kind = 'reference') AS n_reference
             FROM runs WHERE model IS NOT NULL GROUP BY model ORDER BY model"""
    return _memo("models", (), root, lambda: _sql(sql, root=root))


# ---- user SQL ----------------------------------------------------------------------------------------
def check_read_only(sql: str) -> str:
    """Accept exactly one SELECT-type statement (SELECT/WITH/DESCRIBE/SHOW/SUMMARIZE/FROM);
    raise QueryRejectedError naming the statement otherwise."""
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise QueryRejectedError("empty query")
    try:
        statements = duckdb.connect(":memory:").extract_statements(text)
    except duckdb.Error as exc:
        raise QueryRejectedError(f"query does not parse: {exc}") from None
    if len(statements) != 1:
        raise QueryRejectedError(f"exactly one statement is accepted, got {len(statements)}")
    first = text.split(None, 1)[0].upper()
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT or not any(first.startswith(k) for k in READ_ONLY_KEYWORDS):
        raise QueryRejectedError(
            f"only read-only queries are accepted (SELECT, WITH, DESCRIBE, SHOW); got a {kind.name} statement "
            f"starting with {first!r}")
    return text


def run_sql(sql: str, root: Path | str | None = None) -> pd.DataFrame:
    """Run a user's read-only SQL over the store's views (runs, spectra, allocation, perplexity,
    zeroshot, attention, metrics) on a locked-down connection: no writes, no other files."""
    text = check_read_only(sql)
    for attempt in range(3):
        snap = snapshot(root)
        con = connect(snap, locked_down=True)
        try:
            return con.execute(text).df()
        except duckdb.PermissionException as exc:
            raise QueryRejectedError(f"query needs access the store does not allow: {exc}") from None
        except _SQL_ERRORS as exc:
            raise StoreError(f"query failed: {exc}") from None
        except duckdb.Error as exc:  # maybe a damaged store file: quarantine it and answer from the rest
            if attempt < 2 and _quarantine_after(snap, exc):
                continue
            raise StoreError(f"query failed: {' '.join(str(exc).split())[:500]}") from None
        finally:
            con.close()
    raise AssertionError("unreachable")
