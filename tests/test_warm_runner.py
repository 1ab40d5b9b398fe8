"""Warm runners (issue 26): a run served by a warm runner gives the cold path's run id, masks and
perplexities bit for bit on the CPU; the dense statistics are keyed by the calibration itself; a
model switch frees the previous model; a job that fails or whose runner is killed fails alone."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import torch

from pruning.run import warm
from pruning.calibration import dense_stats
from pruning.run import pipeline as pipeline_module
from pruning.config.run_config import RunConfig
from pruning.text.data import calibration_batch
from pruning.jobs import JobQueue, LocalBackend, job_status
from pruning.jobs.worker import RUNNER_ENV, Worker
from pruning.model.load import load_model
from pruning.paths import REPO_ROOT
from pruning.run.pipeline import execute_run
from pruning.store import list_runs
from pruning.model.synthetic import save_tiny_model_dir


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model_dir(tmp_path_factory.mktemp("warm") / "model")


@pytest.fixture(scope="module")
def other_tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model_dir(tmp_path_factory.mktemp("warm2") / "model", seed=1)


@pytest.fixture()
def fresh_dense_stats(tmp_path, monkeypatch):
    """Dense statistics in a private directory and an empty memory: each phase measures its own."""
    def use(name: str) -> None:
        directory = tmp_path / name
        monkeypatch.setattr(dense_stats, "_path", lambda key: directory / f"{key}.pt")
        dense_stats.forget_memory()
    use("initial")
    yield use
    dense_stats.forget_memory()
    warm.disable()


def _config(model_dir: Path, **overrides) -> RunConfig:
    base = RunConfig.from_dict({
        "model": {"name": str(model_dir)},
        "calibration": {"dataset": "wiki", "nsamples": 4, "seqlen": 64, "seed": 0},
        "pruning": {"method": "wanda", "sparsity": 0.6},
        "allocation": {"strategy": "uniform"},
        "evaluation": {"perplexity": ["wiki", "lee"], "seqlen": 64, "limit_windows": 3},
    })
    return base.with_overrides(overrides) if overrides else base


def _sweep(model_dir: Path) -> list[RunConfig]:
    """Methods and allocations whose masks differ, so a leak from one job to the next would show."""
    return [
        _config(model_dir),
        _config(model_dir, **{"pruning.method": "sparsegpt", "allocation.strategy": "owl", "allocation.owl_lambda": 0.08}),
        _config(model_dir, **{"allocation.strategy": "dlp", "allocation.dlp_alpha": 0.15}),
        _config(model_dir, **{"pruning.method": "sparsegpt", "allocation.strategy": "linear", "allocation.preset": "all",
                              "allocation.metric": "alpha_peak", "allocation.epsilon": 0.2}),
        _config(model_dir, **{"allocation.strategy": "owl", "allocation.owl_lambda": 0.04, "calibration.seed": 1}),
    ]


def _run_capturing_masks(config: RunConfig, monkeypatch) -> tuple[object, dict[str, torch.Tensor]]:
    """execute_run with the pruned weights' zero pattern captured just before evaluation."""
    captured: dict[str, torch.Tensor] = {}
    evaluate = pipeline_module.stages.evaluate

    def spy(loaded, *args, **kwargs):
        for name, param in loaded.model.named_parameters():
            if param.ndim == 2 and "layers." in name:
                captured[name] = (param.detach() == 0).cpu().clone()
        return evaluate(loaded, *args, **kwargs)

    monkeypatch.setattr(pipeline_module.stages, "evaluate", spy)
    outcome = execute_run(config, publish=False)
    monkeypatch.setattr(pipeline_module.stages, "evaluate", evaluate)
    return outcome, captured


def _summary(outcome) -> tuple:
    ppl = outcome.tables["perplexity"]
    alloc = outcome.tables["allocation"]
    return (outcome.run_id, tuple(ppl["ppl"].tolist()), tuple(alloc["sparsity_target"].tolist()),
            tuple(alloc["sparsity_achieved"].tolist()))


def test_warm_runs_equal_cold_runs_bit_for_bit(tiny_dir, data_dir, fresh_dense_stats, monkeypatch):
    configs = _sweep(tiny_dir)
    cold = []
    for config in configs:
        fresh_dense_stats(f"cold-{len(cold)}")  # every cold run measures its own dense statistics
        cold.append(_run_capturing_masks(config, monkeypatch))
    fresh_dense_stats("warm")
    state = warm.enable()
    warm_runs = []
    for config in configs + configs[:1]:  # the first config again, after four jobs changed the model
        warm_runs.append(_run_capturing_masks(config, monkeypatch))
        state.restore()
    assert state.counters.loads == 1 and state.counters.reuses == len(configs)
    assert state.counters.text_hits >= 2 * len(configs)  # wiki and lee tokenized once
    for (c_out, c_masks), (w_out, w_masks) in zip(cold + cold[:1], warm_runs):
        assert _summary(w_out) == _summary(c_out)
        assert c_masks.keys() == w_masks.keys() and len(c_masks) == 14
        for name in c_masks:
            assert torch.equal(c_masks[name], w_masks[name]), name
    # the configs really differ: a runner that served stale masks would be caught above
    assert len({_summary(out)[1] for out, _ in cold}) == len(configs)
    assert warm_runs[1][0].timings.get("dense_stats") is not None            # OWL, seed 0: measured
    assert warm_runs[2][0].timings.get("dense_stats_reused") is not None     # DLP, same calibration: reused
    assert warm_runs[4][0].timings.get("dense_stats") is not None            # OWL, seed 1: measured again


