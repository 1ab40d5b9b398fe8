"""Local job backend: queue, workers, cancel, heartbeats, failures, dedupe, CLI errors.

Queue-mechanics tests use a tiny fake entrypoint (a script that reads the job's config and acts
on its ``label``: ``sleep:S``, ``raise:TEXT``, ``fail_once:PATH``); the "ten short jobs" test and
the error-text test run the real ``python -m pruning run`` on a tiny random model.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pruning.config.run_config import RunConfig
from pruning.errors import ConfigError
from pruning.jobs import BackendUnavailableError, JobError, JobQueue, LocalBackend, job_status, list_jobs
from pruning.jobs.base import count_events, failure_reason, read_progress
from pruning.jobs.processes import resolve_gpus, visible_gpu_count
from pruning.paths import REPO_ROOT

POLL = "0.2"
HEARTBEAT_TIMEOUT = 3.0
REAL_RUN = (REPO_ROOT / "pruning" / "cli" / "run.py").is_file()

FAKE_RUN = textwrap.dedent(
    """
    import json, os, sys, time
    import yaml
    config_path, events_path = sys.argv[1], sys.argv[2]
    config = yaml.safe_load(open(config_path))
    label = config.get("label") or ""
    data = os.environ["PRUNING_LAB_DATA"]
    job = os.environ["PRUNING_LAB_JOB_ID"]
    with open(os.path.join(data, "ran.txt"), "a") as fh:
        fh.write(f"{job} {os.getpid()}\\n")
    with open(os.path.join(data, f"pid-{job}"), "w") as fh:
        fh.write(str(os.getpid()))
    def event(stage, fraction, message):
        with open(events_path, "a") as fh:
            fh.write(json.dumps({"t": time.time(), "stage": stage, "fraction": fraction, "message": message}) + "\\n")
    event("prune", 0.5, "block 1 of 2")
    print("fake run", job, "gpu", repr(os.environ.get("CUDA_VISIBLE_DEVICES")), flush=True)
    kind, _, arg = label.partition(":")
    if kind == "sleep":
        time.sleep(float(arg))
    elif kind == "raise":
        raise RuntimeError(arg)
    elif kind == "fail_once":
        if not os.path.exists(arg):
            open(arg, "w").close()
            raise RuntimeError("first attempt fails")
    event("done", 1.0, "succeeded")
    """
)


@pytest.fixture()
def fake_run(tmp_path: Path) -> list[str]:
    """Entrypoint of the fake run script (placeholders filled by the worker)."""
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    return [sys.executable, str(script), "{config}", "{events}"]


@pytest.fixture()
def queue(data_dir: Path) -> JobQueue:
    return JobQueue()


class Workers:
    """Starts ``python -m pruning worker`` processes and always stops them at teardown."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, *extra: str) -> subprocess.Popen:
        env = dict(os.environ, PRUNING_LAB_DATA=str(self.data_dir), PYTHONPATH=str(REPO_ROOT))
        log = (self.data_dir / f"worker{len(self.procs)}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "pruning", "worker", "--poll", POLL, "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT),
             *extra], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture()
def workers(data_dir: Path):
    w = Workers(data_dir)
    yield w
    w.stop()


def cfg(label: str | None = None, sparsity: float = 0.5, **over) -> RunConfig:
    base = RunConfig().with_overrides({"pruning.method": "magnitude", "pruning.sparsity": sparsity, **over})
    return base.model_copy(update={"label": label}) if label else base


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def ran_lines(data_dir: Path) -> list[str]:
    path = data_dir / "ran.txt"
    return path.read_text().split() [0::2] if path.is_file() else []


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not running; /proc tells
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split(")")[-1].split()[0] == "Z")


# ---- the real run: ten short jobs, two workers ---------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaMA with a real tokenizer, and next to it a short evaluation text."""
    from pruning.model.synthetic import save_tiny_model_dir

    root = tmp_path_factory.mktemp("tiny")
    (root / "eval.txt").write_text("The quick brown fox jumps over the lazy dog. " * 40)
    return save_tiny_model_dir(root / "model")


def tiny_run_config(model_dir: Path, sparsity: float, **over) -> RunConfig:
    """Magnitude pruning of the tiny model, one 32-token perplexity window on a short text."""
    return RunConfig().with_overrides({
        "model.name": str(model_dir), "pruning.method": "magnitude", "pruning.sparsity": sparsity,
        "calibration.nsamples": 2, "calibration.seqlen": 32, "evaluation.limit_windows": 1,
        "evaluation.seqlen": 32, "evaluation.perplexity": [f"text:{model_dir.parent / 'eval.txt'}"], **over,
    })


