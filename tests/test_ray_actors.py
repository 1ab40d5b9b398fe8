"""Warm runners on Ray actors (issue 26), against a real Ray started in this process
(``ray.init(num_cpus=2)``, CPU only): jobs of the queue run on a :class:`RayWorker`'s actors with the
cold path's run ids and perplexities, one actor serves jobs of one model one after another and
replaces the model for another; a job that fails, an actor killed under its job and a cancelled job
each end their actor and fail (or cancel) that job alone; retry runs again."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from test_warm_runner import _config, _wait  # the same small run and wait as the local warm runner tests
from pruning.jobs import JobQueue, LocalBackend, cancel_job, job_status, retry_job
from pruning.jobs.liveness import process_gone
from pruning.run.pipeline import execute_run
from pruning.model.synthetic import save_tiny_model_dir

ray = pytest.importorskip("ray")
from pruning.jobs.ray_actors import RayWorker, actor_died_reason, cluster_address  # noqa: E402 - needs ray


@pytest.fixture(scope="module")
def ray_session():
    """Ray in this process, 2 CPUs, no dashboard, no token (a RayWorker uses this session as it is)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_AUTH_MODE", "disabled")
    patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    patch.undo()


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model_dir(tmp_path_factory.mktemp("other") / "model", seed=1)


def _footer(job_id: str) -> str:
    """The warm runner's last line in the job's log: its pid, loads and reuses so far."""
    text = (Path(job_status(job_id).job_dir) / "log.txt").read_text()
    return next(ln for ln in reversed(text.splitlines()) if ln.startswith("# warm runner pid"))


def _pid(job_id: str) -> int:
    """The pid of the actor process that ran ``job_id`` to its end."""
    return int(_footer(job_id).removeprefix("# warm runner pid ").split(":")[0])


@pytest.mark.ray
@pytest.mark.slow
def test_jobs_on_actors_equal_cold_runs_and_share_the_model(ray_session, data_dir, tiny_model_dir, other_model_dir):
    from pruning.store.queries import run_table

    configs = [_config(tiny_model_dir),
               _config(tiny_model_dir, **{"pruning.method": "sparsegpt", "allocation.strategy": "owl",
                                          "allocation.owl_lambda": 0.08}),
               _config(other_model_dir)]
    jobs = [LocalBackend().submit(c).job.job_id for c in configs]
    worker = RayWorker(poll_s=0.2, heartbeat_timeout_s=30, actor_cpus=2)  # 2 threads, as this process
    assert worker.slots == ["ray:0"] and worker.cluster_gpus == 0
    assert worker.run(once=True) == 3
    done = [job_status(j) for j in jobs]
    assert [j.state for j in done] == ["succeeded"] * 3, [j.reason for j in done]
    assert [j.run_id for j in done] == [c.run_id for c in configs]
    for config in configs:
        cold = execute_run(config, publish=False).tables["perplexity"].sort_values("dataset")
        warm = run_table(config.run_id, "perplexity").sort_values("dataset")
        assert warm["ppl"].tolist() == cold["ppl"].tolist()  # bit for bit
    footers = [_footer(j) for j in jobs]
    assert len({_pid(j) for j in jobs}) == 1                            # one actor process ran all three
    assert "1 load(s), 1 reuse(s)" in footers[1]                        # the second job reused the model
    assert "2 load(s), 1 reuse(s)" in footers[2]                        # another model replaced it
    assert "# Ray actor " in (Path(done[0].job_dir) / "log.txt").read_text()
    assert JobQueue().live_workers() == []                              # the worker recorded its exit


@pytest.mark.ray
@pytest.mark.slow
def test_a_failing_job_a_killed_actor_and_a_cancel_fail_alone(ray_session, data_dir, tiny_model_dir, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("too short for a calibration window of 64 tokens")
    configs = [
        _config(tiny_model_dir, **{"calibration.dataset": f"text:{short}"}),            # raises during the work
        _config(tiny_model_dir, **{"evaluation.limit_windows": 400, "evaluation.perplexity": ["wiki"]}),  # killed
        _config(tiny_model_dir, **{"evaluation.limit_windows": None, "evaluation.perplexity": ["wiki"]}),  # cancelled
        _config(tiny_model_dir, **{"pruning.sparsity": 0.5}),
    ]
    jobs = [LocalBackend().submit(c).job.job_id for c in configs]
    worker = RayWorker(poll_s=0.2, heartbeat_timeout_s=30)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        killed = _wait(lambda: worker.actor_info(jobs[1]), 120, "the actor of the second job")
        os.kill(killed["pid"], signal.SIGKILL)                          # it dies under its job
        cancelled = _wait(lambda: worker.actor_info(jobs[2]), 120, "the actor of the third job")
        assert cancel_job(jobs[2]).state == "running"                   # stop requested; the worker kills it
        _wait(lambda: job_status(jobs[3]).done, 120, "the job after the cancelled one")
        again = retry_job(jobs[1])
        _wait(lambda: job_status(again.job_id).done, 120, "the retry of the killed job")
    finally:
        worker.stop()
        thread.join(timeout=60)
    states = [job_status(j) for j in [*jobs, again.job_id]]
    assert [s.state for s in states] == ["failed", "failed", "cancelled", "succeeded", "succeeded"], \
        [s.reason for s in states]
    assert "seqlen" in states[0].reason                                 # the job's own error, one line
    assert f"the Ray actor {killed['actor_id']} (pid {killed['pid']}" in states[1].reason
    assert "died while running this job" in states[1].reason
    assert states[2].reason == "cancelled while running"
    _wait(lambda: process_gone(cancelled["pid"]), 30, "the cancelled job's actor to exit")
    failed, after, retried = _pid(jobs[0]), _pid(jobs[3]), _pid(again.job_id)
    assert len({failed, killed["pid"], cancelled["pid"], after}) == 4     # a fresh actor after each failure
    assert retried == after and "1 reuse(s)" in _footer(again.job_id)    # then kept: the retry reused its model
    assert not thread.is_alive() and worker.actors == {}


def test_the_cluster_address_is_checked(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(None) == "auto"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")                # the Jobs API address is not for drivers
    assert cluster_address(None) == "auto"
    assert cluster_address(" head:6379 ") == "head:6379"
    with pytest.raises(Exception, match=r"'http://head:8265' is a Ray Jobs .*accepted: HOST:6379"):
        cluster_address("http://head:8265")


def test_a_dead_actor_is_named_from_rays_message_when_it_never_said_where():
    message = ("The actor died unexpectedly before finishing this task.\n\tclass_name: WarmRunnerActor\n"
               "\tactor_id: 81c1829001000000\n\tpid: 12399\n\tnamespace: pruning_lab\n\tip: 10.0.0.5\n"
               "The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR")
    reason = actor_died_reason({}, RuntimeError(message), "# job ...\nloading the model\n")
    assert reason == ("the Ray actor 81c1829001000000 (pid 12399 on 10.0.0.5) died while running this job: The actor "
                      "is dead because its worker process has died. Worker exit type: SYSTEM_ERROR; last log line: "
                      "loading the model")
