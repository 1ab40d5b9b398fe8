"""Spectral metrics of weights and layer-wise Hessians (heavy-tailed self-regularization).

Martin & Mahoney 2021 (JMLR, "Implicit self-regularization in deep neural networks"): power-law
fits of the ESD of W^T W; Clauset, Shalizi & Newman 2009: power-law MLE with KS-chosen xmin;
Lu et al. 2024 (AlphaPruning): layer-wise sparsity from alpha. See docs/spectra.md.

Public API: :func:`weight_spectra` / :func:`compute_weight_spectra`,
:func:`hessian_spectra_from_matrices` / :func:`compute_hessian_spectra`, :func:`hessian_spectra`
(calibration), :func:`pivot_for_allocation`, :func:`esd_plot`.

Pure: tensors and models in, tables out. The package imports nothing of the results store, duckdb
or the run config (a test holds it); reusing and publishing spectra sets is the run's business,
:mod:`pruning.run.spectra_cache` (and :mod:`pruning.run.spectra_backfill` for runs stored before sets
existed). The names load lazily (PEP 562), so ``import pruning.spectral.powerlaw`` loads the kernel
alone, without pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "hessian_eigenvalues": "esd", "weight_eigenvalues": "esd",
    "compute_hessian_spectra": "hessian", "hessian_spectra": "hessian", "hessian_spectra_from_matrices": "hessian",
    "EsdPlot": "plot", "esd_plot": "plot", "esd_plot_for": "plot",
    "PowerLawFits": "powerlaw", "TailFit": "powerlaw", "fit_at_xmin": "powerlaw", "fit_power_laws": "powerlaw",
    "COLUMNS": "columns", "METRIC_COLUMNS": "columns", "SpectraResult": "summary", "pivot_for_allocation": "summary",
    "compute_weight_spectra": "weights", "weight_spectra": "weights",
}
_SUBMODULES = ("columns", "esd", "hessian", "metrics", "plot", "powerlaw", "summary", "weights", "ww_engine")

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(_SUBMODULES))


