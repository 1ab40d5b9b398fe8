"""Store layout, the writer lock, snapshots, DuckDB views and the compacted catalog.

Layout under ``pruning.paths.data_dir() / "store"``::

    runs/<bundle>[~<attempt>]/   immutable published artifacts: manifest.json, runs.parquet, <table>.parquet
    catalog/manifest.json        the compacted catalog: which part files hold which bundles
    catalog/parts/<table>-<generation>.parquet
    annotations/<run_id>.json    mutable review notes and tags (never inside runs/)
    tmp/                         staging area of publishers (renamed into runs/ when complete)
    .lock                        writer lock (fcntl): publish renames, compaction, annotations

Readers never take the lock and never hold a database file open: a *snapshot* (catalog manifest
plus the list of published bundle directories not yet compacted) is turned into an in-memory
DuckDB connection whose views read the Parquet files with ``union_by_name``. A bundle published
again gets a new attempt directory; the latest attempt wins and the older one stays as history.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import duckdb

from pruning.paths import data_dir
from pruning.procs import pid_alive
from pruning.store.errors import StoreError
from pruning.store.schema import SCHEMA_VERSION, TABLES, empty_select

log = logging.getLogger(__name__)

ALL_TABLES: tuple[str, ...] = ("runs", *TABLES)
COMPACT_AFTER_LOOSE = 32          # publishers compact (if nobody else is) once this many bundles are loose
MAX_PARTS = 8                     # a compaction that would exceed this many parts per table merges them all
RETIRED_GRACE_S = 300.0           # retired part files are deleted this long after they left the catalog
BUNDLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_DIR_RE = re.compile(r"^(?P<bundle>[A-Za-z0-9][A-Za-z0-9._-]*?)(?:~(?P<attempt>\d+))?$")


def store_root(root: Path | str | None = None) -> Path:
    """The store directory (``data_dir()/store`` unless given), with its sub-directories."""
    path = Path(root) if root is not None else data_dir() / "store"
    for sub in ("runs", "catalog/parts", "annotations", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def check_bundle_id(bundle: str) -> str:
    """Validate a bundle / run id used as a directory name (letters, digits, ``._-``)."""
    if not isinstance(bundle, str) or not BUNDLE_RE.match(bundle) or "~" in bundle:
        raise StoreError(f"invalid run/bundle id {bundle!r}: use letters, digits, '.', '_', '-' (max 200)")
    return bundle


def dirname_for(bundle: str, attempt: int) -> str:
    """Directory name of attempt ``attempt`` (1-based) of ``bundle``."""
    return bundle if attempt <= 1 else f"{bundle}~{attempt}"


def parse_dirname(name: str) -> tuple[str, int] | None:
    """(bundle, attempt) of a ``runs/`` entry, or None for names that are not bundles."""
    m = _DIR_RE.match(name)
    if not m:
        return None
    return m.group("bundle"), int(m.group("attempt") or 1)


# ---- writer lock --------------------------------------------------------------------------------
_thread_lock = threading.RLock()


@contextlib.contextmanager
def writer_lock(root: Path, *, blocking: bool = True, timeout_s: float = 120.0) -> Iterator[bool]:
    """Hold the store's exclusive writer lock (one writer at a time across processes).

    Yields True when held; with ``blocking=False`` yields False at once if another writer holds
    it. A blocking wait longer than ``timeout_s`` raises StoreError. The OS releases the lock when
    its holder dies (SIGKILL included), so a crashed writer never blocks the store.
    """
    if not _thread_lock.acquire(blocking=blocking, timeout=timeout_s if blocking else -1):
        if not blocking:
            yield False
            return
        raise StoreError(f"store {root} is locked by another thread for more than {timeout_s}s")
    try:
        fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not blocking:
                        yield False
                        return
                    if time.monotonic() > deadline:
                        raise StoreError(f"store {root} is locked by another writer for more than {timeout_s}s") from None
                    time.sleep(0.005)
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        _thread_lock.release()


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON (sorted keys, stable formatting) to a temp file and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True, allow_nan=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# ---- catalog manifest ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogManifest:
    """The compacted catalog: part files per table and which bundle attempt each part holds."""

    generation: int = 0
    schema_version: int = SCHEMA_VERSION
    parts: dict[str, list[str]] = field(default_factory=dict)       # table -> part file names
    bundles: dict[str, str] = field(default_factory=dict)           # bundle -> dirname ("" = bulk)
    retired: dict[str, float] = field(default_factory=dict)         # part name -> time it was retired

    def to_json(self) -> dict:
        return {"generation": self.generation, "schema_version": self.schema_version, "parts": self.parts,
                "bundles": self.bundles, "retired": self.retired}


_manifest_cache: dict[Path, tuple[tuple, CatalogManifest]] = {}
_bundle_tables_cache: dict[Path, tuple[str, ...]] = {}


def read_manifest(root: Path) -> tuple[CatalogManifest, tuple]:
    """The current catalog manifest and its stat key (cached while the file is unchanged)."""
    path = root / "catalog" / "manifest.json"
    try:
        st = path.stat()
    except FileNotFoundError:
        return CatalogManifest(), ("none",)
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _manifest_cache.get(path)
    if cached and cached[0] == key:
        return cached[1], key
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        manifest = CatalogManifest(
            generation=int(data["generation"]), schema_version=int(data["schema_version"]),
            parts={k: list(v) for k, v in data["parts"].items()}, bundles=dict(data["bundles"]),
            retired={k: float(v) for k, v in data.get("retired", {}).items()},
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"catalog manifest {path} is unreadable: {exc}") from exc
    _manifest_cache[path] = (key, manifest)
    return manifest, key


def bundle_tables(bundle_dir: Path) -> tuple[str, ...]:
    """Tables present in a published bundle directory (cached: published bundles are immutable)."""
    cached = _bundle_tables_cache.get(bundle_dir)
    if cached is None:
        names = {p.name[:-8] for p in bundle_dir.iterdir() if p.name.endswith(".parquet")}
        cached = tuple(t for t in ALL_TABLES if t in names)
        _bundle_tables_cache[bundle_dir] = cached
    return cached


# ---- snapshots ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """A consistent read view: the catalog parts plus published bundles not yet compacted."""

    root: Path
    manifest: CatalogManifest
    loose: dict[str, str]              # bundle -> dirname of its latest attempt, not in the catalog
    superseded: tuple[str, ...]        # bundles in the catalog whose newer attempt is loose
    key: tuple                         # changes whenever what a query could see changes

    def files(self, table: str) -> tuple[list[str], list[str]]:
        """(catalog part paths, loose bundle file paths) holding ``table``."""
        parts = [str(self.root / "catalog" / "parts" / p) for p in self.manifest.parts.get(table, [])]
        loose = []
        for dirname in sorted(self.loose.values()):
            bdir = self.root / "runs" / dirname
            if table in bundle_tables(bdir):
                loose.append(str(bdir / f"{table}.parquet"))
        return parts, loose

    def all_files(self) -> list[str]:
        """Every Parquet file this snapshot reads."""
        out: list[str] = []
        for table in ALL_TABLES:
            parts, loose = self.files(table)
            out += parts + loose
        return out


def published_attempts(root: Path) -> Iterator[tuple[str, int, str]]:
    """(bundle, attempt, dirname) of every published attempt directory in ``runs/``, unordered."""
    with os.scandir(root / "runs") as it:
        for entry in it:
            parsed = parse_dirname(entry.name)
            if parsed is not None and entry.is_dir():
                yield parsed[0], parsed[1], entry.name


def latest_attempts(root: Path) -> dict[str, tuple[str, int]]:
    """bundle -> (dirname, attempt) of the latest published attempt in ``runs/``."""
    latest: dict[str, tuple[str, int]] = {}
    for bundle, attempt, dirname in published_attempts(root):
        if bundle not in latest or attempt > latest[bundle][1]:
            latest[bundle] = (dirname, attempt)
    return latest


def snapshot(root: Path | str | None = None) -> Snapshot:
    """Take a read snapshot of the store (cheap: one manifest stat and one directory listing)."""
    root = store_root(root)
    manifest, mkey = read_manifest(root)
    latest = latest_attempts(root)
    loose = {b: d for b, (d, _) in latest.items() if manifest.bundles.get(b) != d}
    superseded = tuple(sorted(b for b in loose if b in manifest.bundles))
    ann = root / "annotations"
    key = (str(root), mkey, tuple(sorted(loose.items())), ann.stat().st_mtime_ns)
    return Snapshot(root=root, manifest=manifest, loose=loose, superseded=superseded, key=key)


# ---- DuckDB views -------------------------------------------------------------------------------
def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def table_sql(snap: Snapshot, table: str) -> str:
    """SQL of one store table over the snapshot's Parquet files (all known columns present)."""
    parts, loose = snap.files(table)
    pieces = [empty_select(table)]
    if parts and snap.superseded:
        pieces.append(f"SELECT * FROM read_parquet({_sql_list(parts)}, union_by_name=true) "
                      f"WHERE bundle NOT IN ({', '.join(repr(b) for b in snap.superseded)})")
        parts = []
    files = parts + loose
    if files:
        pieces.append(f"SELECT * FROM read_parquet({_sql_list(files)}, union_by_name=true)")
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
        con.execute(f"SET allowed_paths = {_sql_list(files) if files else '[]'}")
        con.execute("SET allowed_directories = []")
        con.execute("SET enable_external_access = false")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET lock_configuration = true")
    return con


