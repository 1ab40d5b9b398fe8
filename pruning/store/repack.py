"""Repacking the store: every bundle file rewritten with the store's encoding
(:data:`pruning.store.layout.BUNDLE_PARQUET`) and old allocation tables without the spectral metric
columns they copied from their own run's spectra table; then the catalog rebuilt from the bundles.

Why: bundles written before the encoding and :func:`pruning.run.stages.allocation_record` carried
per-column statistics (a run's whole config and environment twice over in every runs.parquet), the
embedded Arrow schema and, for a ``linear`` allocation, ~40 metric columns that are the run's spectra
table over again: the shipped store was 41 MB of bundle files for 5.8 MB of information (its
catalog). The tracked tree has to travel to a GPU machine with every call (64 MiB in all).

Nothing is lost: every rewritten table reads back equal (``pyarrow.Table.equals``) to the one read
before, less the dropped allocation columns; a column is dropped only where the same bundle's spectra
table gives every matrix the same value (:func:`pruning.spectral.pivot_for_allocation`, NaN equal to
NaN). A file is replaced (atomically, under the writer lock) only when it is not in that encoding yet,
the rewrite is smaller, or it drops a column, so a second repack changes nothing. The catalog is then rebuilt: a manifest without parts
(its old parts retired, so a reader holding the old snapshot still finds them for
:data:`pruning.store.compaction.RETIRED_GRACE_S`; meanwhile every bundle reads as loose) and one full
compaction from the bundle files.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pruning.store.catalog import CatalogManifest, read_manifest, write_manifest
from pruning.store.checksums import record_bundle_file
from pruning.store.compaction import RETIRED_GRACE_S, compact
from pruning.store.errors import StoreError
from pruning.store.layout import BUNDLE_PARQUET, parse_dirname, writable_store
from pruning.store.lock import writer_lock
from pruning.store.schema import KEY_COLUMNS, PROVENANCE_COLUMNS, TABLE_COLUMNS

log = logging.getLogger(__name__)

#: allocation columns a repack never drops: the table's own, the keys, provenance, and the unit
KEPT_ALLOCATION_COLUMNS: frozenset[str] = frozenset({*KEY_COLUMNS, *PROVENANCE_COLUMNS,
                                                     *TABLE_COLUMNS["allocation"], "unit"})


@dataclass
class RepackReport:
    """What a repack did: bytes before and after over every bundle file it read, files rewritten,
    allocation columns dropped (bundle -> names) and kept although not the table's own (their values
    differ from the bundle's spectra, or it has none), and whether the catalog was rebuilt."""

    bytes_before: int = 0
    bytes_after: int = 0
    files: int = 0
    rewritten: int = 0
    dropped: dict[str, list[str]] = field(default_factory=dict)
    kept: dict[str, list[str]] = field(default_factory=dict)
    catalog_rebuilt: bool = False

    def line(self) -> str:
        """One line for the CLI."""
        mb = 1024 * 1024
        return (f"{self.rewritten} of {self.files} bundle files rewritten: {self.bytes_before / mb:.2f} MB -> "
                f"{self.bytes_after / mb:.2f} MB; copied spectral columns dropped from {len(self.dropped)} "
                f"allocation table(s), other extra columns kept in {len(self.kept)}; catalog "
                + ("rebuilt" if self.catalog_rebuilt else "unchanged"))


def copied_columns(allocation: pd.DataFrame, spectra: pd.DataFrame | None) -> tuple[list[str], list[str]]:
    """(dropped, kept): the allocation's extra columns (not :data:`KEPT_ALLOCATION_COLUMNS`) whose
    values equal, matrix by matrix, the spectra pivot's column of that name, and the others."""
    extra = [c for c in allocation.columns if c not in KEPT_ALLOCATION_COLUMNS]
    if not extra or spectra is None or spectra.empty or "source" not in spectra.columns:
        return [], extra
    from pruning.spectral import pivot_for_allocation  # torch: only a repack of such a bundle needs it

    pivot = pivot_for_allocation(spectra).drop_duplicates("name").set_index("name")
    dropped, kept = [], []
    for column in extra:
        if column not in pivot.columns or not allocation["name"].isin(pivot.index).all():
            kept.append(column)
            continue
        ours = allocation[column].reset_index(drop=True)
        theirs = pivot.loc[allocation["name"], column].reset_index(drop=True)
        (dropped if _same(ours, theirs) else kept).append(column)
    return dropped, kept


def _same(a: pd.Series, b: pd.Series) -> bool:
    """Equal value by value, missing equal to missing; numbers compared exactly."""
    missing_a, missing_b = a.isna().to_numpy(), b.isna().to_numpy()
    if not np.array_equal(missing_a, missing_b):
        return False
    present = ~missing_a
    x, y = a[present], b[present]
    if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
        return bool(np.array_equal(x.to_numpy(dtype=float), y.to_numpy(dtype=float)))
    return bool((x.astype(str).to_numpy() == y.astype(str).to_numpy()).all())


def _equal_content(back: pa.Table, wanted: pa.Table) -> bool:
    """The same columns and values; a ``large_string`` column (pandas-inferred) may read back as
    ``string`` (Parquet keeps no string width once the Arrow schema is not embedded)."""
    if back.column_names != wanted.column_names:
        return False
    for name in wanted.column_names:
        ours, theirs = wanted.schema.field(name).type, back.schema.field(name).type
        if ours != theirs and not (pa.types.is_large_string(ours) and pa.types.is_string(theirs)):
            return False
    return back.equals(wanted.cast(back.schema))


