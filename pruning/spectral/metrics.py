"""Norm, rank and entropy metrics of a spectrum (batched, pure tensor functions).

Definitions (DESIGN.md "The science"; weightwatcher 0.7.7 ``apply_norm_metrics`` for the norms):

* ``log_norm`` = log10(sum lambda) (log squared Frobenius norm; Martin & Mahoney 2021),
* ``log_spectral_norm`` = log10(lambda_max),
* ``stable_rank`` = sum lambda / lambda_max (Martin & Mahoney, arXiv:1810.01075),
* ``alpha_weighted`` = alpha * log10(lambda_max) (Martin, Peng & Mahoney 2021, Nature Comm.),
* spectral ``entropy`` of p = lambda / sum lambda in nats, ``entropy_norm`` = entropy / ln(rank)
  (0 for rank <= 1),
* ``num_rank``: lambda > lambda_max * max(rows, cols) * eps (``numpy.linalg.matrix_rank``'s
  tolerance applied to the Gram matrix, whose eigenvalues carry an absolute error of that size;
  eps of the dtype the eigenvalues — or, if coarser, the matrix itself (float32 Hessians) — were
  computed in), ``rank_ratio`` = num_rank / n_eigs,
* ``effective_rank`` = exp(entropy) (Roy & Vetterli 2007).
"""

from __future__ import annotations

import torch
from torch import Tensor


def spectrum_metrics(x: Tensor, n_eigs: Tensor, max_dim: Tensor, eps: float | Tensor) -> dict[str, Tensor]:
    """Metrics of each row of ``x`` ``(B, n)`` (ascending, non-negative, left-padded with zeros).

    n_eigs: ``(B,)`` true spectrum lengths (min dimension of each matrix); max_dim: ``(B,)`` the
    larger dimension (for the rank tolerance); eps: machine epsilon of the eigen-solver dtype
    (a float or ``(B,)``: the larger of that and the analysed matrix's own precision).
    Returns a dict of ``(B,)`` float64 tensors; rows whose spectrum is all zero get NaN/-inf norms
    (callers flag them).
    """
    x = x.to(torch.float64)
    total = x.sum(-1)  # (B,)
    lam_max = x[:, -1]  # ascending
    p = x / total.clamp_min(torch.finfo(x.dtype).tiny)[:, None]  # (B, n)
    plogp = torch.where(p > 0, p * p.clamp_min(torch.finfo(x.dtype).tiny).log(), torch.zeros_like(p))
    entropy = -plogp.sum(-1)
    tol = lam_max * max_dim.to(x.dtype) * eps
    num_rank = (x > tol[:, None]).sum(-1).to(x.dtype)
    log_rank = torch.where(num_rank > 1, num_rank.clamp_min(1).log(), torch.ones_like(num_rank))
    entropy_norm = torch.where(num_rank > 1, entropy / log_rank, torch.zeros_like(entropy))
    return {
        "lambda_max": lam_max,
        "log_norm": total.log10(),
        "log_spectral_norm": lam_max.log10(),
        "stable_rank": total / lam_max,
        "entropy": entropy,
        "entropy_norm": entropy_norm,
        "num_rank": num_rank,
        "rank_ratio": num_rank / n_eigs.to(x.dtype),
        "effective_rank": entropy.exp(),
    }

