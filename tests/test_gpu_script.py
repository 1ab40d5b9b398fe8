"""scripts/gpu.sh sizes each phase's workers to GPU memory: min(WORKERS, floor(0.85 x total / per-worker
peak) x GPUs), with the total from nvidia-smi (a fake one here: no GPU on the test machine) and the peak
from the script's PEAK_GIB table. On 2026-12-05, 8 Gemma3-270m workers on one 80 GB H100 ran 20 of 37
jobs out of memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pruning.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu.sh"


def _fake_bin(tmp_path: Path, totals_mib: dict[str, int] | None) -> Path:
    """A bin directory with python3 (this interpreter) and an nvidia-smi that answers memory.total per
    ``-i GPU`` from ``totals_mib`` (None: it fails, as on a machine without a driver)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python3").symlink_to(sys.executable)
    if totals_mib is None:
        body = "echo 'NVIDIA-SMI has failed' >&2; exit 9"
    else:
        cases = " ".join(f"{gpu}) echo {mib} ;;" for gpu, mib in totals_mib.items())
        body = ('gpu=0; while [ $# -gt 0 ]; do [ "$1" = -i ] && gpu=$2; shift; done\n'
                f'case $gpu in {cases} *) echo "No devices were found"; exit 6 ;; esac')
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{body}\n")
    smi.chmod(0o755)
    return bin_dir


def _workers(tmp_path: Path, totals_mib: dict[str, int] | None, *args: str, gpus: str = "0") -> tuple[int, str]:
    env = dict(os.environ, PATH=f"{_fake_bin(tmp_path, totals_mib)}:{os.environ['PATH']}", GPUS=gpus)
    done = subprocess.run(["bash", str(SCRIPT), "workers", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip()), done.stderr


H100_MIB = 81559  # nvidia-smi's memory.total of an 80 GB H100


@pytest.mark.parametrize(("args", "gpus", "expected"), [
    (("8", "study:gemma3-270m"), "0", 6),                                 # 0.85 x 79.6 GiB / 10 GiB = 6.8
    (("8", "sweep:sweeps/study-validation-gemma3-270m.yaml"), "0", 6),   # the model read from the sweep's configs
    (("16", "precision"), "0", 11),                                       # SmolLM2: 6 GiB a worker
    (("8", "precision"), "0", 8),                                         # WORKERS is the upper bound
    (("16", "study:gemma3-270m"), "0 1", 6),                              # the smaller GPU (40 GiB) sets 3 per GPU
])
def test_workers_are_capped_by_memory(tmp_path, args, gpus, expected):
    count, why = _workers(tmp_path, {"0": H100_MIB, "1": 40960}, *args, gpus=gpus)
    assert count == expected, why
    assert f"workers: {expected}" in why


def test_workers_stay_as_asked_without_a_reading_or_a_measured_model(tmp_path):
    count, why = _workers(tmp_path, None, "8", "study:gemma3-270m")
    assert count == 8 and "not capped" in why
    count, why = _workers(tmp_path / "b", {"0": H100_MIB}, "8", "bench:llama-7b")
    assert count == 8 and "no measured per-worker peak for llama-7b" in why


def test_the_docs_record_the_cap_and_the_cost_that_led_to_it():
    docs = (REPO_ROOT / "docs" / "gpu.md").read_text()
    assert "20 of 37" in docs and "PEAK_GIB" in docs
