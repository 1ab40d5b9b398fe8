"""Figures of spectra, allocations and attention for the app's pages: a metric per block and matrix
type, sparsity per block, ESD histograms with their power-law fit, attention statistics per layer
and head. Tidy frames in, a ``plotly.graph_objects.Figure`` out; nothing touches Streamlit or the
store. The perplexity grid's figures are in :mod:`pruning.app_support.grid_plots`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruning.config.presets import MATRIX_TYPES


#: line dashes and marker shapes that tell overlaid series apart beyond their colour
OVERLAY_DASHES: tuple[str, ...] = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
OVERLAY_SYMBOLS: tuple[str, ...] = ("circle", "square", "diamond", "triangle-up", "x", "star")


def _block_axis(fig: go.Figure, n_blocks: int) -> None:
    """Integer block ticks (at most ~8 labels) on every x axis."""
    fig.update_xaxes(tick0=0, dtick=max(1, math.ceil(n_blocks / 8)))


def metric_by_block(
    spectra: pd.DataFrame, metric: str, series: str = "series", matrix_types: Sequence[str] = MATRIX_TYPES
) -> go.Figure:
    """``metric`` per block, one small panel per matrix type, one line per ``series`` value
    (run or model). ``spectra``: tidy rows with block, matrix_type, ``series`` and ``metric``."""
    types = [t for t in matrix_types if t in set(spectra["matrix_type"])]
    if not types:
        types = sorted(set(spectra["matrix_type"]))
    ncols = min(4, max(1, len(types)))
    nrows = math.ceil(len(types) / ncols)
    fig = make_subplots(
        rows=nrows, cols=ncols, subplot_titles=types, shared_xaxes=True, vertical_spacing=0.12, horizontal_spacing=0.05
    )
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    for k, (name, grp) in enumerate(spectra.groupby(series, sort=False)):
        color = palette[k % len(palette)]
        # a dash pattern and a marker shape of its own: runs with identical values stay visible on top of
        # each other (issue 29: three overlaid runs showed one colour)
        dash, symbol = OVERLAY_DASHES[k % len(OVERLAY_DASHES)], OVERLAY_SYMBOLS[k % len(OVERLAY_SYMBOLS)]
        for i, mtype in enumerate(types):
            sub = grp[grp["matrix_type"] == mtype].groupby("block", as_index=False)[metric].mean().sort_values("block")
            fig.add_trace(
                go.Scatter(
                    x=sub["block"],
                    y=sub[metric],
                    mode="lines+markers",
                    name=str(name),
                    legendgroup=str(name),
                    showlegend=i == 0,
                    line=dict(color=color, dash=dash),
                    marker=dict(size=5, symbol=symbol),
                ),
                row=i // ncols + 1,
                col=i % ncols + 1,
            )
    _block_axis(fig, spectra["block"].nunique())
    fig.update_xaxes(title_text="block", row=nrows)
    fig.update_layout(
        height=260 * nrows + 90,
        margin=dict(l=10, r=10, t=90, b=10),
        title=dict(text=f"{metric} per block", y=0.99, yanchor="top"),  # clear of the panel titles
        legend=dict(orientation="h", yanchor="top", y=-0.12, x=0),
    )
    return fig


def metric_with_allocation(
    spectra: pd.DataFrame, allocation: pd.DataFrame | None, metric: str, matrix_types: Sequence[str] = MATRIX_TYPES
) -> go.Figure:
    """Block-mean ``metric`` (left axis, one line per matrix type) and the run's
    parameter-weighted sparsity per block (right axis, bars) on the same block axis."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for mtype in [t for t in matrix_types if t in set(spectra["matrix_type"])]:
        sub = spectra[spectra["matrix_type"] == mtype].groupby("block", as_index=False)[metric].mean()
        fig.add_trace(
            go.Scatter(x=sub["block"], y=sub[metric], mode="lines", name=f"{metric} {mtype}"), secondary_y=False
        )
    if allocation is not None and not allocation.empty:
        per_block = sparsity_per_block(allocation)
        fig.add_trace(
            go.Bar(x=per_block["block"], y=per_block["sparsity"], name="sparsity", opacity=0.3, marker_color="#555"),
            secondary_y=True,
        )
        top = min(1.0, math.ceil(float(per_block["sparsity"].max()) * 10 + 1e-9) / 10) if len(per_block) else 1.0
        fig.update_yaxes(title_text="sparsity", secondary_y=True, range=[0.0, max(top, 0.1)], dtick=0.1,
                         tickformat=".0%")  # 0 %, 10 %, ... up to the next tenth above the largest bar
    fig.update_yaxes(title_text=metric, secondary_y=False)
    fig.update_xaxes(title_text="block")
    _block_axis(fig, spectra["block"].nunique())
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10), title=f"{metric} and allocated sparsity")
    return fig


