"""The GPU benchmarks (run this *on* the GPU machine; from here, through the `device` tool):

    BENCH_RESULTS_PATH=$OUT/RESULTS.gpu.md python3 -m bench.run_gpu      # on the H200
    .venv/bin/python -m bench.merge_results /path/to/RESULTS.gpu.md     # back here

Figures for a random-weight model of LLaMA-7B shape: spectra of all 224 matrices with all fits,
Wanda and SparseGPT at 70 % with 128 x 2048 calibration tokens (model offloaded to the CPU, one
block at a time on the GPU), and perplexity on 340k tokens at seqlen 2048.
"""

from __future__ import annotations

from bench._suite import run_modules

GPU_BENCHMARKS: list[list[str]] = [
    ["bench.spectra", "--device", "cuda", "--synthetic-7b"],
    ["bench.prune", "--device", "cuda", "--offload", "--sparsity", "0.7"],
    ["bench.ppl_speed", "--device", "cuda"],
]


def main() -> int:
    return run_modules(GPU_BENCHMARKS)


if __name__ == "__main__":
    raise SystemExit(main())
