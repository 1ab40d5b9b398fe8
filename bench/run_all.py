"""Run every CPU benchmark on this machine, one after another (`make bench`).

Each benchmark writes its own section of bench/RESULTS.md. GPU benchmarks: see run_gpu.py.
"""

from __future__ import annotations

from bench._suite import run_modules

CPU_BENCHMARKS: list[list[str]] = [
    ["bench.foundation"],
    ["bench.spectra"],
    ["bench.prune_quality"],
    ["bench.ppl_speed", "--device", "cpu", "--layers", "2", "--hidden", "256", "--intermediate", "688", "--heads", "4", "--vocab", "1000", "--tokens", "8192", "--seqlen", "512", "--no-write"],
    ["bench.allocation_quality"],
    ["bench.store"],
    ["bench.app"],
    ["bench.zeroshot"],
    ["bench.grid_timings"],
]


def main() -> int:
    return run_modules(CPU_BENCHMARKS)


if __name__ == "__main__":
    raise SystemExit(main())
