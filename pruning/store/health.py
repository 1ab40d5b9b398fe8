"""Fault isolation: is a store file readable, and does it hold the table its name promises?

One unreadable or foreign file must never take the whole store down. Before a Parquet file enters
a DuckDB view it is checked *cheaply* — its footer (schema and row-group statistics) is read and
compared with :mod:`pruning.store.schema`: required columns present, known columns of a compatible
type, and (for a bundle's own files) every row belonging to that bundle. A file that fails is
*quarantined*: reported as a :class:`Problem` (path and reason), left out of the views, never
deleted. ``python -m pruning verify`` adds a *deep* check (every page decoded) and ``--repair``
moves the bad files aside (:mod:`pruning.store.verify`).

Verdicts are cached per path and ``(inode, size, mtime)``, so the app re-checks a file only when it
changed; a deep verdict (from ``verify`` or from a query that failed on a file) overrides a light one.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from pruning.store.schema import REQUIRED_COLUMNS, column_types

log = logging.getLogger(__name__)

ProblemKind = Literal["bundle", "part", "manifest", "annotation"]


@dataclass(frozen=True)
class Problem:
    """One store file that cannot be used: where it is, what it is, and why."""

    path: Path
    kind: ProblemKind          # bundle file (runs/...), catalog part, catalog manifest, annotation
    reason: str
    bundle: str | None = None  # directory name under runs/ for bundle files

    def relative(self, root: Path) -> str:
        """The path relative to the store root (as shown to users)."""
        try:
            return self.path.relative_to(root).as_posix()
        except ValueError:
            return str(self.path)

    def line(self, root: Path) -> str:
        """One readable line: ``runs/x/perplexity.parquet: not a Parquet file (...)``."""
        return f"{self.relative(root)}: {self.reason}"


_lock = threading.Lock()
# path -> (stat key, light verdict, deep verdict or _UNCHECKED); a verdict is None (fine) or the reason
_verdicts: dict[str, tuple[tuple, str | None, Any]] = {}
_UNCHECKED = object()
_warned: set[tuple[str, str]] = set()


def stat_key(path: Path) -> tuple | None:
    """(inode, size, mtime_ns) of a file, or None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def required_columns(table: str) -> tuple[str, ...]:
    """Columns a file of ``table`` must have (the same rule as :func:`schema.to_arrow`)."""
    return ("bundle", "run_id", *REQUIRED_COLUMNS.get(table, ("kind", "status")))


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether DuckDB's ``union_by_name`` of ``actual`` with ``expected`` keeps the column's meaning."""
    if actual == expected or pa.types.is_null(actual):
        return True
    if pa.types.is_dictionary(actual):
        actual = actual.value_type
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if pa.types.is_floating(expected) or pa.types.is_integer(expected):
        return pa.types.is_integer(actual) or pa.types.is_floating(actual) or pa.types.is_decimal(actual)
    if pa.types.is_boolean(expected):
        return pa.types.is_boolean(actual)
    if pa.types.is_list(expected):
        return ((pa.types.is_list(actual) or pa.types.is_large_list(actual))
                and _compatible(actual.value_type, expected.value_type))
    return False


def schema_problem(schema: pa.Schema, table: str) -> str | None:
    """Why a file with ``schema`` cannot be read as store table ``table`` (None when it can)."""
    names = set(schema.names)
    missing = [c for c in required_columns(table) if c not in names]
    if missing:
        return (f"does not match the schema of table {table!r}: lacks column(s) {', '.join(missing)} "
                f"(has {', '.join(schema.names[:8])}{', ...' if len(schema.names) > 8 else ''})")
    types = column_types(table)
    for field in schema:
        expected = types.get(field.name)
        if expected is not None and not _compatible(field.type, expected):
            return f"does not match the schema of table {table!r}: column {field.name!r} is {field.type}, expected {expected}"
    return None


def _bundle_problem(path: Path, meta: pq.FileMetaData, bundle: str) -> str | None:
    """Whether every row of a bundle's file says ``bundle`` (footer statistics, else the column)."""
    index = meta.schema.to_arrow_schema().get_field_index("bundle")
    values: set[str] = set()
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        if group.num_rows == 0:
            continue
        stats = group.column(index).statistics
        if stats is None or not stats.has_min_max or stats.null_count:
            values = set(pq.read_table(path, columns=["bundle"]).column("bundle").to_pylist())
            break
        values |= {stats.min, stats.max}
    values = {v.decode() if isinstance(v, bytes) else v for v in values}
    foreign = sorted(str(v) for v in values if v != bundle)
    if foreign:
        return f"holds rows of another bundle ({', '.join(foreign[:3])}), not of {bundle!r}: a foreign table"
    return None


