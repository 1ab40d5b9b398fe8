"""The ``ray`` backend against a real local Ray head with two fake GPUs (CPU machine).

Starts ``ray start --head --num-gpus 2`` on free ports with token authentication off
(``RAY_AUTH_MODE=disabled``), runs two jobs (the real ``python -m pruning run`` on a tiny random
model when available) through :class:`pruning.jobs.ray_backend.RayBackend`, reads status, logs and
progress back, and tears the head down with ``ray stop --force``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from pruning.config.run_config import RunConfig
from pruning.jobs import BackendUnavailableError, JobQueue, list_jobs
from pruning.jobs.base import count_events
from pruning.paths import REPO_ROOT

REAL_RUN = (REPO_ROOT / "pruning" / "cli" / "run.py").is_file()
RAY = Path(sys.executable).parent / "ray"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def ray_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for the Ray CLI and client: auth off, no usage stats, this venv first on PATH."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture()
def ray_head(ray_env: dict[str, str]):
    """A local Ray head with 2 fake GPUs; yields the Jobs API address."""
    if not RAY.is_file():
        pytest.skip("ray CLI not installed in this environment")
    gcs_port, dashboard_port = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")        # short: Ray's unix sockets live here
    cmd = [str(RAY), "start", "--head", "--num-gpus", "2", "--num-cpus", "2", "--port", str(gcs_port),
           "--dashboard-port", str(dashboard_port), "--include-dashboard=true", "--dashboard-host", "127.0.0.1",
           "--disable-usage-stats", "--temp-dir", temp_dir]
    started = subprocess.run(cmd, env=ray_env, capture_output=True, text=True, timeout=90)
    try:
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield f"http://127.0.0.1:{dashboard_port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=ray_env, capture_output=True, timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.ray
def test_two_jobs_through_ray_backend(data_dir: Path, ray_head: str, tmp_path: Path) -> None:
    from pruning.jobs.ray_backend import RayBackend

    if REAL_RUN:
        from pruning.model.synthetic import save_tiny_model_dir

        model = save_tiny_model_dir(tmp_path / "model")
        (tmp_path / "eval.txt").write_text("The quick brown fox jumps over the lazy dog. " * 10)
        base = RunConfig().with_overrides({
            "model.name": str(model), "pruning.method": "magnitude", "calibration.nsamples": 2,
            "calibration.seqlen": 32, "evaluation.limit_windows": 1, "evaluation.seqlen": 32,
            "evaluation.perplexity": [f"text:{tmp_path / 'eval.txt'}"]})
        entrypoint = None
    else:  # queue mechanics only, until the run command exists
        script = tmp_path / "fake_run.py"
        script.write_text(textwrap.dedent("""
            import json, sys, time
            open(sys.argv[2], "a").write(json.dumps({"t": time.time(), "stage": "done", "fraction": 1.0,
                                                     "message": "ok"}) + "\\n")
            print("run succeeded")
        """))
        base = RunConfig().with_overrides({"pruning.method": "magnitude"})
        entrypoint = [sys.executable, str(script), "{config}", "{events}"]
    backend = RayBackend(address=ray_head, python=sys.executable, num_gpus=1, entrypoint=entrypoint)
    jobs = [backend.submit(base.with_overrides({"pruning.sparsity": s})).job for s in (0.3, 0.6)]
    assert all(j.backend == "ray" and j.address == ray_head for j in jobs)
    final = [backend.wait(j.job_id, timeout_s=150) for j in jobs]
    logs = [backend.logs(j.job_id) for j in jobs]
    assert [j.state for j in final] == ["succeeded", "succeeded"], [(j.reason, log[-1500:]) for j, log in zip(final, logs)]
    assert all("succeeded" in log for log in logs)
    assert all(j.exit_code == 0 and j.started_at and j.finished_at for j in final)
    assert all(count_events(Path(j.job_dir) / "events.jsonl", "done") == 1 for j in final)
    assert backend.progress(final[0].job_id).fraction == 1.0
    assert {j.job_id for j in backend.list()} == {j.job_id for j in jobs}
    assert {j.job_id: j.state for j in list_jobs()} == {j.job_id: "succeeded" for j in jobs}
    # the same run again is deduplicated against the mirrored record
    again = backend.submit(base.with_overrides({"pruning.sparsity": 0.3}))
    assert again.deduped and again.job.job_id == jobs[0].job_id
    if REAL_RUN:
        from pruning.jobs.local import store_has_run

        assert all(store_has_run(j.run_id) for j in final)          # published into PRUNING_LAB_DATA


def test_ray_backend_without_cluster_names_the_address(data_dir: Path, ray_env: dict[str, str]) -> None:
    from pruning.jobs.ray_backend import RayBackend

    address = f"http://127.0.0.1:{free_port()}"
    t0 = time.time()
    with pytest.raises(BackendUnavailableError, match=f"no Ray cluster reachable at {address}"):
        RayBackend(address=address).submit(RunConfig())
    assert time.time() - t0 < 30
    assert JobQueue().list() == []                                   # nothing recorded


def test_cli_submit_to_unreachable_ray_is_a_clear_error(data_dir: Path, tmp_path: Path, ray_env, capsys) -> None:
    from pruning.cli import main

    config = tmp_path / "run.yaml"
    config.write_text("pruning: {method: magnitude}\n")
    address = f"http://127.0.0.1:{free_port()}"
    assert main(["submit", "--config", str(config), "--backend", "ray", "--address", address]) == 2
    assert address in capsys.readouterr().err
