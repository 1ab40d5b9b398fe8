"""DuckDB views over a read snapshot: one view per store table, reading the snapshot's Parquet files
with ``union_by_name`` (every known column present, superseded attempts left out)."""

from __future__ import annotations

import duckdb

from pruning.store.catalog import Snapshot
from pruning.store.layout import ALL_TABLES
from pruning.store.schema import empty_select


def sql_list(values: list[str]) -> str:
    """A DuckDB list literal of quoted strings."""
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def table_sql(snap: Snapshot, table: str) -> str:
    """SQL of one store table over the snapshot's Parquet files (all known columns present)."""
    parts, loose = snap.files(table)
    pieces = [empty_select(table)]
    if parts and snap.superseded:
        pieces.append(f"SELECT * FROM read_parquet({sql_list(parts)}, union_by_name=true) "
                      f"WHERE bundle NOT IN ({', '.join(repr(b) for b in snap.superseded)})")
        parts = []
    files = parts + loose
    if files:
        pieces.append(f"SELECT * FROM read_parquet({sql_list(files)}, union_by_name=true)")
    return " UNION ALL BY NAME ".join(f"({p})" for p in pieces)


def connect(snap: Snapshot, *, locked_down: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per table of the snapshot.

    ``locked_down``: afterwards only the snapshot's own files may be read, nothing may be written
    to disk, no extension installed, and the configuration is frozen (for user-typed SQL).
    """
    con = duckdb.connect(":memory:")
    for table in ALL_TABLES:
        con.execute(f"CREATE VIEW {table} AS {table_sql(snap, table)}")
    if locked_down:
        files = snap.all_files()
        con.execute(f"SET allowed_paths = {sql_list(files) if files else '[]'}")
        con.execute("SET allowed_directories = []")
        con.execute("SET enable_external_access = false")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET lock_configuration = true")
    return con