# ---- compaction ---------------------------------------------------------------------------------
def _write_manifest(root: Path, manifest: CatalogManifest) -> None:
    write_json_atomic(root / "catalog" / "manifest.json", manifest.to_json())


def compact(root: Path | str | None = None, *, full: bool = False, blocking: bool = True) -> bool:
    """Fold loose published bundles into the catalog (one new part file per table).

    Part files that a full compaction retired are deleted on a later call once
    :data:`RETIRED_GRACE_S` has passed (readers holding an older snapshot may still read them).
    ``full`` (or too many parts, or a bundle re-published) rewrites everything into one part per
    table, dropping superseded attempts. Holds the writer lock; with ``blocking=False`` returns
    False at once when another writer holds it. Returns True when a new catalog was published.
    """
    root = store_root(root)
    with writer_lock(root, blocking=blocking) as held:
        if not held:
            return False
        snap = snapshot(root)
        old = snap.manifest
        if not snap.loose and not full:
            _collect_garbage(root, old)  # parts retired by an earlier full compaction, once their grace is over
            return False
        full = full or bool(snap.superseded) or any(len(v) >= MAX_PARTS for v in old.parts.values())
        gen = old.generation + 1
        new_parts: dict[str, list[str]] = {} if full else {k: list(v) for k, v in old.parts.items()}
        con = duckdb.connect(":memory:")
        try:
            for table in ALL_TABLES:
                parts, loose = snap.files(table)
                if full:
                    source = table_sql(snap, table) if (parts or loose) else None
                else:
                    source = f"SELECT * FROM read_parquet({_sql_list(loose)}, union_by_name=true)" if loose else None
                if source is None:
                    continue
                name = f"{table}-{gen:06d}.parquet"
                target = root / "catalog" / "parts" / name
                con.execute(f"COPY (SELECT * FROM ({source}) ORDER BY run_id, bundle) TO '{target}' "
                            "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 100000)")
                new_parts.setdefault(table, []).append(name)
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
        manifest = CatalogManifest(generation=gen, parts=new_parts, bundles=bundles, retired=retired)
        _write_manifest(root, manifest)
        _collect_garbage(root, manifest)
        log.info("compacted %d bundle(s) into catalog generation %d (%s)", len(snap.loose), gen,
                 "full" if full else "incremental")
        return True


