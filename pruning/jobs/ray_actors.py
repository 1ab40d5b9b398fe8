"""Warm runners on a Ray cluster: one Ray actor per GPU runs the queue's jobs one after another, in process.

    python -m pruning worker --backend ray [--address auto|HOST:6379|ray://HOST:10001|local] [--actors N] [--cold]

:class:`RayWorker` is a worker of the local queue (:class:`pruning.jobs.worker.QueueWorker`: it claims,
heartbeats, cancels and records jobs exactly as the local worker does) whose slots are Ray actors
instead of processes of this machine. Each slot holds one :class:`WarmRunnerActor`
(``@ray.remote(num_gpus=1)``, or ``num_gpus=0`` when its job needs no GPU) that keeps a
:class:`pruning.run.warm.WarmState` (the loaded model and its dense weights, calibration ids, tokenized
texts) and runs every job through :func:`pruning.jobs.runner.serve_one`, the local warm runner's code,
so a job of the model it holds reuses it and a job of another model replaces it. Ray places each
actor on a node with a free GPU and sets its ``CUDA_VISIBLE_DEVICES``.

Isolation, as for local runners: a job that does not succeed ends its actor (``ray.kill``) and the
slot's next job gets a fresh one; an actor that dies under a job (``ActorDiedError``: killed, out of
memory, its node lost) fails that job alone, with a reason naming the actor; cancel kills the job's
actor. The actors belong to this process (a Ray driver): when it stops, they stop.

Files: each job's config, events and log live in the shared data directory, which every node mounts
(``PRUNING_LAB_DATA``; ``PRUNING_LAB_RAY_DATA`` where the nodes mount it at another path), as for the
Ray Jobs path of :mod:`pruning.jobs.ray_backend`. Set-up: docs/jobs.md, "Ray actors".
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError

from pruning.jobs.base import DEFAULT_ENTRYPOINT, BackendUnavailableError, JobError, JobInfo, read_progress
from pruning.jobs.queue import JobQueue, needs_gpu
from pruning.jobs.worker import (
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    DEFAULT_POLL_S,
    QueueWorker,
    log_tail,
    check_timing,
    warm_by_default,
)
from pruning.paths import REPO_ROOT

log = logging.getLogger(__name__)

#: CPUs Ray reserves for each actor (also its ``OMP_NUM_THREADS``)
DEFAULT_ACTOR_CPUS = 1.0
#: the Ray namespace of the actors
NAMESPACE = "pruning_lab"


@ray.remote(num_gpus=1, num_cpus=DEFAULT_ACTOR_CPUS, max_restarts=0)
class WarmRunnerActor:
    """A warm runner as a Ray actor: one :class:`pruning.run.warm.WarmState` kept across the jobs it runs."""

    def __init__(self) -> None:
        from pruning.run import warm

        self.state = warm.enable()

    def where(self) -> dict[str, Any]:
        """The actor's id, process id, node address and GPU ids (for logs and failure reasons)."""
        return {"actor_id": ray.get_runtime_context().get_actor_id(), "pid": os.getpid(),
                "node": ray.util.get_node_ip_address(), "gpus": [str(g) for g in ray.get_gpu_ids()]}

    def run(self, request: dict[str, str]) -> int:
        """Run one job request (``job_id``, ``config``, ``events``, ``log`` paths as this node sees them)
        as ``python -m pruning run`` would; returns its exit status."""
        from pruning.jobs.runner import serve_one

        where = self.where()
        with open(request["log"], "a", encoding="utf-8") as job_log:
            job_log.write(f"# Ray actor {where['actor_id']}: pid {where['pid']} on {where['node']}, "
                          f"GPUs {where['gpus'] or 'none'}\n")
        return serve_one(self.state, request)

    def counters(self) -> dict[str, int]:
        """What the actor reused so far (models loaded, reuses, restores, text and calibration hits)."""
        return asdict(self.state.counters)


def cluster_address(address: str | None) -> str:
    """The Ray cluster a :class:`RayWorker` joins as a driver: ``address``, else ``RAY_ADDRESS`` (unless
    it is an ``http://`` Jobs API address), else ``auto`` (the cluster ``ray start`` runs on this
    machine); ``local`` starts a private Ray instance here. Raises JobError for a Jobs API address."""
    value = (address or "").strip()
    if not value:
        env = os.environ.get("RAY_ADDRESS", "").strip()
        value = env if env and not env.startswith(("http://", "https://")) else "auto"
    if value.startswith(("http://", "https://")):
        raise JobError(f"--address: {value!r} is a Ray Jobs (dashboard) address, used by `submit --backend ray`; "
                       "`worker --backend ray` joins the cluster as a driver: accepted: HOST:6379 (the head's port), "
                       "ray://HOST:10001, auto (the cluster started on this machine) or local (a private Ray here)")
    return value


