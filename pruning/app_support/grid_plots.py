"""Figures of the perplexity grid: the method x preset heatmap (coloured by perplexity or by Δ % to
the row's baseline, presentation mode for a projector) and perplexity against epsilon. Tidy frames
in, a ``plotly.graph_objects.Figure`` out; nothing touches Streamlit or the store."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go

from pruning.app_support.formatting import format_delta, format_ppl
from pruning.app_support.grid import DENSE_COLUMN, PerplexityGrid, log_color_values

COLORSCALE = "RdYlGn_r"  # low perplexity green, high red
#: colour of the cell scale by Δ % to the row's baseline: blue better, red worse, white unchanged
DELTA_COLORSCALE = "RdBu_r"
NAN_CELL_COLOR = "#4d4d4d"  # a value that is not a number (a diverged run), never mistaken for "no result"
EMPTY_CELL_COLOR = "#f2f2f2"  # no result for this method and preset
DENSE_CELL_COLOR = "#dfe6ee"  # the unpruned model: a reference, not a result to colour
NO_DELTA_CELL_COLOR = "#f3eed9"  # coloured by Δ %, but the row has no baseline to take it against
COLOR_BY = ("ppl", "delta")
PRESENTATION_MAX_COLUMNS = 10  # wider grids are turned in presentation mode (presets down the side)


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


def _text_color(colorscale: str, position: float) -> str:
    """Black or white, whichever reads better on the colour at ``position`` (0..1) of the scale
    (WCAG relative luminance of the cell's background)."""
    rgb = plotly.colors.unlabel_rgb(plotly.colors.sample_colorscale(colorscale, [min(max(position, 0.0), 1.0)])[0])
    lin = [((c / 255) / 12.92) if c / 255 <= 0.04045 else (((c / 255) + 0.055) / 1.055) ** 2.4 for c in rgb]
    luminance = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "black" if luminance > 0.25 else "white"


#: long words of the grid's column headers and their presentation-mode abbreviations (legend:
#: :func:`presentation_legend`); a projected header must fit its column
HEADER_ABBREVIATIONS: dict[str, str] = {
    "hessian_alpha": "Hα", "alpha_peak": "α-pk", "alpha_hat": "α-hat", "stable_rank": "s-rank",
    "entropy_norm": "entropy", "log_spectral_norm": "log-norm", "spectral_norm": "norm",
}


def presentation_header(label: str) -> str:
    """A column header for the projector: one line per part (split at " · ", " + " and "+") with
    the long metric names abbreviated (:data:`HEADER_ABBREVIATIONS`): "all · hessian_alpha+alpha_peak"
    → "all<br>Hα<br>+α-pk"."""
    lines = []
    for part in label.replace(" + ", "+").split(" · "):
        for i, piece in enumerate(part.split("+")):
            short = HEADER_ABBREVIATIONS.get(piece.strip(), piece.strip())
            lines.append(("+" if i else "") + short)
    return "<br>".join(lines)


def presentation_legend(columns: Sequence[str]) -> str:
    """The abbreviations :func:`presentation_header` used in ``columns`` ("Hα = hessian_alpha, α-pk =
    alpha_peak"); "" when none."""
    used = [(short, word) for word, short in HEADER_ABBREVIATIONS.items() if any(word in str(c) for c in columns)]
    return ", ".join(f"{short} = {word}" for short, word in used)


def _short_number(match: re.Match) -> str:
    value = float(match.group(0).replace(",", ""))
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _short_delta(match: re.Match) -> str:
    raw = float(match.group(1))
    value = int(math.copysign(math.floor(abs(raw) + 0.5), raw))  # half away from zero
    return f"{value:+d}%" if value else "0%"


def presentation_text(text: str) -> str:
    """A cell's text for the projector, each line one short item: three significant digits at
    most (the hover keeps every digit), the ± spread on a line of its own and the Δ % whole:
    "• 698.80 ± 76.15<br>(-31.7%)<br>×3" → "• 699<br>± 76.2<br>-32%<br>×3"."""
    text = re.sub(r"\(([+-]?\d+(?:\.\d+)?)%\)", _short_delta, text)
    text = re.sub(r"\d[\d,]*\.\d+", _short_number, text)
    return text.replace(" ± ", "<br>± ")


def _spaced(candidates: Sequence[float], position, gap: float) -> list[float]:
    """The candidates (in priority order) whose positions keep at least ``gap`` from every one
    already taken, sorted by position: colour-bar ticks that never overlap."""
    taken: list[float] = []
    for c in candidates:
        if all(abs(position(c) - position(t)) >= gap for t in taken):
            taken.append(c)
    return sorted(taken, key=position)


#: width of the heatmap's plot area in presentation mode at the narrowest screen it is made for (1280 px
#: wide with the sidebar open: ~820 px of chart less the row labels and the colour bar)
PRESENTATION_PLOT_WIDTH_PX = 600.0
#: the widest character of the presentation font (bold Arial digits and "±" are 0.556 em; "%" 0.89 em)
CHAR_EM = 0.65


def _presentation_size(texts: Sequence[str], n_columns: int, plot_width_px: float = PRESENTATION_PLOT_WIDTH_PX,
                       largest: int = 22, smallest: int = 12) -> int:
    """Largest font (``smallest``..``largest`` px) at which the longest text line fits a column of a
    ``plot_width_px`` wide chart, with a 10 % margin (a character is at most :data:`CHAR_EM` em)."""
    longest = max((len(line) for t in texts for line in str(t).split("<br>")), default=1)
    fit = 0.9 * plot_width_px / max(n_columns, 1) / (CHAR_EM * max(longest, 1))
    return int(min(largest, max(smallest, fit)))


def _hover_value(grid: PerplexityGrid, row: str, column: str) -> str:
    """What a cell shows, in words (:attr:`PerplexityGrid.cell_stat`): "mean 316.24 ± 6.28 over 3
    seeds" (a setting's seeds averaged), "312.00, a single value" (the lowest mean is one value) or
    "best 310.71" (the lowest value)."""
    value = format_ppl(grid.best.loc[row, column])
    if grid.cell_stat != "mean" or column == DENSE_COLUMN or grid.seeds is None:
        return f"best {value}"
    n = int(grid.seeds.loc[row, column])
    if n >= 2:
        return f"mean {value} ± {format_ppl(grid.spread.loc[row, column])} over {n} seeds"
    return f"{value}, a single value" if n == 1 else value  # n = 0: only NaN values ("nan")


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
            texts.append(presentation_text(grid.text.loc[r, c]) if presentation else grid.text.loc[r, c])
            custom.append([r, c])
            value = grid.best.loc[r, c]
            hover = f"{r} / {c}<br>{_hover_value(grid, r, c)}"
            if c != DENSE_COLUMN:
                hover += f" · {n} value(s) in the cell"
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
        textfont=dict(size=size, color=colours, family="Arial, sans-serif" if presentation else None,
                      weight="bold" if presentation else None),
        marker=dict(symbol="square", size=40, opacity=0.0),
        selected=dict(marker=dict(opacity=0.0)), unselected=dict(marker=dict(opacity=0.0)),
        showlegend=False, name="cells"))
    headers = [presentation_header(c) for c in across] if presentation else list(across)
    header = _presentation_size(headers, len(across), largest=18) if presentation else 12
    fig.update_yaxes(autorange="reversed", type="category", categoryorder="array", categoryarray=down,
                     tickfont=dict(size=18 if presentation else 12, color="black"))  # the side has room
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=across, side="top",
                     tickangle=0 if presentation else -30, tickfont=dict(size=header, color="black"),
                     tickvals=across, ticktext=headers)
    lines = max((str(t).count("<br>") + 1 for t in texts), default=1)
    row_height = max(95, 22 + lines * (size + 6)) if presentation else 70
    header_lines = max((h.count("<br>") + 1 for h in headers), default=1)
    fig.update_layout(
        title=title or None,
        plot_bgcolor="white",
        font=dict(size=header),
        height=((60 + header_lines * (header + 6)) if presentation else 170) + row_height * len(down),
        margin=dict(l=10, r=10, t=(30 + header_lines * (header + 6) if presentation else 90) + (30 if title else 0),
                    b=10),
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
