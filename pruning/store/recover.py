"""Rebuild a lost or unreadable catalog manifest from the part files themselves (issue 27).

The manifest is the only record of which part files are live. Without it, every part looks like an
orphan — and before this module, the next clean-up deleted them all (a bulk-loaded store of 10,000
runs, 96 MB, gone after ``rm catalog/manifest.json; python -m pruning compact``). Now a missing or
unreadable manifest beside part files is a problem that ``verify`` reports and that blocks
compaction (``pruning.store.catalog.catalog_state``), and ``verify --repair`` calls
:func:`recover_manifest`, which deletes nothing:

* every readable part file is read, and each bundle's rows are taken from the newest generation that
  holds any of its rows (a full compaction writes every table of every bundle into one generation,
  so older generations of a bundle are exactly what that compaction superseded);
* those rows are written as one new part per table, and a new manifest lists them; each bundle maps
  to the attempt directory whose ``runs.parquet`` has the same ``created_at`` (the attempt the catalog
  held), or to ``""`` (bulk rows without a directory, or no match: then the newest readable attempt
  directory is read as usual);
* every old part file is listed as retired, so clean-up removes them only after the grace period,
  their rows being in the new parts.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import duckdb
import pandas as pd

from pruning.store.catalog import CatalogManifest, write_manifest
from pruning.store.checksums import file_digest
from pruning.store.health import check_parquet
from pruning.store.layout import ALL_TABLES, published_attempts
from pruning.store.views import sql_list

log = logging.getLogger(__name__)

_PART_RE = re.compile(r"^(?P<table>[a-z_]+)-(?P<gen>\d+)\.parquet$")


def part_files(root: Path) -> list[tuple[str, int, Path]]:
    """``(table, generation, path)`` of every part-like file in ``catalog/parts`` (regular files only)."""
    out = []
    parts = root / "catalog" / "parts"
    if not parts.is_dir():
        return out
    for path in sorted(parts.iterdir()):
        m = _PART_RE.match(path.name)
        if m and m.group("table") in ALL_TABLES and path.is_file():
            out.append((m.group("table"), int(m.group("gen")), path))
    return out


def _catalog_attempts(root: Path, created: dict[str, str]) -> dict[str, str]:
    """bundle -> the attempt directory whose runs row has the catalog's ``created_at`` for it."""
    out: dict[str, str] = {}
    for bundle, _attempt, dirname in published_attempts(root):
        want = created.get(bundle)
        path = root / "runs" / dirname / "runs.parquet"
        if want is None or not path.is_file():
            continue
        try:
            have = pd.read_parquet(path, columns=["created_at"])["created_at"]
        except (OSError, ValueError, KeyError):
            continue
        if len(have) and str(have.iloc[0]) == want:
            out[bundle] = dirname
    return out


def recover_manifest(root: Path) -> CatalogManifest | None:
    """Write a new manifest from the readable part files (module docstring); None when there are
    none. The caller holds the writer lock."""
    files = [(t, g, p) for t, g, p in part_files(root) if check_parquet(p, t, deep=True) is None]
    if not files:
        return None
    gen = max(g for _, g, _ in files) + 1
    con = duckdb.connect(":memory:")
    try:
        # the newest generation holding any row of each bundle, over every table
        latest = " UNION ALL ".join(
            f"SELECT DISTINCT bundle, {g} AS gen FROM read_parquet('{str(p).replace(chr(39), chr(39) * 2)}')"
            for _, g, p in files)
        con.execute(f"CREATE TABLE latest AS SELECT bundle, max(gen) AS gen FROM ({latest}) GROUP BY bundle")
        parts: dict[str, list[str]] = {}
        checksums: dict[str, dict] = {}
        for table in ALL_TABLES:
            mine = [(g, p) for t, g, p in files if t == table]
            if not mine:
                continue
            pieces = " UNION ALL BY NAME ".join(
                f"(SELECT *, {g} AS __gen FROM read_parquet({sql_list([str(p)])}, union_by_name=true))" for g, p in mine)
            name = f"{table}-{gen:06d}.parquet"
            target = root / "catalog" / "parts" / name
            con.sql(f"SELECT t.* EXCLUDE (__gen) FROM ({pieces}) t JOIN latest l ON t.bundle = l.bundle "
                    f"AND t.__gen = l.gen ORDER BY t.run_id, t.bundle").write_parquet(
                str(target), compression="zstd", row_group_size=100_000)
            parts[table] = [name]
            checksums[name] = file_digest(target)
        bundles = [r[0] for r in con.execute("SELECT bundle FROM latest ORDER BY bundle").fetchall()]
        created: dict[str, str] = {}
        if "runs" in parts:
            rows = con.execute(f"SELECT bundle, CAST(created_at AS VARCHAR) FROM read_parquet("
                               f"{sql_list([str(root / 'catalog' / 'parts' / parts['runs'][0])])})").fetchall()
            created = {b: c for b, c in rows if c is not None}
    finally:
        con.close()
    held = _catalog_attempts(root, created)
    now = time.time()
    manifest = CatalogManifest(generation=gen, parts=parts, bundles={b: held.get(b, "") for b in bundles},
                               retired={p.name: now for _, _, p in files}, checksums=checksums)
    write_manifest(root, manifest)
    log.info("recovered the catalog manifest from %d part file(s): generation %d, %d bundle(s) (%d with their "
             "attempt directory)", len(files), gen, len(bundles), len(held))
    return manifest
