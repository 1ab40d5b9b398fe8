"""When a local worker counts as lost: its heartbeat is older than the job's timeout, or it ran on
this host and its process is gone (known at once, without waiting for the timeout)."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

from pruning.procs import pid_alive


def process_gone(pid: int | None) -> bool:
    """True when no process ``pid`` runs on this host (absent, or a zombie waiting to be reaped)."""
    if not pid or not pid_alive(pid):
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False  # no /proc (not Linux): kill(pid, 0) said it exists
    return state in ("Z", "X")


def workers_of(con: sqlite3.Connection, jobs: list[sqlite3.Row]) -> dict[str, sqlite3.Row]:
    """The worker rows (by id) of ``jobs``."""
    ids = sorted({r["worker_id"] for r in jobs if r["worker_id"]})
    if not ids:
        return {}
    found = con.execute(f"SELECT * FROM workers WHERE worker_id IN ({','.join('?' * len(ids))})", ids).fetchall()
    return {r["worker_id"]: r for r in found}


def lost_reason(job: sqlite3.Row, workers: dict[str, sqlite3.Row], now: float) -> str | None:
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