def _collect_garbage(root: Path, manifest: CatalogManifest) -> None:
    """Delete part files retired long enough ago and orphans of crashed compactions."""
    live = {n for names in manifest.parts.values() for n in names}
    now = time.time()
    changed = False
    for path in (root / "catalog" / "parts").iterdir():
        name = path.name
        if name in live:
            continue
        retired_at = manifest.retired.get(name)
        age = now - (retired_at if retired_at is not None else path.stat().st_mtime)
        if age > RETIRED_GRACE_S:
            path.unlink(missing_ok=True)
            changed = changed or retired_at is not None
            log.debug("deleted retired catalog part %s", name)
    if changed:
        kept = {k: v for k, v in manifest.retired.items() if (root / "catalog" / "parts" / k).exists()}
        _write_manifest(root, CatalogManifest(manifest.generation, manifest.schema_version, manifest.parts,
                                              manifest.bundles, kept))


def maybe_compact(root: Path) -> None:
    """Compact if many bundles are loose and no other writer is busy (never waits)."""
    snap = snapshot(root)
    if len(snap.loose) >= COMPACT_AFTER_LOOSE:
        compact(root, blocking=False)


def bulk_append(tables: dict[str, "object"], root: Path | str | None = None) -> int:
    """Append pre-built Arrow tables (``runs`` plus any of TABLES, each with ``bundle`` and
    ``run_id`` columns, sorted by ``run_id``) directly as catalog parts, without bundle
    directories. For synthetic benchmark data and bulk loads; returns the new generation."""
    import pyarrow.parquet as pq

    root = store_root(root)
    if "runs" not in tables:
        raise StoreError("bulk_append needs a 'runs' table")
    with writer_lock(root):
        old, _ = read_manifest(root)
        gen = old.generation + 1
        parts = {k: list(v) for k, v in old.parts.items()}
        for table, data in tables.items():
            if table not in ALL_TABLES:
                raise StoreError(f"unknown table {table!r}; accepted: {', '.join(ALL_TABLES)}")
            name = f"{table}-{gen:06d}.parquet"
            pq.write_table(data, root / "catalog" / "parts" / name, row_group_size=100_000, compression="zstd")
            parts.setdefault(table, []).append(name)
        bundles = dict(old.bundles)
        bundles.update({b: "" for b in tables["runs"].column("bundle").to_pylist()})
        _write_manifest(root, CatalogManifest(generation=gen, parts=parts, bundles=bundles, retired=dict(old.retired)))
        return gen


def clean_stale_tmp(root: Path) -> None:
    """Remove staging directories of publishers that died (their pid no longer runs)."""
    for entry in (root / "tmp").iterdir():
        try:
            pid = int(entry.name.split(".")[-2])
        except (ValueError, IndexError):
            continue
        if pid == os.getpid() or pid_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        log.info("removed staging directory %s of dead publisher %d", entry.name, pid)


    return True
