"""Opening the job queue while others open or write it: it waits, it never fails "locked".

CI once failed with ``sqlite3.OperationalError: database is locked`` when ten threads constructed
``JobQueue()`` on the same fresh file: SQLite refuses the journal-mode switch at once, without its
busy handler, while another connection is opening the file.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from pruning.jobs.database import QueueDatabase, _enable_wal

THREADS = 16
ROUNDS = 6


def _open_together(path: Path) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def open_one() -> None:
        barrier.wait()
        try:
            QueueDatabase(path)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_threads_opening_one_new_queue_together_all_succeed_in_wal_mode(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        path = tmp_path / f"q{round_}" / "queue.sqlite"
        errors = _open_together(path)
        assert errors == [], f"round {round_}: {errors[:3]}"
        con = sqlite3.connect(path)
        try:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            assert tables == {"jobs", "workers"}
        finally:
            con.close()


def test_a_writer_holding_a_new_file_delays_the_queue_instead_of_failing_it(tmp_path: Path) -> None:
    """The CI failure, made deterministic: while another connection holds a write lock on a file
    still in rollback-journal mode, SQLite refuses the switch to WAL at once (no busy handler).
    The old ``QueueDatabase`` raised "database is locked" in 0.0 s here; it must wait instead."""
    path = tmp_path / "queue.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: holder.execute("ROLLBACK"))
    release.start()
    try:
        queue = QueueDatabase(path)
    finally:
        release.join()
        holder.close()
    con = sqlite3.connect(queue.path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"t", "jobs", "workers"}
    finally:
        con.close()


def test_enable_wal_gives_up_after_its_wait_with_the_sqlite_error(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")          # nobody else may change the journal mode now
    other = sqlite3.connect(path, timeout=0.0, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _enable_wal(other, wait_s=0.3)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    _enable_wal(other, wait_s=0.3)              # free again: the switch goes through
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


def test_enable_wal_does_not_hide_other_errors(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "queue.sqlite")
    con.close()
    with pytest.raises(sqlite3.ProgrammingError):
        _enable_wal(con, wait_s=5.0)
