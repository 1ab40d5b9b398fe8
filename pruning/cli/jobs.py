"""Job commands: ``submit``, ``jobs``, ``job``, ``cancel``, ``retry``, ``worker``.

    python -m pruning submit --config FILE [--set k=v ...] [--backend local|ray] [--address URL] [--force]
    python -m pruning jobs [--status queued,running] [--limit N] [--json] [--refresh]
    python -m pruning job JOB_ID [--log] [--json]
    python -m pruning cancel JOB_ID
    python -m pruning retry JOB_ID
    python -m pruning worker [--gpus 0,1] [--once] [--poll S] [--heartbeat-timeout S] [--cold]
    python -m pruning worker --backend ray [--address auto|HOST:6379|local] [--actors N] [--actor-cpus C] [...]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from pruning.cli._args import COUNT, SECONDS, float_in
from pruning.config.run_config import parse_yaml_text
from pruning.errors import ConfigError
from pruning.methods.nm_pattern import looks_like_nm

CPUS = float_in(0.0, 1024.0)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the job commands to the ``python -m pruning`` parser."""
    p = sub.add_parser("submit", help="queue one run (local worker or Ray cluster)")
    p.add_argument("--config", required=True, help="RunConfig YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted-key override, e.g. --set pruning.sparsity=0.7 (repeatable)")
    _backend_args(p)
    p.add_argument("--force", action="store_true", help="queue even if this run id already succeeded")
    p.add_argument("--json", action="store_true", help="print the job record as JSON")
    p.set_defaults(handler=cmd_submit)

    p = sub.add_parser("jobs", help="list jobs")
    p.add_argument("--status", default=None, help="only these states, comma-separated (queued,running,...)")
    p.add_argument("--limit", type=COUNT, default=50)
    p.add_argument("--json", action="store_true")
    p.add_argument("--refresh", action="store_true",
                   help="first reap jobs of lost workers and refresh Ray jobs from their cluster (writes the queue); "
                        "without it the listing only reads")
    p.set_defaults(handler=cmd_jobs)

    p = sub.add_parser("job", help="show one job (and its log)")
    p.add_argument("job_id")
    p.add_argument("--log", action="store_true", help="print the job's log")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_job)

    p = sub.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job_id")
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("retry", help="queue a failed or cancelled job again")
    p.add_argument("job_id")
    p.set_defaults(handler=cmd_retry)

    p = sub.add_parser("worker", help="run queued jobs, one per GPU (or on the CPU), here or on Ray actors")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: warm runner processes on this machine's GPUs; ray: one warm Ray actor per "
                        "GPU of a Ray cluster")
    p.add_argument("--gpus", default=None, help="GPU indices, e.g. 0,1 (default: all visible; CPU if none; local only)")
    p.add_argument("--address", default=None,
                   help="ray: the cluster to join as a driver, HOST:6379, ray://HOST:10001, auto (default, or "
                        "$RAY_ADDRESS) or local (a private Ray on this machine)")
    p.add_argument("--actors", type=COUNT, default=None,
                   help="ray: number of actors, i.e. jobs at once (default: one per GPU of the cluster, 1 without)")
    p.add_argument("--actor-cpus", type=CPUS, default=1.0, help="ray: CPUs reserved for each actor (default 1)")
    p.add_argument("--once", action="store_true", help="exit when the queue has nothing left for this worker")
    p.add_argument("--poll", type=SECONDS, default=1.0, help="seconds between queue polls / heartbeats (> 0)")
    p.add_argument("--heartbeat-timeout", type=SECONDS, default=60.0,
                   help="a running job without heartbeat for this long is failed as 'worker lost'")
    p.add_argument("--cold", action="store_true",
                   help="run every job in a fresh process (ray: a fresh actor) instead of the slot's warm runner "
                        "(also: PRUNING_LAB_RUNNER=cold)")
    p.set_defaults(handler=cmd_worker)


def _backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--address", default=None,
                   help="Ray Jobs address (default $PRUNING_LAB_RAY_ADDRESS or http://127.0.0.1:8265)")


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """Backend keyword options from parsed ``--backend``/``--address`` flags."""
    return {"address": args.address} if args.backend == "ray" and args.address else {}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["pruning.sparsity=0.7", ...]`` -> ``{"pruning.sparsity": 0.7}`` (values parsed as YAML,
    except that ``N:M`` stays text: YAML 1.1 would read ``2:4`` as the base-60 number 124)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: {item!r} must look like KEY=VALUE, e.g. pruning.sparsity=0.7")
        if looks_like_nm(raw):
            out[key.strip()] = raw.strip()
            continue
        out[key.strip()] = parse_yaml_text(raw, f"--set {key.strip()}: value {raw!r}") if raw.strip() else None
    return out