@pytest.mark.skipif(not REAL_RUN, reason="pruning/cli/run.py not available")
def test_ten_real_jobs_two_workers_each_run_exactly_once(data_dir, queue, workers, tiny_model_dir) -> None:
    backend = LocalBackend(queue)
    jobs = [backend.submit(tiny_run_config(tiny_model_dir, 0.05 * (i + 1))).job for i in range(10)]
    assert len({j.run_id for j in jobs}) == 10
    workers.start()
    workers.start()
    wait_for(lambda: all(queue.get(j.job_id).done for j in jobs), 240, "ten jobs to finish", interval=0.5)
    final = [queue.get(j.job_id) for j in jobs]
    assert [j.state for j in final] == ["succeeded"] * 10, [(j.job_id, j.reason) for j in final]
    assert all(j.attempt == 1 for j in final)                       # claimed once
    assert all(count_events(Path(j.job_dir) / "events.jsonl", "done") == 1 for j in final)   # ran once
    assert len({j.worker_id for j in final}) == 2                   # both workers took jobs
    assert all(j.progress.stage == "done" and j.progress.fraction == 1.0 for j in final)
    assert "succeeded" in backend.logs(final[0].job_id)
    # the runs reached the results store, and submitting one again is deduplicated
    again = backend.submit(final[3].run_config)
    assert again.deduped and again.job is not None and again.job.job_id == final[3].job_id
    from pruning.jobs.local import store_has_run

    assert store_has_run(final[0].run_id)


@pytest.mark.skipif(not REAL_RUN, reason="pruning/cli/run.py not available")
def test_real_run_failure_keeps_error_text(data_dir, queue, workers, tiny_model_dir) -> None:
    missing = data_dir / "no-such-model-dir"
    job = LocalBackend(queue).submit(tiny_run_config(tiny_model_dir, 0.5, **{"model.name": str(missing)})).job
    workers.start("--once")
    done = LocalBackend(queue).wait(job.job_id, 60)
    assert done.state == "failed" and done.exit_code not in (0, None)
    assert "no-such-model-dir" in done.reason
    assert "no-such-model-dir" in LocalBackend(queue).logs(job.job_id)


# ---- queue mechanics with the fake entrypoint ----------------------------------------------------

def test_claims_are_atomic_across_threads(queue) -> None:
    for i in range(40):
        queue.enqueue(f"job{i:02d}", cfg(sparsity=0.01 * (i + 1)))
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        while (job := queue.claim(f"w{n}", gpu=None, heartbeat_timeout=10)) is not None:
            with lock:
                claimed.append(job.job_id)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == [f"job{i:02d}" for i in range(40)]   # each exactly once
    assert all(j.state == "running" and j.attempt == 1 for j in queue.list())


def test_gpu_jobs_wait_for_a_gpu_worker(queue) -> None:
    queue.enqueue("gpujob", cfg(**{"model.device": "cuda"}))
    assert queue.claim("cpu-worker", gpu=None, heartbeat_timeout=10) is None
    assert queue.claim("gpu-worker", gpu="0", heartbeat_timeout=10).job_id == "gpujob"


def test_fake_jobs_two_workers_progress_and_gpu_env(data_dir, queue, workers, fake_run) -> None:
    backend = LocalBackend(queue, entrypoint=fake_run)
    jobs = [backend.submit(cfg("sleep:0.3", sparsity=0.1 * (i + 1))).job for i in range(6)]
    workers.start()
    workers.start()
    wait_for(lambda: all(queue.get(j.job_id).done for j in jobs), 60, "fake jobs")
    final = [queue.get(j.job_id) for j in jobs]
    assert {j.state for j in final} == {"succeeded"}
    assert sorted(ran_lines(data_dir)) == sorted(j.job_id for j in jobs)
    assert backend.progress(jobs[0].job_id).stage == "done"
    assert "gpu ''" in backend.logs(jobs[0].job_id)                # CPU jobs see no GPU


