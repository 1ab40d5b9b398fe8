"""Plotly figure builders for the app's pages. Each takes tidy DataFrames and returns a
``plotly.graph_objects.Figure``; none touches Streamlit or the store."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruning.app_support.formatting import format_delta, format_ppl
from pruning.app_support.grid import DENSE_COLUMN, PerplexityGrid, log_color_values
from pruning.presets import MATRIX_TYPES

COLORSCALE = "RdYlGn_r"  # low perplexity green, high red


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Perplexity tick values (1-2-5 per decade) within [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0:
        return []
    ticks = []
    for decade in range(int(math.floor(math.log10(lo))), int(math.ceil(math.log10(hi))) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**decade
            if lo <= v <= hi:
                ticks.append(v)
    return ticks or [lo, hi]


def _block_axis(fig: go.Figure, n_blocks: int) -> None:
    """Integer block ticks (at most ~8 labels) on every x axis."""
    fig.update_xaxes(tick0=0, dtick=max(1, math.ceil(n_blocks / 8)))


#: colour of the cell scale by Δ % to the row's baseline: blue better, red worse, white unchanged
DELTA_COLORSCALE = "RdBu_r"
NAN_CELL_COLOR = "#4d4d4d"  # a value that is not a number (a diverged run), never mistaken for "no result"
EMPTY_CELL_COLOR = "#f2f2f2"  # no result for this method and preset
DENSE_CELL_COLOR = "#dfe6ee"  # the unpruned model: a reference, not a result to colour
NO_DELTA_CELL_COLOR = "#f3eed9"  # coloured by Δ %, but the row has no baseline to take it against
COLOR_BY = ("ppl", "delta")
PRESENTATION_MAX_COLUMNS = 10  # wider grids are turned in presentation mode (presets down the side)


def _text_color(colorscale: str, position: float) -> str:
    """Black or white, whichever reads better on the colour at ``position`` (0..1) of the scale
    (WCAG relative luminance of the cell's background)."""
    rgb = plotly.colors.unlabel_rgb(plotly.colors.sample_colorscale(colorscale, [min(max(position, 0.0), 1.0)])[0])
    lin = [((c / 255) / 12.92) if c / 255 <= 0.04045 else (((c / 255) + 0.055) / 1.055) ** 2.4 for c in rgb]
    luminance = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "black" if luminance > 0.25 else "white"


def _wrap_label(label: str) -> str:
    """A column header on two lines where it has a natural break ("QKVout<br>+ split")."""
    for sep in (" · ", " + "):
        if sep in label:
            head, tail = label.split(sep, 1)
            return f"{head}<br>{sep.strip()} {tail}" if sep == " + " else f"{head}<br>{tail}"
    return label


def _spaced(candidates: Sequence[float], position, gap: float) -> list[float]:
    """The candidates (in priority order) whose positions keep at least ``gap`` from every one
    already taken, sorted by position: colour-bar ticks that never overlap."""
    taken: list[float] = []
    for c in candidates:
        if all(abs(position(c) - position(t)) >= gap for t in taken):
            taken.append(c)
    return sorted(taken, key=position)


def _presentation_size(texts: Sequence[str], n_columns: int, plot_width_px: float = 800.0) -> int:
    """Largest cell font (14..22 px) at which the longest text line fits a column of a
    ``plot_width_px`` wide chart (a character is about 0.6 em)."""
    longest = max((len(line) for t in texts for line in str(t).split("<br>")), default=1)
    fit = plot_width_px / max(n_columns, 1) / (0.6 * max(longest, 1))
    return int(min(22, max(14, fit)))


def grid_heatmap(grid: PerplexityGrid, title: str = "", *, color_by: str = "ppl", presentation: bool = False) -> go.Figure:
    """Method x preset heatmap; cell text = value, Δ % to the row's baseline and count.

    ``color_by``: "ppl" colours by log10(perplexity) (green low, red high); "delta" by the
    relative change to the row's baseline (``grid.baseline``; blue better, red worse, white
    unchanged, symmetric in log ratio). Cells whose values are all NaN are dark grey with "nan",
    cells without a result light grey and empty. ``presentation``: large high-contrast text and
    horizontal headers for a projector; a grid wider than :data:`PRESENTATION_MAX_COLUMNS`
    presets is turned (presets down the side, methods across) so its text stays large. Text is
    black or white by the cell's luminance. Cells are also an invisible scatter layer
    (customdata = [method row, preset column], whichever way the chart is turned) so a click or
    box selection reports the cell (``st.plotly_chart(on_select="rerun")``); a selection fades
    nothing."""
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    if color_by == "delta" and grid.baseline is None:
        color_by = "ppl"  # no baseline column: nothing to take a delta against
    best = grid.best.to_numpy(dtype=float)
    finite = best[np.isfinite(best) & (best > 0)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (1.0, 10.0)
    dense_cells = np.array([[c == DENSE_COLUMN for c in grid.columns] for _ in grid.rows], dtype=bool)
    if color_by == "ppl":
        z = np.where(dense_cells, np.nan, log_color_values(grid.best).to_numpy())  # the dense model: not coloured
        zmin, zmax = math.log10(lo), (math.log10(hi) if hi > lo else math.log10(lo) + 1)
        colorscale = COLORSCALE
        ticks = _log_ticks(lo, hi)
        colorbar = dict(title="ppl (log)", tickvals=[math.log10(t) for t in ticks],
                        ticktext=[f"{t:g}" if t < 1000 else format_ppl(t) for t in ticks])
    else:
        ratio = (grid.delta_pct / 100.0 + 1.0).to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(ratio > 0, np.log10(ratio), np.nan)
        z = np.where(dense_cells, np.nan, z)  # the dense model is not coloured and sets no colour range
        reach = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 0.0
        reach = min(max(reach, math.log10(1.05)), 1.0)  # ±5 % at least, ×10 at most: beyond saturates
        zmin, zmax, colorscale = -reach, reach, DELTA_COLORSCALE
        pcts = _spaced([p for p in (0, -50, 100, -20, 20, -10, 10, -90, 900, -5, 5, 200, -2, 2, 50)
                        if abs(math.log10(1 + p / 100)) <= reach + 1e-12],
                       position=lambda p: math.log10(1 + p / 100), gap=2 * reach / 12)
        colorbar = dict(title=f"Δ to {grid.baseline}", tickvals=[math.log10(1 + p / 100) for p in pcts],
                        ticktext=[f"{p:+d} %" if p else "0" for p in pcts])
    turned = presentation and len(grid.columns) > PRESENTATION_MAX_COLUMNS
    across, down = (grid.rows, grid.columns) if turned else (grid.columns, grid.rows)

    def oriented(matrix: np.ndarray) -> np.ndarray:
        return matrix.T if turned else matrix

    empty = grid.count.to_numpy() == 0
    nan_cells = (~empty) & np.isnan(best)
    no_delta = (~empty) & (~nan_cells) & (~dense_cells) & ~np.isfinite(z)
    fig = go.Figure()
    fig.add_trace(go.Heatmap(  # cells without a result: light grey
        z=oriented(np.where(empty, 0.0, np.nan)), x=across, y=down, colorscale=[[0, EMPTY_CELL_COLOR], [1, EMPTY_CELL_COLOR]],
        showscale=False, hoverinfo="skip", xgap=2, ygap=2, name="no result"))
    fig.add_trace(go.Heatmap(  # values that are not numbers: dark grey
        z=oriented(np.where(nan_cells, 0.0, np.nan)), x=across, y=down, colorscale=[[0, NAN_CELL_COLOR], [1, NAN_CELL_COLOR]],
        showscale=False, hoverinfo="skip", xgap=2, ygap=2, name="nan"))
    if no_delta.any():
        fig.add_trace(go.Heatmap(  # a value with nothing to compare it with (no baseline in its row)
            z=oriented(np.where(no_delta, 0.0, np.nan)), x=across, y=down,
            colorscale=[[0, NO_DELTA_CELL_COLOR], [1, NO_DELTA_CELL_COLOR]], showscale=False, hoverinfo="skip",
            xgap=2, ygap=2, name="no baseline"))
    if dense_cells.any():
        fig.add_trace(go.Heatmap(  # the dense model: a neutral reference column
            z=oriented(np.where(dense_cells, 0.0, np.nan)), x=across, y=down,
            colorscale=[[0, DENSE_CELL_COLOR], [1, DENSE_CELL_COLOR]], showscale=False, hoverinfo="skip",
            xgap=2, ygap=2, name="dense"))
    fig.add_trace(go.Heatmap(
        z=oriented(z), x=across, y=down, colorscale=colorscale, zmin=zmin, zmax=zmax, hoverinfo="skip",
        xgap=2, ygap=2, colorbar=colorbar, name=color_by))
    xs, ys, texts, custom, hovers, colours = [], [], [], [], [], []
    delta_pct = grid.delta_pct
    for i, r in enumerate(grid.rows):
        for j, c in enumerate(grid.columns):
            n = int(grid.count.loc[r, c])
            if n == 0:
                continue
            xs.append(r if turned else c)
            ys.append(c if turned else r)
            texts.append(grid.text.loc[r, c])
            custom.append([r, c])
            value = grid.best.loc[r, c]
            hover = f"{r} / {c}<br>best {format_ppl(value)}" + ("" if c == DENSE_COLUMN else f" of {n} value(s)")
            if grid.baseline is not None and c != grid.baseline and np.isfinite(delta_pct.loc[r, c]):
                hover += (f"<br>{format_delta(value, grid.best.loc[r, grid.baseline])} "
                          f"({delta_pct.loc[r, c]:+.1f} %) to {grid.baseline}")
            hovers.append(hover)
            if nan_cells[i, j]:
                colours.append("white")
            elif not np.isfinite(z[i, j]):
                colours.append("black")
            else:
                colours.append(_text_color(colorscale, (z[i, j] - zmin) / (zmax - zmin)))
    size = _presentation_size(texts, len(across)) if presentation else 12
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers+text", text=texts, customdata=custom, hovertext=hovers, hoverinfo="text",
        textfont=dict(size=size, color=colours, family="Arial Black, Arial, sans-serif" if presentation else None),
        marker=dict(symbol="square", size=40, opacity=0.0),
        selected=dict(marker=dict(opacity=0.0)), unselected=dict(marker=dict(opacity=0.0)),
        showlegend=False, name="cells"))
    header = 18 if presentation else 12
    fig.update_yaxes(autorange="reversed", type="category", categoryorder="array", categoryarray=down,
                     tickfont=dict(size=header, color="black"))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=across, side="top",
                     tickangle=0 if presentation else -30, tickfont=dict(size=header, color="black"),
                     tickvals=across, ticktext=[_wrap_label(c) for c in across] if presentation else across)
    row_height = 95 if presentation else 70
    fig.update_layout(
        title=title or None,
        plot_bgcolor="white",
        font=dict(size=header),
        height=(200 if presentation else 170) + row_height * len(down),
        margin=dict(l=10, r=10, t=(110 if presentation else 90) + (30 if title else 0), b=10),
    )
    # no clickmode/dragmode here: Streamlit sets them for on_select (overriding them breaks clicks)
    return fig