def test_dense_statistics_are_keyed_by_the_calibration_seed(tiny_dir, fresh_dense_stats):
    loaded = load_model(str(tiny_dir))
    ids = [calibration_batch(loaded.tokenizer, "wiki", 4, 64, seed) for seed in (0, 1)]
    first = dense_stats.dense_norms(loaded, ids[0])
    other_seed = dense_stats.dense_norms(loaded, ids[1])
    assert first.origin == "computed" and other_seed.origin == "computed"  # seed 1 never reads seed 0's norms
    name = next(iter(first.norms))
    assert not torch.equal(first.norms[name], other_seed.norms[name])
    assert dense_stats.dense_norms(loaded, ids[0]).origin == "memory"
    dense_stats.forget_memory()
    again = dense_stats.dense_norms(loaded, ids[0])
    assert again.origin == "disk" and all(torch.equal(again.norms[k], first.norms[k]) for k in first.norms)
    # the batch size and the device type change the rounding: each has its own entry
    assert dense_stats.norms_key(loaded.fingerprint, ids[0], "cpu", 2) != first.key
    assert dense_stats.norms_key(loaded.fingerprint, ids[0], "cuda", 1) != first.key
    assert dense_stats.norms_key("0" * 16, ids[0], "cpu", 1) != first.key


def test_model_switch_frees_the_previous_model_and_restore_is_exact(tiny_dir, other_tiny_dir):
    state = warm.WarmState()
    a = state.load(str(tiny_dir), "float32", "cpu", None)
    dense = {k: v.clone() for k, v in a.model.state_dict().items()}
    with torch.no_grad():
        for param in a.model.parameters():
            param.mul_(0.5)  # what a job does to the weights
    again = state.load(str(tiny_dir), "float32", "cpu", None)
    assert again is a and state.counters.reuses == 1
    assert all(torch.equal(again.model.state_dict()[k], v) for k, v in dense.items())
    ref = weakref.ref(a.model)
    del a, again
    b = state.load(str(other_tiny_dir), "float32", "cpu", None)
    gc.collect()
    assert ref() is None  # the first model is gone, not held beside the second
    assert state.counters.loads == 2 and state.held is not None and state.held.loaded is b
    state.release()
    assert state.held is None


