"""Issue 27, item 8: failures of the machine (a full disk, a read-only data directory, an output path
that cannot exist) are one `error:` line, never a traceback; `verify --quick` never says "no problems"
after quarantining a file."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pruning.paths import REPO_ROOT


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _a_run(data_dir: Path) -> str:
    from pruning.config.run_config import RunConfig
    from pruning.store import publish_run

    cfg = RunConfig().with_overrides({"pruning.method": "wanda", "pruning.sparsity": 0.6})
    publish_run(cfg, tables={"perplexity": pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "seqlen": 128,
                                                          "n_windows": 4, "total_windows": 4, "ppl": 42.0}])})
    return cfg.run_id


@pytest.mark.parametrize("where", ["directory", "under-a-file"])
def test_report_out_that_cannot_be_a_file_is_an_input_error(where, data_dir, tmp_path, capsys) -> None:
    from pruning.cli import main

    run_id = _a_run(data_dir)
    if where == "directory":
        out = tmp_path / "report.html"
        out.mkdir()
        named = "is a directory"
    else:
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "report.html"
        named = "is a file, not a directory"
    assert main(["report", "--runs", run_id, "--out", str(out)]) == 2
    assert named in _one_line(capsys)


def test_a_full_disk_is_one_line(data_dir, monkeypatch, capsys) -> None:
    from pruning.cli import main
    from pruning.store import annotations

    run_id = _a_run(data_dir)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(data_dir / "store" / "annotations" / "x.json"))

    monkeypatch.setattr(annotations, "write_json_atomic", full)
    assert main(["notes", run_id, "a note"]) == 1
    line = _one_line(capsys)
    assert "No space left on device" in line and "disk is full" in line and "x.json" in line


def test_job_commands_on_a_read_only_data_directory_are_one_line(data_dir, tmp_path) -> None:
    """A real read-only bind mount (root in a private mount namespace): submit, job and cancel."""
    from pruning.config.run_config import RunConfig
    from pruning.jobs import LocalBackend

    if os.geteuid() != 0 or shutil.which("unshare") is None or \
            subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs root and a private mount namespace")
    job = LocalBackend(check_store=False).submit(RunConfig().with_overrides({"pruning.method": "magnitude"})).job
    config = tmp_path / "run.yaml"
    config.write_text("pruning: {method: magnitude, sparsity: 0.6}\n")
    py = f"{sys.executable} -m pruning"
    script = (f"mount --bind -o ro {data_dir} {data_dir} && for c in 'submit --config {config}' 'job {job.job_id}' "
              f"'cancel {job.job_id}'; do {py} $c; echo rc=$?; done")
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                         text=True, cwd=REPO_ROOT, timeout=300, env={**os.environ, "PRUNING_LAB_DATA": str(data_dir),
                                                                     "PYTHONPATH": str(REPO_ROOT)})
    assert "Traceback" not in res.stderr, res.stderr
    codes = [ln for ln in res.stdout.splitlines() if ln.startswith("rc=")]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert codes[0] != "rc=0" and codes[2] != "rc=0", (res.stdout, res.stderr)   # submit and cancel cannot write
    assert len(errors) == sum(c != "rc=0" for c in codes), res.stderr            # one line per failure
    assert all("read-only" in e or "readonly" in e for e in errors), errors


def test_verify_quick_reports_what_the_readers_quarantined(data_dir, capsys) -> None:
    """A damaged data page behind a good footer: a query quarantines the file (readers decode it when
    DuckDB fails); `verify --quick` then must not print "no problems" and exit 0."""
    from pruning.cli import main

    run_id = _a_run(data_dir)
    path = data_dir / "store" / "runs" / run_id / "perplexity.parquet"
    import struct

    data = bytearray(path.read_bytes())
    at = bytes(data).find(struct.pack("<d", 42.0))  # the ppl column's page: its header just before the value
    data[at - 12:at + 8] = b"\xff" * 20
    path.write_bytes(bytes(data))
    from pruning.store.health import check_parquet

    assert check_parquet(path, "perplexity", run_id) is None  # the footer and the bundle column still read
    res = subprocess.run([sys.executable, "-m", "pruning", "verify", "--quick"], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=300, env={**os.environ, "PRUNING_LAB_DATA": str(data_dir),
                                                          "PYTHONPATH": str(REPO_ROOT)})
    assert res.returncode == 1, (res.stdout, res.stderr)  # a fresh process: no verdict cached from a reader
    assert "no problems" not in res.stdout + res.stderr and "perplexity.parquet" in res.stdout + res.stderr