def epsilon_curve(detail: pd.DataFrame, title: str = "") -> go.Figure | None:
    """Perplexity against ε for the values of one grid cell (``PerplexityGrid.cell``: columns
    ``epsilon``, ``ppl``, ``kind``), one line per kind (the notes' references, the team's runs),
    log y. None when fewer than two distinct ε carry a finite perplexity (nothing to draw).
    Values of different evaluation protocols (``protocol`` column) are refused: one curve, one protocol."""
    if "protocol" in detail.columns and detail["protocol"].nunique() > 1:
        raise ValueError(f"epsilon_curve: values of {detail['protocol'].nunique()} evaluation protocols "
                         f"({', '.join(sorted(detail['protocol'].unique()))}); pass one protocol's values")
    data = detail.assign(
        epsilon=pd.to_numeric(detail["epsilon"], errors="coerce"), ppl=pd.to_numeric(detail["ppl"], errors="coerce")
    ).dropna(subset=["epsilon", "ppl"])
    if data["epsilon"].nunique() < 2:
        return None
    fig = go.Figure()
    for kind, grp in data.groupby("kind", sort=True):
        grp = grp.sort_values("epsilon", kind="stable")
        fig.add_trace(
            go.Scatter(
                x=grp["epsilon"].tolist(), y=grp["ppl"].tolist(), mode="lines+markers", name=str(kind),
                text=[format_ppl(v) for v in grp["ppl"]], hovertemplate="ε %{x:g}: ppl %{text}<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_layout(title=title or None, xaxis_title="ε (allocation spread)", yaxis_title="perplexity",
                      yaxis_type="log", height=320, margin={"t": 40 if title else 10, "b": 40})
    return fig


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
                    line=dict(color=color),
                    marker=dict(size=4),
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
        fig.update_yaxes(title_text="sparsity", secondary_y=True, rangemode="tozero", tickformat=".0%")
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
    edges = np.logspace(np.log10(lo), np.log10(hi), bins + 1)
    counts, edges = np.histogram(lam, bins=edges)
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
