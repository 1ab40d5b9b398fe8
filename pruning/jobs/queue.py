"""The job queue: one SQLite database (WAL mode) under ``data_dir()/jobs/queue.sqlite``.

It records every job submitted from this machine (``local`` jobs that workers claim, and ``ray``
jobs mirrored for listing) and the heartbeats of local workers. Every operation opens a
short-lived connection; state changes that must not race (claim, cancel, reap, finish) run inside
``BEGIN IMMEDIATE`` transactions, so two workers never claim the same job. The queue is separate
from the DuckDB results store. SQLite needs a local file system: keep ``PRUNING_LAB_DATA/jobs`` off
NFS when several workers share the queue (see docs/jobs.md).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pruning.config import RunConfig
from pruning.jobs.base import DEFAULT_ENTRYPOINT, JobError, JobInfo, JobNotFoundError, Progress
from pruning.procs import pid_alive

log = logging.getLogger(__name__)

_SCHEMA = """
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
        from pruning.paths import REPO_ROOT

        root = Path(os.environ.get("PRUNING_LAB_DATA", REPO_ROOT / "data")).expanduser()
        return root / "jobs" / "queue.sqlite"
    from pruning.paths import data_dir

    path = data_dir() / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path / "queue.sqlite"


def needs_gpu(config: RunConfig) -> bool:
    """True when the run's config asks for a CUDA device (only GPU workers may claim it)."""
    return config.model.device.startswith("cuda")


