"""The spectra table: one tidy row per (model, block, matrix_type, name, source) with every metric.

``source = "weight"``: ESD of W^T W for every prunable linear weight of the decoder (Martin &
Mahoney 2021); ``source = "hessian"``: ESD of the layer-wise Hessian H = 2 X^T X / N from
calibration (the SparseGPT Hessian; matrices that read the same input share one spectrum).
Fits: ``pruning.spectral.powerlaw`` (Clauset et al. 2009 MLE + KS; AlphaPruning, Lu et al. 2024,
``alpha_peak`` / ``alpha_mid``); norms, ranks and entropies: ``pruning.spectral.metrics``.

Bad input never raises: a row whose matrix has NaN/Inf entries, is all zero, has fewer than
``MIN_EIGENVALUES`` eigenvalues or whose eigen-solver failed says so in ``status``
(``success | partial | failed``) and ``message``; the other rows are computed as usual.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from pruning.families import FamilySpec, MatrixRef, decoder_layers, family_for
from pruning.spectral.esd import default_eig_dtype, gram, nonfinite_message, symmetric_eigenvalues
from pruning.spectral.metrics import spectrum_metrics
from pruning.spectral.powerlaw import WW_EVALS_THRESH, fit_power_laws

log = logging.getLogger(__name__)

MIN_EIGENVALUES = 8  # weightwatcher 0.7.7 analyze(min_evals=8): fewer eigenvalues -> no fit
ID_COLUMNS = ("model", "block", "matrix_type", "name", "source")
METRIC_COLUMNS = (
    "alpha", "alpha_peak", "alpha_mid", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank",
    "entropy", "entropy_norm", "num_rank", "rank_ratio", "effective_rank", "D", "xmin", "n_tail",
    "n_eigs", "lambda_max",
)
FIT_DETAIL_COLUMNS = ("xmin_peak", "D_peak", "n_tail_peak", "xmin_mid", "D_mid", "n_tail_mid", "esd_peak")
COLUMNS = (
    ID_COLUMNS + ("n_rows", "n_cols", "numel") + METRIC_COLUMNS + FIT_DETAIL_COLUMNS
    + ("engine", "eig_dtype", "status", "message")
)
EIGENVALUE_COLUMNS = ("model", "name", "source", "eigenvalue")
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


@dataclass
class SpectraResult:
    """The tidy metrics table (``COLUMNS``) and the long eigenvalue table (``EIGENVALUE_COLUMNS``)."""

    table: pd.DataFrame
    eigenvalues: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(EIGENVALUE_COLUMNS)))

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


# --------------------------------------------------------------------------- weights


def _model_and_name(model_or_loaded: object, model_name: str | None) -> tuple[nn.Module, FamilySpec, str]:
    """(module, family, display name) of a ``LoadedModel`` or a bare Hugging Face causal LM."""
    if isinstance(model_or_loaded, nn.Module):
        model, family = model_or_loaded, family_for(model_or_loaded)
        default_name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    else:  # LoadedModel
        model, family = model_or_loaded.model, model_or_loaded.family  # type: ignore[attr-defined]
        default_name = model_or_loaded.name  # type: ignore[attr-defined]
    return model, family, str(model_name if model_name is not None else default_name)


def weight_matrices(model: nn.Module, family: FamilySpec, blocks: Sequence[int] | None = None) -> list[MatrixRef]:
    """The prunable matrices of ``blocks`` (default all), blocks in order, MATRIX_TYPES order within."""
    from pruning.families import block_matrices

    layers = decoder_layers(model, family)
    chosen = range(len(layers)) if blocks is None else blocks
    refs: list[MatrixRef] = []
    for i in chosen:
        if not 0 <= i < len(layers):
            raise ValueError(f"blocks: {i} is not a block index of this model (0..{len(layers) - 1})")
        refs.extend(block_matrices(layers[i], i, family))
    return refs


@torch.no_grad()
def compute_weight_spectra(
    model_or_loaded: object,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    blocks: Sequence[int] | None = None,
    progress: Progress | None = None,
    keep_eigenvalues: bool = True,
    model_name: str | None = None,
    batch_bytes: int = 256 << 20,
) -> SpectraResult:
    """Spectra of every prunable weight W ``(out, in)`` of the decoder (``blocks``: a subset).

    model_or_loaded: a ``LoadedModel`` or a Hugging Face causal LM. device: where Gram matrices and
    eigenvalues are computed (default: the weights' device); dtype: eigen-solver dtype (default
    float64 on every device, see ``pruning.spectral.esd``). Gram matrices of equal size are batched (at most
    ``batch_bytes`` per ``eigvalsh`` call). ``progress(done, total)`` counts matrices.
    """
    model, family, name = _model_and_name(model_or_loaded, model_name)
    refs = weight_matrices(model, family, blocks)
    dev = torch.device(device) if device is not None else (refs[0].module.weight.device if refs else torch.device("cpu"))
    dtype = dtype or default_eig_dtype(dev)
    jobs = [
        SpectrumJob(r.block, r.matrix_type, r.name, "weight", r.shape[0], r.shape[1], numel=r.numel) for r in refs
    ]
    sources = {k: ref.module.weight for k, ref in enumerate(refs)}
    _eigen_batches(jobs, sources, "weight", dev, dtype, batch_bytes, progress)
    return summarize_spectra(jobs, name, dtype, keep_eigenvalues)


def weight_spectra(model_or_loaded: object, **kwargs) -> pd.DataFrame:
    """The table of :func:`compute_weight_spectra` (same keyword arguments)."""
    return compute_weight_spectra(model_or_loaded, **kwargs).table


def _eigen_batches(
    jobs: list[SpectrumJob], sources: Mapping[int, Tensor], kind: str, device: torch.device, dtype: torch.dtype,
    batch_bytes: int, progress: Progress | None,
) -> None:
    """Fill ``jobs[k].eigenvalues`` for every k in ``sources`` (weights or Hessians), batching
    matrices of equal Gram size into one ``eigvalsh`` call; failures are recorded per job."""
    total = len(jobs)
    done = total - len(sources)
    pending: dict[int, list[tuple[int, Tensor]]] = {}
    itemsize = torch.empty((), dtype=dtype).element_size()

    def flush(m: int) -> None:
        nonlocal done
        group = pending.pop(m, [])
        if not group:
            return
        try:
            eigs = symmetric_eigenvalues(torch.stack([g for _, g in group]))  # (B, m)
            for (k, _), e in zip(group, eigs):
                jobs[k].eigenvalues = e
        except RuntimeError as exc:  # includes torch.linalg.LinAlgError: retry one by one
            log.warning("batched eigvalsh failed (%s); retrying %d matrices one by one", exc, len(group))
            for k, g in group:
                try:
                    jobs[k].eigenvalues = symmetric_eigenvalues(g)
                except RuntimeError as one_exc:
                    jobs[k].failed = f"eigvalsh failed: {one_exc}"
        done += len(group)
        if progress is not None:
            progress(done, total)

    for k, tensor in sources.items():
        bad = nonfinite_message(tensor, kind)
        if bad is not None:
            jobs[k].failed = bad
            done += 1
            continue
        mat = gram(tensor.to(device), dtype) if kind == "weight" else tensor.detach().to(device, dtype)
        m = mat.shape[-1]
        pending.setdefault(m, []).append((k, mat))
        if len(pending[m]) * m * m * itemsize >= batch_bytes:
            flush(m)
    for m in list(pending):
        flush(m)
    if progress is not None:
        progress(total, total)


# --------------------------------------------------------------------------- Hessians

_LLAMA_SUFFIX = {
    "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate", "up_proj": "up", "down_proj": "down",
}
_BLOCK_INDEX = re.compile(r"\.(\d+)\.")


def _parse_name(name: str) -> tuple[int, str]:
    """(block, matrix_type) from a module name like ``model.layers.3.self_attn.q_proj``."""
    match = _BLOCK_INDEX.search(name)
    last = name.rsplit(".", 1)[-1]
    return (int(match.group(1)) if match else -1), _LLAMA_SUFFIX.get(last, last)


def _shared_groups(hessians: Mapping[str, Tensor]) -> list[list[str]]:
    """Names grouped by identical Hessian (same tensor object, or equal values and shape)."""
    groups: list[list[str]] = []
    reps: list[Tensor] = []
    for name, H in hessians.items():
        for group, rep in zip(groups, reps):
            if H is rep or (H.shape == rep.shape and H.device == rep.device and torch.equal(H, rep)):
                group.append(name)
                break
        else:
            groups.append([name])
            reps.append(H)
    return groups


@torch.no_grad()
def compute_hessian_spectra(
    hessians: Mapping[str, Tensor],
    *,
    model: str = "",
    matrix_info: Mapping[str, tuple[int, str]] | None = None,
    shared: Sequence[Sequence[str]] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: Progress | None = None,
    keep_eigenvalues: bool = True,
) -> SpectraResult:
    """Spectra of layer-wise Hessians H = 2 X^T X / N ``(in, in)`` given as {module name: H}.

    Matrices that read the same input (q/k/v, gate/up) share one Hessian: its eigenvalues are
    computed once and one row is emitted per matrix. ``shared`` lists such name groups (default:
    detected — same tensor object or equal values). ``matrix_info``: {name: (block, matrix_type)}
    (default: parsed from LLaMA-style names). ``progress(done, total)`` counts unique Hessians.
    """
    groups = [list(g) for g in shared] if shared is not None else _shared_groups(hessians)
    covered = {n for g in groups for n in g}
    groups += [[n] for n in hessians if n not in covered]
    first = next(iter(hessians.values()), None)
    dev = torch.device(device) if device is not None else (first.device if first is not None else torch.device("cpu"))
    dtype = dtype or default_eig_dtype(dev)
    input_eps = {
        name: torch.finfo(H.dtype).eps if H.is_floating_point() else 0.0 for name, H in hessians.items()
    }
    rep_jobs: list[SpectrumJob] = []
    sources: dict[int, Tensor] = {}
    for k, group in enumerate(groups):
        H = hessians[group[0]]
        block, mtype = (matrix_info or {}).get(group[0]) or _parse_name(group[0])
        rep_jobs.append(SpectrumJob(block, mtype, group[0], "hessian", H.shape[0], H.shape[-1]))
        if H.ndim != 2 or H.shape[0] != H.shape[1]:
            rep_jobs[-1].failed = f"Hessian of {group[0]} is not square: shape {tuple(H.shape)}"
        else:
            sources[k] = H
    _eigen_batches(rep_jobs, sources, "hessian", dev, dtype, 256 << 20, progress)
    jobs: list[SpectrumJob] = []
    for group, rep in zip(groups, rep_jobs):
        for name in group:
            block, mtype = (matrix_info or {}).get(name) or _parse_name(name)
            jobs.append(SpectrumJob(block, mtype, name, "hessian", rep.n_rows, rep.n_cols,
                                    eigenvalues=rep.eigenvalues, failed=rep.failed, input_eps=input_eps[group[0]]))
    return summarize_spectra(jobs, model, dtype, keep_eigenvalues)


def hessian_spectra_from_matrices(hessians: Mapping[str, Tensor], **kwargs) -> pd.DataFrame:
    """The table of :func:`compute_hessian_spectra` (same keyword arguments)."""
    return compute_hessian_spectra(hessians, **kwargs).table


# --------------------------------------------------------------------------- views


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


@dataclass
class EsdPlot:
    """Histogram of log10(lambda) and the fitted power law, ready to draw.

    bin_edges: ``(bins+1,)`` log10 edges; counts, density: ``(bins,)`` (density of log10 lambda);
    fit_counts, fit_density: ``(bins,)`` expected under the fit (NaN below xmin);
    the fit: p(lambda) = (alpha-1)/xmin (lambda/xmin)^-alpha on lambda >= xmin, weight n_tail/n.
    """

    bin_edges: np.ndarray
    counts: np.ndarray
    density: np.ndarray
    fit_counts: np.ndarray
    fit_density: np.ndarray
    alpha: float
    xmin: float
    n_tail: int

    def to_frame(self) -> pd.DataFrame:
        """One row per bin: left, right, centre (log10), counts, density, fit_counts, fit_density."""
        return pd.DataFrame({
            "log10_left": self.bin_edges[:-1], "log10_right": self.bin_edges[1:],
            "log10_center": 0.5 * (self.bin_edges[:-1] + self.bin_edges[1:]),
            "count": self.counts, "density": self.density, "fit_count": self.fit_counts, "fit_density": self.fit_density,
        })


def esd_plot(eigenvalues: np.ndarray | Tensor, alpha: float, xmin: float, bins: int = 100) -> EsdPlot:
    """Histogram of log10 of the positive eigenvalues ``(n,)`` and the power-law fit (alpha, xmin).

    Expected counts per bin: n_tail * [(lo/xmin)^(1-alpha) - (hi/xmin)^(1-alpha)] for the part
    of each bin above xmin (the fitted CCDF, Clauset et al. 2009 eq. 2.7).
    """
    values = np.asarray(eigenvalues.detach().cpu() if isinstance(eigenvalues, Tensor) else eigenvalues, dtype=np.float64)
    values = values[values > 0]
    if values.size == 0:
        edges = np.linspace(0.0, 1.0, bins + 1)
        zeros = np.zeros(bins)
        return EsdPlot(edges, zeros, zeros, np.full(bins, np.nan), np.full(bins, np.nan), alpha, xmin, 0)
    logs = np.log10(values)
    counts, edges = np.histogram(logs, bins=bins)
    widths = np.diff(edges)
    density = counts / (values.size * widths)
    fit_counts = np.full(bins, np.nan)
    n_tail = int((values >= xmin).sum()) if math.isfinite(xmin) else 0
    if math.isfinite(alpha) and alpha > 1 and math.isfinite(xmin) and xmin > 0 and n_tail:
        lo = np.maximum(10.0 ** edges[:-1], xmin)
        hi = 10.0 ** edges[1:]
        inside = hi > xmin
        ccdf = lambda v: (v / xmin) ** (1.0 - alpha)  # noqa: E731
        fit_counts[inside] = n_tail * (ccdf(lo[inside]) - ccdf(hi[inside]))
    fit_density = fit_counts / (values.size * widths)
    return EsdPlot(edges, counts.astype(np.float64), density, fit_counts, fit_density, alpha, xmin, n_tail)


def esd_plot_for(result: SpectraResult, name: str, source: str = "weight", rule: str = "alpha", bins: int = 100) -> EsdPlot:
    """:func:`esd_plot` of one matrix of a result with stored eigenvalues; ``rule``: ``alpha`` |
    ``alpha_peak`` | ``alpha_mid`` picks which fit's (alpha, xmin) is drawn."""
    xmin_col = {"alpha": "xmin", "alpha_peak": "xmin_peak", "alpha_mid": "xmin_mid"}
    if rule not in xmin_col:
        raise ValueError(f"rule: {rule!r} is invalid; accepted: {', '.join(xmin_col)}")
    row = result.table[(result.table["name"] == name) & (result.table["source"] == source)]
    if row.empty:
        raise ValueError(f"name: no {source} row for {name!r}")
    eig = result.eigenvalues
    values = eig[(eig["name"] == name) & (eig["source"] == source)]["eigenvalue"].to_numpy()
    return esd_plot(values, float(row[rule].iloc[0]), float(row[xmin_col[rule]].iloc[0]), bins)
