"""The GPU benchmarks (run this *on* the GPU machine; from here, through the `device` tool):

    BENCH_RESULTS_PATH=$OUT/RESULTS.gpu.md python3 -m bench.run_gpu      # on the H200
    .venv/bin/python -m bench.merge_results /path/to/RESULTS.gpu.md     # back here

Figures for a random-weight model of LLaMA-7B shape: spectra of all 224 matrices with all fits,
Wanda and SparseGPT at 70 % with 128 x 2048 calibration tokens (model offloaded to the CPU, one
block at a time on the GPU), and perplexity on 340k tokens at seqlen 2048; the eigen-solver
candidates (float64 / float32 Gram, float32 / float64 SVD) and whether pruning is bitwise repeatable;
then the pruning time
against samples per block call (`calibration.batch_size`) on SmolLM2-135M and LLaMA-7B shapes.
"""

from __future__ import annotations

from bench._suite import run_modules

GPU_BENCHMARKS: list[list[str]] = [
    ["bench.spectra", "--device", "cuda", "--synthetic-7b"],
    # eigen-solver candidates: accuracy on SmolLM2 (needs the offline model) and speed on the 7B shape
    ["bench.eig_solvers", "--device", "cuda", "--svd-blocks", "2"],
    ["bench.determinism", "--device", "cuda"],
    ["bench.prune", "--device", "cuda", "--offload", "--sparsity", "0.7"],
    ["bench.ppl_speed", "--device", "cuda"],
    # samples per block call (calibration.batch_size) on a SmolLM2-135M-sized model, where per-call
    # overhead dominates, and on LLaMA-7B shape, where it should not
    ["bench.prune", "--device", "cuda", "--sparsity", "0.7", "--layers", "30", "--hidden", "576", "--intermediate", "1536",
     "--heads", "9", "--vocab", "49152", "--dtype", "float32", "--calib-batch", "1,8,32", "--section", "prune_speed_small_batches"],
    ["bench.prune", "--device", "cuda", "--offload", "--sparsity", "0.7", "--methods", "wanda", "--calib-batch", "1,8",
     "--section", "prune_speed_7b_batches"],
]


def main() -> int:
    return run_modules(GPU_BENCHMARKS)


if __name__ == "__main__":
    raise SystemExit(main())