class JobQueue:
    """SQLite-backed job table with atomic claims and heartbeats.

    ``JobQueue()`` opens the queue for writing (creating the file and its schema on demand);
    :meth:`open_read_only` opens an existing queue for readers, which never write to it.
    """

    read_only: bool = False

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_queue_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)

    @classmethod
    def open_read_only(cls, path: str | Path | None = None) -> "JobQueue | None":
        """The existing queue opened read-only (SQLite ``mode=ro``: no file, schema or journal is
        created or changed), or None when there is no queue yet (then there are no jobs)."""
        path = Path(path) if path is not None else default_queue_path(create=False)
        if not path.is_file():
            return None
        queue = cls.__new__(cls)
        queue.path = path
        queue.read_only = True
        return queue

    # ---- connections ----------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            con = _connect_read_only(self.path)
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

    # ---- jobs -----------------------------------------------------------------------------
    def enqueue(self, job_id: str, config: RunConfig, *, backend: str = "local",
                entrypoint: tuple[str, ...] | list[str] = DEFAULT_ENTRYPOINT, job_dir: str | Path | None = None,
                retry_of: str | None = None, state: str = "queued", address: str | None = None) -> JobInfo:
        """Insert a new job (state ``queued`` unless given) and return its record; ``address`` is the
        cluster address of jobs run elsewhere (Ray)."""
        with self._transaction() as con:
            self._insert(con, job_id, config, backend=backend, entrypoint=entrypoint, job_dir=job_dir,
                         retry_of=retry_of, state=state, address=address)
        return self.get(job_id)

    @staticmethod
    def _insert(con: sqlite3.Connection, job_id: str, config: RunConfig, *, backend: str,
                entrypoint: tuple[str, ...] | list[str], job_dir: str | Path | None, retry_of: str | None,
                state: str, address: str | None) -> None:
        con.execute(
            "INSERT INTO jobs (job_id, backend, state, run_id, config, entrypoint, label, needs_gpu, created_at,"
            " job_dir, retry_of, address) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (job_id, backend, state, config.run_id, json.dumps(config.to_dict()), json.dumps(list(entrypoint)),
             config.label, int(needs_gpu(config)), time.time(), str(job_dir) if job_dir else None, retry_of,
             address),
        )

    def enqueue_once(self, job_id: str, config: RunConfig, *, backend: str = "local",
                     entrypoint: tuple[str, ...] | list[str] = DEFAULT_ENTRYPOINT, job_dir: str | Path | None = None,
                     address: str | None = None) -> tuple[JobInfo, bool]:
        """Insert a queued job unless ``config``'s run id already has a succeeded, running or queued
        job (any backend). The lookup and the insert are one ``BEGIN IMMEDIATE`` transaction, so any
        number of concurrent callers (threads or processes) make one job. Returns (job, created):
        the new job and True, or the existing job and False."""
        with self._transaction() as con:
            row = con.execute(
                "SELECT * FROM jobs WHERE run_id = ? AND state IN ('succeeded', 'running', 'queued')"
                " ORDER BY state = 'succeeded' DESC, created_at DESC LIMIT 1", (config.run_id,),
            ).fetchone()
            if row is not None:
                return _row_to_info(row), False
            self._insert(con, job_id, config, backend=backend, entrypoint=entrypoint, job_dir=job_dir,
                         retry_of=None, state="queued", address=address)
        return self.get(job_id), True

    def delete(self, job_id: str) -> None:
        """Remove a job record (a reservation whose submission to another system failed)."""
        with self._transaction() as con:
            con.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    def get(self, job_id: str) -> JobInfo:
        """The job's record; raises JobNotFoundError."""
        with self._connect() as con:
            row = con.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r} in {self.path}")
        return _row_to_info(row)

    def list(self, states: tuple[str, ...] | None = None, backend: str | None = None,
             limit: int | None = None) -> list[JobInfo]:
        """Jobs newest first, filtered by states and backend. A read-only queue shows a running
        local job whose worker is lost (see :meth:`reap_stale`) as ``failed`` without recording it."""
        if self.read_only:
            return self._list_read_only(states, backend, limit)
        sql, params = "SELECT * FROM jobs WHERE 1=1", []
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            params += list(states)
        if backend:
            sql += " AND backend = ?"
            params.append(backend)
        sql += " ORDER BY created_at DESC, rowid DESC"
        if limit:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._connect() as con:
            return [_row_to_info(r) for r in con.execute(sql, params).fetchall()]

    def _list_read_only(self, states: tuple[str, ...] | None, backend: str | None,
                        limit: int | None) -> list[JobInfo]:
        now = time.time()
        with self._connect() as con:
            rows = con.execute("SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC").fetchall()
            workers = _workers_of(con, rows)
        jobs = []
        for row in rows:
            job = _row_to_info(row)
            lost = _lost_reason(row, workers, now) if job.backend == "local" and job.state == "running" else None
            if lost is not None:
                job = replace(job, state="failed", finished_at=now, reason=lost)
            if (not states or job.state in states) and (not backend or job.backend == backend):
                jobs.append(job)
        return jobs[:limit] if limit else jobs

    def find_run(self, run_id: str, states: tuple[str, ...]) -> JobInfo | None:
        """Newest job of ``run_id`` in one of ``states`` (any backend), or None."""
        with self._connect() as con:
            row = con.execute(
                f"SELECT * FROM jobs WHERE run_id = ? AND state IN ({','.join('?' * len(states))})"
                " ORDER BY created_at DESC LIMIT 1", (run_id, *states),
            ).fetchone()
        return _row_to_info(row) if row is not None else None

    def claim(self, worker_id: str, *, gpu: str | None, heartbeat_timeout: float) -> JobInfo | None:
        """Atomically take the oldest queued local job this worker can run (GPU jobs need ``gpu``).

        Returns the job (now ``running``, owned by ``worker_id``) or None when nothing is queued.
        """
        now = time.time()
        with self._transaction() as con:
            row = con.execute(
                "SELECT job_id FROM jobs WHERE backend = 'local' AND state = 'queued' AND (needs_gpu = 0 OR ?)"
                " ORDER BY created_at, rowid LIMIT 1", (int(gpu is not None),),
            ).fetchone()
            if row is None:
                return None
            con.execute(
                "UPDATE jobs SET state = 'running', worker_id = ?, host = ?, gpu = ?, started_at = ?, heartbeat_at = ?,"
                " heartbeat_timeout = ?, attempt = attempt + 1 WHERE job_id = ? AND state = 'queued'",
                (worker_id, socket.gethostname(), gpu, now, now, heartbeat_timeout, row["job_id"]),
            )
        return self.get(row["job_id"])

    def set_pid(self, job_id: str, pid: int) -> None:
        """Record the process id (also its process group) of a running job."""
        with self._transaction() as con:
            con.execute("UPDATE jobs SET pid = ? WHERE job_id = ?", (pid, job_id))

    def heartbeat(self, job_id: str, worker_id: str, progress: Progress | None = None) -> bool:
        """Refresh a running job's heartbeat (and progress); False when the worker no longer owns it."""
        with self._transaction() as con:
            cur = con.execute(
                "UPDATE jobs SET heartbeat_at = ?, progress = COALESCE(?, progress)"
                " WHERE job_id = ? AND worker_id = ? AND state = 'running'",
                (time.time(), json.dumps(progress.to_dict()) if progress else None, job_id, worker_id),
            )
            return cur.rowcount == 1

    def cancel_requested(self, job_id: str) -> bool:
        """Whether a cancel was requested for a running job."""
        with self._connect() as con:
            row = con.execute("SELECT cancel_requested FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return bool(row and row["cancel_requested"])

    def finish(self, job_id: str, worker_id: str | None, state: str, *, exit_code: int | None = None,
               reason: str | None = None, progress: Progress | None = None) -> bool:
        """Move a running job to a final state; False if it was no longer running (e.g. reaped)."""
        with self._transaction() as con:
            sql = ("UPDATE jobs SET state = ?, finished_at = ?, exit_code = ?, reason = ?,"
                   " progress = COALESCE(?, progress) WHERE job_id = ? AND state = 'running'")
            params: list[Any] = [state, time.time(), exit_code, reason,
                                 json.dumps(progress.to_dict()) if progress else None, job_id]
            if worker_id is not None:
                sql += " AND worker_id = ?"
                params.append(worker_id)
            return con.execute(sql, params).rowcount == 1

    def request_cancel(self, job_id: str) -> JobInfo:
        """Cancel a queued job at once, or flag a running one for its worker to stop."""
        with self._transaction() as con:
            row = con.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"no job {job_id!r} in {self.path}")
            if row["state"] == "queued":
                con.execute("UPDATE jobs SET state = 'cancelled', finished_at = ?, reason = 'cancelled while queued'"
                            " WHERE job_id = ?", (time.time(), job_id))
            elif row["state"] == "running":
                con.execute("UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?", (job_id,))
        return self.get(job_id)

    def update_state(self, job_id: str, **fields: Any) -> None:
        """Set columns of a job (used to mirror the state of externally run jobs, e.g. Ray)."""
        allowed = {"state", "started_at", "finished_at", "exit_code", "reason", "progress", "heartbeat_at"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot update job columns {sorted(bad)}; allowed: {sorted(allowed)}")
        if "progress" in fields and isinstance(fields["progress"], Progress):
            fields["progress"] = json.dumps(fields["progress"].to_dict())
        with self._transaction() as con:
            con.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in fields)} WHERE job_id = ?",
                        (*fields.values(), job_id))

    def reap_stale(self, now: float | None = None) -> list[JobInfo]:
        """Mark running local jobs as failed ("worker lost") whose heartbeat is older than their
        timeout, or whose worker ran on this host and its process is gone (known at once, without
        waiting for the timeout); returns the reaped jobs (as they were before)."""
        now = time.time() if now is None else now
        with self._transaction() as con:
            running = con.execute("SELECT * FROM jobs WHERE backend = 'local' AND state = 'running'").fetchall()
            workers = _workers_of(con, running)
            rows = []
            for row in running:
                reason = _lost_reason(row, workers, now)
                if reason is None:
                    continue
                rows.append(row)
                con.execute(
                    "UPDATE jobs SET state = 'failed', finished_at = ?, reason = ? WHERE job_id = ? AND state = 'running'",
                    (now, reason, row["job_id"]),
                )
        reaped = [_row_to_info(r) for r in rows]
        for job in reaped:
            log.warning("job %s: worker %s lost, marked failed", job.job_id, job.worker_id)
        return reaped

    def job_process(self, job_id: str) -> tuple[str | None, int | None]:
        """(host, pid) recorded for a job's process."""
        with self._connect() as con:
            row = con.execute("SELECT host, pid FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return (row["host"], row["pid"]) if row else (None, None)

    # ---- workers --------------------------------------------------------------------------
    def register_worker(self, worker_id: str, pid: int, gpus: list[str] | None, heartbeat_timeout: float) -> None:
        """Record a starting worker."""
        now = time.time()
        with self._transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO workers (worker_id, host, pid, gpus, started_at, heartbeat_at, heartbeat_timeout)"
                " VALUES (?,?,?,?,?,?,?)",
                (worker_id, socket.gethostname(), pid, ",".join(gpus) if gpus else None, now, now, heartbeat_timeout),
            )

    def worker_heartbeat(self, worker_id: str) -> None:
        """Refresh a worker's heartbeat."""
        with self._transaction() as con:
            con.execute("UPDATE workers SET heartbeat_at = ? WHERE worker_id = ?", (time.time(), worker_id))

    def stop_worker(self, worker_id: str) -> None:
        """Record that a worker exited cleanly."""
        with self._transaction() as con:
            con.execute("UPDATE workers SET stopped_at = ? WHERE worker_id = ?", (time.time(), worker_id))

    def live_workers(self, now: float | None = None) -> list[dict[str, Any]]:
        """Workers that have not stopped and whose heartbeat is within their timeout; a worker on
        this host whose process is gone (``kill(pid, 0)``, zombies count as gone) is dead at once."""
        now = time.time() if now is None else now
        with self._connect() as con:
            rows = con.execute(
                "SELECT * FROM workers WHERE stopped_at IS NULL AND heartbeat_at + heartbeat_timeout >= ?", (now,),
            ).fetchall()
        host = socket.gethostname()
        return [dict(r) for r in rows if not (r["host"] == host and process_gone(r["pid"]))]


