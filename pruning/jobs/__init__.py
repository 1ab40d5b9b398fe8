"""Jobs: queue runs and execute them on local workers or a Ray cluster.

Backends implement :class:`JobBackend` (submit, status, progress, logs, cancel, list, retry):
``local`` (SQLite queue + ``python -m pruning worker``, whose jobs run on this machine or, with
``worker --backend ray``, on warm Ray actors: :mod:`pruning.jobs.ray_actors`) and ``ray`` (Ray Jobs). Every job, of
either backend, is recorded in the local queue database, so the module-level helpers below
(used by the CLI and the app) find a job by id and dispatch to its backend.
"""

from __future__ import annotations

import logging
from typing import Any

from pruning.config.run_config import RunConfig
from pruning.jobs.base import (
    BACKENDS,
    DEFAULT_ENTRYPOINT,
    JOB_STATES,
    TERMINAL_STATES,
    BackendUnavailableError,
    JobBackend,
    JobError,
    JobInfo,
    JobNotFoundError,
    Progress,
    Submission,
    read_progress,
)
from pruning.jobs.local import LocalBackend, ensure_local_worker
from pruning.jobs.queue import JobQueue

log = logging.getLogger(__name__)


def get_backend(name: str = "local", *, queue: JobQueue | None = None, **options: Any) -> JobBackend:
    """A backend by name: ``local`` (options: entrypoint, check_store) or ``ray`` (options:
    address, python, code_dir, remote_data_dir, num_gpus, entrypoint, check_store)."""
    if name == "local":
        return LocalBackend(queue, **options)
    if name == "ray":
        from pruning.jobs.ray_backend import RayBackend

        return RayBackend(queue=queue, **options)
    raise JobError(f"backend: {name!r} is unknown; accepted: {', '.join(BACKENDS)}")


def backend_of(job_id: str, queue: JobQueue | None = None) -> JobBackend:
    """The backend that owns ``job_id`` (a Ray job uses the address it was submitted to). Where
    no queue exists yet, JobNotFoundError is raised without creating one."""
    if queue is None:
        existing = JobQueue.open_read_only()
        if existing is None:
            raise JobNotFoundError(f"no job {job_id!r}: no job has been submitted here yet")
        queue = JobQueue(existing.path)
    job = queue.get(job_id)
    if job.backend == "ray":
        return get_backend("ray", queue=queue, address=job.address)
    return get_backend(job.backend, queue=queue)


def submit(config: RunConfig, *, backend: str = "local", force: bool = False, **options: Any) -> Submission:
    """Queue one run on ``backend`` (deduplicated by run id unless ``force``)."""
    return get_backend(backend, **options).submit(config, force=force)


def list_jobs(states: tuple[str, ...] | None = None, limit: int | None = None,
              queue: JobQueue | None = None, refresh: bool = True) -> list[JobInfo]:
    """All jobs (local and Ray) newest first. With ``refresh``, stale local jobs are reaped and
    unfinished Ray jobs are refreshed from their cluster (an unreachable cluster leaves the last
    known state and logs a warning). Without ``refresh`` nothing is written: the queue is opened
    read-only (no queue yet: no jobs), and a job of a lost worker is shown failed, unrecorded."""
    if not refresh:
        queue = queue or JobQueue.open_read_only()
        return [] if queue is None else queue.list(states=states, limit=limit)
    queue = queue or JobQueue()
    if refresh:
        from pruning.jobs.worker import reap_and_kill

        reap_and_kill(queue)
    jobs = []
    for job in queue.list(limit=limit):
        if refresh and job.backend == "ray" and not job.done:
            try:
                job = backend_of(job.job_id, queue).status(job.job_id)
            except BackendUnavailableError as exc:
                log.warning("job %s: state not refreshed: %s", job.job_id, exc)
        if not states or job.state in states:
            jobs.append(job)
    return jobs


def job_status(job_id: str, queue: JobQueue | None = None) -> JobInfo:
    """The job's current record."""
    return backend_of(job_id, queue).status(job_id)


def job_progress(job_id: str, queue: JobQueue | None = None) -> Progress:
    """The job's latest progress event (stage, fraction, message)."""
    return backend_of(job_id, queue).progress(job_id)


def job_logs(job_id: str, tail_chars: int | None = None, queue: JobQueue | None = None) -> str:
    """The job's stdout+stderr so far."""
    return backend_of(job_id, queue).logs(job_id, tail_chars)


def cancel_job(job_id: str, queue: JobQueue | None = None) -> JobInfo:
    """Cancel a queued or running job."""
    return backend_of(job_id, queue).cancel(job_id)


def retry_job(job_id: str, queue: JobQueue | None = None) -> JobInfo:
    """Queue a failed or cancelled job again (new job id, ``retry_of`` = old id)."""
    return backend_of(job_id, queue).retry(job_id)


__all__ = [
    "BACKENDS", "DEFAULT_ENTRYPOINT", "JOB_STATES", "TERMINAL_STATES", "BackendUnavailableError", "JobBackend",
    "JobError", "JobInfo", "JobNotFoundError", "JobQueue", "LocalBackend", "Progress", "Submission",
    "backend_of", "cancel_job", "ensure_local_worker", "get_backend", "job_logs", "job_progress", "job_status",
    "list_jobs", "read_progress", "retry_job", "submit",
]
