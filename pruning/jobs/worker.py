"""Local worker: claims queued jobs and runs each as a subprocess, one per GPU (or one on the CPU).

``python -m pruning worker [--gpus 0,1] [--once] [--poll S] [--heartbeat-timeout S]``.

Each job runs its entrypoint (by default ``python -m pruning run --config JOB.yaml --events
EVENTS.jsonl``) in its own process group with ``CUDA_VISIBLE_DEVICES`` set to its GPU (empty on the
CPU), stdout+stderr appended to the job's ``log.txt``. Every poll the worker refreshes the
heartbeats of its jobs and of itself, copies the latest progress event into the queue, stops jobs
whose cancel was requested (SIGTERM to the process group, SIGKILL after a grace period) and reaps
jobs of lost workers. Children get ``PR_SET_PDEATHSIG`` (Linux) so a killed worker leaves no orphan.

That loop, :class:`QueueWorker`, is shared with the worker whose slots are Ray actors
(:mod:`pruning.jobs.ray_actors`); :class:`Worker` runs the jobs as processes of this machine.
"""

from __future__ import annotations

import logging
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from pruning.jobs.base import (
    DEFAULT_ENTRYPOINT,
    JobError,
    JobInfo,
    failure_reason,
    fill_entrypoint,
    read_progress,
)
from pruning.jobs.processes import _die_with_parent, kill_process_group, log_tail, reap_and_kill, resolve_gpus

__all__ = ["DEFAULT_HEARTBEAT_TIMEOUT_S", "DEFAULT_POLL_S", "RUNNER_ENV", "QueueWorker", "Worker", "check_timing",
           "kill_process_group", "log_tail", "reap_and_kill", "resolve_gpus", "warm_by_default"]
from pruning.jobs.queue import JobQueue
from pruning.jobs.runner_proc import RUNNER_ENV, RunnerProcess, killed_reason, warm_by_default
from pruning.paths import REPO_ROOT

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 1.0
DEFAULT_HEARTBEAT_TIMEOUT_S = 60.0
CANCEL_GRACE_S = 5.0


@dataclass
class _Running:
    job: JobInfo
    proc: subprocess.Popen
    gpu: str | None
    log_path: Path
    events_path: Path
    terminate_at: float | None = None
    runner: RunnerProcess | None = None  # set when a warm runner runs the job


def check_timing(poll_s: float, heartbeat_timeout_s: float) -> None:
    """Validate a worker's ``--poll`` and ``--heartbeat-timeout`` (raises JobError naming the value)."""
    if not (math.isfinite(poll_s) and poll_s > 0):
        raise JobError(f"--poll: {poll_s} is invalid; accepted: a finite number of seconds > 0")
    if not math.isfinite(heartbeat_timeout_s) or heartbeat_timeout_s < 2 * poll_s:
        raise JobError(f"--heartbeat-timeout: {heartbeat_timeout_s} s is invalid; accepted: a finite number of "
                       f"seconds, at least twice --poll ({poll_s} s)")


