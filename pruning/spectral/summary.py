"""The spectra table: one tidy row per (model, block, matrix_type, name, source) with every metric.

``source = "weight"``: ESD of W^T W for every prunable linear weight of the decoder (Martin &
Mahoney 2021); ``source = "hessian"``: ESD of the layer-wise Hessian H = 2 X^T X / N from
calibration (the SparseGPT Hessian; matrices that read the same input share one spectrum).
Fits: ``pruning.spectral.powerlaw`` (Clauset et al. 2009 MLE + KS; AlphaPruning, Lu et al. 2024,
``alpha_peak`` / ``alpha_mid``); norms, ranks and entropies: ``pruning.spectral.metrics``.
This module holds the result type and :func:`summarize_spectra` (spectra -> rows; the columns:
``pruning.spectral.columns``); the spectra themselves come from ``pruning.spectral.weights`` and
``pruning.spectral.hessian``.

Bad input never raises: a row whose matrix has NaN/Inf entries, is all zero, has fewer than
``MIN_EIGENVALUES`` eigenvalues or whose eigen-solver failed says so in ``status``
(``success | partial | failed``) and ``message``; the other rows are computed as usual.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor

from pruning.spectral.columns import COLUMNS, EIGENVALUE_COLUMNS, FIT_DETAIL_COLUMNS, METRIC_COLUMNS
from pruning.spectral.metrics import spectrum_metrics
from pruning.spectral.powerlaw import WW_EVALS_THRESH, fit_power_laws

log = logging.getLogger(__name__)

MIN_EIGENVALUES = 8  # weightwatcher 0.7.7 analyze(min_evals=8): fewer eigenvalues -> no fit
Progress = Callable[[int, int], None]


@dataclass
class SpectrumJob:
    """One matrix to describe: identity, analysed shape and (once computed) its ascending spectrum."""

    block: int
    matrix_type: str
    name: str
    source: str  # "weight" | "hessian"
    n_rows: int  # analysed matrix shape: W (out, in) or H (in, in)
    n_cols: int
    numel: int | None = None  # parameters of the weight (weight rows)
    eigenvalues: Tensor | None = None  # (min(n_rows, n_cols),) ascending
    failed: str | None = None  # why no spectrum exists
    input_eps: float = 0.0  # eps of the dtype the analysed matrix itself was computed in (Hessians)


ORIGINS = ("computed", "cache", "store")


@dataclass
class SpectraResult:
    """The tidy metrics table (``COLUMNS``) and the long eigenvalue table (``EIGENVALUE_COLUMNS``).

    ``origin``: ``computed`` here, read from the local spectra ``cache`` or from the results
    ``store`` (``pruning.run.spectra_cache``); ``key``: the spectra set's name (``SpectraSetKey.name``)
    when it came through the cache functions, also in the table's ``spectra_key`` column."""

    table: pd.DataFrame
    eigenvalues: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(EIGENVALUE_COLUMNS)))
    origin: str = "computed"
    key: str | None = None

    def __post_init__(self) -> None:
        if self.origin not in ORIGINS:
            raise ValueError(f"origin: {self.origin!r} is invalid; accepted: {', '.join(ORIGINS)}")

    @property
    def reused(self) -> bool:
        """True when nothing was computed: the spectra came from the local cache or the store."""
        return self.origin != "computed"

    @staticmethod
    def concat(results: Sequence[SpectraResult]) -> SpectraResult:
        tables = [r.table for r in results if len(r.table)]
        eigs = [r.eigenvalues for r in results if len(r.eigenvalues)]
        return SpectraResult(
            pd.concat(tables, ignore_index=True) if tables else empty_table(),
            pd.concat(eigs, ignore_index=True) if eigs else pd.DataFrame(columns=list(EIGENVALUE_COLUMNS)),
        )


def empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=list(COLUMNS))


