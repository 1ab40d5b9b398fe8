"""Eigenvalues for the app's ESD plots (DESIGN.md "ESD": lambda = sigma^2 of W^T W; Hessian
H = 2 X^T X / N) and the fit warnings shown beside them. Eigenvalues come only from the results
store (the spectra sets a run published, ``pruning.store.queries.stored_eigenvalues``): the
dashboard never loads a model and never reads a cache directory, so a run made on another machine
(a Ray node) shows its weight and Hessian ESDs wherever its data directory is read."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pruning.store import queries


def run_eigenvalues(run_id: str, name: str, source: str, eig_dtype: str | None = None,
                    root: Path | str | None = None) -> np.ndarray | None:
    """Ascending eigenvalues ``(n,)`` float64 of matrix ``name`` behind run ``run_id``'s ``source``
    (weight | hessian) spectra row, in ``eig_dtype`` (default: the precision of that row; a float32
    spectrum never stands in for a float64 one), or None when the store holds none. A precision not in
    :data:`pruning.config.precision.EIG_DTYPE_NAMES` is a ValueError (the store's query checks it)."""
    return queries.stored_eigenvalues(run_id, name, source, eig_dtype, root)


WW_OVER_TRAINED_ALPHA = 2.0  # weightwatcher.constants.OVER_TRAINED_THRESH: alpha below -> "over-trained"
WW_UNDER_TRAINED_ALPHA = 6.0  # weightwatcher.constants.UNDER_TRAINED_THRESH: alpha above -> "under-trained"
WW_SMALL_N_EIGENVALUES = 20  # weightwatcher WW_powerlaw.SMALL_N_CUTOFF (pruning.spectral.powerlaw.WW_SMALL_N)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def fit_warning(alpha: Any, n_tail: Any) -> str:
    """Why a power-law fit should not be read at face value, or "" when nothing is wrong (shown
    in the ESD plot's title and the spectra table).

    weightwatcher 0.7.7 flags alpha < 2 as "over-trained" and alpha > 6 as "under-trained" (outside
    the range where heavy-tailed self-regularization reads the fit; Martin & Mahoney 2021); a tail
    of fewer than 20 eigenvalues (the size below which weightwatcher already treats a whole spectrum
    as a small sample) gives an uncertain alpha. NaN alpha: no fit."""
    alpha, n_tail = _float(alpha), _float(n_tail)
    if not math.isfinite(alpha):
        return "no fit"
    notes = []
    if alpha < WW_OVER_TRAINED_ALPHA:
        notes.append(f"α {alpha:.2f} < {WW_OVER_TRAINED_ALPHA:g} (weightwatcher: over-trained)")
    elif alpha > WW_UNDER_TRAINED_ALPHA:
        notes.append(f"α {alpha:.2f} > {WW_UNDER_TRAINED_ALPHA:g} (weightwatcher: under-trained, fit unreliable)")
    if math.isfinite(n_tail) and n_tail < WW_SMALL_N_EIGENVALUES:
        notes.append(f"only {int(n_tail)} tail eigenvalues (< {WW_SMALL_N_EIGENVALUES})")
    return "; ".join(notes)

