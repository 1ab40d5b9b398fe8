"""Atomic file writes: write to a temporary file beside the target, then rename it over the target.

A reader (another worker, the app, a second process) sees either the old file or the new one, never
a half-written one: ``os.replace`` is atomic on POSIX when source and target share a directory, which
is why the temporary file is created next to the target. A failure while writing leaves the old file
untouched and removes the temporary file.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def temp_path(path: Path) -> Path:
    """A hidden sibling of ``path``, unique per process, thread and moment:
    ``.<name>.<pid>.<thread>.<ns>.tmp``. Same directory, so the final rename is atomic."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{time.time_ns()}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[Path], None], fsync: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path`` and rename it over ``path``.

    ``write`` must create the file it is given. With ``fsync`` the data reach the disk before the
    rename (worth it for small metadata that a crash must not leave empty). On any exception the
    temporary file is removed, ``path`` keeps its old content and the exception propagates.
    Returns ``path``."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # the original error matters more; say what was left behind
            log.warning("could not remove temporary file %s: %s", tmp, exc)
        raise
    return path


def write_text_atomic(path: Path, text: str, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically. Returns ``path``."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=fsync)


def write_json_atomic(path: Path, data: object, fsync: bool = True) -> Path:
    """Write JSON (sorted keys, indent 1, trailing newline) to ``path`` atomically and, by default,
    durably. Returns ``path``."""
    text = json.dumps(data, indent=1, sort_keys=True, allow_nan=True) + "\n"
    return write_text_atomic(path, text, fsync=fsync)


def write_parquet_atomic(frame: pd.DataFrame, path: Path, fsync: bool = False) -> Path:
    """Write ``frame`` (without its index) as Parquet to ``path`` atomically. Returns ``path``."""
    return write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False), fsync=fsync)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``path`` (created if missing) for the block: one holder at a
    time across processes and threads (each call opens its own descriptor). Used where several workers
    would otherwise compute the same cached result together (dense statistics, spectra sets)."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