def process_gone(pid: int | None) -> bool:
    """True when no process ``pid`` runs on this host (absent, or a zombie waiting to be reaped)."""
    if not pid or not pid_alive(pid):
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False  # no /proc (not Linux): kill(pid, 0) said it exists
    return state in ("Z", "X")


def _workers_of(con: sqlite3.Connection, jobs: list[sqlite3.Row]) -> dict[str, sqlite3.Row]:
    """The worker rows (by id) of ``jobs``."""
    ids = sorted({r["worker_id"] for r in jobs if r["worker_id"]})
    if not ids:
        return {}
    found = con.execute(f"SELECT * FROM workers WHERE worker_id IN ({','.join('?' * len(ids))})", ids).fetchall()
    return {r["worker_id"]: r for r in found}


def _lost_reason(job: sqlite3.Row, workers: dict[str, sqlite3.Row], now: float) -> str | None:
    """Why a running local job's worker counts as lost, or None while it is alive: its heartbeat
    is older than the job's timeout, or its worker ran on this host and that process is gone."""
    silent = now - (job["heartbeat_at"] or job["started_at"] or now)
    timeout = job["heartbeat_timeout"] if job["heartbeat_timeout"] is not None else 60.0
    if silent > timeout:
        return (f"worker lost: no heartbeat from worker {job['worker_id']} on {job['host']} for "
                f"{silent:.1f} s (timeout {timeout:.1f} s)")
    worker = workers.get(job["worker_id"])
    if worker is not None and worker["host"] == socket.gethostname() and process_gone(worker["pid"]):
        return (f"worker lost: worker {job['worker_id']} (pid {worker['pid']}) on {worker['host']} is no longer "
                f"running")
    return None


def _connect_read_only(path: Path) -> sqlite3.Connection:
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


def _row_to_info(row: sqlite3.Row) -> JobInfo:
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
