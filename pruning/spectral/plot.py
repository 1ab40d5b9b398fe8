"""ESD plot data: the histogram of log10(lambda) of one spectrum and its fitted power law
(Clauset, Shalizi & Newman 2009), ready for any plotting library."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import Tensor

from pruning.spectral.summary import SpectraResult


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
