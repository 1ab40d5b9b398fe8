"""One colour per run across every chart of a page (and of a meeting report).

Plotly's default colourway restarts in every figure, so a run drawn in two charts of one page got
two colours, and colours repeated after ten series. Here a page assigns colours once, from the
order of its chosen runs, and recolours each figure's traces by the run they belong to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.colors
import plotly.graph_objects as go

#: 34 distinct colours (D3, then Dark24); the 35th run repeats the first
RUN_PALETTE: tuple[str, ...] = (*plotly.colors.qualitative.D3, *plotly.colors.qualitative.Dark24)
SHARED_COLOR = "#444444"  # a series that stands for several runs (a model's dense statistics, shared spectra)


def run_colors(keys: Sequence[str]) -> dict[str, str]:
    """{key: colour} in the given order (duplicates keep their first colour), from :data:`RUN_PALETTE`."""
    return {key: RUN_PALETTE[i % len(RUN_PALETTE)] for i, key in enumerate(dict.fromkeys(keys))}


def series_color(name: str, colors: Mapping[str, str]) -> str | None:
    """The colour of a trace called ``name``: the colour of the longest key it equals or starts
    with followed by " · " (so "run label · pruned" takes the run's colour); None when no key matches."""
    best = None
    for key, color in colors.items():
        if (name == key or name.startswith(f"{key} · ")) and (best is None or len(key) > len(best[0])):
            best = (key, color)
    return best[1] if best else None


def recolor(fig: go.Figure, colors: Mapping[str, str], shared_suffix: str | None = " · dense") -> go.Figure:
    """Give every trace whose name (or legend group) belongs to a key of ``colors`` that colour,
    line and marker; traces named ``... · dense`` (``shared_suffix``) are drawn dark grey, dashed.
    Traces of no key keep theirs. Returns ``fig`` (changed in place)."""
    for trace in fig.data:
        name = str(getattr(trace, "legendgroup", None) or trace.name or "")
        if shared_suffix and name.endswith(shared_suffix):
            trace.update(line={"color": SHARED_COLOR, "dash": "dash"}, marker={"color": SHARED_COLOR})
            continue
        color = series_color(name, colors)
        if color is not None:
            trace.update(line={"color": color}, marker={"color": color})
    return fig