def sparsity_per_block(allocation: pd.DataFrame) -> pd.DataFrame:
    """Parameter-weighted sparsity per block (achieved if recorded, else target)."""
    col = (
        "sparsity_achieved"
        if "sparsity_achieved" in allocation and allocation["sparsity_achieved"].notna().any()
        else "sparsity_target"
        if "sparsity_target" in allocation
        else "sparsity"
    )
    a = allocation.assign(_w=allocation["numel"].astype(float) if "numel" in allocation else 1.0)
    a = a.assign(_ws=a[col].astype(float) * a["_w"])
    out = a.groupby("block", as_index=False)[["_ws", "_w"]].sum()
    out["sparsity"] = out["_ws"] / out["_w"]
    return out[["block", "sparsity"]]


def sparsity_overlay(allocations: dict[str, pd.DataFrame]) -> go.Figure:
    """Per-block sparsity of several runs overlaid (one line per run)."""
    fig = go.Figure()
    for label, alloc in allocations.items():
        if alloc is None or alloc.empty:
            continue
        per_block = sparsity_per_block(alloc)
        fig.add_trace(go.Scatter(x=per_block["block"], y=per_block["sparsity"], mode="lines+markers", name=label))
    _block_axis(
        fig, max((a["block"].nunique() for a in allocations.values() if a is not None and not a.empty), default=1)
    )
    fig.update_layout(
        height=340,
        margin=dict(l=10, r=10, t=40, b=10),
        title="sparsity per block",
        xaxis_title="block",
        yaxis_title="sparsity",
    )
    return fig


def search_trace_chart(trace: pd.DataFrame) -> go.Figure:
    """A search's fitness against generation (``trace``: generation, fitness; EvoPress's KL divergence
    from the dense model on calibration windows, lower is better; log y)."""
    fig = go.Figure(go.Scatter(x=trace["generation"], y=trace["fitness"], mode="lines+markers",
                               name="parent fitness", hovertemplate="generation %{x}: KL %{y:.5f}<extra></extra>"))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=40, b=10), title="EvoPress search: fitness per generation",
                      xaxis_title="generation", yaxis_title="KL to the dense model (calibration)", yaxis_type="log")
    return fig