def test_runner_setting_is_validated(monkeypatch, data_dir):
    monkeypatch.setenv(RUNNER_ENV, "lukewarm")
    with pytest.raises(Exception, match="lukewarm.*accepted: warm, cold"):
        Worker(queue=JobQueue())


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slow
def test_a_failing_job_and_a_killed_runner_fail_alone(tiny_dir, data_dir, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("too short for a calibration window of 64 tokens")
    backend = LocalBackend()
    ok = _config(tiny_dir)
    fails = _config(tiny_dir, **{"calibration.dataset": f"text:{short}"})  # raises during the work
    slow = _config(tiny_dir, **{"evaluation.limit_windows": None, "evaluation.perplexity": ["wiki"]})
    after = _config(tiny_dir, **{"pruning.sparsity": 0.5})
    jobs = [backend.submit(c).job.job_id for c in (ok, fails, slow, after)]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    log = (data_dir / "worker.log").open("ab")
    worker = subprocess.Popen([sys.executable, "-m", "pruning", "worker", "--poll", "0.2", "--heartbeat-timeout", "30"],
                              cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        queue = JobQueue()
        _wait(lambda: job_status(jobs[2]).state == "running", 120, "the slow job to start")
        pid = _wait(lambda: queue.job_process(jobs[2])[1], 10, "the slow job's pid")
        os.kill(pid, signal.SIGKILL)  # its warm runner dies under it
        _wait(lambda: job_status(jobs[3]).state in ("succeeded", "failed"), 120, "the job after the killed one")
        states = [job_status(j) for j in jobs]
        assert [s.state for s in states] == ["succeeded", "failed", "failed", "succeeded"], [s.reason for s in states]
        assert "seqlen" in states[1].reason                      # the job's own error, one line
        assert "SIGKILL" in states[2].reason and "warm runner" in states[2].reason
        pids = [queue.job_process(j)[1] for j in jobs]
        assert pids[0] != pids[2] != pids[3]                     # a fresh runner after each failure
        runs = list_runs().set_index("run_id")["status"]
        assert runs[ok.run_id] == "succeeded" and runs[fails.run_id] == "failed" and runs[after.run_id] == "succeeded"
        assert "warm runner" in (data_dir / "jobs" / jobs[0] / "log.txt").read_text()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


def test_runners_started_together_measure_a_calibration_once(tiny_dir, fresh_dense_stats, monkeypatch):
    """Several workers on one GPU asked for the same dense statistics at once: one measures, the rest
    wait and read its file (on the H200, 8 workers measured the same norms 3 times before the lock)."""
    import threading

    loaded = load_model(str(tiny_dir))
    ids = calibration_batch(loaded.tokenizer, "wiki", 4, 64, 0)
    measured = []
    real = dense_stats.measure_dense_norms

    def slow_measure(*args, **kwargs):
        measured.append(threading.get_ident())
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(dense_stats, "measure_dense_norms", slow_measure)
    monkeypatch.setattr(dense_stats, "_remember", lambda key, norms: None)  # as if each thread were its own process
    origins = []
    threads = [threading.Thread(target=lambda: origins.append(dense_stats.dense_norms(loaded, ids).origin))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(measured) == 1 and sorted(origins) == ["computed", "disk", "disk", "disk"]


def test_a_damaged_statistics_file_is_measured_again(tiny_dir, fresh_dense_stats):
    loaded = load_model(str(tiny_dir))
    ids = calibration_batch(loaded.tokenizer, "wiki", 4, 64, 0)
    first = dense_stats.dense_norms(loaded, ids)
    dense_stats.forget_memory()
    dense_stats._path(first.key).write_bytes(b"not a torch file")
    again = dense_stats.dense_norms(loaded, ids)
    assert again.origin == "computed" and all(torch.equal(again.norms[k], first.norms[k]) for k in first.norms)


def test_attempts_say_which_cached_statistics_a_run_reused(tiny_dir, data_dir, fresh_dense_stats):
    from pruning.store import run_attempts

    owl = _config(tiny_dir, **{"allocation.strategy": "owl", "allocation.owl_lambda": 0.08})
    dlp = _config(tiny_dir, **{"allocation.strategy": "dlp", "allocation.dlp_alpha": 0.15})
    execute_run(owl)
    execute_run(dlp)  # the same calibration: OWL's dense pass serves DLP
    first, second = run_attempts(owl.run_id).iloc[-1], run_attempts(dlp.run_id).iloc[-1]
    assert first["computed"] == "dense_stats" and first["reused"] is None
    assert second["reused"] == "dense_stats" and second["computed"] is None


def test_a_runner_gives_cached_gpu_memory_back_after_every_job(tiny_dir, data_dir, fresh_dense_stats, tmp_path,
                                                                monkeypatch, caplog):
    """After a success and after a failure alike, serve_one empties the CUDA cache (here a fake allocator:
    no GPU on the test machine) and logs what it released; on one H100 idle runners that did not held
    14-16 GiB each and starved the other jobs."""
    from pruning.jobs.runner import serve_one

    GiB = 2**30
    reserved = [0]
    emptied: list[int] = []

    def empty_cache() -> None:
        emptied.append(reserved[0])
        reserved[0] = 1 * GiB  # what the allocator keeps for tensors still alive

    monkeypatch.setattr(warm, "cuda_in_use", lambda: True)
    monkeypatch.setattr(warm, "_cuda_reserved", lambda: reserved[0])
    monkeypatch.setattr(warm, "_empty_cuda_cache", empty_cache)
    short = tmp_path / "short.txt"
    short.write_text("too short for a calibration window of 64 tokens")
    jobs = {"ok": _config(tiny_dir), "fails": _config(tiny_dir, **{"calibration.dataset": f"text:{short}"})}
    state = warm.enable()
    rcs = {}
    for job_id, config in jobs.items():
        path = tmp_path / f"{job_id}.yaml"
        path.write_text(config.to_yaml())
        reserved[0] = 15 * GiB  # what the job's largest tensors left in the cache
        request = {"job_id": job_id, "config": str(path), "events": str(tmp_path / f"{job_id}.events"),
                   "log": str(tmp_path / f"{job_id}.log")}
        with caplog.at_level("INFO", logger="pruning.run.warm"):
            rcs[job_id] = serve_one(state, request)
    assert rcs["ok"] == 0 and rcs["fails"] != 0
    assert emptied == [15 * GiB, 15 * GiB]  # once after each job, the success and the failure
    lines = [r.getMessage() for r in caplog.records if "cached GPU memory" in r.getMessage()]
    assert len(lines) == 2 and all("released 14.00 GiB" in line and "15.00 -> 1.00 GiB" in line for line in lines)
    assert "after job ok" in lines[0] and "after job fails" in lines[1]


def test_releasing_memory_on_the_cpu_touches_no_cuda(monkeypatch):
    monkeypatch.setattr(warm, "cuda_in_use", lambda: False)
    monkeypatch.setattr(warm, "_empty_cuda_cache", lambda: pytest.fail("emptied a CUDA cache on the CPU"))
    assert warm.release_job_memory() == 0