class QueueWorker:
    """The loop every worker runs, whatever runs its jobs (processes here, Ray actors in
    :mod:`pruning.jobs.ray_actors`): register, heartbeat, reap jobs of lost workers, record the jobs
    that ended, claim one job for each free slot, wait. SIGTERM/SIGINT (or :meth:`stop`) end it.

    A subclass starts a claimed job (:meth:`_start`), watches and ends its jobs
    (:meth:`_check_running`, recording each with :meth:`_record_end`), waits (:meth:`_wait`) and stops
    everything at the end (:meth:`_shutdown`). ``self.running`` maps a busy slot to its job's handle.
    """

    #: only jobs with this entrypoint are claimed (None: any job)
    claims_entrypoint: tuple[str, ...] | None = None

    def __init__(self, queue: JobQueue, slots: list[str | None], *, poll_s: float, heartbeat_timeout_s: float,
                 worker_id: str, warm: bool, gpus: list[str] | None) -> None:
        self.queue = queue
        self.slots = slots
        self.gpus = gpus
        self.poll_s = poll_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.worker_id = worker_id
        self.warm = warm
        self.running: dict[str | None, Any] = {}
        self._stop_signal: int | None = None

    # ---- main loop --------------------------------------------------------------------------
    def run(self, once: bool = False, max_seconds: float | None = None) -> int:
        """Work until stopped (SIGTERM/SIGINT, or :meth:`stop`); with ``once``, until the queue has
        nothing left for this worker. Returns the number of jobs this worker finished."""
        self.queue.register_worker(self.worker_id, os.getpid(), self.gpus, self.heartbeat_timeout_s)
        main_thread = threading.current_thread() is threading.main_thread()  # signals reach only that one
        signals = (signal.SIGTERM, signal.SIGINT) if main_thread else ()
        previous = {s: signal.signal(s, self._on_signal) for s in signals}
        log.info("worker %s started: slots %s, poll %.2f s, heartbeat timeout %.1f s, %s", self.worker_id,
                 [s if s is not None else "cpu" for s in self.slots], self.poll_s, self.heartbeat_timeout_s,
                 self.describe())
        finished = 0
        started = time.time()
        try:
            while self._stop_signal is None:
                self.queue.worker_heartbeat(self.worker_id)
                reap_and_kill(self.queue)
                finished += self._check_running()
                claimed = self._fill_slots()
                if once and not claimed and not self.running:
                    break
                if max_seconds is not None and time.time() - started > max_seconds:
                    break
                self._wait(self.poll_s)
        finally:
            self._shutdown()
            for s, handler in previous.items():
                signal.signal(s, handler)
        log.info("worker %s stopped after %d job(s)", self.worker_id, finished)
        return finished

    def stop(self) -> None:
        """Ask the loop to end after its current poll (what SIGTERM does; usable from another thread)."""
        self._stop_signal = signal.SIGTERM

    def describe(self) -> str:
        """How this worker runs its jobs, for its start-up log line."""
        return f"{'warm' if self.warm else 'cold'} runners"

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_signal = signum

    def _claim_gpu(self, slot: str | None) -> str | None:
        """The GPU a job claimed for ``slot`` is recorded with (None: the slot takes CPU jobs only)."""
        return slot

    def _fill_slots(self) -> int:
        claimed = 0
        for slot in self.slots:
            if slot in self.running:
                continue
            job = self.queue.claim(self.worker_id, gpu=self._claim_gpu(slot),
                                   heartbeat_timeout=self.heartbeat_timeout_s, entrypoint=self.claims_entrypoint)
            if job is None:
                break
            claimed += 1
            self._start(job, slot)
        return claimed

    def _record_end(self, job: JobInfo, rc: int | None, died: str | None, log_path: Path, events_path: Path) -> None:
        """Record a job that ended with status ``rc`` (``died``: why its process died under it): cancelled
        when a cancel was requested, succeeded on status 0, else failed with a one-line reason."""
        progress = read_progress(events_path)
        if self.queue.cancel_requested(job.job_id):
            state, reason = "cancelled", "cancelled while running"
        elif rc == 0 and died is None:
            state, reason = "succeeded", None
        else:
            state, reason = "failed", died or failure_reason(log_tail(log_path), rc)
        if self.queue.finish(job.job_id, self.worker_id, state, exit_code=rc, reason=reason, progress=progress):
            log.info("job %s %s (exit code %s)%s", job.job_id, state, rc, f": {reason}" if reason else "")
        else:
            log.warning("job %s exited (code %s) but was no longer running under this worker", job.job_id, rc)

    def _stopped_reason(self) -> str:
        why = f"signal {self._stop_signal}" if self._stop_signal else "shutdown"
        return f"worker stopped ({why}) while the job was running"

    # ---- what a subclass provides -------------------------------------------------------------
    def _start(self, job: JobInfo, slot: str | None) -> None:
        raise NotImplementedError

    def _check_running(self) -> int:
        """Record the jobs that ended (returns how many), heartbeat and watch the others."""
        raise NotImplementedError

    def _wait(self, seconds: float) -> None:
        time.sleep(seconds)

    def _shutdown(self) -> None:
        """Stop running jobs (marked failed: worker stopped) and record the worker's exit."""
        raise NotImplementedError

    def _job_files(self, job: JobInfo) -> tuple[Path, Path, Path, Path]:
        """(job directory, config.yaml, events.jsonl, log.txt) of ``job``: the directory made, the config
        written once (a retried job keeps its file)."""
        job_dir = Path(job.job_dir) if job.job_dir else self.queue.path.parent / job.job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        config_path = job_dir / "config.yaml"
        if not config_path.is_file():
            config_path.write_text(job.run_config.to_yaml())
        return job_dir, config_path, job_dir / "events.jsonl", job_dir / "log.txt"


