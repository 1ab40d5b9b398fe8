"""Compaction: folding published bundles into the catalog's part files, and deleting part files a
full compaction retired once no reader can still need them. Holds the writer lock throughout."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pruning.store.catalog import CatalogManifest, deep_check, read_manifest, snapshot, write_manifest
from pruning.store.checksums import file_digest
from pruning.store.errors import StoreError
from pruning.store.layout import ALL_TABLES, writable_store
from pruning.store.lock import writer_lock
from pruning.store.views import sql_list, table_sql

log = logging.getLogger(__name__)

COMPACT_AFTER_LOOSE = 32          # publishers compact (if nobody else is) once this many bundles are loose
MAX_PARTS = 8                     # a compaction that would exceed this many parts per table merges them all
RETIRED_GRACE_S = 300.0           # retired part files are deleted this long after they left the catalog


def compact(root: Path | str | None = None, *, full: bool = False, blocking: bool = True,
            rebuild: bool = False) -> bool:
    """Fold loose published bundles into the catalog (one new part file per table).

    Part files that a full compaction retired are deleted on a later call once
    :data:`RETIRED_GRACE_S` has passed (readers holding an older snapshot may still read them).
    ``full`` (or too many parts, or a bundle re-published) rewrites everything into one part per
    table, dropping superseded attempts. Holds the writer lock; with ``blocking=False`` returns
    False at once when another writer holds it. Returns True when a new catalog was published.

    While a catalog file is quarantined (see :mod:`pruning.store.health`) compaction refuses
    (StoreError; ``blocking=False`` just returns False), so that no quarantined part is ever
    garbage-collected; ``rebuild`` (used by ``verify --repair`` after moving the bad files aside)
    writes a fresh full catalog from the readable parts and bundle directories instead.
    """
    root = writable_store(root, "compact the catalog")
    with writer_lock(root, blocking=blocking) as held:
        if not held:
            return False
        snap = snapshot(root)
        if snap.catalog_problems and not rebuild:
            lines = "; ".join(p.line(root) for p in snap.catalog_problems)
            if not blocking:
                log.warning("compaction skipped while catalog files are quarantined: %s", lines)
                return False
            raise StoreError(f"cannot compact while catalog files are quarantined ({lines}); "
                             "run `python -m pruning verify --repair`")
        old = snap.manifest
        full = full or rebuild
        if not snap.loose and not full:
            _collect_garbage(root, old)  # parts retired by an earlier full compaction, once their grace is over
            return False
        full = full or bool(snap.superseded) or any(len(v) >= MAX_PARTS for v in old.parts.values())
        gen = max(old.generation, _highest_part_generation(root)) + 1
        new_parts: dict[str, list[str]] = {} if full else {k: list(v) for k, v in old.parts.items()}
        checksums = {} if full else {n: old.checksums[n] for names in old.parts.values() for n in names
                                     if n in old.checksums}
        con = duckdb.connect(":memory:")
        try:
            for table in ALL_TABLES:
                parts, loose = snap.files(table)
                if full:
                    source = table_sql(snap, table) if (parts or loose) else None
                else:
                    source = f"SELECT * FROM read_parquet({sql_list(loose)}, union_by_name=true)" if loose else None
                if source is None:
                    continue
                name = f"{table}-{gen:06d}.parquet"
                target = root / "catalog" / "parts" / name
                try:
                    con.sql(f"SELECT * FROM ({source}) ORDER BY run_id, bundle").write_parquet(
                        str(target), compression="zstd", row_group_size=100_000)
                except duckdb.Error as exc:
                    bad = [p.line(root) for p in deep_check(snap)]
                    raise StoreError(f"compaction stopped, {table} could not be read: "
                                     f"{'; '.join(bad) or ' '.join(str(exc).split())[:300]}"
                                     + ("; run `python -m pruning verify --repair`" if bad else "")) from None
                new_parts.setdefault(table, []).append(name)
                checksums[name] = file_digest(target)
        finally:
            con.close()
        bundles = dict(old.bundles)
        bundles.update(snap.loose)
        retired = dict(old.retired)
        if full:
            now = time.time()
            for names in old.parts.values():
                for n in names:
                    retired.setdefault(n, now)
        manifest = CatalogManifest(generation=gen, parts=new_parts, bundles=bundles, retired=retired, checksums=checksums)
        write_manifest(root, manifest)
        _collect_garbage(root, manifest)
        log.info("compacted %d bundle(s) into catalog generation %d (%s)", len(snap.loose), gen,
                 "full" if full else "incremental")
        return True


def _highest_part_generation(root: Path) -> int:
    """The highest generation of any part file on disk (a rebuilt catalog never reuses a name)."""
    gens = [0]
    try:
        for path in (root / "catalog" / "parts").iterdir():
            m = re.match(r"^[a-z]+-(\d+)\.parquet$", path.name)
            if m:
                gens.append(int(m.group(1)))
    except FileNotFoundError:
        pass
    return max(gens)


def _collect_garbage(root: Path, manifest: CatalogManifest) -> None:
    """Delete the part files this manifest marked retired, once :data:`RETIRED_GRACE_S` has passed.

    Nothing else is ever deleted (docs/store.md, "Nothing lost"): a part file neither live nor retired
    — an orphan of a compaction killed before it wrote its manifest, or a part of a catalog whose
    manifest was lost — stays on disk, where ``verify --repair`` can recover it."""
    live = {n for names in manifest.parts.values() for n in names}
    now = time.time()
    changed = False
    for name, retired_at in manifest.retired.items():
        path = root / "catalog" / "parts" / name
        if name in live or now - retired_at <= RETIRED_GRACE_S:
            continue
        if path.is_file():
            path.unlink(missing_ok=True)
            log.debug("deleted retired catalog part %s", name)
        changed = True
    if changed:
        kept = {k: v for k, v in manifest.retired.items() if (root / "catalog" / "parts" / k).exists()}
        write_manifest(root, CatalogManifest(manifest.generation, manifest.schema_version, manifest.parts,
                                              manifest.bundles, kept, manifest.checksums))


def maybe_compact(root: Path) -> None:
    """Compact if many bundles are loose and no other writer is busy (never waits, never fails the
    publish that called it: a compaction that cannot read a file leaves it for ``verify``)."""
    snap = snapshot(root)
    if len(snap.loose) >= COMPACT_AFTER_LOOSE:
        try:
            compact(root, blocking=False)
        except StoreError as exc:
            log.warning("automatic compaction skipped: %s", exc)


def bulk_append(tables: dict[str, pa.Table], root: Path | str | None = None) -> int:
    """Append pre-built Arrow tables (``runs`` plus any of TABLES, each with ``bundle`` and
    ``run_id`` columns, sorted by ``run_id``) directly as catalog parts, without bundle
    directories. For synthetic benchmark data and bulk loads; returns the new generation."""
    root = writable_store(root, "append to the catalog")
    if "runs" not in tables:
        raise StoreError("bulk_append needs a 'runs' table")
    with writer_lock(root):
        old, _ = read_manifest(root)
        if not (root / "catalog" / "manifest.json").exists() and any((root / "catalog" / "parts").glob("*.parquet")):
            raise StoreError("cannot append to the catalog: its manifest is missing but part files exist; "
                             "run `python -m pruning verify --repair` first")
        gen = max(old.generation, _highest_part_generation(root)) + 1  # never overwrite a part file
        parts = {k: list(v) for k, v in old.parts.items()}
        checksums = dict(old.checksums)
        for table, data in tables.items():
            if table not in ALL_TABLES:
                raise StoreError(f"unknown table {table!r}; accepted: {', '.join(ALL_TABLES)}")
            name = f"{table}-{gen:06d}.parquet"
            pq.write_table(data, root / "catalog" / "parts" / name, row_group_size=100_000, compression="zstd")
            parts.setdefault(table, []).append(name)
            checksums[name] = file_digest(root / "catalog" / "parts" / name)
        bundles = dict(old.bundles)
        bundles.update({b: "" for b in tables["runs"].column("bundle").to_pylist()})
        write_manifest(root, CatalogManifest(generation=gen, parts=parts, bundles=bundles, retired=dict(old.retired),
                                             checksums=checksums))
        return gen