def _light(path: Path, table: str, bundle: str | None) -> str | None:
    try:
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowException, ValueError) as exc:
        return f"not a readable Parquet file (truncated or corrupt): {_short(exc)}"
    problem = schema_problem(schema, table)
    if problem is None and bundle is not None:
        try:
            problem = _bundle_problem(path, meta, bundle)
        except (OSError, pa.ArrowException, ValueError) as exc:
            problem = f"not a readable Parquet file (truncated or corrupt): {_short(exc)}"
    return problem


def _deep(path: Path) -> str | None:
    try:
        pq.read_table(path)
    except (OSError, pa.ArrowException, ValueError) as exc:
        return f"not a readable Parquet file (corrupt data pages): {_short(exc)}"
    return None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def not_regular(path: Path) -> str | None:
    """Why ``path`` is not a regular file (a FIFO would block a reader forever, a device or socket is no
    store file), or None; a missing file is None here (callers report it in their own words)."""
    try:
        mode = os.stat(path).st_mode  # a link to a regular file is fine
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be inspected: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or special file")
    return f"is {kind}, not a regular file"


def check_parquet(path: Path, table: str, bundle: str | None = None, *, deep: bool = False) -> str | None:
    """Why ``path`` cannot serve as store table ``table`` (None when it can).

    Light check: footer and schema (required columns, compatible known columns) and, with
    ``bundle``, that every row names that bundle. ``deep`` also decodes every page. Verdicts are
    cached per ``(inode, size, mtime)``; a file that does not exist is reported as missing.
    """
    key = stat_key(path)
    if key is None:
        return "file is missing"
    irregular = not_regular(path)
    if irregular:
        return irregular
    name = str(path)
    with _lock:
        cached = _verdicts.get(name)
    if cached is None or cached[0] != key:
        cached = (key, _light(path, table, bundle), _UNCHECKED)
    light, deep_verdict = cached[1], cached[2]
    if light is None and deep and deep_verdict is _UNCHECKED:
        deep_verdict = _deep(path)
    with _lock:
        _verdicts[name] = (key, light, deep_verdict)
    if light is not None:
        return light
    return deep_verdict if isinstance(deep_verdict, str) else None


def read_annotation_file(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(data, None) for a well-formed annotation file, (None, reason) otherwise.

    Well-formed: a JSON object with a string ``run_id``, a list of string ``tags`` and a list of
    ``notes`` objects each with a ``text`` (tags and notes may be absent)."""
    irregular = not_regular(path)
    if irregular:
        return None, irregular
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "file is missing"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"not valid JSON: {_short(exc)}"
    if not isinstance(data, dict):
        return None, f"not a JSON object (a {type(data).__name__})"
    if not isinstance(data.get("run_id"), str) or not data["run_id"]:
        return None, "has no 'run_id' (a non-empty string is required)"
    tags, notes = data.setdefault("tags", []), data.setdefault("notes", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return None, f"'tags' must be a list of strings, got {tags!r:.80}"
    if not isinstance(notes, list) or not all(isinstance(n, dict) and isinstance(n.get("text"), str) for n in notes):
        return None, f"'notes' must be a list of {{'text': ...}} objects, got {notes!r:.80}"
    return data, None


def warn_once(problem: Problem, root: Path) -> None:
    """Log a quarantined file once per process (readers take many snapshots)."""
    key = (str(problem.path), problem.reason)
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning("quarantined %s (left out of every view; run `python -m pruning verify --repair`)", problem.line(root))


def clear_verdicts() -> None:
    """Forget every cached verdict (tests; ``verify --repair`` after moving files)."""
    with _lock:
        _verdicts.clear()
        _warned.clear()
