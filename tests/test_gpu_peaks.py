"""Each run records the GPU memory its process held at most (env.peak_gpu_gib), and the store reads
the per-model peaks that scripts/gpu.sh caps its workers by (issue 26)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pruning.config.run_config import RunConfig
from pruning.run import pipeline
from pruning.run.pipeline import execute_run
from pruning.store.publish import publish_run
from pruning.store.queries import gpu_peaks, run_sql


def _publish(model: str, seed: int, peak: float | None, status: str = "succeeded") -> str:
    config = RunConfig().with_overrides({"model.name": model, "calibration.seed": seed})
    publish_run(config, status=status, env={"peak_gpu_gib": peak} if peak is not None else {},
                error="CUDA out of memory" if status == "failed" else None)
    return config.run_id


def test_gpu_peaks_per_model_from_succeeded_runs_that_recorded_one(data_dir: Path) -> None:
    _publish("gemma3-270m", 0, 9.5)
    top = _publish("gemma3-270m", 1, 12.25)
    _publish("gemma3-270m", 2, None)  # a CPU run, or one published before peaks were recorded
    _publish("gemma3-270m", 3, 70.0, status="failed")  # an out-of-memory failure says nothing of a worker's need
    _publish("smollm2-135m", 0, 4.0)
    peaks = gpu_peaks().set_index("model")
    assert peaks.loc["gemma3-270m", "runs"] == 2
    assert peaks.loc["gemma3-270m", "max_gib"] == pytest.approx(12.25)
    assert peaks.loc["gemma3-270m", "median_gib"] == pytest.approx(10.875)
    assert peaks.loc["gemma3-270m", "max_run_id"] == top
    assert peaks.loc["smollm2-135m", "max_gib"] == pytest.approx(4.0)


def _config(model_dir: Path) -> RunConfig:
    return RunConfig.from_dict({
        "model": {"name": str(model_dir)},
        "calibration": {"dataset": "wiki", "nsamples": 2, "seqlen": 32, "seed": 0},
        "pruning": {"method": "wanda", "sparsity": 0.5},
        "evaluation": {"perplexity": ["wiki"], "seqlen": 32, "limit_windows": 2},
    })


def test_a_run_records_its_own_peak_not_an_earlier_jobs(tiny_model_dir: Path, data_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm runner's earlier job left a high peak: the run resets it first and records what the
    allocator reports at its end, in GiB, in the stored env; a CPU-only run records none."""
    config = _config(tiny_model_dir)
    cpu = execute_run(config)
    assert cpu.peak_gpu_gib is None
    stored = run_sql(f"SELECT env_json FROM runs WHERE run_id = '{cpu.run_id}'")["env_json"].iloc[0]
    assert json.loads(stored)["peak_gpu_gib"] is None

    peak = {"bytes": 40 * 2**30}  # what an earlier job left
    monkeypatch.setattr(pipeline, "cuda_in_use", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a, **k: peak.update(bytes=int(3.25 * 2**30)))
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *a, **k: peak["bytes"])
    gpu = execute_run(config.with_overrides({"calibration.seed": 1}))
    assert gpu.peak_gpu_gib == pytest.approx(3.25)
    stored = run_sql(f"SELECT env_json FROM runs WHERE run_id = '{gpu.run_id}'")["env_json"].iloc[0]
    assert json.loads(stored)["peak_gpu_gib"] == pytest.approx(3.25)