def esd_bins(eigenvalues: np.ndarray, bins: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Log-spaced bin edges ``(bins+1,)`` from the smallest to the largest positive eigenvalue and the
    count in each bin ``(bins,)``; every eigenvalue lands in a bin (the counts sum to n).

    The end edges are the extreme eigenvalues themselves: ``np.logspace(log10(lo), log10(hi))`` rounds
    them, and in about half of the panels the last edge fell just below λmax, which ``np.histogram`` then
    dropped (issue 29: layers.20.down_proj's λmax 505.9 was not drawn, the fit ran on over empty space)."""
    lam = np.asarray(eigenvalues, dtype=float)
    lam = lam[np.isfinite(lam) & (lam > 0)]
    lo, hi = float(lam.min()), float(lam.max())
    if hi <= lo:
        hi = lo * 10.0
    edges = np.logspace(np.log10(lo), np.log10(hi), bins + 1)
    edges[0], edges[-1] = lo, hi
    counts, _ = np.histogram(lam, bins=edges)
    return edges, counts


def esd_panel(
    fig: go.Figure,
    eigenvalues: np.ndarray,
    alpha: float | None,
    xmin: float | None,
    row: int,
    col: int,
    name: str,
    bins: int = 60,
) -> None:
    """Add one ESD (eigenvalues of W^T W or H) as a log-binned density on log-log axes, with the
    fitted power law p(λ) = (n_tail/n) (α-1)/xmin (λ/xmin)^-α drawn over [xmin, λmax] and xmin marked.

    Everything is placed in data units and the λ axis spans the data (a shape on a plotly log axis
    takes log10 units, so ``add_vline(x=xmin)`` would put xmin = 150 at 10^150): the xmin marker is a
    trace, and the axis range is set from the smallest and largest eigenvalue."""
    lam = np.asarray(eigenvalues, dtype=float)
    lam = lam[np.isfinite(lam) & (lam > 0)]
    if lam.size < 2:
        return
    lo, hi = float(lam.min()), float(lam.max())
    if hi <= lo:
        hi = lo * 10.0
    edges, counts = esd_bins(lam, bins)
    density = counts / (lam.size * np.diff(edges))
    centers = np.sqrt(edges[:-1] * edges[1:])
    keep = density > 0
    fig.add_trace(
        go.Scatter(x=centers[keep], y=density[keep], mode="markers", name=f"{name} ESD", marker=dict(size=5)),
        row=row,
        col=col,
    )
    y_lo, y_hi = float(density[keep].min()), float(density[keep].max())
    if (
        alpha is not None
        and xmin is not None
        and math.isfinite(alpha)
        and math.isfinite(xmin)
        and lo <= xmin <= hi
        and alpha > 1
    ):
        tail = lam[lam >= xmin]
        xs = np.logspace(np.log10(xmin), np.log10(hi), 50)
        ys = (tail.size / lam.size) * (alpha - 1) / xmin * (xs / xmin) ** (-alpha)
        fig.add_trace(
            go.Scatter(x=xs, y=ys, mode="lines", name=f"{name} fit α={alpha:.2f}", line=dict(dash="dash", width=2)),
            row=row,
            col=col,
        )
        fig.add_trace(
            go.Scatter(x=[xmin, xmin], y=[y_lo, y_hi], mode="lines", name=f"{name} xmin={xmin:.3g}",
                       line=dict(color="grey", dash="dot"), hovertemplate=f"xmin {xmin:.4g}<extra></extra>"),
            row=row,
            col=col,
        )
    pad = 0.05 * max(np.log10(hi) - np.log10(lo), 0.5)
    fig.update_xaxes(type="log", title_text="λ", range=[np.log10(lo) - pad, np.log10(hi) + pad], row=row, col=col)
    fig.update_yaxes(type="log", title_text="density", row=row, col=col)


def esd_figure(panels: Sequence[tuple[str, np.ndarray, float | None, float | None]]) -> go.Figure:
    """ESDs side by side (e.g. weight | Hessian): each panel (title, eigenvalues, alpha, xmin)."""
    fig = make_subplots(rows=1, cols=max(1, len(panels)), subplot_titles=[p[0] for p in panels])
    for i, (title, eig, alpha, xmin) in enumerate(panels):
        esd_panel(fig, eig, alpha, xmin, row=1, col=i + 1, name=title.split(" · ")[0])
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def attention_by_layer(
    attention: pd.DataFrame, statistic: str, reference: float | None = None, series: str = "series"
) -> go.Figure:
    """Mean of ``statistic`` over heads per block, one line per ``series`` (e.g. run / stage),
    with the notes' model average as a dashed reference line."""
    sub = attention[attention["statistic"] == statistic]
    fig = go.Figure()
    for name, grp in sub.groupby(series, sort=False):
        per = grp.groupby("block", as_index=False)["value"].mean().sort_values("block")
        fig.add_trace(go.Scatter(x=per["block"], y=per["value"], mode="lines+markers", name=str(name)))
    if reference is not None and math.isfinite(reference):
        fig.add_hline(y=reference, line=dict(dash="dash", color="grey"), annotation_text=f"notes avg {reference:.4g}")
    _block_axis(fig, sub["block"].nunique())
    fig.update_layout(
        height=320,
        margin=dict(l=10, r=10, t=40, b=10),
        title=f"{statistic} per layer",
        xaxis_title="block",
        yaxis_title=statistic,
    )
    return fig


def attention_heads(attention: pd.DataFrame, statistic: str, title: str = "") -> go.Figure:
    """Heatmap of ``statistic`` per layer (rows) and head (columns)."""
    sub = attention[(attention["statistic"] == statistic) & attention["head"].notna()]
    pivot = sub.pivot_table(index="block", columns="head", values="value", aggfunc="mean")
    fig = go.Figure(
        go.Heatmap(
            z=pivot.to_numpy(),
            x=[int(h) for h in pivot.columns],
            y=list(pivot.index),
            colorscale="Viridis",
            colorbar=dict(title=statistic),
        )
    )
    fig.update_layout(
        height=320,
        margin=dict(l=10, r=10, t=40, b=10),
        title=title or f"{statistic} per head",
        xaxis_title="head",
        yaxis_title="block",
    )
    return fig


def zeroshot_means_chart(means: pd.Series, metric: str) -> go.Figure:
    """One horizontal bar per run (``means``: run label -> mean ``metric`` over its tasks), best on top,
    the axis from 0 to the largest mean (a table of 86 runs as columns could not be read)."""
    ordered = means.dropna().sort_values()
    fig = go.Figure(go.Bar(x=ordered.to_numpy(), y=[str(i) for i in ordered.index], orientation="h",
                           marker_color="#4c78a8", hovertemplate="%{y}<br>%{x:.4f}<extra></extra>"))
    top = float(ordered.max()) if len(ordered) else 1.0
    fig.update_xaxes(title_text=f"mean {metric} over tasks", range=[0.0, top * 1.05], tickformat=".2f")
    fig.update_yaxes(automargin=True, tickfont=dict(size=11))
    fig.update_layout(height=max(220, 22 * len(ordered) + 80), margin=dict(l=10, r=10, t=30, b=10), showlegend=False)
    return fig
