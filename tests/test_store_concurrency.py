"""Concurrent publishers with a live reader, and a publisher killed mid-write (SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from pruning.config.run_config import RunConfig
from pruning.store import list_runs, perplexity_cells, publish_run, run_sql, run_table
from pruning.store.catalog import snapshot

REPO = Path(__file__).resolve().parents[1]

PUBLISHER = r"""
import sys
import pandas as pd
from pruning.config.run_config import RunConfig
from pruning.store import publish_run
base, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    cfg = RunConfig().with_overrides({"seed": base + i, "pruning.sparsity": 0.7})
    publish_run(cfg, tables={
        "perplexity": pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "ppl": float(base + i)}]),
        "metrics": pd.DataFrame({"name": [f"m{k}" for k in range(20)], "value": [float(k) for k in range(20)]}),
    })
"""

HANGING_PUBLISHER = r"""
import sys, time
from pathlib import Path
import pandas as pd
import pyarrow.parquet as pq
import pruning.store.publish as publish
from pruning.config.run_config import RunConfig
calls = []
real = pq.write_table
def slow_write(table, where, **kw):
    real(table, where, **kw)
    calls.append(where)
    if len(calls) == 2:               # two files written, the others not yet: die here
        Path(sys.argv[1]).write_text("ready")
        time.sleep(600)
publish.pq.write_table = slow_write
cfg = RunConfig().with_overrides({"seed": 7})
publish.publish_run(cfg, tables={"perplexity": pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "ppl": 1.0}]),
                                 "metrics": pd.DataFrame({"name": ["a"], "value": [1.0]})})
"""


def _spawn(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_publishers_and_a_reader(data_dir: Path) -> None:
    procs = [_spawn(PUBLISHER, "1000", "50"), _spawn(PUBLISHER, "2000", "50")]
    reads, failures, last = 0, [], 0
    deadline = time.monotonic() + 120
    while any(p.poll() is None for p in procs):
        assert time.monotonic() < deadline, "publishers did not finish"
        try:
            runs = list_runs()
            assert runs["run_id"].is_unique and len(runs) >= last, "duplicated or vanished runs"
            # one snapshot: every visible run is complete (1 perplexity row and 20 metrics each)
            counts = run_sql("SELECT (SELECT count(*) FROM runs) AS r, (SELECT count(*) FROM perplexity) AS p, "
                             "(SELECT count(DISTINCT run_id) FROM runs) AS u, (SELECT count(*) FROM metrics) AS m").iloc[0]
            assert counts["r"] == counts["u"] == counts["p"] and counts["m"] == 20 * counts["r"], f"partial: {counts.to_dict()}"
            last = len(runs)
            reads += 1
        except Exception as exc:  # noqa: BLE001 - every reader failure is collected and reported
            failures.append(repr(exc))
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err[-2000:]
    assert not failures, failures[:3]
    assert reads > 3
    runs = list_runs()
    expected = {RunConfig().with_overrides({"seed": s, "pruning.sparsity": 0.7}).run_id
                for s in [*range(1000, 1050), *range(2000, 2050)]}
    assert len(runs) == 100 and set(runs["run_id"]) == expected
    assert sorted(perplexity_cells()["ppl"]) == [float(s) for s in [*range(1000, 1050), *range(2000, 2050)]]
    assert snapshot().manifest.generation >= 1  # publishers compacted on the way
    one = next(iter(expected))
    assert len(run_table(one, "metrics")) == 20


def test_sigkill_mid_write_leaves_nothing_visible(data_dir: Path) -> None:
    ready = data_dir / "ready"
    proc = _spawn(HANGING_PUBLISHER, str(ready))
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    staging = list((data_dir / "store" / "tmp").iterdir())
    assert len(staging) == 1 and any(staging[0].iterdir())  # half-written files exist ...
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert list_runs().empty and perplexity_cells().empty  # ... but no run is visible
    cfg = RunConfig().with_overrides({"seed": 7})
    res = publish_run(cfg, tables={"perplexity": pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "ppl": 2.0}])})
    assert res.attempt == 1
    assert list_runs()["run_id"].tolist() == [cfg.run_id] and perplexity_cells()["ppl"].tolist() == [2.0]
    assert not staging[0].exists()  # the dead publisher's staging directory was cleaned up
