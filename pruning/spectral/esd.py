"""Empirical spectral densities: eigenvalues of W^T W (weights) or of a Hessian H = 2 X^T X / N.

Martin & Mahoney 2021 ("Implicit self-regularization in deep neural networks", JMLR) study the
ESD of the correlation matrix X = W^T W of a layer W ``(out, in)``: its eigenvalues are the
squared singular values lambda_i = sigma_i^2. Here they come from ``torch.linalg.eigvalsh`` of the
smaller Gram matrix (``W W^T`` when out < in, else ``W^T W``; both have the same non-zero
spectrum), so there are min(out, in) eigenvalues, ascending. This is several times faster than an
SVD; the price is an absolute error of about eps * lambda_max on each eigenvalue (eigenvalues below
that level are rounding noise and are clamped at zero), irrelevant for tail fits and norms.
"""

from __future__ import annotations

import torch
from torch import Tensor


def default_eig_dtype(device: torch.device | str) -> torch.dtype:
    """float64 on CPU (exact enough for every metric); float32 on GPU (DESIGN.md: 85 ms per
    4096 x 4096 on an H200)."""
    return torch.float64 if torch.device(device).type == "cpu" else torch.float32


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
