"""The ``ray`` backend: Ray Jobs on a cluster (``ray start --head --num-gpus N`` + workers).

A job is submitted with ``JobSubmissionClient.submit_job`` using the same entrypoint as a local
job (``python -m pruning run --config JOB.yaml --events EVENTS.jsonl``) and
``entrypoint_num_gpus`` GPUs; Ray sets ``CUDA_VISIBLE_DEVICES``. The job's config and events live
in the shared data directory the cluster mounts (``PRUNING_LAB_DATA``), so results, progress and
configs are visible on every machine. Each Ray job is mirrored in the local queue database (the
Ray submission id is the job id) so the CLI and the app list all jobs in one place. Set-up:
docs/jobs.md.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

from pruning.config.run_config import RunConfig
from pruning.jobs.base import (
    DEFAULT_ENTRYPOINT,
    BackendUnavailableError,
    JobBackend,
    JobError,
    JobInfo,
    Progress,
    Submission,
    failure_reason,
    fill_entrypoint,
    read_progress,
)
from pruning.jobs.local import dedupe, new_job_id
from pruning.jobs.queue import JobQueue, needs_gpu
from pruning.paths import REPO_ROOT

log = logging.getLogger(__name__)

DEFAULT_RAY_ADDRESS = "http://127.0.0.1:8265"

_RAY_STATES = {"PENDING": "queued", "RUNNING": "running", "SUCCEEDED": "succeeded", "FAILED": "failed",
               "STOPPED": "cancelled"}


def default_ray_address() -> str:
    """``PRUNING_LAB_RAY_ADDRESS``, else ``RAY_API_SERVER_ADDRESS``, else an ``http://`` ``RAY_ADDRESS``,
    else ``http://127.0.0.1:8265`` (the head's dashboard / Jobs API)."""
    for var in ("PRUNING_LAB_RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        if os.environ.get(var):
            return os.environ[var]
    ray_address = os.environ.get("RAY_ADDRESS", "")
    if ray_address.startswith(("http://", "https://")):
        return ray_address
    return DEFAULT_RAY_ADDRESS


class RayBackend(JobBackend):
    """Ray Jobs backend.

    ``python`` is the interpreter on the cluster nodes (default ``PRUNING_LAB_RAY_PYTHON`` or
    ``python``: start Ray from the activated venv), ``code_dir`` the repository checkout on the
    nodes (default ``PRUNING_LAB_RAY_CODE`` or this checkout's path), ``remote_data_dir`` the shared
    data directory as the nodes mount it (default ``PRUNING_LAB_RAY_DATA`` or this ``data_dir()``).
    ``num_gpus`` per job defaults to 1 when the config's device is CUDA, else 0.
    """

    name = "ray"

    def __init__(self, address: str | None = None, queue: JobQueue | None = None, *, python: str | None = None,
                 code_dir: str | None = None, remote_data_dir: str | None = None, num_gpus: float | None = None,
                 entrypoint: list[str] | tuple[str, ...] | None = None, check_store: bool = True) -> None:
        self.address = address or default_ray_address()
        self.queue = queue or JobQueue()
        self.python = python or os.environ.get("PRUNING_LAB_RAY_PYTHON", "python")
        self.code_dir = code_dir or os.environ.get("PRUNING_LAB_RAY_CODE", str(REPO_ROOT))
        self.local_data_dir = self.queue.path.parent.parent
        self.remote_data_dir = remote_data_dir or os.environ.get("PRUNING_LAB_RAY_DATA", str(self.local_data_dir))
        self.num_gpus = num_gpus
        self.entrypoint = tuple(entrypoint) if entrypoint else DEFAULT_ENTRYPOINT
        self.check_store = check_store
        self._client: Any = None

    # ---- connection -------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The ``JobSubmissionClient`` (connected on first use)."""
        if self._client is None:
            try:
                from ray.job_submission import JobSubmissionClient
            except ImportError as exc:
                raise BackendUnavailableError(f"the ray backend needs `ray[default]` installed: {exc}") from None
            try:
                self._client = JobSubmissionClient(self.address)
            except (ConnectionError, OSError, RuntimeError) as exc:
                raise BackendUnavailableError(
                    f"no Ray cluster reachable at {self.address} ({exc}); start one with `ray start --head "
                    f"--num-gpus N` (docs/jobs.md) or pass --address / set PRUNING_LAB_RAY_ADDRESS"
                ) from None
        return self._client

    # ---- interface --------------------------------------------------------------------------
    def submit(self, config: RunConfig, *, force: bool = False) -> Submission:
        """Submit ``config`` as a Ray job (deduplicated by run id unless ``force``).

        Without ``force`` the job's mirror row is reserved first, in the same queue transaction as
        the dedupe lookup (:meth:`JobQueue.enqueue_once`), and only the caller that reserved it
        submits to Ray; a refused submission removes the reservation again."""
        from pruning.run.validation import check_names

        check_names(config)
        if not force:
            found = dedupe(self.queue, config, check_store=self.check_store)
            if found is not None:
                return found
            return self._submit_once(config)
        return Submission(run_id=config.run_id, job=self._submit(config, self.entrypoint))

    def _submit_once(self, config: RunConfig) -> Submission:
        client = self.client  # connect before reserving: an unreachable cluster reserves nothing
        job_id = new_job_id()
        local_dir = self._write_job_dir(job_id, config)
        job, created = self.queue.enqueue_once(job_id, config, backend="ray", entrypoint=self.entrypoint,
                                               job_dir=local_dir, address=self.address)
        if not created:
            shutil.rmtree(local_dir, ignore_errors=True)
            return Submission(run_id=config.run_id, job=job, existing="queue")
        try:
            self._submit_to_ray(client, job_id, config, self.entrypoint)
        except BaseException:
            self.queue.delete(job_id)
            shutil.rmtree(local_dir, ignore_errors=True)
            raise
        return Submission(run_id=config.run_id, job=self.queue.get(job_id))

    def _write_job_dir(self, job_id: str, config: RunConfig) -> Path:
        local_dir = self.local_data_dir / "jobs" / job_id
        local_dir.mkdir(parents=True, exist_ok=False)
        (local_dir / "config.yaml").write_text(config.to_yaml())
        return local_dir

    def _submit(self, config: RunConfig, entrypoint: tuple[str, ...], retry_of: str | None = None) -> JobInfo:
        client = self.client
        job_id = new_job_id()
        local_dir = self._write_job_dir(job_id, config)
        self._submit_to_ray(client, job_id, config, entrypoint)
        return self.queue.enqueue(job_id, config, backend="ray", entrypoint=entrypoint, job_dir=local_dir,
                                  retry_of=retry_of, address=self.address)

    def _submit_to_ray(self, client: Any, job_id: str, config: RunConfig, entrypoint: tuple[str, ...]) -> None:
        """Hand one job to the cluster (its config file is already in the shared data directory)."""
        remote_dir = Path(self.remote_data_dir) / "jobs" / job_id
        argv = fill_entrypoint(entrypoint, python=self.python, config=str(remote_dir / "config.yaml"),
                               events=str(remote_dir / "events.jsonl"), job_dir=str(remote_dir))
        num_gpus = self.num_gpus if self.num_gpus is not None else (1.0 if needs_gpu(config) else 0.0)
        env_vars = {
            "PRUNING_LAB_DATA": str(self.remote_data_dir),
            "PYTHONPATH": str(self.code_dir),
            "PRUNING_LAB_JOB_ID": job_id,
            "PYTHONUNBUFFERED": "1",
        }
        try:
            client.submit_job(entrypoint=shlex.join(argv), submission_id=job_id,
                              runtime_env={"env_vars": env_vars}, entrypoint_num_gpus=num_gpus,
                              metadata={"pruning_lab": "1", "run_id": config.run_id})
        except (ConnectionError, OSError, RuntimeError) as exc:
            raise BackendUnavailableError(f"Ray at {self.address} refused job {job_id}: {exc}") from None
        log.info("submitted Ray job %s for run %s to %s (%s GPU)", job_id, config.run_id, self.address, num_gpus)

    def status(self, job_id: str) -> JobInfo:
        """Refresh the mirrored record from the cluster and return it."""
        job = self.queue.get(job_id)
        if job.backend != "ray":
            raise JobError(f"job {job_id} belongs to the {job.backend} backend, not ray")
        if job.done:
            return job
        try:
            info = self.client.get_job_info(job_id)
        except (ConnectionError, OSError, RuntimeError) as exc:
            raise BackendUnavailableError(f"cannot read job {job_id} from Ray at {self.address}: {exc}") from None
        status = getattr(info.status, "value", str(info.status))
        state = _RAY_STATES.get(status, "queued")
        fields: dict[str, Any] = {"state": state, "progress": self.progress(job_id)}
        if info.start_time:
            fields["started_at"] = info.start_time / 1000.0
        if info.end_time:
            fields["finished_at"] = info.end_time / 1000.0
        if state in ("succeeded", "failed", "cancelled"):
            fields["exit_code"] = getattr(info, "driver_exit_code", None)
        if state == "failed":
            fields["reason"] = failure_reason(self.logs(job_id, tail_chars=64_000), fields["exit_code"])
        elif state == "cancelled":
            fields["reason"] = "cancelled (Ray job stopped)"
        if state == "running":
            fields["heartbeat_at"] = time.time()
        self.queue.update_state(job_id, **fields)
        return self.queue.get(job_id)

    def progress(self, job_id: str) -> Progress:
        """Latest event from the events file in the shared data directory."""
        return read_progress(self.local_data_dir / "jobs" / job_id / "events.jsonl")

    def logs(self, job_id: str, tail_chars: int | None = None) -> str:
        """The Ray job's driver log (stdout+stderr of the entrypoint)."""
        try:
            text = self.client.get_job_logs(job_id)
        except (ConnectionError, OSError, RuntimeError) as exc:
            raise BackendUnavailableError(f"cannot read logs of job {job_id} from Ray at {self.address}: {exc}") from None
        return text[-tail_chars:] if tail_chars else text

    def cancel(self, job_id: str) -> JobInfo:
        """Stop the Ray job (queued or running)."""
        job = self.status(job_id)
        if job.done:
            raise JobError(f"job {job_id} is already {job.state}; nothing to cancel")
        try:
            self.client.stop_job(job_id)
        except (ConnectionError, OSError, RuntimeError) as exc:
            raise BackendUnavailableError(f"cannot stop job {job_id} on Ray at {self.address}: {exc}") from None
        return self.status(job_id)

    def list(self, states: tuple[str, ...] | None = None, limit: int | None = None) -> list[JobInfo]:
        """Ray jobs submitted from here, newest first (unfinished ones refreshed from the cluster)."""
        jobs = []
        for job in self.queue.list(backend="ray", limit=limit):
            if not job.done and job.address == self.address:
                job = self.status(job.job_id)
            if not states or job.state in states:
                jobs.append(job)
        return jobs

    def retry(self, job_id: str) -> JobInfo:
        """Submit a failed or cancelled job's config again as a new Ray job."""
        old = self.queue.get(job_id)
        if old.state not in ("failed", "cancelled"):
            raise JobError(f"job {job_id} is {old.state}; only failed or cancelled jobs can be retried")
        return self._submit(old.run_config, old.entrypoint, retry_of=job_id)

