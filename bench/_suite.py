"""Run a list of benchmark modules one after another, each in its own process."""

from __future__ import annotations

import subprocess
import sys
import time


def run_modules(benchmarks: list[list[str]]) -> int:
    """``[[module, *args], ...]`` -> 0 if every benchmark exited 0, else 1 (failures listed)."""
    failed = []
    for module, *args in benchmarks:
        t0 = time.perf_counter()
        print(f"== {module} {' '.join(args)}", flush=True)
        rc = subprocess.call([sys.executable, "-m", module, *args])
        print(f"== {module}: exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(module)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0
