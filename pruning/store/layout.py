"""The store's directory layout: where it lives, which names its bundle directories may take, which
attempts are published, and making it writable.

Layout under ``pruning.paths.data_dir() / "store"``::

    runs/<bundle>[~<attempt>]/   immutable published artifacts: manifest.json, runs.parquet, <table>.parquet
    catalog/manifest.json        the compacted catalog: which part files hold which bundles
    catalog/parts/<table>-<generation>.parquet
    annotations/<run_id>.json    mutable review notes and tags (never inside runs/)
    tmp/                         staging area of publishers (renamed into runs/ when complete)
    .lock                        writer lock (fcntl): publish renames, compaction, annotations

A bundle published again gets a new attempt directory; the latest attempt wins and the older one
stays as history.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

from pruning.paths import data_dir
from pruning.procs import pid_alive
from pruning.store.errors import StoreError, StoreReadOnlyError
from pruning.store.schema import TABLES

log = logging.getLogger(__name__)

ALL_TABLES: tuple[str, ...] = ("runs", *TABLES)
STORE_SUBDIRS: tuple[str, ...] = ("runs", "catalog/parts", "annotations", "tmp")
BUNDLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_DIR_RE = re.compile(r"^(?P<bundle>[A-Za-z0-9][A-Za-z0-9._-]*?)(?:~(?P<attempt>\d+))?$")
READ_ONLY_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
#: how a bundle's tables are written (pyarrow.parquet.write_table keywords). A bundle file is one small
#: row group, so per-column statistics (min and max of every string: a run's whole config and
#: environment twice over) and the embedded Arrow schema only add bytes, about half of a runs.parquet;
#: only ``bundle`` keeps its statistics (pruning.store.health reads them to tell a foreign file without
#: decoding it). zstd 19 costs milliseconds at this size. Files read back equal
#: (tests/test_store_repack.py), and the store's size decides whether the tree still travels to a GPU
#: machine (64 MiB a call).
BUNDLE_PARQUET: dict[str, object] = {"compression": "zstd", "compression_level": 19, "write_statistics": ["bundle"],
                                     "store_schema": False}


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
        if exc.errno in READ_ONLY_ERRNOS:
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
