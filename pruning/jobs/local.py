"""The ``local`` backend: the SQLite queue plus ``python -m pruning worker`` processes.

Each job gets a directory ``data_dir()/jobs/<job_id>/`` holding ``config.yaml`` (written before the
job is queued), ``events.jsonl`` (progress, appended by the run) and ``log.txt`` (stdout+stderr).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from pruning.config.run_config import RunConfig
from pruning.jobs.base import (
    DEFAULT_ENTRYPOINT,
    JobBackend,
    JobError,
    JobInfo,
    Progress,
    Submission,
    read_progress,
)
from pruning.jobs.queue import JobQueue
from pruning.jobs.worker import DEFAULT_HEARTBEAT_TIMEOUT_S, DEFAULT_POLL_S, reap_and_kill
from pruning.paths import REPO_ROOT
from pruning.procs import pid_alive

log = logging.getLogger(__name__)

_SPAWN_GRACE_S = 30.0


def new_job_id() -> str:
    """A fresh job id: ``j`` + UTC time (sortable) + 6 random hex digits."""
    return "j" + time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def store_has_run(run_id: str) -> bool:
    """Whether the results store holds a *succeeded* run ``run_id`` (False when ``pruning.store``
    is not importable here)."""
    try:
        import pruning.store as store
    except ImportError as exc:
        log.debug("results store not importable (%s); dedupe uses the queue only", exc)
        return False
    run_status = getattr(store, "run_status", None)
    if callable(run_status):
        return run_status(run_id) == "succeeded"
    log.debug("pruning.store has no run_status; dedupe uses the queue only")
    return False


def dedupe(queue: JobQueue, config: RunConfig, *, check_store: bool = True) -> Submission | None:
    """The existing answer for ``config``'s run id (succeeded/queued/running job, or a stored run),
    or None when it must be queued."""
    existing = queue.find_run(config.run_id, ("succeeded",)) or queue.find_run(config.run_id, ("running", "queued"))
    if existing is not None:
        return Submission(run_id=config.run_id, job=existing, existing="queue")
    if check_store and store_has_run(config.run_id):
        return Submission(run_id=config.run_id, job=None, existing="store")
    return None


class LocalBackend(JobBackend):
    """Jobs queued in SQLite and run by local workers (see :mod:`pruning.jobs.worker`).

    ``entrypoint`` overrides the command stored with new jobs (placeholders ``{python}``,
    ``{config}``, ``{events}``, ``{job_dir}``); it exists for tests of the queue mechanics.
    """

    name = "local"

    def __init__(self, queue: JobQueue | None = None, *, entrypoint: list[str] | tuple[str, ...] | None = None,
                 check_store: bool = True) -> None:
        self.queue = queue or JobQueue()
        self.entrypoint = tuple(entrypoint) if entrypoint else DEFAULT_ENTRYPOINT
        self.check_store = check_store

    def submit(self, config: RunConfig, *, force: bool = False) -> Submission:
        """Queue ``config`` (deduplicated by run id unless ``force``). Names in the config
        (datasets, zero-shot tasks, allocation metric) are checked first
        (:func:`pruning.run.validation.check_names`); the dedupe lookup and the insert are one
        transaction, so concurrent submits of one config make one job."""
        from pruning.run.validation import check_names

        check_names(config)
        if not force:
            found = dedupe(self.queue, config, check_store=self.check_store)
            if found is None:
                job, created = self._enqueue_once(config)
                if created:
                    return Submission(run_id=config.run_id, job=job)
                found = Submission(run_id=config.run_id, job=job, existing="queue")
            log.info("run %s already %s (%s); not queued again", config.run_id,
                     found.job.state if found.job else "in the results store",
                     found.job.job_id if found.job else "store")
            return found
        job = self._enqueue(config, self.entrypoint)
        return Submission(run_id=config.run_id, job=job)

    def _write_job_dir(self, job_id: str, config: RunConfig) -> Path:
        job_dir = self.queue.path.parent / job_id
        job_dir.mkdir(parents=True, exist_ok=False)
        (job_dir / "config.yaml").write_text(config.to_yaml())
        return job_dir

    def _enqueue_once(self, config: RunConfig) -> tuple[JobInfo, bool]:
        """Queue ``config`` unless its run id is already succeeded/running/queued (atomically)."""
        job_id = new_job_id()
        job_dir = self._write_job_dir(job_id, config)
        job, created = self.queue.enqueue_once(job_id, config, backend="local", entrypoint=self.entrypoint,
                                               job_dir=job_dir)
        if created:
            log.info("queued job %s for run %s", job_id, config.run_id)
        else:
            shutil.rmtree(job_dir, ignore_errors=True)  # lost the race: the existing job answers
        return job, created

    def _enqueue(self, config: RunConfig, entrypoint: tuple[str, ...], retry_of: str | None = None) -> JobInfo:
        job_id = new_job_id()
        job_dir = self._write_job_dir(job_id, config)
        job = self.queue.enqueue(job_id, config, backend="local", entrypoint=entrypoint, job_dir=job_dir,
                                 retry_of=retry_of)
        log.info("queued job %s for run %s", job_id, config.run_id)
        return job

    def status(self, job_id: str) -> JobInfo:
        """The job's record (stale running jobs are reaped first)."""
        reap_and_kill(self.queue)
        return self.queue.get(job_id)

    def progress(self, job_id: str) -> Progress:
        """Latest event of the job's events file (the queue's copy when the file is gone)."""
        job = self.queue.get(job_id)
        if job.job_dir:
            live = read_progress(Path(job.job_dir) / "events.jsonl")
            if live.n_events:
                return live
        return job.progress

    def logs(self, job_id: str, tail_chars: int | None = None) -> str:
        """The job's ``log.txt`` ('' before it started)."""
        job = self.queue.get(job_id)
        path = Path(job.job_dir or "") / "log.txt"
        if not job.job_dir or not path.is_file():
            return ""
        text = path.read_text(encoding="utf-8", errors="replace")
        return text[-tail_chars:] if tail_chars else text

    def cancel(self, job_id: str) -> JobInfo:
        """Cancel at once when queued; a running job is stopped by its worker within one poll."""
        job = self.queue.get(job_id)
        if job.done:
            raise JobError(f"job {job_id} is already {job.state}; nothing to cancel")
        return self.queue.request_cancel(job_id)

    def list(self, states: tuple[str, ...] | None = None, limit: int | None = None) -> list[JobInfo]:
        """Local jobs newest first (stale running jobs are reaped first)."""
        reap_and_kill(self.queue)
        return self.queue.list(states=states, backend="local", limit=limit)

    def retry(self, job_id: str) -> JobInfo:
        """A new queued job with the failed/cancelled job's config and entrypoint."""
        old = self.queue.get(job_id)
        if old.state not in ("failed", "cancelled"):
            raise JobError(f"job {job_id} is {old.state}; only failed or cancelled jobs can be retried")
        return self._enqueue(old.run_config, old.entrypoint, retry_of=job_id)

    def wait(self, job_id: str, timeout_s: float, poll_s: float = 0.2) -> JobInfo:
        """Block until the job is done or ``timeout_s`` passes (local polling is cheap)."""
        return super().wait(job_id, timeout_s, poll_s)


