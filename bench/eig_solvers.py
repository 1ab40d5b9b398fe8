"""Which eigen-solver path for the weight spectra: accuracy against a float64 SVD of W, and speed.

Candidates (lambda = sigma^2 of W ``(out, in)``, ascending):

* ``gram-eigvalsh float64`` — ``eigvalsh`` of the smaller Gram matrix in float64 (the default);
* ``gram-eigvalsh float32`` — the same in float32 (the old GPU default; an explicit option now);
* ``svdvals float32`` / ``svdvals float64`` — singular values of W itself (no squared condition number).

Accuracy: every prunable matrix of the offline SmolLM2-135M, each candidate computed on
``--device``, all metrics and fits against the float64 SVD computed on the CPU (the
device-independent reference); a metric "agrees" when within 1e-3 (relative for scale-carrying
ones, see tests/test_spectra_precision.py). Speed: all 224 matrices of a random-weight LLaMA-7B
shape with every fit (``svdvals`` timed on ``--svd-blocks`` blocks and scaled to 32 when slower)::

    python bench/eig_solvers.py --device cuda            # on the H200 (both parts)
    python bench/eig_solvers.py --device cpu --skip-7b   # accuracy only, here
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench._results import markdown_table, write_section  # noqa: E402

log = logging.getLogger("bench.eig_solvers")

ABSOLUTE = ("alpha", "alpha_peak", "alpha_mid", "alpha_weighted", "log_norm", "log_spectral_norm", "entropy",
            "entropy_norm", "D")
RELATIVE = ("stable_rank", "effective_rank", "xmin", "lambda_max")
TOL = 1e-3


def _gram(dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    from pruning.spectral.esd import weight_eigenvalues

    return lambda W: weight_eigenvalues(W, dtype).to(torch.float64)


def _svd(dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda W: torch.linalg.svdvals(W.detach().to(dtype)).to(torch.float64).pow(2).flip(-1)


CANDIDATES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], torch.dtype]] = {
    "gram-eigvalsh float64": (_gram(torch.float64), torch.float64),
    "gram-eigvalsh float32": (_gram(torch.float32), torch.float32),
    "svdvals float32": (_svd(torch.float32), torch.float32),
    "svdvals float64": (_svd(torch.float64), torch.float64),
}


def spectra_with(refs, solve: Callable[[torch.Tensor], torch.Tensor], eig_dtype: torch.dtype,
                 device: torch.device) -> tuple[pd.DataFrame, float, float]:
    """(table, eigen seconds, fit seconds) of ``refs`` (pruning.model.families.MatrixRef) with one solver."""
    from pruning.spectral.summary import SpectrumJob, summarize_spectra

    jobs = []
    _sync(device)
    t0 = time.perf_counter()
    for ref in refs:
        job = SpectrumJob(ref.block, ref.matrix_type, ref.name, "weight", *ref.shape, numel=ref.numel)
        job.eigenvalues = solve(ref.module.weight.detach().to(device))
        jobs.append(job)
    _sync(device)
    eig_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = summarize_spectra(jobs, "bench", eig_dtype, keep_eigenvalues=False).table
    _sync(device)
    return table, eig_s, time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def agreement(ours: pd.DataFrame, ref: pd.DataFrame) -> dict[str, float]:
    """Matrices off by more than 1e-3 per metric, and the largest alpha_peak difference."""
    a, b = ours.set_index("name"), ref.set_index("name").loc[ours["name"]]
    out: dict[str, float] = {}
    worst = 0
    for col in ABSOLUTE + RELATIVE:
        diff = (a[col] - b[col]).abs()
        if col in RELATIVE:
            diff = diff / b[col].abs().clip(lower=1.0)
        off = int(((diff > TOL) | (a[col].isna() != b[col].isna())).sum())  # NaN on both sides agrees
        worst = max(worst, off)
        if col in ("alpha", "alpha_peak", "alpha_mid", "stable_rank"):
            out[f"{col} off"] = off
    out["any metric off (worst column)"] = worst
    out["max abs diff alpha_peak"] = float((a["alpha_peak"] - b["alpha_peak"]).abs().max())
    out["num_rank differs"] = int((a["num_rank"] != b["num_rank"]).sum())
    return out


def bench_accuracy(args: argparse.Namespace, device: torch.device) -> str:
    from pruning.model.load import load_model
    from pruning.spectral.weights import weight_matrices

    loaded = load_model(args.model)
    refs = weight_matrices(loaded.model, loaded.family)
    reference, ref_s, _ = spectra_with(refs, _svd(torch.float64), torch.float64, torch.device("cpu"))
    rows = []
    for name, (solve, dtype) in CANDIDATES.items():
        spectra_with(refs[:7], solve, dtype, device)  # warm-up (solver handles, allocator)
        table, eig_s, fit_s = spectra_with(refs, solve, dtype, device)
        rows.append({"candidate": name, "device": device.type, "matrices": len(table), **agreement(table, reference),
                     "eigen_s": eig_s, "fits_s": fit_s})
    return (f"Accuracy on every prunable matrix of {args.model} ({len(refs)} matrices), each candidate on "
            f"{device}, against float64 `svdvals` of W on the CPU ({ref_s:.1f} s there). 'off' counts matrices "
            f"whose metric differs by more than {TOL:g} (relative for stable_rank, effective_rank, xmin, "
            f"lambda_max). `num_rank` uses the eps of the solver's dtype, so it differs by definition "
            f"between precisions.\n\n{markdown_table(rows)}\n")


def bench_7b(args: argparse.Namespace, device: torch.device) -> str:
    from pruning.model.families import family_for
    from pruning.spectral import compute_weight_spectra
    from pruning.spectral.weights import weight_matrices
    from pruning.model.synthetic import llama7b_shape

    model = llama7b_shape(layers=32, dtype=torch.bfloat16, device=device)
    refs = weight_matrices(model, family_for(model))
    torch.linalg.eigvalsh(torch.eye(64, device=device, dtype=torch.float64) * 2.0)
    torch.linalg.svdvals(torch.eye(64, device=device))
    rows = []
    for dtype in (torch.float64, torch.float32):  # the product path, batched eigvalsh + fits
        _sync(device)
        t0 = time.perf_counter()
        table = compute_weight_spectra(model, device=device, dtype=dtype, keep_eigenvalues=False).table
        _sync(device)
        wall = time.perf_counter() - t0
        rows.append({"candidate": f"gram-eigvalsh {str(dtype)[6:]}", "matrices_timed": len(table), "wall_s_224": wall,
                     "scaled": "no", "fits_ok": int((table["status"] == "success").sum())})
    chosen = refs[: 7 * args.svd_blocks]
    for name in ("svdvals float32", "svdvals float64"):
        solve, dtype = CANDIDATES[name]
        table, eig_s, fit_s = spectra_with(chosen, solve, dtype, device)
        scale = len(refs) / len(chosen)
        rows.append({"candidate": name, "matrices_timed": len(chosen), "wall_s_224": (eig_s + fit_s) * scale,
                     "scaled": f"x{scale:g}" if scale != 1 else "no", "fits_ok": int((table["status"] == "success").sum())})
    return (f"Speed on a random-weight LLaMA-7B shape (32 blocks, 224 matrices, weights bfloat16) on {device}: "
            f"eigenvalues + every fit and metric. `gram-eigvalsh` is the engine's batched path "
            f"(`compute_weight_spectra`); `svdvals` one matrix at a time, timed on {len(chosen)} matrices "
            f"({args.svd_blocks} blocks) and scaled to 224. Target: 224 matrices <= 30 s.\n\n{markdown_table(rows)}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--svd-blocks", type=int, default=4, help="blocks of the 7B shape timed with svdvals")
    parser.add_argument("--skip-7b", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device)
    parts = []
    if not args.skip_accuracy:
        parts.append(bench_accuracy(args, device))
        print(parts[-1], flush=True)
    if not args.skip_7b:
        parts.append(bench_7b(args, device))
        print(parts[-1], flush=True)
    body = "\n".join(parts) + (
        "\nChoice: the default is the candidate that meets 1e-3 on every metric and matrix and is fastest "
        "within the 30 s target; see docs/spectra.md 'Precision'.\n")
    if not args.no_write:
        write_section(f"eig-solvers-{device.type}", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