def connect(address: str) -> bool:
    """Join the Ray cluster at ``address`` (``local``: start one here) unless this process already has a
    Ray session; True when this call made the connection (the worker then closes it when it stops)."""
    if ray.is_initialized():
        log.info("using this process's Ray session (address %s)", ray.get_runtime_context().gcs_address)
        return False
    try:
        if address == "local":
            ray.init(namespace=NAMESPACE, include_dashboard=False)
        else:
            ray.init(address=address, namespace=NAMESPACE)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BackendUnavailableError(
            f"no Ray cluster reachable at {address!r} ({exc}); start one with `ray start --head --num-gpus N` "
            "(docs/jobs.md), pass --address HOST:6379, or --address local for a private Ray on this machine"
        ) from None
    return True


def actor_died_reason(where: dict[str, Any] | None, exc: BaseException, tail: str) -> str:
    """The failure reason of a job whose actor died under it: which actor (id, pid, node), Ray's own
    cause, and the job log's last line."""
    said = dict(ln.strip().split(": ", 1) for ln in str(exc).splitlines() if ln.strip().partition(": ")[0]
                in ("actor_id", "pid", "ip"))  # Ray's message names the actor too (used when it died before saying)
    actor_id = (where or {}).get("actor_id") or said.get("actor_id", "?")
    pid = (where or {}).get("pid") or said.get("pid", "?")
    node = (where or {}).get("node") or said.get("ip", "?")
    who = f"the Ray actor {actor_id} (pid {pid} on {node})"
    cause = next((ln.strip() for ln in str(exc).splitlines() if ln.strip().startswith("The actor is dead because")),
                 type(exc).__name__)
    last = next((ln.strip() for ln in reversed(tail.splitlines()) if ln.strip()), "")
    return (f"{who} died while running this job: {cause[:300]}"
            + (f"; last log line: {last[:500]}" if last else ""))


@dataclass
class _Actor:
    handle: Any  # ray.actor.ActorHandle of a WarmRunnerActor
    with_gpu: bool
    where_ref: Any  # ObjectRef of its where(), resolved when ready
    where: dict[str, Any] | None = None


@dataclass
class _ActorJob:
    job: JobInfo
    actor: _Actor
    result: Any  # ObjectRef of run(): the exit status
    log_path: Path
    events_path: Path
    killed: bool = False


