"""The worker's side of a warm runner (:mod:`pruning.jobs.runner`): start it, hand it a job, read its
reply without blocking, stop it.

One :class:`RunnerProcess` per worker slot. It runs ``python -m pruning.jobs.runner`` in its own
process group with the slot's ``CUDA_VISIBLE_DEVICES``, dies with the worker (``PR_SET_PDEATHSIG``
on Linux), and writes its own log (between jobs) to ``jobs/runners/<worker>-<slot>.log``; during a
job its output goes to the job's ``log.txt``, as a cold job's does.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from pruning.jobs.base import JobError
from pruning.paths import REPO_ROOT

log = logging.getLogger(__name__)


class RunnerProcess:
    """A started runner; ``job_id`` is the job it is running (None when idle)."""

    def __init__(self, slot: str | None, log_path: Path, env: dict[str, str], preexec_fn=None) -> None:
        self.slot = slot
        self.log_path = log_path
        self.job_id: str | None = None
        self.jobs_served = 0
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pruning.jobs.runner"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log_file, cwd=str(REPO_ROOT), env=env, start_new_session=True, preexec_fn=preexec_fn)
        self._buffer = b""
        log.info("warm runner pid %d started for %s (log %s)", self.proc.pid,
                 f"GPU {slot}" if slot is not None else "the CPU", log_path)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def submit(self, job_id: str, config: Path, events: Path, log_path: Path) -> None:
        """Hand the runner one job (it must be idle); raises OSError when the runner is gone."""
        if self.job_id is not None:
            raise RuntimeError(f"runner {self.pid} is still running job {self.job_id}")
        request = {"job_id": job_id, "config": str(config), "events": str(events), "log": str(log_path)}
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        self.job_id = job_id

    def reply(self, timeout: float = 0.0) -> dict | None:
        """The runner's reply to its current job, if one has arrived within ``timeout`` seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            wait = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # EOF: the runner exited
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer = json.loads(line)
        if answer.get("job_id") == self.job_id:
            self.job_id = None
            self.jobs_served += 1
        return answer

    def fileno(self) -> int:
        """The reply channel's descriptor (for ``select`` over several runners)."""
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def stop(self, grace_s: float = 5.0) -> int | None:
        """Close its stdin (an idle runner exits), then SIGTERM and SIGKILL its process group if it
        does not; returns its exit status."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout=grace_s if self.job_id is None else 0.1)
        except subprocess.TimeoutExpired:
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                return self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.wait()


def killed_reason(rc: int, pid: int, tail: str) -> str:
    """The failure reason of a job whose runner died under it (``rc`` < 0: killed by a signal)."""
    what = f"killed by {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.Signals._value2member_map_ else f"exited with status {rc}"
    last = next((ln.strip() for ln in reversed(tail.splitlines()) if ln.strip()), "")
    return f"exit code {rc}: the warm runner (pid {pid}) {what} while running this job" + (f"; last log line: {last[:500]}" if last else "")


#: ``PRUNING_LAB_RUNNER=cold`` (or ``worker --cold``) runs every job in a fresh process
RUNNER_ENV = "PRUNING_LAB_RUNNER"


def warm_by_default() -> bool:
    """Warm runners unless ``PRUNING_LAB_RUNNER`` says ``cold``."""
    value = os.environ.get(RUNNER_ENV, "warm").strip().lower()
    if value not in ("warm", "cold"):
        raise JobError(f"{RUNNER_ENV}={value!r} is invalid; accepted: warm, cold")
    return value == "warm"