def encoded_as_store(path: Path) -> bool:
    """Whether ``path`` is written as :data:`BUNDLE_PARQUET` says: no embedded Arrow schema, and
    statistics on the ``bundle`` column alone."""
    meta = pq.read_metadata(path)
    if b"ARROW:schema" in (meta.metadata or {}):
        return False
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    for group in range(meta.num_row_groups):
        for i, name in enumerate(names):
            if meta.row_group(group).column(i).is_stats_set != (name == "bundle"):
                return False
    return True


def _rewrite(path: Path, table: pa.Table, drop: list[str]) -> bool:
    """Write ``table`` less ``drop`` beside ``path`` with the store's encoding, check it reads back
    equal, and replace ``path`` when that is smaller or drops a column; True when replaced."""
    wanted = table.drop_columns(drop) if drop else table
    tmp = path.with_name(path.name + ".repack")
    pq.write_table(wanted, tmp, **BUNDLE_PARQUET)
    try:
        back = pq.read_table(tmp)
        if not _equal_content(back, wanted):
            raise StoreError(f"{path}: the rewritten file does not read back equal; left as it was")
        if drop or not encoded_as_store(path) or tmp.stat().st_size < path.stat().st_size:
            os.replace(tmp, path)
            record_bundle_file(path.parent, path.name)  # the bundle manifest's checksum follows the rewrite
            return True
        return False
    finally:
        tmp.unlink(missing_ok=True)


def repack_store(root: Path | str | None = None, *, dry_run: bool = False,
                 drop_old_parts: bool = False, rebuild: bool = False) -> RepackReport:
    """Rewrite every bundle file of the store at ``root`` (module docstring) and rebuild its catalog
    when anything changed. ``dry_run``: measure and report, write nothing. ``drop_old_parts``: the
    old catalog parts are deleted by the rebuild's compaction at once, not after the readers' grace
    period (only while nothing else reads the store). ``rebuild``: rebuild the catalog from the bundle
    directories even when no file changed (after a bundle directory was taken out by hand, the
    catalog still serves its rows until then). Raises StoreError when the catalog holds
    bundles without a directory (bulk appends), which a rebuild from bundles would lose."""
    root = writable_store(root, "repack the store")
    report = RepackReport()
    manifest, _ = read_manifest(root)
    bulk = sorted(b for b, d in manifest.bundles.items() if not d)
    if bulk:
        raise StoreError(f"the catalog holds {len(bulk)} bundle(s) without a directory ({', '.join(bulk[:3])}"
                         f"{', ...' if len(bulk) > 3 else ''}); repack rebuilds the catalog from bundle directories only")
    quarantined = sorted(b for b, d in manifest.bundles.items()
                         if d and not (root / "runs" / d).is_dir() and any((root / "quarantine").glob(f"*/runs/{d}")))
    if quarantined:
        raise StoreError(f"the catalog holds {len(quarantined)} run(s) whose attempt directory `verify --repair` set aside "
                         f"({', '.join(quarantined[:3])}{', ...' if len(quarantined) > 3 else ''}); only the catalog "
                         "still reads them, and a rebuild from bundle directories would drop or replace them")
    with writer_lock(root):
        for bundle_dir in sorted(p for p in (root / "runs").iterdir() if p.is_dir() and parse_dirname(p.name)):
            spectra_file = bundle_dir / "spectra.parquet"
            for path in sorted(bundle_dir.glob("*.parquet")):
                size = path.stat().st_size
                report.files += 1
                report.bytes_before += size
                table = pq.read_table(path)
                drop: list[str] = []
                if path.stem == "allocation":
                    spectra = pd.read_parquet(spectra_file) if spectra_file.exists() else None
                    drop, kept = copied_columns(table.to_pandas(), spectra)
                    if drop:
                        report.dropped[bundle_dir.name] = drop
                    if kept:
                        report.kept[bundle_dir.name] = kept
                if dry_run:
                    report.bytes_after += _encoded_size(table.drop_columns(drop) if drop else table, size, bool(drop))
                    continue
                if _rewrite(path, table, drop):
                    report.rewritten += 1
                report.bytes_after += path.stat().st_size
        if dry_run or not (report.rewritten or rebuild):
            return report
        old, _ = read_manifest(root)
        now = time.time() - (RETIRED_GRACE_S + 1.0 if drop_old_parts else 0.0)
        # with drop_old_parts, parts an earlier compaction retired go now as well
        retired = {name: now for name in old.retired} if drop_old_parts else dict(old.retired)
        for names in old.parts.values():
            for name in names:
                retired.setdefault(name, now)
        write_manifest(root, CatalogManifest(generation=old.generation, parts={}, bundles={}, retired=retired))
    compact(root, full=True)
    report.catalog_rebuilt = True
    log.info("repack: %s", report.line())
    return report


def _encoded_size(table: pa.Table, size: int, dropped: bool) -> int:
    """The size a rewrite would leave (the old size where it would not be replaced)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **BUNDLE_PARQUET)
    new = sink.getvalue().size
    return new if dropped or new < size else size
