"""The compacted catalog as readers see it: its manifest (which part files hold which bundles) and
read *snapshots* over the catalog and the bundles published since.

Readers never take the lock and never hold a database file open: a snapshot (catalog manifest plus
the list of published bundle directories not yet compacted) is what :mod:`pruning.store.views` turns
into an in-memory DuckDB connection (views imports this module, never the reverse: compaction and
the readers import each name from the module that defines it). Files that cannot be read are quarantined (left out of every
view, see :mod:`pruning.store.health`). The directory layout is in :mod:`pruning.store.layout`,
the writer lock in :mod:`pruning.store.lock`, compaction in :mod:`pruning.store.compaction`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pruning.atomic import write_json_atomic
from pruning.store.errors import StoreError
from pruning.store.health import Problem, check_parquet, stat_key, warn_once
from pruning.store.layout import ALL_TABLES, parse_dirname, published_attempts, store_root
from pruning.store.schema import SCHEMA_VERSION

__all__ = [
    "CatalogManifest", "Snapshot", "bundle_problems", "bundle_tables", "catalog_state", "deep_check",
    "read_manifest", "snapshot", "write_manifest",
]


# ---- catalog manifest ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogManifest:
    """The compacted catalog: part files per table and which bundle attempt each part holds."""

    generation: int = 0
    schema_version: int = SCHEMA_VERSION
    parts: dict[str, list[str]] = field(default_factory=dict)       # table -> part file names
    bundles: dict[str, str] = field(default_factory=dict)           # bundle -> dirname ("" = bulk)
    retired: dict[str, float] = field(default_factory=dict)         # part name -> time it was retired
    checksums: dict[str, dict] = field(default_factory=dict)        # part name -> {"sha256", "size"} (checksums.py)

    def to_json(self) -> dict:
        return {"generation": self.generation, "schema_version": self.schema_version, "parts": self.parts,
                "bundles": self.bundles, "retired": self.retired, "checksums": self.checksums}


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
            checksums={k: dict(v) for k, v in data.get("checksums", {}).items()},
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"catalog manifest {path} is unreadable: {exc}") from exc
    _manifest_cache[path] = (key, manifest)
    return manifest, key


def write_manifest(root: Path, manifest: CatalogManifest) -> None:
    """Replace the catalog manifest atomically and durably (writers hold the writer lock)."""
    write_json_atomic(root / "catalog" / "manifest.json", manifest.to_json())


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


# ---- snapshots ---------------------------------------------------------------------------------
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
    if mkey == ("none",):
        found = _part_count(root)
        if found:  # the manifest is the only record of which parts are live: never treat them as orphans
            return manifest, ("missing", found), [Problem(
                path=path, kind="manifest",
                reason=f"catalog manifest is missing but {found} part file(s) exist in catalog/parts; "
                       "`python -m pruning verify --repair` rebuilds it from them")]
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
        manifest = CatalogManifest(manifest.generation, manifest.schema_version, good, manifest.bundles, manifest.retired,
                                   manifest.checksums)
    return manifest, mkey, problems


_run_ids_cache: dict[Path, tuple[tuple | None, tuple[str, ...]]] = {}


def bundle_run_ids(bundle_dir: Path) -> tuple[str, ...]:
    """The run ids a bundle directory's ``runs.parquet`` claims (cached while the file is unchanged)."""
    path = bundle_dir / "runs.parquet"
    key = stat_key(path)
    cached = _run_ids_cache.get(path)
    if cached is None or cached[0] != key:
        try:
            ids = tuple(str(v) for v in pq.read_table(path, columns=["run_id"]).column("run_id").to_pylist())
        except (OSError, ValueError, KeyError, pa.ArrowException):
            ids = ()  # an unreadable file is check_parquet's to report
        cached = (key, ids)
        _run_ids_cache[path] = cached
    return cached[1]


def impostor_problem(root: Path, dirname: str, known: set[str]) -> Problem | None:
    """A bundle that claims another bundle's run id (a run id belongs to one bundle: the one named after
    it). ``known``: every bundle name of the store (directories and catalog)."""
    parsed = parse_dirname(dirname)
    bundle = parsed[0] if parsed else dirname
    for run_id in bundle_run_ids(root / "runs" / dirname):
        if run_id != bundle and run_id in known:
            return Problem(path=root / "runs" / dirname / "runs.parquet", kind="bundle", bundle=dirname,
                           reason=f"claims run id {run_id!r}, which bundle {run_id!r} holds (a run id belongs to one "
                                  "bundle; this one is left out, not merged)")
    return None


def _part_count(root: Path) -> int:
    """Regular Parquet files in ``catalog/parts``."""
    try:
        with os.scandir(root / "catalog" / "parts") as it:
            return sum(1 for e in it if e.name.endswith(".parquet") and e.is_file(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return 0


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
    known = set(attempts) | set(manifest.bundles)
    for bundle, found in attempts.items():
        in_catalog = manifest.bundles.get(bundle) if trusted else None
        held = parse_dirname(in_catalog) if in_catalog else None  # the attempt the catalog holds ("": bulk rows)
        for attempt, dirname in sorted(found, reverse=True):  # newest first
            if dirname == in_catalog or (held is not None and attempt <= held[1]):
                break  # the catalog serves it: an older attempt never supersedes it (e.g. after repair set the held one aside)
            bad = bundle_problems(root, dirname)
            if not bad:
                impostor = impostor_problem(root, dirname, known)
                bad = [impostor] if impostor is not None else []
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

