"""The meeting report's Study view, pure (frames in, HTML out): for each cell of the allocation study that
a chosen run belongs to, what the Study page shows — every family side by side with mean ± std over the
calibration seeds, the best of each column marked, the verdict in words and every family's sparsity per
block (:mod:`pruning.app_support.study_view`, :mod:`pruning.app_support.study_plots`)."""

from __future__ import annotations

import pandas as pd

from pruning.app_support.report_html import escape, figure_html, html_table, note, protocol_line
from pruning.app_support.study_plots import family_sparsity_chart
from pruning.app_support.study_view import Cell, best_rows, cell_table, family_name, verdict_text

#: the verdict's kind as the report's note class
VERDICT_CLASS = {"win": "note", "loss": "warning", "undecided": "warning", "none": "note"}


def study_section(summary: pd.DataFrame, verdicts: pd.DataFrame, cell: Cell, blocks: pd.DataFrame,
                  fig_id: str) -> str:
    """One study cell: heading, protocol, verdicts (wiki test, lee), the family table (best of each
    column outlined) and every family's sparsity per block (``blocks``: :func:`study_view.per_block`)."""
    rows = cell_table(summary, cell)
    best = best_rows(summary, cell)
    shown = rows.drop(columns=["family", "settings"]).set_index("allocation")
    if shown["wiki test ppl, lee-calibrated"].eq("").all():
        shown = shown.drop(columns="wiki test ppl, lee-calibrated")
    family_of = dict(zip(rows["allocation"], rows["family"]))
    marked = {(a, h) for a in shown.index for h, f in best.items() if family_of.get(a) == f and h in shown.columns}
    parts = [f"<h3>{escape(cell.text())}</h3>",
             protocol_line("knobs chosen on wiki:validation; final runs on the whole wiki test split and lee, "
                           "mean ± std over the calibration seeds (ddof 1)")]
    for metric in ("wiki", "lee"):
        kind, sentence = verdict_text(verdicts, cell, metric)
        parts.append(note(sentence, VERDICT_CLASS[kind]))
    parts.append(html_table(shown, css_class="plain", marked=marked))
    parts.append(note("outlined = the best family of the column (lowest perplexity, highest accuracy); vs uniform = "
                      "the change of the wiki test mean against uniform's", "caption"))
    if not blocks.empty:
        names = {f: family_name(f, dict(zip(rows["family"], rows["settings"])).get(f, "")) for f in blocks["family"]}
        parts.append(figure_html(family_sparsity_chart(blocks, cell.sparsity, names), fig_id))
    return "".join(parts)