class Worker(QueueWorker):
    """Runs queued local jobs, one per slot (GPU, or a single CPU slot)."""

    def __init__(self, queue: JobQueue | None = None, gpus: list[str] | None = None, *,
                 poll_s: float = DEFAULT_POLL_S, heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
                 worker_id: str | None = None, warm: bool | None = None) -> None:
        check_timing(poll_s, heartbeat_timeout_s)
        resolved = resolve_gpus(gpus)  # before the queue: a bad --gpus touches nothing
        super().__init__(queue or JobQueue(), list(resolved) if resolved else [None], poll_s=poll_s,
                         heartbeat_timeout_s=heartbeat_timeout_s,
                         worker_id=worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
                         warm=warm_by_default() if warm is None else warm, gpus=resolved)
        self.running: dict[str | None, _Running] = {}
        self.runners: dict[str | None, RunnerProcess] = {}  # one warm runner per slot, started on demand

    def _wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking as soon as a warm runner replies (its job finished), so
        the next job starts without waiting for the poll."""
        fds = [item.runner.fileno() for item in self.running.values() if item.runner is not None]
        if not fds:
            time.sleep(seconds)
            return
        select.select(fds, [], [], seconds)

    def _env(self, slot: str | None) -> dict[str, str]:
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = slot if slot is not None else ""
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start(self, job: JobInfo, slot: str | None) -> None:
        job_dir, config_path, events_path, log_path = self._job_files(job)
        where = f"GPU {slot}" if slot else "CPU"
        warm = self.warm and tuple(job.entrypoint) == DEFAULT_ENTRYPOINT
        with log_path.open("ab") as log_file:
            log_file.write(f"# job {job.job_id} attempt {job.attempt} on {self.worker_id} "
                           f"({where}, {'warm runner' if warm else 'own process'}) at {time.ctime()}\n".encode())
        if warm and self._start_warm(job, slot, config_path, events_path, log_path):
            return
        argv = fill_entrypoint(job.entrypoint, config=str(config_path), events=str(events_path), job_dir=str(job_dir))
        env = self._env(slot)
        env["PRUNING_LAB_JOB_ID"] = job.job_id
        log.info("job %s (%s) starting on %s: %s", job.job_id, job.run_id, where, " ".join(argv))
        with log_path.open("ab") as log_file:
            try:
                proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=str(REPO_ROOT), env=env, start_new_session=True,
                                        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            except OSError as exc:
                log.error("job %s could not start: %s", job.job_id, exc)
                self.queue.finish(job.job_id, self.worker_id, "failed", reason=f"could not start {argv[0]!r}: {exc}")
                return
        self.queue.set_pid(job.job_id, proc.pid)
        self.running[slot] = _Running(job, proc, slot, log_path, events_path)

    def _runner(self, slot: str | None) -> RunnerProcess:
        """The slot's warm runner, started when it has none or the last one exited."""
        runner = self.runners.get(slot)
        if runner is None or not runner.alive():
            name = f"{self.worker_id}-{slot if slot is not None else 'cpu'}.log"
            runner = RunnerProcess(slot, self.queue.path.parent / "runners" / name, self._env(slot),
                                   preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            self.runners[slot] = runner
        return runner

    def _start_warm(self, job: JobInfo, slot: str | None, config: Path, events: Path, log_path: Path) -> bool:
        """Hand ``job`` to the slot's warm runner; False when no runner could take it (then it runs cold)."""
        try:
            runner = self._runner(slot)
            runner.submit(job.job_id, config, events, log_path)
        except (OSError, RuntimeError) as exc:
            log.warning("job %s: the warm runner could not take it (%s); running it in its own process", job.job_id, exc)
            self.runners.pop(slot, None)
            return False
        log.info("job %s (%s) handed to warm runner pid %d on %s", job.job_id, job.run_id, runner.pid,
                 f"GPU {slot}" if slot else "CPU")
        self.queue.set_pid(job.job_id, runner.pid)
        self.running[slot] = _Running(job, runner.proc, slot, log_path, events_path=events, runner=runner)
        return True

    def _exit_of(self, item: _Running) -> tuple[int | None, str | None]:
        """``(exit status, reason if it died)`` of a finished job, or ``(None, None)`` while it runs."""
        if item.runner is None:
            return item.proc.poll(), None
        answer = item.runner.reply()
        if answer is not None and answer.get("job_id") == item.job.job_id:
            rc = int(answer["rc"])
            if rc != 0:  # the runner exits after a job that did not succeed; the next job gets a new one
                item.runner.stop()
                self.runners.pop(item.gpu, None)
            return rc, None
        rc = item.runner.proc.poll()
        if rc is None:
            return None, None
        self.runners.pop(item.gpu, None)  # it died under the job: the next job starts a fresh runner
        return rc, killed_reason(rc, item.runner.pid, log_tail(item.log_path))

    def _check_running(self) -> int:
        finished = 0
        for slot, item in list(self.running.items()):
            rc, died = self._exit_of(item)
            if rc is None:
                self._watch(item)
                continue
            del self.running[slot]
            finished += 1
            self._record_end(item.job, rc, died, item.log_path, item.events_path)
        return finished

    def _watch(self, item: _Running) -> None:
        """Heartbeat a live job, and stop it when its cancel was requested or it was reaped."""
        owned = self.queue.heartbeat(item.job.job_id, self.worker_id, read_progress(item.events_path))
        wants_stop = not owned or self.queue.cancel_requested(item.job.job_id)
        if not wants_stop:
            return
        now = time.time()
        if item.terminate_at is None:
            log.info("job %s: stopping process group %d", item.job.job_id, item.proc.pid)
            kill_process_group(item.proc.pid, signal.SIGTERM)
            item.terminate_at = now
        elif now - item.terminate_at > CANCEL_GRACE_S:
            kill_process_group(item.proc.pid, signal.SIGKILL)

    def _shutdown(self) -> None:
        for slot, item in list(self.running.items()):
            kill_process_group(item.proc.pid, signal.SIGTERM)
            try:
                item.proc.wait(timeout=CANCEL_GRACE_S)
            except subprocess.TimeoutExpired:
                kill_process_group(item.proc.pid, signal.SIGKILL)
                item.proc.wait()
            self.queue.finish(item.job.job_id, self.worker_id, "failed", exit_code=item.proc.returncode,
                              reason=self._stopped_reason())
            del self.running[slot]
        for runner in self.runners.values():
            runner.stop()
        self.runners.clear()
        self.queue.stop_worker(self.worker_id)
