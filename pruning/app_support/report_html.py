"""The report's HTML: escaping, tables whose text is escaped (run labels and notes are user text),
plotly figures as ``<div>`` + ``Plotly.newPlot`` without plotly.js, the style sheet and the whole
document with plotly.js inlined once (it works offline: nothing is fetched)."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import plotly.graph_objects as go

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


def escape(value: Any) -> str:
    """Escaped text of ``value`` ("" for None / NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return html.escape(str(value), quote=True)


def html_table(frame: pd.DataFrame, index: bool = True, css_class: str = "",
               marked: set[tuple[str, str]] | None = None, render: Callable[[Any], str] = escape) -> str:
    """``frame`` as an HTML table, every header and cell escaped (text as ``str(value)``; NaN empty;
    ``render`` turns a cell value into escaped markup). ``marked``: (index label, column) cells drawn
    with the ``mark`` class."""
    marked = marked or set()
    head = ([escape(frame.index.name or "")] if index else []) + [escape(c) for c in frame.columns]
    rows = []
    for label, row in zip(frame.index, frame.itertuples(index=False, name=None)):
        cells = [f"<th>{escape(label)}</th>"] if index else []
        for col, value in zip(frame.columns, row):
            cls = ' class="mark"' if (str(label), str(col)) in marked else ""
            cells.append(f"<td{cls}>{render(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="{escape(css_class)}"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def figure_html(fig: go.Figure, div_id: str) -> str:
    """A plotly figure as a ``<div>`` and its ``Plotly.newPlot`` script, without plotly.js (the report
    inlines it once in ``<head>``; plotly escapes ``<``, ``>`` and ``/`` in the figure JSON)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False, div_id=div_id,
                       config=PLOTLY_CONFIG, default_width="100%")


def protocol_line(text: str) -> str:
    """The highlighted line that states a section's protocol."""
    return f'<p class="protocol"><b>Protocol:</b> {escape(text)}</p>'


def note(text: str, kind: str = "note") -> str:
    """A paragraph of escaped text with CSS class ``kind`` (note, caption, warning)."""
    return f'<p class="{kind}">{escape(text)}</p>'


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1280px;padding:0 16px;color:#1a1a1a;line-height:1.4}
h1{margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:40px}
.meta{color:#444;font-size:14px}.meta td{padding:1px 12px 1px 0}
table{border-collapse:collapse;margin:8px 0 12px;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:#f0f0f0}table.grid td{font-size:16px;font-variant-numeric:tabular-nums}.nw{white-space:nowrap}
table.runs td:nth-child(2){min-width:200px}
td.mark{outline:3px solid #1f77b4;outline-offset:-3px;font-weight:600}
.protocol{background:#eef4fb;border-left:4px solid #1f77b4;padding:4px 8px}
.warning{background:#fff4e5;border-left:4px solid #e67e00;padding:4px 8px}
.scroll{overflow-x:auto;max-width:100%}
.caption,.note{color:#555;font-size:14px}pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:12px}
@media print{h2{page-break-before:auto}details{display:block}}
"""


def render_report(title: str, generated_at: datetime, store_text: str, code_text: str, runs_html: str,
                  sections: Sequence[tuple[str, str]], plotly_js: str) -> str:
    """The whole HTML document: header (title, date, store catalog version, code revision), the chosen
    runs, then each (view title, body) section. ``plotly_js``: the plotly.js bundle, inlined once."""
    body = "".join(f'<section id="{escape(name.lower().replace(" ", "-"))}"><h2>{escape(name)}</h2>{content}</section>'
                   for name, content in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style>"
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
        f'<script charset="utf-8">{plotly_js}</script></head><body>'
        f"<h1>{escape(title)}</h1><table class=\"meta\">"
        f"<tr><td>generated</td><td>{escape(generated_at.strftime('%Y-%m-%d %H:%M UTC'))}</td></tr>"
        f"<tr><td>results store</td><td>{escape(store_text)}</td></tr>"
        f"<tr><td>code revision</td><td>{escape(code_text)}</td></tr></table>"
        f"<h2>Runs</h2>{runs_html}{body}</body></html>\n"
    )
