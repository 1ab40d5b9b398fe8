"""Benchmark of the spectral metrics (pruning.spectral), written to bench/RESULTS.md.

Default mode — every prunable matrix of the offline SmolLM2-135M (210 matrices): this project
vs weightwatcher 0.7.7 ``analyze()`` (defaults) on the same matrices, same thread budget: wall
time, speed ratio, and agreement (alpha within 0.02 on weightwatcher's successful rows; relative
error of stable_rank, log_spectral_norm, log_norm)::

    .venv/bin/python bench/spectra.py [--threads 2]

Synthetic mode — a random-weight model of LLaMA-7B shape (``pruning.model.synthetic.llama7b_shape``;
32 blocks = 224 matrices, all fits): wall time, matrices/s and peak GPU memory::

    .venv/bin/python bench/spectra.py --device cuda --synthetic-7b            # H200 target <= 30 s
    .venv/bin/python bench/spectra.py --device cpu --synthetic-7b --layers 1  # smoke test on CPU
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._results import markdown_table, write_section  # noqa: E402
from pruning.config.precision import EIG_DTYPE_NAMES  # noqa: E402

log = logging.getLogger("bench.spectra")


def _thread_limits(threads: int):
    """Same thread budget for torch (OpenMP) and numpy/scipy (OpenBLAS)."""
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=threads)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn/scipy stacks
        import contextlib

        return contextlib.nullcontext()


def agreement(ours, theirs) -> dict[str, float]:
    """Agreement of two spectra tables on weightwatcher's successful rows."""
    merged = ours.merge(theirs, on="name", suffixes=("", "_ww"))
    ok = merged[merged["status_ww"] == "success"]
    diff = (ok["alpha"] - ok["alpha_ww"]).abs()
    out = {
        "matrices": int(len(merged)),
        "ww_success": int(len(ok)),
        "alpha_within_0.02": float((diff <= 0.02).mean()),
        "alpha_max_abs_diff": float(diff.max()),
        "alpha_median_abs_diff": float(diff.median()),
        "alpha_peak_differs_from_ww_alpha_by_>0.02": float(((ok["alpha_peak"] - ok["alpha_ww"]).abs() > 0.02).mean()),
    }
    for col in ("stable_rank", "log_spectral_norm", "log_norm"):
        rel = ((ok[col] - ok[f"{col}_ww"]).abs() / ok[f"{col}_ww"].abs()).max()
        out[f"{col}_max_rel_err"] = float(rel)
    return out


def fit_stage_times(result) -> tuple[float, float]:
    """Seconds for our fits + metrics vs weightwatcher's ``WWFit`` on the same eigenvalues."""
    import contextlib
    import io

    from weightwatcher.WW_powerlaw import WWFit

    from pruning.spectral.summary import SpectrumJob, summarize_spectra

    table = result.table
    eigs = {name: torch.tensor(g["eigenvalue"].to_numpy()) for name, g in result.eigenvalues.groupby("name", sort=False)}
    jobs = [
        SpectrumJob(int(r.block), r.matrix_type, r.name, "weight", int(r.n_rows), int(r.n_cols), eigenvalues=eigs[r.name])
        for r in table.itertuples()
    ]
    t0 = time.perf_counter()
    summarize_spectra(jobs, "bench", torch.float64, keep_eigenvalues=False)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        for e in eigs.values():
            x = e.numpy()
            WWFit(x[x > 1e-5])
    return ours, time.perf_counter() - t0


