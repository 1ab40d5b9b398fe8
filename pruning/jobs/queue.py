"""The job queue: every job submitted from this machine (``local`` jobs that workers claim, and
``ray`` jobs mirrored for listing) and the heartbeats of local workers, in one SQLite database
(:mod:`pruning.jobs.database`). State changes that must not race (claim, cancel, reap, finish) run
inside ``BEGIN IMMEDIATE`` transactions, so two workers never claim the same job.
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pruning.config.run_config import RunConfig
from pruning.jobs.base import DEFAULT_ENTRYPOINT, JobInfo, JobNotFoundError, Progress
from pruning.jobs.database import QueueDatabase, row_to_info
from pruning.jobs.liveness import lost_reason, process_gone, workers_of

log = logging.getLogger(__name__)


def needs_gpu(config: RunConfig) -> bool:
    """True when the run's config asks for a CUDA device (only GPU workers may claim it)."""
    return config.model.device.startswith("cuda")


class JobQueue(QueueDatabase):
    """SQLite-backed job table with atomic claims and heartbeats.

    ``JobQueue()`` opens the queue for writing (creating the file and its schema on demand);
    :meth:`open_read_only` opens an existing queue for readers, which never write to it.
    """

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
                return row_to_info(row), False
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
        return row_to_info(row)

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
            return [row_to_info(r) for r in con.execute(sql, params).fetchall()]

    def _list_read_only(self, states: tuple[str, ...] | None, backend: str | None,
                        limit: int | None) -> list[JobInfo]:
        now = time.time()
        with self._connect() as con:
            rows = con.execute("SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC").fetchall()
            workers = workers_of(con, rows)
        jobs = []
        for row in rows:
            job = row_to_info(row)
            lost = lost_reason(row, workers, now) if job.backend == "local" and job.state == "running" else None
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
        return row_to_info(row) if row is not None else None

    def claim(self, worker_id: str, *, gpu: str | None, heartbeat_timeout: float,
              entrypoint: tuple[str, ...] | None = None) -> JobInfo | None:
        """Atomically take the oldest queued local job this worker can run (GPU jobs need ``gpu``;
        with ``entrypoint``, only jobs that run that command).

        Returns the job (now ``running``, owned by ``worker_id``) or None when nothing is queued.
        """
        now = time.time()
        sql = "SELECT job_id FROM jobs WHERE backend = 'local' AND state = 'queued' AND (needs_gpu = 0 OR ?)"
        params: list[Any] = [int(gpu is not None)]
        if entrypoint is not None:
            sql += " AND entrypoint = ?"
            params.append(json.dumps(list(entrypoint)))  # stored as _insert writes it
        with self._transaction() as con:
            row = con.execute(sql + " ORDER BY created_at, rowid LIMIT 1", params).fetchone()
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
            workers = workers_of(con, running)
            rows = []
            for row in running:
                reason = lost_reason(row, workers, now)
                if reason is None:
                    continue
                rows.append(row)
                con.execute(
                    "UPDATE jobs SET state = 'failed', finished_at = ?, reason = ? WHERE job_id = ? AND state = 'running'",
                    (now, reason, row["job_id"]),
                )
        reaped = [row_to_info(r) for r in rows]
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
