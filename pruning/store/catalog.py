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
import errno
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

from pruning.atomic import write_json_atomic
from pruning.paths import data_dir
from pruning.procs import pid_alive
from pruning.store.errors import StoreError, StoreReadOnlyError
from pruning.store.health import Problem, check_parquet, stat_key, warn_once
from pruning.store.schema import SCHEMA_VERSION, TABLES, empty_select

log = logging.getLogger(__name__)

ALL_TABLES: tuple[str, ...] = ("runs", *TABLES)
COMPACT_AFTER_LOOSE = 32          # publishers compact (if nobody else is) once this many bundles are loose
MAX_PARTS = 8                     # a compaction that would exceed this many parts per table merges them all
RETIRED_GRACE_S = 300.0           # retired part files are deleted this long after they left the catalog
BUNDLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_DIR_RE = re.compile(r"^(?P<bundle>[A-Za-z0-9][A-Za-z0-9._-]*?)(?:~(?P<attempt>\d+))?$")


STORE_SUBDIRS: tuple[str, ...] = ("runs", "catalog/parts", "annotations", "tmp")
_READ_ONLY_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


def store_root(root: Path | str | None = None) -> Path:
    """The store directory (``data_dir()/store`` unless given). Readers never write: nothing is
    created here, and a missing sub-directory reads as empty. Writers use :func:`writable_store`."""
    return Path(root) if root is not None else data_dir() / "store"


def read_only_error(root: Path, exc: OSError, action: str = "write") -> StoreReadOnlyError:
    """The one-line error of a write refused by the file system (permissions, read-only mount)."""
    return StoreReadOnlyError(
        f"the results store {root} is read-only here ({exc.strerror or exc}): cannot {action}; "
        "reading (runs, query, export, the app) still works")