def bench_offline(args: argparse.Namespace) -> None:
    from pruning.model.load import load_model
    from pruning.spectral import compute_weight_spectra
    from pruning.spectral.ww_engine import weightwatcher_spectra

    loaded = load_model(args.model)
    load = os.getloadavg()
    with _thread_limits(args.threads):
        compute_weight_spectra(loaded, blocks=[0], keep_eigenvalues=False)  # warm-up (lazy init, allocator)
        ours_times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            ours = compute_weight_spectra(loaded).table
            ours_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        full = compute_weight_spectra(loaded, dtype=torch.float32)
        f32_time = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = weightwatcher_spectra(loaded)
        ww_time = time.perf_counter() - t0
        fit_ours, fit_ww = fit_stage_times(compute_weight_spectra(loaded))
    ours_time = min(ours_times)
    f32_stats = agreement(full.table, theirs)
    stats = agreement(ours, theirs)
    ratio = ww_time / ours_time
    rows = [
        {"engine": "pruning-lab (Gram eigvalsh float64 + vectorized KS)", "matrices": len(ours),
         "wall_s": ours_time, "matrices_per_s": len(ours) / ours_time},
        {"engine": "weightwatcher 0.7.7 analyze() defaults", "matrices": len(theirs),
         "wall_s": ww_time, "matrices_per_s": len(theirs) / ww_time},
    ]
    rows.append({"engine": "pruning-lab, eigen-solver float32 (option)", "matrices": len(full.table),
                 "wall_s": f32_time, "matrices_per_s": len(full.table) / f32_time})
    agree_rows = [{"statistic": k, "value": v} for k, v in stats.items()]
    fit_rows = [
        {"stage": "power-law fit + metrics only, same eigenvalues", "ours_s": fit_ours, "weightwatcher_WWFit_s": fit_ww,
         "ratio": fit_ww / fit_ours},
    ]
    body = (
        f"Offline {args.model}, all prunable matrices, CPU, {args.threads} thread(s) for both engines "
        f"(torch + OpenBLAS), load average before the run {load[0]:.1f} (the machine is shared: times vary).\n"
        f"Ours: best of {args.repeat} ({', '.join(f'{t:.2f}' for t in ours_times)} s); weightwatcher: one run.\n\n"
        f"{markdown_table(rows)}\n\n**Speed ratio (weightwatcher / ours): {ratio:.1f}x** (target >= 20x)\n\n"
        f"Agreement on the same matrices (float64 eigen-solver, the CPU default):\n\n{markdown_table(agree_rows)}\n\n"
        f"With the float32 eigen-solver: alpha within 0.02 on {f32_stats['alpha_within_0.02']:.3f} of matrices, "
        f"max rel. err. stable_rank {f32_stats['stable_rank_max_rel_err']:.2g}, "
        f"log_norm {f32_stats['log_norm_max_rel_err']:.2g}.\n\n"
        f"Fitting stage alone (weightwatcher's per-candidate loop vs the vectorized KS scan):\n\n"
        f"{markdown_table(fit_rows)}\n\n"
        "End to end, both engines are dominated by dense linear algebra of the same O(m n^2) cost "
        "(weightwatcher: LAPACK SVD of W; ours: the Gram matrix W^T W plus a symmetric tridiagonal "
        "eigen-solve), so at equal thread budgets the end-to-end ratio stays far below the 20x target on "
        "CPU; the vectorized fitting stage is where the speed-up is (see docs/spectra.md).\n"
    )
    print(body)
    if not args.no_write:
        write_section("spectra", body)


def bench_synthetic_7b(args: argparse.Namespace) -> None:
    from pruning.spectral import compute_weight_spectra
    from pruning.model.synthetic import llama7b_shape

    device = torch.device(args.device)
    t0 = time.perf_counter()
    model = llama7b_shape(layers=args.layers, dtype=getattr(torch, args.weight_dtype), device=device)
    build_s = time.perf_counter() - t0
    eig_dtype = getattr(torch, args.eig_dtype) if args.eig_dtype != "auto" else None  # None: the default (float64)
    with _thread_limits(args.threads):
        if device.type == "cuda":  # solver/handle initialisation outside the timing
            torch.linalg.eigvalsh(torch.eye(64, device=device) * 2.0)
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base_mem = torch.cuda.memory_allocated(device)
        t0 = time.perf_counter()
        result = compute_weight_spectra(model, device=device, dtype=eig_dtype, model_name="synthetic-llama7b")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    table = result.table
    row = {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "blocks": args.layers, "matrices": len(table), "eig_dtype": table["eig_dtype"].iloc[0],
        "wall_s": wall, "matrices_per_s": len(table) / wall, "model_build_s": build_s,
        "success": int((table["status"] == "success").sum()),
    }
    if device.type == "cuda":
        row["peak_gpu_mem_GiB_above_weights"] = (torch.cuda.max_memory_allocated(device) - base_mem) / 2**30
        row["peak_gpu_mem_GiB_total"] = torch.cuda.max_memory_allocated(device) / 2**30
    body = (
        f"Random-weight LLaMA-7B shape (hidden 4096, MLP 11008), {args.layers} block(s), weights {args.weight_dtype}, "
        f"all fits (alpha, alpha_peak, alpha_mid) and metrics. Target on an H200: 224 matrices <= 30 s.\n\n"
        f"{markdown_table([row])}\n\nmedian alpha {np.nanmedian(table['alpha']):.3f}, "
        f"median alpha_peak {np.nanmedian(table['alpha_peak']):.3f}\n"
    )
    print(body)
    if not args.no_write:
        write_section("spectra-synthetic-7b", body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=2, help="runs of our engine (best is reported)")
    parser.add_argument("--synthetic-7b", action="store_true")
    parser.add_argument("--layers", type=int, default=32, help="blocks of the synthetic 7B model")
    parser.add_argument("--weight-dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--eig-dtype", default="auto", choices=("auto", *EIG_DTYPE_NAMES))
    parser.add_argument("--no-write", action="store_true", help="print only, do not touch RESULTS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.synthetic_7b:
        bench_synthetic_7b(args)
    else:
        bench_offline(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