def test_cancel_queued_never_runs_and_cancel_running_stops(data_dir, queue, workers, fake_run) -> None:
    backend = LocalBackend(queue, entrypoint=fake_run)
    long_job = backend.submit(cfg("sleep:60", sparsity=0.1)).job
    queued_job = backend.submit(cfg("sleep:0", sparsity=0.2)).job
    worker = workers.start("--once")
    wait_for(lambda: queue.get(long_job.job_id).state == "running" and (data_dir / f"pid-{long_job.job_id}").is_file(),
             30, "the long job to start")
    assert backend.cancel(queued_job.job_id).state == "cancelled"
    pid = int((data_dir / f"pid-{long_job.job_id}").read_text())
    assert pid_alive(pid)
    t0 = time.time()
    assert backend.cancel(long_job.job_id).cancel_requested
    stopped = backend.wait(long_job.job_id, 15)
    assert stopped.state == "cancelled" and time.time() - t0 < 10
    assert not pid_alive(pid)
    assert worker.wait(timeout=20) == 0                               # --once: queue is empty now
    assert queued_job.job_id not in ran_lines(data_dir)               # never ran
    assert queue.get(queued_job.job_id).started_at is None
    with pytest.raises(JobError, match="already cancelled"):
        backend.cancel(queued_job.job_id)


def test_sigkilled_worker_leaves_its_job_failed_worker_lost(data_dir, queue, workers, fake_run) -> None:
    backend = LocalBackend(queue, entrypoint=fake_run)
    job = backend.submit(cfg("sleep:60")).job
    worker = workers.start()
    wait_for(lambda: (data_dir / f"pid-{job.job_id}").is_file(), 30, "the job to start")
    child = int((data_dir / f"pid-{job.job_id}").read_text())
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed_at = time.time()
    failed = wait_for(lambda: (j := job_status(job.job_id)).state == "failed" and j, HEARTBEAT_TIMEOUT + 3,
                      "the status reader to reap the lost job")
    assert time.time() - killed_at <= HEARTBEAT_TIMEOUT + 3
    assert failed.reason.startswith("worker lost")
    wait_for(lambda: not pid_alive(child), 5, "the orphaned run to die")


def test_job_that_raises_fails_with_error_text_and_retry(data_dir, queue, workers, fake_run) -> None:
    backend = LocalBackend(queue, entrypoint=fake_run)
    bad = backend.submit(cfg("raise:tokenizer exploded 42", sparsity=0.3)).job
    flaky = backend.submit(cfg(f"fail_once:{data_dir / 'flag'}", sparsity=0.4)).job
    workers.start("--once").wait(timeout=60)
    bad_done, flaky_done = queue.get(bad.job_id), queue.get(flaky.job_id)
    assert bad_done.state == "failed" and bad_done.exit_code == 1
    assert "RuntimeError: tokenizer exploded 42" in bad_done.reason
    assert "Traceback" in backend.logs(bad.job_id)
    assert flaky_done.state == "failed"
    with pytest.raises(JobError, match="only failed or cancelled"):
        backend.retry(backend.submit(cfg("x", sparsity=0.9)).job.job_id)   # a queued job
    backend.cancel(queue.list(states=("queued",))[0].job_id)
    retried = backend.retry(flaky.job_id)
    assert retried.retry_of == flaky.job_id and retried.run_id == flaky.run_id and retried.state == "queued"
    workers.start("--once").wait(timeout=60)
    assert queue.get(retried.job_id).state == "succeeded"
    assert queue.get(flaky.job_id).state == "failed"                  # the old attempt keeps its record


def test_stale_running_job_is_reaped_by_any_reader(queue) -> None:
    queue.enqueue("j1", cfg())
    queue.claim("ghost", gpu=None, heartbeat_timeout=3)
    assert queue.reap_stale(now=time.time() + 1) == []               # still within the timeout
    reaped = queue.reap_stale(now=time.time() + 4)
    assert [j.job_id for j in reaped] == ["j1"]
    job = queue.get("j1")
    assert job.state == "failed" and "worker lost" in job.reason and "ghost" in job.reason
    assert queue.finish("j1", "ghost", "succeeded") is False         # a late finish does not resurrect it


# ---- dedupe --------------------------------------------------------------------------------------

def test_dedupe_by_run_id_unless_forced(queue) -> None:
    backend = LocalBackend(queue, check_store=False)
    first = backend.submit(cfg(sparsity=0.6))
    assert not first.deduped and first.job.state == "queued"
    again = backend.submit(cfg("another label", sparsity=0.6))          # label does not change the run id
    assert again.deduped and again.existing == "queue" and again.job.job_id == first.job.job_id
    claimed = queue.claim("w", gpu=None, heartbeat_timeout=10)
    queue.finish(claimed.job_id, "w", "succeeded", exit_code=0)
    done = backend.submit(cfg(sparsity=0.6))
    assert done.deduped and done.job.state == "succeeded"
    forced = backend.submit(cfg(sparsity=0.6), force=True)
    assert not forced.deduped and forced.job.job_id != first.job.job_id
    assert not backend.submit(cfg(sparsity=0.61)).deduped