def ensure_local_worker(queue: JobQueue | None = None, *, gpus: list[str] | None = None,
                        poll_s: float = DEFAULT_POLL_S,
                        heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S) -> int | None:
    """Start a detached ``python -m pruning worker`` unless a live worker heartbeat exists.

    Returns the new worker's pid, or None when a worker is alive (or was spawned moments ago by
    another caller; a lock file serialises concurrent callers). The worker's output goes to
    ``data_dir()/jobs/worker-<time>.log``; it keeps running after the caller exits.
    """
    queue = queue or JobQueue()
    jobs_dir = queue.path.parent
    with (jobs_dir / "ensure_worker.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if queue.live_workers():
            return None
        marker = jobs_dir / "worker.spawned"
        if marker.is_file():
            try:
                info = json.loads(marker.read_text())
                pid, when = int(info["pid"]), float(info["t"])
            except (ValueError, KeyError, json.JSONDecodeError):
                pid, when = 0, 0.0
            if time.time() - when < _SPAWN_GRACE_S and pid and _alive(pid):
                return None
        argv = [sys.executable, "-m", "pruning", "worker", "--poll", str(poll_s),
                "--heartbeat-timeout", str(heartbeat_timeout_s)]
        if gpus:
            argv += ["--gpus", ",".join(gpus)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PRUNING_LAB_DATA"] = str(jobs_dir.parent)
        log_path = jobs_dir / f"worker-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}.log"
        with log_path.open("ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=str(REPO_ROOT), env=env, start_new_session=True)
        marker.write_text(json.dumps({"pid": proc.pid, "t": time.time()}))
        log.info("started local worker pid %d (log %s)", proc.pid, log_path)
        return proc.pid


def _alive(pid: int) -> bool:
    if not pid_alive(pid):
        return False
    # a zombie child of this process still answers kill(0); reap it if it is ours
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True
