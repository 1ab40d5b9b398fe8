"""Run every CPU benchmark on this machine, one after another (`make bench`).

Each benchmark writes its own section of bench/RESULTS.md. GPU benchmarks: see run_gpu.py.
"""

from __future__ import annotations

import subprocess
import sys
import time

CPU_BENCHMARKS: list[list[str]] = [
    ["bench.spectra"],
    ["bench.prune_quality"],
    ["bench.ppl_speed", "--device", "cpu", "--layers", "2", "--hidden", "256", "--intermediate", "688", "--heads", "4", "--vocab", "1000", "--tokens", "8192", "--seqlen", "512", "--no-write"],
    ["bench.allocation_quality"],
    ["bench.store"],
    ["bench.app"],
    ["bench.zeroshot"],
]


def main() -> int:
    failed = []
    for module, *args in CPU_BENCHMARKS:
        t0 = time.perf_counter()
        print(f"== {module} {' '.join(args)}", flush=True)
        rc = subprocess.call([sys.executable, "-m", module, *args])
        print(f"== {module}: exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(module)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