def writable_store(root: Path | str | None = None, action: str = "write") -> Path:
    """The store directory for a writer: its sub-directories created and the lock file openable for
    writing; raises :class:`StoreReadOnlyError` (one line) when the file system refuses."""
    path = store_root(root)
    try:
        for sub in STORE_SUBDIRS:
            (path / sub).mkdir(parents=True, exist_ok=True)
        os.close(os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as exc:
        if exc.errno in _READ_ONLY_ERRNOS:
            raise read_only_error(path, exc, action) from None
        raise StoreError(f"cannot {action} in the results store {path}: {exc}") from None
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
        try:
            fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in _READ_ONLY_ERRNOS:
                raise read_only_error(root, exc, "take the writer lock") from None
            raise
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
_bundle_tables_cache: dict[Path, tuple[tuple, tuple[str, ...]]] = {}


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
    """Tables present in a published bundle directory (cached while the directory is unchanged:
    published bundles are immutable, but ``verify --repair`` may move one aside and a new attempt
    take its name)."""
    key = stat_key(bundle_dir)
    cached = _bundle_tables_cache.get(bundle_dir)
    if cached is None or cached[0] != key:
        try:
            names = {p.name[:-8] for p in bundle_dir.iterdir() if p.name.endswith(".parquet")}
        except (FileNotFoundError, NotADirectoryError):
            names = set()
        cached = (key, tuple(t for t in ALL_TABLES if t in names))
        _bundle_tables_cache[bundle_dir] = cached
    return cached[1]


# ---- snapshots ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """A consistent read view: the catalog parts plus published bundles not yet compacted."""

    root: Path
    manifest: CatalogManifest
    loose: dict[str, str]              # bundle -> dirname of its latest attempt, not in the catalog
    superseded: tuple[str, ...]        # bundles in the catalog whose newer attempt is loose
    key: tuple                         # changes whenever what a query could see changes
    problems: tuple[Problem, ...] = ()  # quarantined files: left out of every view (health.py)
    catalog_trusted: bool = True       # False: a catalog file is bad, bundles are read from runs/

    @property
    def catalog_problems(self) -> tuple[Problem, ...]:
        """Quarantined catalog files (manifest or parts)."""
        return tuple(p for p in self.problems if p.kind in ("manifest", "part"))

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
    """(bundle, attempt, dirname) of every published attempt directory in ``runs/``, unordered
    (none when ``runs/`` does not exist yet)."""
    try:
        it = os.scandir(root / "runs")
    except FileNotFoundError:
        return
    with it:
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


def bundle_problems(root: Path, dirname: str, *, deep: bool = False) -> list[Problem]:
    """The files of one attempt directory that cannot enter a view (see :mod:`pruning.store.health`)."""
    bdir = root / "runs" / dirname
    parsed = parse_dirname(dirname)
    bundle = parsed[0] if parsed else dirname
    out = []
    for table in bundle_tables(bdir):
        path = bdir / f"{table}.parquet"
        reason = check_parquet(path, table, bundle, deep=deep)
        if reason is not None:
            out.append(Problem(path=path, kind="bundle", reason=reason, bundle=dirname))
    return out


def catalog_state(root: Path, *, deep: bool = False) -> tuple[CatalogManifest, tuple, list[Problem]]:
    """The catalog manifest as readers may use it, its stat key, and the bad catalog files.

    A corrupt manifest gives an empty manifest (every bundle is then read from ``runs/``); a bad
    part is dropped from the returned manifest's parts (the caller reads the bundles it held from
    their directories instead)."""
    path = root / "catalog" / "manifest.json"
    try:
        manifest, mkey = read_manifest(root)
    except StoreError as exc:
        reason = str(exc).replace(f"catalog manifest {path} is unreadable: ", "")
        return CatalogManifest(), ("unreadable", stat_key(path)), [
            Problem(path=path, kind="manifest", reason=f"catalog manifest is unreadable: {reason}")]
    problems: list[Problem] = []
    good: dict[str, list[str]] = {}
    for table, names in manifest.parts.items():
        for name in names:
            part = root / "catalog" / "parts" / name
            reason = (check_parquet(part, table, deep=deep) if table in ALL_TABLES
                      else f"catalog part of unknown table {table!r}")
            if reason is None:
                good.setdefault(table, []).append(name)
            else:
                problems.append(Problem(path=part, kind="part", reason=reason))
    if problems:
        manifest = CatalogManifest(manifest.generation, manifest.schema_version, good, manifest.bundles, manifest.retired)
    return manifest, mkey, problems


def snapshot(root: Path | str | None = None) -> Snapshot:
    """Take a read snapshot of the store (cheap: one manifest stat, one directory listing, and a
    cached footer check of each file it will read).

    Files that cannot be read or do not match the schema are quarantined: listed in
    ``problems``, left out of the views. A bad attempt directory falls back to the bundle's
    previous readable attempt; a bad catalog file makes the snapshot read every bundle from its
    directory (``catalog_trusted`` False), keeping only bulk-appended rows of the good parts.
    """
    root = store_root(root)
    manifest, mkey, problems = catalog_state(root)
    trusted = not problems
    attempts: dict[str, list[tuple[int, str]]] = {}
    for bundle, attempt, dirname in published_attempts(root):
        attempts.setdefault(bundle, []).append((attempt, dirname))
    loose: dict[str, str] = {}
    for bundle, found in attempts.items():
        in_catalog = manifest.bundles.get(bundle) if trusted else None
        for _, dirname in sorted(found, reverse=True):  # newest first
            if dirname == in_catalog:
                break  # the catalog serves it
            bad = bundle_problems(root, dirname)
            if not bad:
                loose[bundle] = dirname
                break
            problems += bad
    superseded = tuple(sorted(b for b in loose if b in manifest.bundles))
    for problem in problems:
        warn_once(problem, root)
    ann = stat_key(root / "annotations")
    key = (str(root), mkey, tuple(sorted(loose.items())), ann,
           tuple(sorted((str(p.path), p.reason) for p in problems)))
    return Snapshot(root=root, manifest=manifest, loose=loose, superseded=superseded, key=key,
                    problems=tuple(problems), catalog_trusted=trusted)


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
                try:
                    con.sql(f"SELECT * FROM ({source}) ORDER BY run_id, bundle").write_parquet(
                        str(target), compression="zstd", row_group_size=100_000)
                except duckdb.Error as exc:
                    bad = [p.line(root) for p in deep_check(snap)]
                    raise StoreError(f"compaction stopped, {table} could not be read: "
                                     f"{'; '.join(bad) or ' '.join(str(exc).split())[:300]}"
                                     + ("; run `python -m pruning verify --repair`" if bad else "")) from None
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


def deep_check(snap: Snapshot) -> list[Problem]:
    """Decode every file the snapshot reads (catalog parts and loose bundles) and return those
    that fail; their verdict is cached, so the next snapshot quarantines them. Used when DuckDB
    fails on a file whose footer looked fine (corrupt data pages)."""
    problems: list[Problem] = []
    for table, names in snap.manifest.parts.items():
        for name in names:
            path = snap.root / "catalog" / "parts" / name
            reason = check_parquet(path, table, deep=True)
            if reason is not None:
                problems.append(Problem(path=path, kind="part", reason=reason))
    for dirname in sorted(snap.loose.values()):
        problems += bundle_problems(snap.root, dirname, deep=True)
    return problems


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
    """Compact if many bundles are loose and no other writer is busy (never waits, never fails the
    publish that called it: a compaction that cannot read a file leaves it for ``verify``)."""
    snap = snapshot(root)
    if len(snap.loose) >= COMPACT_AFTER_LOOSE:
        try:
            compact(root, blocking=False)
        except StoreError as exc:
            log.warning("automatic compaction skipped: %s", exc)


def bulk_append(tables: dict[str, "object"], root: Path | str | None = None) -> int:
    """Append pre-built Arrow tables (``runs`` plus any of TABLES, each with ``bundle`` and
    ``run_id`` columns, sorted by ``run_id``) directly as catalog parts, without bundle
    directories. For synthetic benchmark data and bulk loads; returns the new generation."""
    import pyarrow.parquet as pq

    root = writable_store(root, "append to the catalog")
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
