"""Spectral metrics of weights and layer-wise Hessians (heavy-tailed self-regularization).

Martin & Mahoney 2021 (JMLR, "Implicit self-regularization in deep neural networks"): power-law
fits of the ESD of W^T W; Clauset, Shalizi & Newman 2009: power-law MLE with KS-chosen xmin;
Lu et al. 2024 (AlphaPruning): layer-wise sparsity from alpha. See docs/spectra.md.

Public API: :func:`weight_spectra` / :func:`compute_weight_spectra`,
:func:`hessian_spectra_from_matrices` / :func:`compute_hessian_spectra`, :func:`hessian_spectra`
(calibration), :func:`cached_weight_spectra`, :func:`pivot_for_allocation`, :func:`esd_plot`.
"""

from pruning.spectral.cache import SPECTRA_VERSION, cached_hessian_spectra, cached_weight_spectra
from pruning.spectral.esd import hessian_eigenvalues, weight_eigenvalues
from pruning.spectral.hessian import compute_hessian_spectra, hessian_spectra, hessian_spectra_from_matrices
from pruning.spectral.plot import EsdPlot, esd_plot, esd_plot_for
from pruning.spectral.powerlaw import PowerLawFits, TailFit, fit_at_xmin, fit_power_laws
from pruning.spectral.summary import COLUMNS, METRIC_COLUMNS, SpectraResult, pivot_for_allocation
from pruning.spectral.weights import compute_weight_spectra, weight_spectra

__all__ = [
    "COLUMNS", "METRIC_COLUMNS", "SPECTRA_VERSION", "EsdPlot", "PowerLawFits", "SpectraResult", "TailFit",
    "cached_hessian_spectra", "cached_weight_spectra", "compute_hessian_spectra", "compute_weight_spectra",
    "esd_plot", "esd_plot_for", "fit_at_xmin", "fit_power_laws", "hessian_eigenvalues", "hessian_spectra",
    "hessian_spectra_from_matrices", "pivot_for_allocation", "weight_eigenvalues", "weight_spectra",
]
