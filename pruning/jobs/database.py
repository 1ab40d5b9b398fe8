"""The job queue's database: one SQLite file (WAL mode) under ``data_dir()/jobs/queue.sqlite``, its
schema, its connections (short-lived; read-only ones write nothing at all) and the decoding of a
job row. Separate from the DuckDB results store; SQLite needs a local file system (docs/jobs.md).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self
from urllib.parse import quote

from pruning.jobs.base import JobError, JobInfo, Progress
from pruning.paths import REPO_ROOT, data_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    state TEXT NOT NULL,
    run_id TEXT NOT NULL,
    config TEXT NOT NULL,
    entrypoint TEXT NOT NULL,
    label TEXT,
    needs_gpu INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat_at REAL,
    heartbeat_timeout REAL,
    worker_id TEXT,
    host TEXT,
    pid INTEGER,
    gpu TEXT,
    exit_code INTEGER,
    reason TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    retry_of TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    job_dir TEXT,
    address TEXT,
    progress TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(backend, state, created_at);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs(run_id, state);
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    gpus TEXT,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    heartbeat_timeout REAL NOT NULL,
    stopped_at REAL
);
"""


def default_queue_path(create: bool = True) -> Path:
    """``pruning.paths.data_dir()/jobs/queue.sqlite``; with ``create`` the directory is made on
    demand, without it nothing is touched (readers on a read-only data directory)."""
    if not create:
        root = Path(os.environ.get("PRUNING_LAB_DATA", REPO_ROOT / "data")).expanduser()
        return root / "jobs" / "queue.sqlite"
    path = data_dir() / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path / "queue.sqlite"


class QueueDatabase:
    """The queue's SQLite file: opened for writing (file and schema created on demand) or, with
    :meth:`open_read_only`, for readers that never write to it; short-lived connections and
    ``BEGIN IMMEDIATE`` write transactions. :class:`pruning.jobs.queue.JobQueue` adds the operations."""

    read_only: bool = False

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_queue_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            _enable_wal(con)
            con.executescript(SCHEMA)

    @classmethod
    def open_read_only(cls, path: str | Path | None = None) -> Self | None:
        """The existing queue opened read-only (SQLite ``mode=ro``: no file, schema or journal is
        created or changed), or None when there is no queue yet (then there are no jobs)."""
        path = Path(path) if path is not None else default_queue_path(create=False)
        if not path.is_file():
            return None
        queue = cls.__new__(cls)
        queue.path = path
        queue.read_only = True
        return queue

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A short-lived connection (read-only ones write nothing, see :func:`connect_read_only`)."""
        if self.read_only:
            con = connect_read_only(self.path)
        else:
            con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA busy_timeout=30000")
            yield con
        finally:
            con.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken with BEGIN IMMEDIATE (one writer at a time)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")


WAL_WAIT_S = 30.0


def _enable_wal(con: sqlite3.Connection, wait_s: float = WAL_WAIT_S) -> None:
    """Switch the queue file to WAL mode, waiting out other openers.

    Changing the journal mode needs an exclusive lock, and SQLite answers "database is locked" at
    once, without calling the busy handler, when another connection opens the same new file at
    that moment (ten threads constructing a queue together did, in CI). The mode is persistent, so
    a file already in WAL mode is left alone; otherwise the switch is retried with a short backoff
    for up to ``wait_s`` seconds before the error is raised."""
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        try:
            mode = con.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that writes nothing, not even SQLite's ``-wal``/``-shm`` side files.

    While a writer is connected (a ``-wal`` file exists) the queue is opened ``mode=ro``, which
    shares the writer's existing side files and sees its committed rows. Otherwise (no ``-wal``:
    every change is in the main file) it is read as ``immutable=1``, which creates no side file and
    also works on a read-only directory."""
    uri = "file:" + quote(path.resolve().as_posix())
    wal = path.with_name(path.name + "-wal")
    mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    con = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=30.0, isolation_level=None)
    try:
        con.execute("SELECT 1 FROM jobs LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        con.close()
        raise JobError(f"job queue {str(path)!r} cannot be read ({exc}); accepted: a queue written by "
                       "`python -m pruning submit`") from None
    return con


def row_to_info(row: sqlite3.Row) -> JobInfo:
    """The :class:`JobInfo` of one ``jobs`` row."""
    progress = Progress(**json.loads(row["progress"])) if row["progress"] else Progress()
    return JobInfo(
        job_id=row["job_id"], backend=row["backend"], state=row["state"], run_id=row["run_id"],
        config=json.loads(row["config"]), created_at=row["created_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], heartbeat_at=row["heartbeat_at"], worker_id=row["worker_id"],
        gpu=row["gpu"], exit_code=row["exit_code"], reason=row["reason"], attempt=row["attempt"],
        retry_of=row["retry_of"], cancel_requested=bool(row["cancel_requested"]), job_dir=row["job_dir"],
        entrypoint=tuple(json.loads(row["entrypoint"])), progress=progress, label=row["label"],
        address=row["address"],
    )
