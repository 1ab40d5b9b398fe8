"""The store's writer lock: one writer at a time across threads and processes (``fcntl`` on
``<store>/.lock``). Readers never take it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from pruning.store.errors import StoreError
from pruning.store.layout import READ_ONLY_ERRNOS, read_only_error

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
            if exc.errno in READ_ONLY_ERRNOS:
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