def cmd_submit(args: argparse.Namespace) -> int:
    from pruning.config.run_config import RunConfig
    from pruning.jobs import get_backend
    from pruning.jobs.queue import JobQueue

    from pruning.run.validation import check_names

    config = RunConfig.from_yaml(args.config)
    overrides = parse_overrides(args.overrides)
    if overrides:
        config = config.with_overrides(overrides)
    check_names(config)  # before the queue is opened: a bad name touches nothing
    result = get_backend(args.backend, **backend_options(args)).submit(config, force=args.force)
    if args.json:
        print(json.dumps({"run_id": result.run_id, "existing": result.existing,
                          "job": result.job.to_dict() if result.job else None}))
        return 0
    if result.existing == "store":
        print(f"run {result.run_id} is already in the results store; not queued (use --force to run again)")
    elif result.existing == "queue" and result.job is not None:
        print(f"run {result.run_id} already {result.job.state} as job {result.job.job_id}; not queued "
              "(use --force to run again)")
    elif result.job is not None:
        print(f"queued job {result.job.job_id} (run {result.run_id}, backend {args.backend})")
        if args.backend == "local" and not JobQueue().live_workers():
            print("no live worker: start one with `python -m pruning worker`")
    return 0


def _fmt_time(t: float | None) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def cmd_jobs(args: argparse.Namespace) -> int:
    from pruning.jobs import JOB_STATES, list_jobs

    states = tuple(s.strip() for s in args.status.split(",")) if args.status else None
    if states:
        bad = [s for s in states if s not in JOB_STATES]
        if bad:
            raise ConfigError(f"--status: {bad} unknown; accepted: {', '.join(JOB_STATES)}")
    jobs = list_jobs(states=states, limit=args.limit, refresh=args.refresh)
    if args.json:
        print(json.dumps([j.to_dict() for j in jobs]))
        return 0
    if not jobs:
        print("no jobs")
        return 0
    print(f"{'JOB':24} {'BACKEND':7} {'STATE':9} {'RUN':22} {'PROGRESS':28} {'CREATED':14} REASON")
    for j in jobs:
        prog = f"{j.progress.percent:5.1f}% {j.progress.stage or ''} {j.progress.message}".strip()[:28]
        print(f"{j.job_id:24} {j.backend:7} {j.state:9} {j.run_id:22} {prog:28} {_fmt_time(j.created_at):14} "
              f"{(j.reason or '')[:80]}")
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    from pruning.jobs import job_logs, job_progress, job_status

    job = job_status(args.job_id)
    progress = job_progress(args.job_id)
    if args.json:
        data = job.to_dict()
        data["progress"] = progress.to_dict()
        if args.log:
            data["log"] = job_logs(args.job_id)
        print(json.dumps(data))
        return 0
    print(f"job {job.job_id}  [{job.backend}]  {job.state}")
    print(f"  run        {job.run_id}  {job.label or ''}")
    print(f"  created    {_fmt_time(job.created_at)}   started {_fmt_time(job.started_at)}   "
          f"finished {_fmt_time(job.finished_at)}")
    print(f"  worker     {job.worker_id or '-'}  gpu {job.gpu or '-'}  attempt {job.attempt}"
          + (f"  retry of {job.retry_of}" if job.retry_of else ""))
    print(f"  progress   {progress.percent:.1f}%  {progress.stage or '-'}  {progress.message}")
    if job.exit_code is not None:
        print(f"  exit code  {job.exit_code}")
    if job.reason:
        print(f"  reason     {job.reason}")
    if job.job_dir:
        print(f"  directory  {job.job_dir}")
    if args.log:
        print("---- log ----")
        print(job_logs(args.job_id), end="")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from pruning.jobs import cancel_job

    job = cancel_job(args.job_id)
    if job.state == "cancelled":
        print(f"job {job.job_id} cancelled")
    else:
        print(f"job {job.job_id} is {job.state}; stop requested")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from pruning.jobs import retry_job

    job = retry_job(args.job_id)
    print(f"queued job {job.job_id} (retry of {args.job_id}, run {job.run_id})")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from pruning.jobs.base import BackendUnavailableError
    from pruning.jobs.worker import QueueWorker, Worker

    warm = False if args.cold else None
    worker: QueueWorker
    if args.backend == "ray":
        if args.gpus is not None:
            raise ConfigError("--gpus: selects GPUs of this machine (local workers); with --backend ray, Ray "
                              "places one actor per GPU of the cluster (use --actors N to change the count)")
        try:
            from pruning.jobs.ray_actors import RayWorker
        except ImportError as exc:
            raise BackendUnavailableError(f"worker --backend ray needs `ray[default]` installed: {exc}") from None
        worker = RayWorker(address=args.address, actors=args.actors, actor_cpus=args.actor_cpus, poll_s=args.poll,
                           heartbeat_timeout_s=args.heartbeat_timeout, warm=warm)
    else:
        for flag, value in (("--address", args.address), ("--actors", args.actors)):
            if value is not None:
                raise ConfigError(f"{flag}: only with --backend ray (this worker runs local jobs on this machine)")
        gpus = [g for g in args.gpus.split(",") if g.strip()] if args.gpus is not None else None
        worker = Worker(gpus=gpus, poll_s=args.poll, heartbeat_timeout_s=args.heartbeat_timeout, warm=warm)
    worker.run(once=args.once)
    return 0
