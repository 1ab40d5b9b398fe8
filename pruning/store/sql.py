"""The store's query engine: SQL over a snapshot's DuckDB views, with an in-process cache.

Every call takes a cheap snapshot of the store (catalog manifest stat + one directory listing).
While the snapshot is unchanged, the in-memory DuckDB connection with its views and the results of
the helpers are reused from an in-process cache; a publish, a compaction or an annotation changes
the snapshot key and so invalidates both. Nothing holds a database file open. A query that fails on
a damaged file quarantines it (:mod:`pruning.store.health`) and is answered from the rest.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from pruning.store.catalog import Snapshot, deep_check, snapshot
from pruning.store.errors import QueryRejectedError, StoreError
from pruning.store.views import connect

log = logging.getLogger(__name__)

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


def query_df(sql: str, params: list[Any] | None = None, root: Path | str | None = None) -> pd.DataFrame:
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


def memoized(name: str, args: tuple, root: Path | str | None, compute: Callable[[], Any]) -> Any:
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