def test_dedupe_consults_results_store(queue, monkeypatch) -> None:
    import pruning.jobs.local as local

    monkeypatch.setattr(local, "store_has_run", lambda run_id: run_id == cfg(sparsity=0.7).run_id)
    hit = LocalBackend(queue).submit(cfg(sparsity=0.7))
    assert hit.existing == "store" and hit.job is None
    assert queue.list() == []


# ---- helpers -------------------------------------------------------------------------------------

def test_progress_reader_and_failure_reason(tmp_path) -> None:
    events = tmp_path / "events.jsonl"
    assert read_progress(events).stage is None
    events.write_text('{"t": 1, "stage": "calibration", "fraction": 0.2, "message": "block 3 of 30"}\n'
                      '{"t": 2, "stage": "prune", "fraction": 0.5, "mess')            # partial last line
    p = read_progress(events)
    assert (p.stage, p.fraction, p.message, p.percent) == ("calibration", 0.2, "block 3 of 30", 20.0)
    assert failure_reason("INFO x\nerror: model 'm' not found\n", 2) == "exit code 2: model 'm' not found"
    assert failure_reason("Traceback (most recent call last):\n  File x\nValueError: bad\n", 1) == \
        "exit code 1: ValueError: bad"


# ---- bad input -----------------------------------------------------------------------------------

def test_invalid_config_rejected_at_submit_with_field_named(data_dir, tmp_path, capsys) -> None:
    from pruning.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("pruning: {method: magnitude, sparsity: 1.5}\n")
    assert main(["submit", "--config", str(bad)]) == 2
    assert "pruning.sparsity" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text("pruning: {method: magnitude}\n")
    assert main(["submit", "--config", str(good), "--set", "pruning.method=pruney"]) == 2
    assert "pruning.method" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="allocation.epsilon"):
        LocalBackend().submit(RunConfig.from_dict({"allocation": {"epsilon": 2}}))
    assert JobQueue().list() == []


def test_cli_submit_jobs_job_cancel_retry(data_dir, tmp_path, capsys) -> None:
    from pruning.cli import main

    config = tmp_path / "run.yaml"
    config.write_text("pruning: {method: magnitude}\n")
    assert main(["submit", "--config", str(config), "--set", "pruning.sparsity=0.55"]) == 0
    out = capsys.readouterr().out
    assert "queued job" in out and "no live worker" in out
    job_id = out.split("queued job ")[1].split()[0]
    assert main(["submit", "--config", str(config), "--set", "pruning.sparsity=0.55"]) == 0
    assert f"already queued as job {job_id}" in capsys.readouterr().out
    assert main(["jobs", "--status", "queued"]) == 0
    assert job_id in capsys.readouterr().out
    assert main(["jobs", "--status", "bogus"]) == 2
    assert main(["cancel", job_id]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert main(["job", job_id, "--log"]) == 0
    assert "cancelled while queued" in capsys.readouterr().out
    assert main(["retry", job_id]) == 0
    assert f"retry of {job_id}" in capsys.readouterr().out
    assert main(["job", "nope"]) == 2
    assert "no job 'nope'" in capsys.readouterr().err
    assert [j.state for j in list_jobs()] == ["queued", "cancelled"]


@pytest.mark.skipif(visible_gpu_count() > 3, reason="machine has a GPU 3")
def test_worker_asking_for_missing_gpu_is_a_clear_error(data_dir, capsys) -> None:
    from pruning.cli import main

    assert main(["worker", "--gpus", "3", "--once"]) == 2
    err = capsys.readouterr().err
    assert "GPU 3 requested" in err and f"{visible_gpu_count()} visible GPU" in err
    with pytest.raises(BackendUnavailableError, match="not a GPU index"):
        resolve_gpus(["x"])


def test_worker_rejects_heartbeat_timeout_shorter_than_polls(data_dir) -> None:
    from pruning.jobs.worker import Worker

    with pytest.raises(JobError, match="heartbeat-timeout"):
        Worker(poll_s=1.0, heartbeat_timeout_s=1.5)


def test_ensure_local_worker_starts_one_worker_only(data_dir, queue, fake_run) -> None:
    from pruning.jobs import ensure_local_worker

    pid = ensure_local_worker(poll_s=0.2, heartbeat_timeout_s=3)
    try:
        assert pid is not None
        assert ensure_local_worker() is None                           # just spawned: not twice
        wait_for(lambda: queue.live_workers(), 20, "the spawned worker's heartbeat")
        assert ensure_local_worker() is None
        job = LocalBackend(queue, entrypoint=fake_run).submit(cfg("sleep:0")).job
        assert LocalBackend(queue).wait(job.job_id, 30).state == "succeeded"
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(pid), 15, "the spawned worker to stop")
    assert queue.live_workers() == []


