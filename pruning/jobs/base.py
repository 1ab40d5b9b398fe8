"""Job model shared by every backend: states, job records, progress events, the backend interface.

Lifecycle of a job (DESIGN.md "Data flow of one run": RunConfig -> queue -> worker)::

    queued -> running -> succeeded | failed | cancelled
    queued -> cancelled                     (cancelled before a worker claimed it)

A failed or cancelled job keeps its log and failure reason; ``retry`` creates a new job with the
same config (``retry_of`` points back). Progress comes from the run's events file
(``python -m pruning run --events EVENTS.jsonl``): one JSON object per line,
``{"t": unix_time, "stage": "spectra"|"calibration"|"prune"|"evaluation"|"done",
"fraction": 0..1, "message": "block 3 of 30"}``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pruning.config.run_config import RunConfig
from pruning.errors import PruningLabError

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
BACKENDS: tuple[str, ...] = ("local", "ray")

#: The command a job runs; placeholders are filled in by the worker (local) or at submit (ray).
DEFAULT_ENTRYPOINT: tuple[str, ...] = (
    "{python}", "-m", "pruning", "run", "--config", "{config}", "--events", "{events}",
)


class JobError(PruningLabError, RuntimeError):
    """A job request that cannot be honoured (unknown id, retry of a running job, ...)."""


class JobNotFoundError(JobError, KeyError):
    """No job with that id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "job not found"


class BackendUnavailableError(JobError):
    """A backend that cannot be reached or used here (no Ray cluster, a GPU that does not exist)."""


@dataclass(frozen=True)
class Progress:
    """Latest progress event of a job: stage, overall fraction 0..1 and a message."""

    stage: str | None = None
    fraction: float = 0.0
    message: str = ""
    t: float | None = None
    n_events: int = 0

    @property
    def percent(self) -> float:
        """Overall progress in percent (0..100)."""
        return 100.0 * self.fraction

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-compatible)."""
        return asdict(self)


@dataclass(frozen=True)
class JobInfo:
    """One job as a backend reports it. Times are unix seconds (None when not reached)."""

    job_id: str
    backend: str
    state: str
    run_id: str
    config: dict[str, Any]
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    worker_id: str | None = None
    gpu: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    attempt: int = 0
    retry_of: str | None = None
    cancel_requested: bool = False
    job_dir: str | None = None
    entrypoint: tuple[str, ...] = DEFAULT_ENTRYPOINT
    progress: Progress = field(default_factory=Progress)
    label: str | None = None
    address: str | None = None

    @property
    def done(self) -> bool:
        """True once the job reached succeeded, failed or cancelled."""
        return self.state in TERMINAL_STATES

    @property
    def run_config(self) -> RunConfig:
        """The validated RunConfig of this job."""
        return RunConfig.from_dict(self.config)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-compatible) for the CLI and the app."""
        data = asdict(self)
        data["entrypoint"] = list(self.entrypoint)
        return data


@dataclass(frozen=True)
class Submission:
    """Answer of :meth:`JobBackend.submit`.

    ``existing`` says why nothing new was queued: ``"queue"`` (a job with the same run id
    succeeded, or is queued/running), ``"store"`` (the results store already holds the run; then
    ``job`` is None), or None when ``job`` is a newly queued job.
    """

    run_id: str
    job: JobInfo | None
    existing: Literal["queue", "store"] | None = None

    @property
    def deduped(self) -> bool:
        """True when an existing run/job was returned instead of a new job."""
        return self.existing is not None


class JobBackend(ABC):
    """Interface of a job backend (``local`` queue + workers, or ``ray`` Ray Jobs)."""

    name: str = "abstract"

    @abstractmethod
    def submit(self, config: RunConfig, *, force: bool = False) -> Submission:
        """Queue one run. Without ``force``, a run id that already succeeded (queue or results
        store) or is queued/running is returned instead of queueing it again."""

    @abstractmethod
    def status(self, job_id: str) -> JobInfo:
        """Current record of a job (raises JobNotFoundError)."""

    @abstractmethod
    def progress(self, job_id: str) -> Progress:
        """Latest progress event of a job (empty Progress before the first event)."""

    @abstractmethod
    def logs(self, job_id: str, tail_chars: int | None = None) -> str:
        """The job's combined stdout+stderr so far (the last ``tail_chars`` characters if given)."""

    @abstractmethod
    def cancel(self, job_id: str) -> JobInfo:
        """Cancel a queued job (it never runs) or stop a running one (process group terminated)."""

    @abstractmethod
    def list(self, states: tuple[str, ...] | None = None, limit: int | None = None) -> list[JobInfo]:
        """Jobs of this backend, newest first, optionally only some states."""

    @abstractmethod
    def retry(self, job_id: str) -> JobInfo:
        """Queue a failed or cancelled job again as a new job (``retry_of`` = the old id)."""


    def wait(self, job_id: str, timeout_s: float, poll_s: float = 0.5) -> JobInfo:
        """Block until the job is done or ``timeout_s`` passes; returns the last record."""
        deadline = time.time() + timeout_s
        job = self.status(job_id)
        while not job.done and time.time() < deadline:
            time.sleep(poll_s)
            job = self.status(job_id)
        return job


def read_progress(events_path: str | Path | None) -> Progress:
    """Latest event of a run's events file (JSON lines); a partial last line is ignored.

    Unknown or missing files give an empty :class:`Progress`.
    """
    if events_path is None:
        return Progress()
    path = Path(events_path)
    if not path.is_file():
        return Progress()
    last: dict[str, Any] | None = None
    count = 0
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                log.debug("skipping unparsable event line in %s: %r", path, line[:200])
                continue
            if isinstance(event, dict):
                last = event
                count += 1
    if last is None:
        return Progress()
    try:
        fraction = min(1.0, max(0.0, float(last.get("fraction") or 0.0)))
    except (TypeError, ValueError):
        fraction = 0.0
    t = last.get("t")
    return Progress(
        stage=str(last["stage"]) if last.get("stage") is not None else None,
        fraction=fraction,
        message=str(last.get("message") or ""),
        t=float(t) if isinstance(t, (int, float)) else None,
        n_events=count,
    )


def count_events(events_path: str | Path, stage: str) -> int:
    """How many events of ``stage`` the events file holds (e.g. ``"done"``: runs completed)."""
    path = Path(events_path)
    if not path.is_file():
        return 0
    n = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("stage") == stage:
            n += 1
    return n


def failure_reason(log_text: str, exit_code: int | None) -> str:
    """A one-line failure reason from a job's log: the CLI's ``error: ...`` line, else the last
    line (a traceback's exception line); prefixed by the exit code."""
    lines = [ln.rstrip() for ln in log_text.splitlines() if ln.strip()]
    detail = ""
    for ln in reversed(lines):
        if ln.startswith("error:"):
            detail = ln.removeprefix("error:").strip()
            break
    if not detail and lines:
        detail = lines[-1].strip()  # the exception line of a traceback, or the last message
    prefix = f"exit code {exit_code}" if exit_code is not None else "failed"
    return f"{prefix}: {detail[:2000]}" if detail else prefix


def fill_entrypoint(entrypoint: tuple[str, ...] | list[str], *, config: str, events: str, job_dir: str,
                    python: str | None = None) -> list[str]:
    """Fill the ``{python}``, ``{config}``, ``{events}``, ``{job_dir}`` placeholders of a command."""
    values = {"python": python or sys.executable, "config": config, "events": events, "job_dir": job_dir}
    out = []
    for part in entrypoint:
        for key, value in values.items():
            part = part.replace("{" + key + "}", value)
        out.append(part)
    return out
