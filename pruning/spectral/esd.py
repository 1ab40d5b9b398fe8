"""Empirical spectral densities: eigenvalues of W^T W (weights) or of a Hessian H = 2 X^T X / N.

Martin & Mahoney 2021 ("Implicit self-regularization in deep neural networks", JMLR) study the
ESD of the correlation matrix X = W^T W of a layer W ``(out, in)``: its eigenvalues are the
squared singular values lambda_i = sigma_i^2. Here they come from ``torch.linalg.eigvalsh`` of the
smaller Gram matrix (``W W^T`` when out < in, else ``W^T W``; both have the same non-zero
spectrum), so there are min(out, in) eigenvalues, ascending. This is several times faster than an
SVD; the price is an absolute error of about eps * lambda_max on each eigenvalue (eigenvalues below
that level are rounding noise and are clamped at zero).

Precision: float64 on every device. Forming the Gram matrix squares the condition number, so in
float32 every eigenvalue below ~1e-7 * lambda_max is noise. Tail fits and norms do not care, but
AlphaPruning's ``alpha_peak`` does: its xmin is searched near the peak of a histogram of
log10(lambda) spanning min to max, and the noisy small eigenvalues move that histogram. On
SmolLM2-135M the float32 Gram path (the old GPU default) gave ``alpha_peak`` off by more than 1e-3
on 46 of 210 matrices and by 2.83 on block 11 ``o_proj`` (5.85 instead of 8.68); float64 agrees
with a float64 SVD of W within 1e-12 on all of them (bench/eig_solvers.py, docs/spectra.md).
float32 stays available as an explicit option (``eig_dtype``), recorded in every row it made.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pruning.config.precision import DEFAULT_EIG_DTYPE, EIG_DTYPE_NAMES, check_eig_dtype


EIG_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in EIG_DTYPE_NAMES}


def default_eig_dtype() -> torch.dtype:
    """The eigen-solver dtype used when none is given (:data:`pruning.config.precision.DEFAULT_EIG_DTYPE`,
    float64) — the same on every device by design: a spectrum, and every metric and allocation read
    from it, does not depend on where it was computed (so it takes no device)."""
    return EIG_DTYPES[DEFAULT_EIG_DTYPE]


def eig_dtype_from_name(name: str | None) -> torch.dtype:
    """``"float64"`` / ``"float32"`` (or None / ``"auto"`` for the default) -> torch dtype."""
    if name is None or name == "auto":
        return default_eig_dtype()
    return EIG_DTYPES[check_eig_dtype(name)]


def nonfinite_message(t: Tensor, what: str) -> str | None:
    """None if every entry is finite, else a message counting NaN and Inf entries."""
    if bool(torch.isfinite(t).all()):
        return None
    n_nan = int(torch.isnan(t).sum())
    n_inf = int(torch.isinf(t).sum())
    return f"{what} has {n_nan} NaN and {n_inf} Inf entries of {t.numel()}"


def gram(W: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """The smaller Gram matrix of W ``(out, in)`` in ``dtype``: ``(m, m)`` with m = min(out, in)."""
    Wd = W.detach().to(dtype)
    return Wd @ Wd.T if Wd.shape[0] < Wd.shape[1] else Wd.T @ Wd


def symmetric_eigenvalues(A: Tensor) -> Tensor:
    """Ascending eigenvalues of symmetric positive semi-definite matrices ``(..., m, m)`` ->
    ``(..., m)`` (``eigvalsh`` reads the lower triangle only); negative rounding noise is clamped to 0."""
    return torch.linalg.eigvalsh(A).clamp_min_(0.0)


def weight_eigenvalues(W: Tensor, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """lambda = sigma^2 of W ``(out, in)``: eigenvalues of W^T W, ``(min(out, in),)`` ascending,
    computed in ``dtype`` on ``device`` (default: W's device)."""
    if W.ndim != 2:
        raise ValueError(f"weight_eigenvalues: expected a 2-D weight (out, in), got shape {tuple(W.shape)}")
    if device is not None:
        W = W.to(device)
    return symmetric_eigenvalues(gram(W, dtype))


def hessian_eigenvalues(H: Tensor, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """Eigenvalues of a layer-wise Hessian H = 2 X^T X / N ``(in, in)`` -> ``(in,)`` ascending."""
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"hessian_eigenvalues: expected a square (in, in) matrix, got shape {tuple(H.shape)}")
    if device is not None:
        H = H.to(device)
    return symmetric_eigenvalues(H.detach().to(dtype))


def left_pad(spectra: list[Tensor]) -> Tensor:
    """Stack ascending spectra of different lengths into ``(B, n_max)``, left-padded with zeros
    (zeros are never fit candidates, see ``pruning.spectral.powerlaw``)."""
    n_max = max(s.numel() for s in spectra)
    out = torch.zeros(len(spectra), n_max, dtype=spectra[0].dtype, device=spectra[0].device)
    for row, s in enumerate(spectra):
        if s.numel():
            out[row, n_max - s.numel():] = s
    return out