# ---- dead local workers, read-only listing (issue 19) -------------------------------------------

def test_a_killed_local_worker_is_dead_at_once_not_after_the_heartbeat_timeout(data_dir, queue, workers,
                                                                                fake_run) -> None:
    job = LocalBackend(queue, entrypoint=fake_run).submit(cfg("sleep:60", sparsity=0.15)).job
    worker = workers.start("--heartbeat-timeout", "60")                 # a lost heartbeat would take 60 s
    wait_for(lambda: (data_dir / f"pid-{job.job_id}").is_file(), 30, "the job to start")
    assert [w["pid"] for w in queue.live_workers()] == [worker.pid]
    worker.send_signal(signal.SIGKILL)
    wait_for(lambda: Path(f"/proc/{worker.pid}/stat").read_text().split(")")[-1].split()[0] == "Z", 5,
             "the worker to be a zombie")
    assert queue.live_workers() == []                                   # a zombie counts as dead
    listed = list_jobs(refresh=False)[0]                                # read-only: shown failed, not recorded
    assert listed.state == "failed" and "no longer running" in listed.reason
    assert queue.get(job.job_id).state == "running"
    worker.wait()
    assert queue.live_workers() == []
    failed = job_status(job.job_id)                                     # a writer records it at once
    assert failed.state == "failed" and f"pid {worker.pid}" in failed.reason and "no longer running" in failed.reason


def test_ensure_local_worker_replaces_a_dead_worker_at_once(data_dir, queue) -> None:
    from pruning.jobs import ensure_local_worker

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    queue.register_worker("dead-worker", dead.pid, None, heartbeat_timeout=600)  # fresh heartbeat, gone pid
    queue.register_worker("alive-elsewhere", 1, None, heartbeat_timeout=600)
    with queue._transaction() as con:                                   # a worker on another host: heartbeat rules
        con.execute("UPDATE workers SET host = 'other-host', pid = ? WHERE worker_id = 'alive-elsewhere'",
                    (dead.pid,))
    assert [w["worker_id"] for w in queue.live_workers()] == ["alive-elsewhere"]
    with queue._transaction() as con:
        con.execute("DELETE FROM workers WHERE worker_id = 'alive-elsewhere'")
    pid = ensure_local_worker(poll_s=0.2, heartbeat_timeout_s=3)
    try:
        assert pid is not None                                          # not blocked by the dead one
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(pid), 15, "the spawned worker to stop")


def _tree_digest(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_listing_jobs_never_writes_the_queue(data_dir, capsys) -> None:
    from pruning.cli import main

    assert main(["jobs"]) == 0                                          # no queue yet: nothing, and none made
    assert "no jobs" in capsys.readouterr().out
    assert not (data_dir / "jobs").exists()
    assert main(["jobs", "--json"]) == 0 and capsys.readouterr().out.strip() == "[]"

    queue = JobQueue()
    queue.enqueue("j-stale", cfg(sparsity=0.25))
    queue.claim("ghost", gpu=None, heartbeat_timeout=0.01)
    time.sleep(0.05)
    before = _tree_digest(data_dir)
    assert main(["jobs"]) == 0
    out = capsys.readouterr().out
    assert "j-stale" in out and "failed" in out and "worker lost" in out
    assert main(["jobs", "--status", "running"]) == 0                   # shown as failed, so not running
    assert "no jobs" in capsys.readouterr().out
    assert _tree_digest(data_dir) == before                             # no byte and no side file written
    assert queue.get("j-stale").state == "running"
    assert main(["jobs", "--refresh"]) == 0                             # the writer's listing records it
    capsys.readouterr()
    assert queue.get("j-stale").state == "failed"
