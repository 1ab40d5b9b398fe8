"""The processes of the local jobs: which GPUs a worker may use (``--gpus``), the child's death with its
parent (``PR_SET_PDEATHSIG``), process groups killed by signal, the reaping of a lost worker's jobs, and the
tail of a job's log (:mod:`pruning.jobs.worker` runs its jobs with them)."""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
from pathlib import Path

from pruning.jobs.base import BackendUnavailableError, JobInfo
from pruning.jobs.queue import JobQueue

log = logging.getLogger(__name__)

_LOG_TAIL_BYTES = 64 * 1024


def visible_gpu_count() -> int:
    """Number of CUDA GPUs this process may use (0 on a machine without NVIDIA driver).

    Avoids importing torch on machines that have neither ``nvidia-smi`` nor ``/dev/nvidia0``.
    """
    if shutil.which("nvidia-smi") is None and not Path("/dev/nvidia0").exists():
        return 0
    import torch

    return int(torch.cuda.device_count())


def resolve_gpus(requested: list[str] | None) -> list[str] | None:
    """Validate ``--gpus`` against the visible GPUs; None means run on the CPU.

    ``requested=None`` takes every visible GPU (CPU when there is none). Returns the
    ``CUDA_VISIBLE_DEVICES`` value of each slot (mapped through the worker's own
    ``CUDA_VISIBLE_DEVICES`` when that is set). Raises BackendUnavailableError for a GPU that
    does not exist.
    """
    count = visible_gpu_count()
    if requested is None:
        indices = list(range(count))
        if not indices:
            return None
    else:
        indices = []
        for raw in requested:
            raw = raw.strip()
            if not raw.isdigit():
                raise BackendUnavailableError(f"--gpus: {raw!r} is not a GPU index; give indices like 0,1")
            idx = int(raw)
            if idx >= count:
                have = f"GPUs 0..{count - 1}" if count else "no GPU (CPU only)"
                raise BackendUnavailableError(
                    f"--gpus: GPU {idx} requested, but this machine has {count} visible GPU(s): {have}")
            indices.append(idx)
        if len(set(indices)) != len(indices):
            raise BackendUnavailableError(f"--gpus: duplicate GPU index in {requested}")
    parent = os.environ.get("CUDA_VISIBLE_DEVICES")
    parent_ids = [p.strip() for p in parent.split(",")] if parent else None
    return [parent_ids[i] if parent_ids else str(i) for i in indices]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux/glibc: the heartbeat reaper still marks the job failed


def kill_process_group(pid: int, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to the process group led by ``pid``; False when it no longer exists."""
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        return False


def reap_and_kill(queue: JobQueue) -> list[JobInfo]:
    """Reap stale running jobs (failed: worker lost) and terminate their processes if they run
    on this host (a process only counts when it is still the job's process group leader)."""
    reaped = queue.reap_stale()
    host = socket.gethostname()
    for job in reaped:
        job_host, pid = queue.job_process(job.job_id)
        if job_host == host and pid and _is_job_process(pid, job.job_id):
            log.warning("job %s: killing leftover process group %d of the lost worker", job.job_id, pid)
            kill_process_group(pid, signal.SIGKILL)
    return reaped


def _is_job_process(pid: int, job_id: str) -> bool:
    """True when ``pid`` is alive and carries ``PRUNING_LAB_JOB_ID=job_id`` (guards pid reuse; Linux)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"PRUNING_LAB_JOB_ID={job_id}".encode() in environ.split(b"\0")


def log_tail(path: Path, n_bytes: int = _LOG_TAIL_BYTES) -> str:
    """The last ``n_bytes`` of a job's log as text ('' when it does not exist)."""
    if not path.is_file():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - n_bytes))
        return fh.read().decode("utf-8", errors="replace")