class RayWorker(QueueWorker):
    """Runs queued jobs on Ray actors, one actor per slot; slots: ``actors`` or one per cluster GPU
    (one on a cluster without GPUs). ``code_dir`` and ``remote_data_dir`` are the checkout and the data
    directory as the nodes see them (defaults ``PRUNING_LAB_RAY_CODE`` / ``PRUNING_LAB_RAY_DATA``, else
    this checkout and this data directory). Only jobs of the standard run command are claimed."""

    claims_entrypoint = DEFAULT_ENTRYPOINT

    def __init__(self, queue: JobQueue | None = None, *, address: str | None = None, actors: int | None = None,
                 actor_cpus: float = DEFAULT_ACTOR_CPUS, poll_s: float = DEFAULT_POLL_S,
                 heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S, worker_id: str | None = None,
                 warm: bool | None = None, code_dir: str | None = None, remote_data_dir: str | None = None) -> None:
        check_timing(poll_s, heartbeat_timeout_s)
        if actors is not None and actors < 1:
            raise JobError(f"--actors: {actors} is invalid; accepted: an integer >= 1")
        if not (math.isfinite(actor_cpus) and actor_cpus >= 0):
            raise JobError(f"--actor-cpus: {actor_cpus} is invalid; accepted: a finite number of CPUs >= 0")
        warm = warm_by_default() if warm is None else warm
        self.address = cluster_address(address)
        self._owns_ray = connect(self.address)  # before the queue: an unreachable cluster touches nothing
        self.cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
        slots: list[str | None] = [f"ray:{i}" for i in range(actors or max(1, self.cluster_gpus))]
        queue = queue or JobQueue()
        super().__init__(queue, slots, poll_s=poll_s, heartbeat_timeout_s=heartbeat_timeout_s,
                         worker_id=worker_id or f"ray-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
                         warm=warm, gpus=[s for s in slots if s] if self.cluster_gpus else None)
        self.actor_cpus = actor_cpus
        self.code_dir = code_dir or os.environ.get("PRUNING_LAB_RAY_CODE", str(REPO_ROOT))
        self.local_data_dir = queue.path.parent.parent
        self.remote_data_dir = remote_data_dir or os.environ.get("PRUNING_LAB_RAY_DATA", str(self.local_data_dir))
        self.running: dict[str | None, _ActorJob] = {}
        self.actors: dict[str | None, _Actor] = {}  # the slot's actor, kept between jobs

    def describe(self) -> str:
        mode = "warm actors" if self.warm else "cold: a fresh actor per job"
        return f"Ray actors at {self.address} ({self.cluster_gpus} GPU(s) in the cluster; {mode})"

    def actor_info(self, job_id: str) -> dict[str, Any] | None:
        """The actor running ``job_id``: ``actor_id``, ``pid``, ``node``, ``gpus`` (None while this worker
        does not run the job or the actor has not started yet)."""
        item = next((item for item in list(self.running.values()) if item.job.job_id == job_id), None)
        return item.actor.where or None if item is not None else None

    def _claim_gpu(self, slot: str | None) -> str | None:
        return slot if self.cluster_gpus else None  # a cluster without GPUs leaves CUDA jobs queued

    # ---- actors ---------------------------------------------------------------------------------
    def _actor(self, slot: str | None, with_gpu: bool) -> _Actor:
        """The slot's actor, started when it has none (or holds no GPU and the job needs one)."""
        actor = self.actors.get(slot)
        if actor is not None and with_gpu and not actor.with_gpu:
            self._end_actor(slot)
            actor = None
        if actor is None:
            env = {"PRUNING_LAB_DATA": self.remote_data_dir, "PYTHONPATH": self.code_dir, "PYTHONUNBUFFERED": "1"}
            handle = WarmRunnerActor.options(num_gpus=1 if with_gpu else 0, num_cpus=self.actor_cpus,
                                             runtime_env={"env_vars": env}).remote()
            actor = _Actor(handle, with_gpu, handle.where.remote())
            self.actors[slot] = actor
            log.info("slot %s: new Ray actor (%s)", slot, "1 GPU" if with_gpu else "no GPU")
        return actor

    def _end_actor(self, slot: str | None, actor: _Actor | None = None) -> None:
        """Kill the slot's actor (only if it is still ``actor``, when given); its next job gets a new one."""
        held = self.actors.get(slot)
        if held is None or (actor is not None and held is not actor):
            return
        del self.actors[slot]
        ray.kill(held.handle, no_restart=True)

    @staticmethod
    def _learn_where(actor: _Actor) -> None:
        if actor.where is not None or not ray.wait([actor.where_ref], timeout=0)[0]:
            return
        try:
            actor.where = ray.get(actor.where_ref)
        except RayError:
            actor.where = {}  # it died before it said; the reason then names no pid

    def _remote(self, path: Path) -> str:
        """``path`` (under this machine's data directory) as the nodes see it."""
        try:
            return str(Path(self.remote_data_dir) / path.relative_to(self.local_data_dir))
        except ValueError:
            return str(path)

    # ---- the loop's steps -----------------------------------------------------------------------
    def _start(self, job: JobInfo, slot: str | None) -> None:
        _job_dir, config_path, events_path, log_path = self._job_files(job)
        with_gpu = needs_gpu(job.run_config)
        with log_path.open("ab") as log_file:
            log_file.write(f"# job {job.job_id} attempt {job.attempt} on {self.worker_id} (slot {slot}, Ray actor "
                           f"with {'1 GPU' if with_gpu else 'no GPU'}) at {time.ctime()}\n".encode())
        actor = self._actor(slot, with_gpu)
        request = {"job_id": job.job_id, "config": self._remote(config_path), "events": self._remote(events_path),
                   "log": self._remote(log_path)}
        self.running[slot] = _ActorJob(job, actor, actor.handle.run.remote(request), log_path, events_path)
        log.info("job %s (%s) handed to the Ray actor of slot %s", job.job_id, job.run_id, slot)

    def _check_running(self) -> int:
        finished = 0
        for slot, item in list(self.running.items()):
            self._learn_where(item.actor)
            if not ray.wait([item.result], timeout=0)[0]:
                self._watch(slot, item)
                continue
            del self.running[slot]
            finished += 1
            try:
                rc, died = int(ray.get(item.result)), None
            except RayActorError as exc:
                rc, died = None, actor_died_reason(item.actor.where, exc, log_tail(item.log_path))
            except RayError as exc:  # the actor could not run the request at all
                first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
                rc, died = None, f"the Ray actor could not run this job: {first[:500]}"
            if rc != 0 or not self.warm:  # isolation: what a failed job left behind never reaches the next
                self._end_actor(slot, item.actor)
            self._record_end(item.job, rc, died, item.log_path, item.events_path)
        return finished

    def _watch(self, slot: str | None, item: _ActorJob) -> None:
        """Heartbeat a live job; kill its actor when its cancel was requested or it was reaped."""
        owned = self.queue.heartbeat(item.job.job_id, self.worker_id, read_progress(item.events_path))
        if item.killed or (owned and not self.queue.cancel_requested(item.job.job_id)):
            return
        log.info("job %s: killing its Ray actor (%s)", item.job.job_id, "cancelled" if owned else "no longer ours")
        item.killed = True
        self._end_actor(slot, item.actor)

    def _wait(self, seconds: float) -> None:
        """Wait up to ``seconds``, waking as soon as a job's actor answers (or dies)."""
        pending = [item.result for item in self.running.values()]
        if pending:
            ray.wait(pending, num_returns=1, timeout=seconds)
        else:
            time.sleep(seconds)

    def _shutdown(self) -> None:
        for slot, item in list(self.running.items()):
            self._end_actor(slot, item.actor)
            self.queue.finish(item.job.job_id, self.worker_id, "failed", reason=self._stopped_reason())
            del self.running[slot]
        for slot in list(self.actors):
            self._end_actor(slot)
        self.queue.stop_worker(self.worker_id)
        if self._owns_ray:
            ray.shutdown()