def summarize_spectra(
    jobs: Sequence[SpectrumJob], model: str, eig_dtype: torch.dtype, keep_eigenvalues: bool = True,
    max_elements: int | None = None,
) -> SpectraResult:
    """Fit and measure every job's spectrum (batched by spectrum length) and build the table.

    The eps of ``eig_dtype`` (or the job's ``input_eps`` if larger: a float32 Hessian is only that
    accurate) sets the numerical-rank tolerance (``pruning.spectral.metrics``).
    """
    eps = torch.finfo(eig_dtype).eps
    rows: dict[int, dict] = {}
    by_length: dict[int, list[int]] = {}
    for k, job in enumerate(jobs):
        rows[k] = _base_row(job, model, eig_dtype)
        if job.failed is not None:
            rows[k].update(status="failed", message=job.failed)
        else:
            assert job.eigenvalues is not None
            by_length.setdefault(job.eigenvalues.numel(), []).append(k)
    for n, members in by_length.items():
        x = torch.stack([jobs[k].eigenvalues.to(torch.float64) for k in members])  # (B, n)
        device = x.device
        budget = max_elements or ((1 << 26) if device.type == "cuda" else (1 << 18))
        n_eigs = torch.full((len(members),), n, device=device)
        max_dim = torch.tensor([max(jobs[k].n_rows, jobs[k].n_cols) for k in members], device=device)
        row_eps = torch.tensor([max(eps, jobs[k].input_eps) for k in members], dtype=torch.float64, device=device)
        metrics = {key: v.cpu().numpy() for key, v in spectrum_metrics(x, n_eigs, max_dim, row_eps).items()}
        if n >= MIN_EIGENVALUES:
            fits = fit_power_laws(x, max_elements=budget)
            fit_cols = {
                "alpha": fits.ww.alpha, "D": fits.ww.D, "xmin": fits.ww.xmin, "n_tail": fits.ww.n_tail,
                "alpha_peak": fits.peak.alpha, "xmin_peak": fits.peak.xmin, "D_peak": fits.peak.D,
                "n_tail_peak": fits.peak.n_tail, "alpha_mid": fits.mid.alpha, "xmin_mid": fits.mid.xmin,
                "D_mid": fits.mid.D, "n_tail_mid": fits.mid.n_tail, "esd_peak": fits.esd_peak,
            }
            fit_np = {key: v.cpu().numpy() for key, v in fit_cols.items()}
        else:
            fit_np = {}
        for b, k in enumerate(members):
            row = rows[k]
            row.update({key: float(v[b]) for key, v in metrics.items()})
            row["n_eigs"] = n
            row["num_rank"] = int(metrics["num_rank"][b])
            row.update({key: float(v[b]) for key, v in fit_np.items()})
            for key in ("n_tail", "n_tail_peak", "n_tail_mid"):
                row[key] = int(fit_np[key][b]) if fit_np else 0
            row["status"], row["message"] = _status(row, jobs[k])
            if row["status"] == "failed":
                row.update({c: math.nan for c in METRIC_COLUMNS + FIT_DETAIL_COLUMNS if c not in ("n_eigs", "lambda_max")})
                row.update(n_tail=0, n_tail_peak=0, n_tail_mid=0, num_rank=0)
                continue
            if math.isfinite(row["alpha"]) and math.isfinite(row["log_spectral_norm"]):
                row["alpha_weighted"] = row["alpha"] * row["log_spectral_norm"]
    table = pd.DataFrame([rows[k] for k in range(len(jobs))], columns=list(COLUMNS))
    eig_frames = []
    if keep_eigenvalues:
        for job in jobs:
            if job.eigenvalues is not None:
                values = job.eigenvalues.detach().to("cpu", torch.float64).numpy()
                eig_frames.append(pd.DataFrame({"model": model, "name": job.name, "source": job.source, "eigenvalue": values}))
    eigs = pd.concat(eig_frames, ignore_index=True) if eig_frames else pd.DataFrame(columns=list(EIGENVALUE_COLUMNS))
    return SpectraResult(table, eigs)


def _base_row(job: SpectrumJob, model: str, eig_dtype: torch.dtype) -> dict:
    row: dict = {c: math.nan for c in COLUMNS}
    row.update(
        model=model, block=job.block, matrix_type=job.matrix_type, name=job.name, source=job.source,
        n_rows=job.n_rows, n_cols=job.n_cols, numel=job.numel if job.numel is not None else math.nan,
        n_eigs=min(job.n_rows, job.n_cols), n_tail=0, n_tail_peak=0, n_tail_mid=0, num_rank=0,
        engine="pruning-lab", eig_dtype=str(eig_dtype).removeprefix("torch."), status="failed", message="",
    )
    return row


def _status(row: dict, job: SpectrumJob) -> tuple[str, str]:
    """(status, message) of a computed row: which metrics are missing and why."""
    n = row["n_eigs"]
    if not row["lambda_max"] > 0:
        return "failed", f"all-zero {job.source} matrix: every eigenvalue is 0, no metric is defined"
    notes = []
    if row["num_rank"] < n:
        notes.append(f"rank-deficient: numerical rank {row['num_rank']} of {n}")
    if n < MIN_EIGENVALUES:
        notes.append(f"only {n} eigenvalues; power-law fits need at least {MIN_EIGENVALUES} (weightwatcher min_evals)")
        return "partial", "; ".join(notes)
    missing = []
    n_ww = int((job.eigenvalues > WW_EVALS_THRESH).sum())
    if not math.isfinite(row["alpha"]):
        missing.append(
            f"alpha: {n_ww} eigenvalues > {WW_EVALS_THRESH:g}, " + ("too few to fit" if n_ww < 2 else "no xmin gives alpha > 1")
        )
    if not math.isfinite(row["alpha_peak"]):
        missing.append(
            f"alpha_peak: no xmin candidate in [log10(0.95*peak), 1.5*peak] (peak {row['esd_peak']:.4g}) with alpha > 1"
        )
    if not math.isfinite(row["alpha_mid"]):
        missing.append("alpha_mid: fewer than 2 positive eigenvalues")
    notes += missing
    return ("partial" if missing else "success"), "; ".join(notes)


def pivot_for_allocation(table: pd.DataFrame) -> pd.DataFrame:
    """One row per matrix (``model, block, matrix_type, name``, ``numel``): weight metrics as plain
    columns (``alpha``, ``alpha_peak``, ...), Hessian metrics prefixed ``hessian_`` (``hessian_alpha``
    ...), plus ``status`` / ``hessian_status``. Missing sources give NaN columns."""
    keys = ["model", "block", "matrix_type", "name"]
    metrics = list(METRIC_COLUMNS)
    weight = table[table["source"] == "weight"][keys + ["numel"] + metrics + ["status"]]
    hess = table[table["source"] == "hessian"][keys + metrics + ["status"]]
    hess = hess.rename(columns={c: f"hessian_{c}" for c in metrics + ["status"]})
    if len(weight) and len(hess):
        out = weight.merge(hess, on=keys, how="outer")
    elif len(weight):
        out = weight.assign(**{f"hessian_{c}": math.nan for c in metrics + ["status"]})
    else:
        out = hess.assign(numel=math.nan, **{c: math.nan for c in metrics + ["status"]})
    return out.sort_values(["model", "block", "name"], kind="stable").reset_index(drop=True)
