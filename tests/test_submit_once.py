"""Exactly-once submission (issue 19): any number of concurrent submits of one config, from
separate processes, make one job, and a worker turns it into one run.

The submitting processes are started first and then released together by a barrier, so their
dedupe lookups and inserts overlap. A control with the old, split lookup-then-insert (a short
pause between them) shows that this harness does see duplicates when the two are not one
transaction.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pruning.config.run_config import RunConfig
from pruning.jobs import JobQueue, LocalBackend
from pruning.jobs.local import dedupe, new_job_id
from pruning.paths import REPO_ROOT

N_SUBMITS = 10


def tiny_config(model_dir: Path) -> RunConfig:
    """Magnitude pruning of the tiny model, one 32-token perplexity window on a short text."""
    return RunConfig().with_overrides({
        "model.name": str(model_dir), "pruning.method": "magnitude", "pruning.sparsity": 0.3,
        "calibration.nsamples": 2, "calibration.seqlen": 32, "evaluation.limit_windows": 1,
        "evaluation.seqlen": 32, "evaluation.perplexity": [f"text:{model_dir.parent / 'eval.txt'}"],
    })


def _submit_after_barrier(data_dir: str, config_yaml: str, barrier, results, naive: bool) -> None:
    """Child process: wait for every sibling, then submit once (``naive``: lookup, pause, insert)."""
    os.environ["PRUNING_LAB_DATA"] = data_dir
    config = RunConfig.model_validate(__import__("yaml").safe_load(config_yaml))
    backend = LocalBackend(JobQueue(), check_store=False)
    from pruning.run.validation import check_names

    check_names(config)  # warm the imports (torch), so the siblings' submits really overlap
    barrier.wait(timeout=60)
    if naive:
        found = dedupe(backend.queue, config, check_store=False)
        if found is None:
            time.sleep(0.05)
            job = backend.queue.enqueue(new_job_id(), config)
            results.put(("new", job.job_id))
        else:
            results.put(("existing", found.job.job_id))
        return
    result = backend.submit(config)
    results.put(("existing" if result.deduped else "new", result.job.job_id))


def concurrent_submits(data_dir: Path, config: RunConfig, naive: bool = False) -> list[tuple[str, str]]:
    """Submit ``config`` from N_SUBMITS processes released together; their answers."""
    ctx = mp.get_context("spawn")  # fresh interpreters: no shared SQLite handles, as separate CLIs
    barrier, results = ctx.Barrier(N_SUBMITS), ctx.Queue()
    procs = [ctx.Process(target=_submit_after_barrier, args=(str(data_dir), config.to_yaml(), barrier, results, naive))
             for _ in range(N_SUBMITS)]
    for proc in procs:
        proc.start()
    answers = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    return answers


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pruning.model.synthetic import save_tiny_model_dir

    root = tmp_path_factory.mktemp("tiny")
    (root / "eval.txt").write_text("The quick brown fox jumps over the lazy dog. " * 40)
    return save_tiny_model_dir(root / "model")


def test_ten_concurrent_submits_make_one_job_and_one_run(data_dir, tiny_model_dir) -> None:
    config = tiny_config(tiny_model_dir)
    answers = concurrent_submits(data_dir, config)
    queue = JobQueue()
    jobs = queue.list()
    assert len(jobs) == 1, [(j.job_id, j.state) for j in jobs]
    job = jobs[0]
    assert [kind for kind, _ in answers].count("new") == 1
    assert {job_id for _, job_id in answers} == {job.job_id}           # every caller got the one job
    assert sorted(p.name for p in (data_dir / "jobs").iterdir() if p.is_dir()) == [job.job_id]  # no stray dirs

    env = dict(os.environ, PRUNING_LAB_DATA=str(data_dir), PYTHONPATH=str(REPO_ROOT))
    worker = subprocess.run([sys.executable, "-m", "pruning", "worker", "--once", "--poll", "0.2"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=240)
    assert worker.returncode == 0, worker.stderr[-2000:]
    done = queue.get(job.job_id)
    assert done.state == "succeeded" and done.attempt == 1, done.reason
    from pruning.store import run_attempts

    attempts = run_attempts(config.run_id)
    assert len(attempts) == 1 and attempts["status"].tolist() == ["succeeded"]
    # and a later submit of the same config is answered by that job, not queued again
    again = LocalBackend(queue).submit(config)
    assert again.deduped and len(queue.list()) == 1


def test_the_harness_sees_duplicates_of_a_split_lookup_and_insert(data_dir) -> None:
    """Control: the old lookup-then-insert, released by the same barrier, queues more than one job
    (so the test above could fail)."""
    config = RunConfig().with_overrides({"pruning.method": "magnitude", "pruning.sparsity": 0.4})
    answers = concurrent_submits(data_dir, config, naive=True)
    assert [kind for kind, _ in answers].count("new") > 1
    assert len(JobQueue().list()) > 1


class FakeRayClient:
    """Records submissions; slow enough that concurrent callers overlap; can refuse."""

    def __init__(self, refuse: bool = False) -> None:
        self.submitted: list[str] = []
        self.refuse = refuse

    def submit_job(self, *, submission_id: str, **kwargs) -> str:
        time.sleep(0.05)
        if self.refuse:
            raise RuntimeError("cluster is full")
        self.submitted.append(submission_id)
        return submission_id


def test_ray_mirror_reserves_before_submitting_so_concurrent_submits_reach_ray_once(data_dir) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from pruning.jobs import BackendUnavailableError
    from pruning.jobs.ray_backend import RayBackend

    config = RunConfig().with_overrides({"pruning.method": "magnitude", "pruning.sparsity": 0.35})
    client = FakeRayClient()

    def submit(_: int):
        backend = RayBackend(address="http://fake:8265", queue=JobQueue(), check_store=False)
        backend._client = client
        return backend.submit(config)

    with ThreadPoolExecutor(N_SUBMITS) as pool:
        answers = list(pool.map(submit, range(N_SUBMITS)))
    jobs = JobQueue().list()
    assert len(client.submitted) == 1 and [j.job_id for j in jobs] == client.submitted
    assert sum(not a.deduped for a in answers) == 1 and {a.job.job_id for a in answers} == set(client.submitted)

    refused = RayBackend(address="http://fake:8265", queue=JobQueue(), check_store=False)
    refused._client = FakeRayClient(refuse=True)
    other = config.with_overrides({"pruning.sparsity": 0.36})
    with pytest.raises(BackendUnavailableError, match="cluster is full"):
        refused.submit(other)
    assert [j.run_id for j in JobQueue().list()] == [config.run_id]    # the reservation was removed
