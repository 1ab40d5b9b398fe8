"""The Study page's charts: every family's sparsity per block on one chart, and the score each family
allocated from, per block (one panel per family, each on its own scale). Input: the long frame of
:func:`pruning.app_support.study_view.per_block` (family, block, sparsity, score)."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruning.app_support.colors import RUN_PALETTE
from pruning.app_support.study_view import SCORE_NAMES, family_name
from pruning.study.protocol import FAMILIES, OURS

#: one colour per family in every chart of the page (ours drawn thicker)
FAMILY_COLORS: dict[str, str] = {f.name: RUN_PALETTE[i % len(RUN_PALETTE)] for i, f in enumerate(FAMILIES)}


def _line(family: str) -> dict:
    return {"color": FAMILY_COLORS.get(family), "width": 4 if family == OURS else 2,
            "dash": "dot" if family == "uniform" else "solid"}


def family_sparsity_chart(blocks: pd.DataFrame, sparsity: float, names: dict[str, str] | None = None) -> go.Figure:
    """Sparsity per block (parameter-weighted), one line per family, the mean sparsity as a grey rule;
    y from 0 to 1 in tenths. ``names``: {family: legend text} (default :func:`family_name`)."""
    names = names or {}
    fig = go.Figure()
    n_blocks = 1
    for family, grp in blocks.groupby("family", sort=False):
        grp = grp.sort_values("block")
        n_blocks = max(n_blocks, int(grp["block"].max()) + 1)
        fig.add_trace(go.Scatter(x=grp["block"], y=grp["sparsity"], mode="lines+markers",
                                 name=names.get(family, family_name(family)), line=_line(family),
                                 marker={"size": 5, "color": FAMILY_COLORS.get(family)},
                                 hovertemplate="block %{x}: %{y:.1%}<extra>%{fullData.name}</extra>"))
    fig.add_hline(y=sparsity, line={"color": "#888", "dash": "dash", "width": 1},
                  annotation_text=f"mean {sparsity:.0%}", annotation_position="top left")
    fig.update_xaxes(title="block", tick0=0, dtick=max(1, math.ceil(n_blocks / 10)), range=[-0.5, n_blocks - 0.5])
    fig.update_yaxes(title="sparsity", range=[0, 1], tickformat=".0%", dtick=0.1)
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=40, b=10), title="sparsity per block, every family",
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0))
    return fig


SENSITIVITY_PANEL = "measured"


def family_score_chart(blocks: pd.DataFrame, names: dict[str, str] | None = None,
                       sensitivity: pd.Series | None = None, probe_sparsity: float | None = None) -> go.Figure | None:
    """The score each family allocated from, per block: one panel per family with a score, each on
    its own y scale (outlier ratios, α, unimportance and block indices share no unit); first, when
    given, the measured sensitivity (``sensitivity``: log(ppl / dense) per block, index block, of one
    block pruned alone to ``probe_sparsity``). None when there is nothing to draw."""
    names = dict(names or {})
    scored = blocks.dropna(subset=["score"])
    if sensitivity is not None and not sensitivity.empty:
        measured = pd.DataFrame({"family": SENSITIVITY_PANEL, "block": sensitivity.index, "score": sensitivity.values})
        scored = pd.concat([measured, scored], ignore_index=True)
        names[SENSITIVITY_PANEL] = (f"measured sensitivity, one block at {probe_sparsity:.0%}" if probe_sparsity
                                    else "measured sensitivity")
    families = list(dict.fromkeys(scored["family"]))
    if not families:
        return None
    cols = 2 if len(families) > 1 else 1
    rows = math.ceil(len(families) / cols)
    titles = [f"{names.get(f, family_name(f))}: {SCORE_NAMES.get(f, 'score')}" if f != SENSITIVITY_PANEL
              else f"{names[f]}: log(ppl / dense)" for f in families]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_xaxes=True,
                        vertical_spacing=min(0.12, 0.5 / max(rows, 1)), horizontal_spacing=0.08)
    for i, family in enumerate(families):
        grp = scored[scored["family"] == family].sort_values("block")
        line = _line(family) if family != SENSITIVITY_PANEL else {"color": "black", "width": 3}
        fig.add_trace(go.Scatter(x=grp["block"], y=grp["score"], mode="lines+markers", name=names.get(family, family),
                                 line=line, marker={"size": 4, "color": line["color"]},
                                 showlegend=False, hovertemplate="block %{x}: %{y:.4g}<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_annotations(font_size=12)
    fig.update_xaxes(tick0=0, dtick=5)
    fig.update_xaxes(title="block", row=rows)
    fig.update_layout(height=190 * rows + 60, margin=dict(l=10, r=10, t=40, b=10))
    return fig
