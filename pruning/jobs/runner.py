"""A warm runner: one long-lived process per worker slot (a GPU, or the CPU) that runs the slot's
jobs one after another in the same process, keeping what they share (:mod:`pruning.run.warm`: the
loaded model and its dense weights, calibration batches, tokenized texts; the dense statistics of
:mod:`pruning.calibration.dense_stats`).

``python -m pruning.jobs.runner`` reads one request per line on stdin, a JSON object
``{"job_id", "config", "events", "log"}``, and runs it exactly as ``python -m pruning run --config
CONFIG --events EVENTS`` would (the same CLI code, in process), with stdout and stderr sent to the
job's log for the job's duration. When the job ends it writes one line on its reply channel (its
stdout at start), ``{"job_id", "rc"}``, with the exit status the cold command would have had.

Isolation: after a job that did not succeed the runner exits (status 0), so nothing a failed job
left behind reaches the next one; the worker starts a fresh runner for the next job. A runner that
dies (killed, out of memory) fails only the job it was running. EOF on stdin ends the runner.

Memory: after every job, success or failure, the runner gives the job's cached GPU memory back
(:func:`pruning.run.warm.release_job_memory`, logged in the job's log): an idle runner holds its
model, not the allocator's cache of the job's largest tensors.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from pruning.run.warm import WarmState

log = logging.getLogger(__name__)

#: the environment variable that names the job a runner is running (also set by the cold path)
JOB_ENV = "PRUNING_LAB_JOB_ID"


@contextmanager
def job_output(log_path: str) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C libraries and child
    processes too) to the end of the job's log for the block, and put them back after."""
    saved = os.dup(1), os.dup(2)
    try:
        with open(log_path, "ab", buffering=0) as job_log:
            _redirect(job_log.fileno(), job_log.fileno())
            try:
                yield
            finally:
                _redirect(*saved)
    finally:
        for fd in saved:
            os.close(fd)


def _redirect(stdout_fd: int, stderr_fd: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)


def run_request(request: dict[str, str]) -> int:
    """Run one job request in this process, its output appended to the job's log; returns the exit
    status ``python -m pruning run`` would have returned (2 for an input error, 1 for a crash)."""
    from pruning.cli import main

    os.environ[JOB_ENV] = request["job_id"]
    argv = ["run", "--config", request["config"], "--events", request["events"]]
    try:
        return int(main(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the cold process would print the traceback and exit 1
        traceback.print_exc()
        return 1
    finally:
        os.environ.pop(JOB_ENV, None)


def _restore(state: WarmState) -> None:
    """Restore the held model after a job; a failure to do so drops it (the next job loads afresh)."""
    try:
        state.restore()
    except Exception:  # noqa: BLE001 - the job itself succeeded; only the reuse is lost
        log.exception("warm runner: restoring the dense weights failed; the model is dropped")
        state.release()


def _release_memory(job_id: str) -> None:
    """Give the job's GPU memory back (:func:`pruning.run.warm.release_job_memory`); a failure to do
    so is logged and never changes the job's exit status."""
    from pruning.run.warm import release_job_memory

    try:
        release_job_memory(f"after job {job_id}")
    except Exception:  # noqa: BLE001 - the job's status stands; the next job's placement measures anew
        log.exception("warm runner: releasing the memory of job %s failed", job_id)


def serve_one(state: WarmState, request: dict[str, str]) -> int:
    """Run one job request in this warm process (a runner, or a Ray actor of
    :mod:`pruning.jobs.ray_actors`): its output appended to the job's log, the held model restored
    after a success, the job's cached GPU memory given back after a success or a failure (an idle
    runner holds only its model), and a last log line saying what the process reused; returns the
    exit status."""
    with job_output(request["log"]):
        started, rc = time.time(), 1
        try:
            rc = run_request(request)
            if rc == 0:
                _restore(state)  # the next job starts from the exact dense weights
        finally:
            _release_memory(request["job_id"])
            print(f"# warm runner pid {os.getpid()}: job {request['job_id']} exit {rc} in "
                  f"{time.time() - started:.2f} s (runner so far: {state.counters.loads} load(s), "
                  f"{state.counters.reuses} reuse(s))", file=sys.stderr)
    return rc


def serve(requests: IO[str], reply: IO[str]) -> int:
    """Serve requests until EOF or a job that did not succeed; returns the number of jobs served."""
    from pruning.run import warm

    state = warm.enable()
    served = 0
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        rc = serve_one(state, request)
        served += 1
        reply.write(json.dumps({"job_id": request["job_id"], "rc": rc}) + "\n")
        reply.flush()
        if rc != 0:
            log.info("runner %d: job %s ended with status %d; exiting so the next job gets a fresh runner",
                     os.getpid(), request["job_id"], rc)
            break
    return served


def main() -> int:
    """Entry point: requests on stdin, replies on the stdout the process started with."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints between jobs go to the runner's log, never into the reply channel
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    served = serve(sys.stdin, reply)
    log.info("runner %d stops after %d job(s)", os.getpid(), served)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
