"""A meeting report: one self-contained HTML file (grid, spectra, compare, zero-shot) for chosen runs.

The sections reuse the app's own builders (``grid.build_grid`` and ``plots.grid_heatmap``,
``plots.metric_by_block`` and ``plots.esd_figure``, ``compare.config_diff`` and
``plots.sparsity_overlay``, ``tables.zeroshot_table``), so a report shows what the pages show.
It works offline: plotly.js is inlined once in ``<head>`` and every figure is a ``<div>`` plus a
``Plotly.newPlot`` call; nothing is fetched (no CDN, fonts or images). Every table is a real HTML
table whose text is escaped (run labels and notes are user text), and the grid's numbers are text
in the page, not only inside the plotly JSON, so a reader can search them.

:func:`build_report` reads the store (``pruning.store.queries``); the ``*_section`` functions and
:func:`render_report` are pure (frames in, HTML out).
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from pruning.app_support.colors import SHARED_COLOR, recolor, run_colors
from pruning.app_support.compare import config_diff
from pruning.app_support.formatting import format_ppl, format_sparsity, run_label, unique_run_labels
from pruning.app_support.grid import OWN_RUN_MARK, PerplexityGrid, build_grid, dense_perplexity, protocol_options
from pruning.app_support.plots import esd_figure, grid_heatmap, metric_by_block, sparsity_overlay
from pruning.app_support.report_views import DEFAULT_TITLE, VIEW_TITLES, VIEWS
from pruning.app_support.spectra import fit_warning, run_eigenvalues
from pruning.app_support.tables import zeroshot_protocol_options, zeroshot_table
from pruning.errors import ConfigError
from pruning.store.errors import RunNotFoundError

log = logging.getLogger(__name__)

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
#: eigenvalues of (run_id, matrix name, source "weight"|"hessian") for the ESD, or None
EigenvalueLoader = Callable[[str, str, str], "np.ndarray | None"]


# ---- small HTML helpers ---------------------------------------------------------------------------------
def _e(value: Any) -> str:
    """Escaped text of ``value`` ("" for None / NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return html.escape(str(value), quote=True)


def html_table(frame: pd.DataFrame, index: bool = True, css_class: str = "",
               marked: set[tuple[str, str]] | None = None, render: Callable[[Any], str] = _e) -> str:
    """``frame`` as an HTML table, every header and cell escaped (text as ``str(value)``; NaN empty;
    ``render`` turns a cell value into escaped markup). ``marked``: (index label, column) cells drawn
    with the ``mark`` class."""
    marked = marked or set()
    head = ([_e(frame.index.name or "")] if index else []) + [_e(c) for c in frame.columns]
    rows = []
    for label, row in zip(frame.index, frame.itertuples(index=False, name=None)):
        cells = [f"<th>{_e(label)}</th>"] if index else []
        for col, value in zip(frame.columns, row):
            cls = ' class="mark"' if (str(label), str(col)) in marked else ""
            cells.append(f"<td{cls}>{render(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="{_e(css_class)}"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def figure_html(fig: go.Figure, div_id: str) -> str:
    """A plotly figure as a ``<div>`` and its ``Plotly.newPlot`` script, without plotly.js (the report
    inlines it once in ``<head>``; plotly escapes ``<``, ``>`` and ``/`` in the figure JSON)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False, div_id=div_id,
                       config=PLOTLY_CONFIG, default_width="100%")


def _protocol_line(text: str) -> str:
    return f'<p class="protocol"><b>Protocol:</b> {_e(text)}</p>'


def _note(text: str, kind: str = "note") -> str:
    return f'<p class="{kind}">{_e(text)}</p>'


# ---- sections (pure) ------------------------------------------------------------------------------------
def _grid_cell(text: Any) -> str:
    """A grid cell's text (value, Δ %, count: ``grid.text``, parts split by ``<br>``) as escaped parts
    that each stay on one line, so a wide grid wraps between them instead of overflowing the page."""
    parts = [p for p in str(text or "").split("<br>") if p]
    return " ".join(f'<span class="nw">{_e(p)}</span>' for p in parts)


def grid_section(grid: PerplexityGrid, *, model: str, sparsity: float, dataset: str | None, protocol_label: str,
                 chosen: Sequence[str], labels: Mapping[str, str], fig_id: str) -> str:
    """One grid: its heading and protocol, the heatmap (``plots.grid_heatmap``, coloured by Δ % to the
    baseline as the grid page does by default) and the same cells as an HTML table (``grid.text``), the
    chosen runs' cells outlined and listed with their run labels."""
    detail = grid.detail
    mine = detail[detail["run_id"].isin(list(chosen))] if "run_id" in detail else detail.iloc[0:0]
    marked = {(str(r), str(c)) for r, c in zip(mine["row"], mine["column"])}
    text = grid.text.copy()
    text.index.name = "method"
    where = [f"{_e(labels.get(r, r))} → {_e(row)} / {_e(col)} ({_e(format_ppl(p))})"
             for r, row, col, p in zip(mine["run_id"], mine["row"], mine["column"], mine["ppl"])]
    assumed = "sparsity_assumed" in detail and bool(detail["sparsity_assumed"].fillna(False).astype(bool).any())
    caption = (f"{dataset or ''} perplexity at {format_sparsity(sparsity)} sparsity"
               + (" (assumed: the notes do not state it)" if assumed else "")
               + (f" · dense model {format_ppl(grid.dense)}" if grid.dense is not None else "")
               + (f" · cell = best value, (Δ % to {grid.baseline}), ×count" if grid.baseline
                  else " · cell = best value, ×count")
               + f" · {OWN_RUN_MARK} = the team's own run · outlined = a chosen run's cell")
    return (f"<h3>{_e(model)} · {_e(format_sparsity(sparsity))} · {_e(dataset or '')}</h3>"
            + _protocol_line(f"perplexity, {protocol_label}") + _note(caption, "caption")
            + figure_html(grid_heatmap(grid, color_by="delta" if grid.baseline else "ppl"), fig_id)
            + html_table(text, css_class="grid", marked=marked, render=_grid_cell)
            + ("<p>Chosen runs in this grid (outlined): " + "; ".join(where) + "</p>" if where else
               _note("None of the chosen runs has a value in this grid.")))


def spectra_section(spectra: pd.DataFrame, metric: str, sharing: Mapping[str, Sequence[str]],
                    colors: Mapping[str, str],
                    esd: tuple[str, str, list[tuple[str, np.ndarray, float | None, float | None]], list[str]] | None,
                    fig_ids: tuple[str, str]) -> str:
    """``metric`` per block and matrix type (``plots.metric_by_block`` on the weight spectra), a table of
    fits flagged as weightwatcher does (``spectra.fit_warning``), and the ESD of one matrix
    (``plots.esd_figure``) when its eigenvalues are at hand.

    ``spectra``: weight-spectra rows with a ``series`` column; ``sharing``: series -> labels of the runs
    it stands for (runs of one dense model share its weight spectra: one line, not one per run);
    ``colors``: series -> colour; ``esd``: (run label, matrix name, panels, sources without eigenvalues)."""
    if spectra.empty:
        return _note("The chosen runs have no spectra (uniform or OWL allocation does not compute them).")
    dtypes = ", ".join(sorted(spectra["eig_dtype"].dropna().astype(str).unique())) if "eig_dtype" in spectra else ""
    parts = [_protocol_line("spectra of the dense model's weights (eigenvalues of WᵀW"
                            + (f", {dtypes}" if dtypes else "") + "); no evaluation text is involved")]
    if metric not in spectra or spectra[metric].isna().all():
        parts.append(_note(f"No {metric} in the chosen runs' weight spectra."))
    else:
        fig = recolor(metric_by_block(spectra, metric), colors)
        parts.append(figure_html(fig, fig_ids[0]))
    flags = []
    for series, rows in spectra.groupby("series", sort=False):
        flagged = sum(bool(fit_warning(a, n)) for a, n in zip(rows.get("alpha", []), rows.get("n_tail", [])))
        flags.append({"series": series, "runs": "; ".join(sharing.get(series, [series])), "matrices": len(rows),
                      "fits flagged": flagged,
                      "median " + metric: f"{rows[metric].median():.3f}" if metric in rows else ""})
    parts.append("<h3>Power-law fits (α as weightwatcher reads it)</h3>"
                 + html_table(pd.DataFrame(flags).set_index("series"), css_class="plain")
                 + _note("flagged: α < 2 (over-trained) or α > 6 (under-trained, fit unreliable), or fewer than "
                         "20 tail eigenvalues · runs of one model share its weight spectra", "caption"))
    if esd is not None:
        label, name, panels, missing = esd
        parts.append(f"<h3>ESD of {_e(name)} · {_e(label)}</h3>")
        if panels:
            parts.append(figure_html(esd_figure(panels), fig_ids[1]))
        if missing:
            parts.append(_note(f"No eigenvalues of the {' and '.join(missing)} spectrum here: they exist only in "
                               "the spectra cache of the machine that computed them (Hessian spectra need "
                               "calibration data)."))
    return "".join(parts)


def compare_section(results: pd.DataFrame, diff: pd.DataFrame, allocations: Mapping[str, pd.DataFrame],
                    colors: Mapping[str, str], fig_id: str) -> str:
    """Results of the chosen runs with each perplexity's protocol (a warning when they differ), the
    config keys that differ (``compare.config_diff``), and sparsity per block (``plots.sparsity_overlay``)."""
    protocols = sorted(results["ppl protocol"].dropna().unique()) if "ppl protocol" in results else []
    parts = [_protocol_line("perplexity as each row states (" + "; ".join(protocols) + ")" if protocols
                            else "no perplexity recorded")]
    if len(protocols) > 1:
        parts.append(_note("These runs' perplexities were measured with different protocols: they are shown "
                           "side by side, not comparable.", "warning"))
    parts.append(html_table(results, css_class="plain"))
    parts.append("<h3>Config differences</h3>")
    parts.append(html_table(diff, css_class="plain") if not diff.empty
                 else _note("The configs are identical (apart from label and tags)."))
    usable = {k: v for k, v in allocations.items() if v is not None and not v.empty}
    if usable:
        fig = recolor(sparsity_overlay(usable), colors)
        fig.update_layout(height=340 + 20 * len(usable), legend={"orientation": "h", "yanchor": "top", "y": -0.2})
        parts.append("<h3>Sparsity per block</h3>" + figure_html(fig, fig_id))
    return "".join(parts)


def zeroshot_section(scores: pd.DataFrame, labels: Mapping[str, str], metric: str = "acc") -> str:
    """One task × run table per zero-shot protocol (``tables.zeroshot_table``: value ± stderr, MEAN
    over tasks), columns named by run label, with each run's provenance."""
    if scores.empty:
        return _note("No zero-shot results for the chosen runs.")
    stages = set(scores["stage"].dropna()) if "stage" in scores else set()
    stage = "pruned" if "pruned" in stages else (sorted(stages)[0] if stages else None)
    parts = []
    for protocol in zeroshot_protocol_options(scores[scores["metric"] == metric]):
        by_task, meta = zeroshot_table(scores, metric=metric, stage=stage, protocol=protocol)
        if by_task.empty or by_task.columns.empty:
            continue
        meta = meta.assign(run=meta["run_id"].map(lambda r: labels.get(r, r))).set_index("run")
        parts.append(_protocol_line(f"zero-shot {metric}, {protocol}" + (f", stage {stage}" if stage else ""))
                     + ('<p class="warning">Budgeted protocol (an example limit): part of each task only.</p>'
                        if "budgeted" in protocol else "")
                     + html_table(by_task[[r for r in labels if r in by_task.columns]].rename(columns=dict(labels)),
                                  css_class="plain")
                     + "<details><summary>provenance</summary>" + html_table(meta, css_class="plain")
                     + "</details>")
    return "".join(parts) or _note(f"No zero-shot {metric} for the chosen runs.")


def runs_section(rows: Sequence[Mapping[str, Any]], configs: Mapping[str, Mapping[str, Any]]) -> str:
    """The chosen runs: id, readable label (``formatting.run_label``), kind, status, perplexity with its
    protocol, the user's label, tags and notes, and the full config (collapsed)."""
    table = pd.DataFrame([{
        "run id": r["run_id"], "run": run_label(r), "kind": r.get("kind"), "status": r.get("status"),
        "created": str(r.get("created_at") or "")[:16].replace("T", " "), "ppl protocol": r.get("ppl_protocol"), "label": r.get("label"),
        "tags": ", ".join(r.get("tags") or []), "notes": r.get("notes") or r.get("note"),
    } for r in rows]).set_index("run id")
    details = "".join(
        f"<details><summary>config of <code>{_e(run_id)}</code></summary><pre>"
        f"{_e(json.dumps(config, indent=2, sort_keys=True, default=str))}</pre></details>"
        for run_id, config in configs.items() if config)
    return html_table(table, css_class="plain runs") + details


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
    body = "".join(f'<section id="{_e(name.lower().replace(" ", "-"))}"><h2>{_e(name)}</h2>{content}</section>'
                   for name, content in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>{STYLE}</style>"
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
        f'<script charset="utf-8">{plotly_js}</script></head><body>'
        f"<h1>{_e(title)}</h1><table class=\"meta\">"
        f"<tr><td>generated</td><td>{_e(generated_at.strftime('%Y-%m-%d %H:%M UTC'))}</td></tr>"
        f"<tr><td>results store</td><td>{_e(store_text)}</td></tr>"
        f"<tr><td>code revision</td><td>{_e(code_text)}</td></tr></table>"
        f"<h2>Runs</h2>{runs_html}{body}</body></html>\n"
    )


# ---- from the store -------------------------------------------------------------------------------------
def check_views(views: Sequence[str]) -> list[str]:
    """The views in report order; raises ConfigError naming an unknown or missing view."""
    wanted = [str(v).strip() for v in views if str(v).strip()]
    bad = [v for v in wanted if v not in VIEWS]
    if bad:
        raise ConfigError(f"views: {', '.join(map(repr, bad))} unknown; accepted: {', '.join(VIEWS)}")
    if not wanted:
        raise ConfigError(f"views: none chosen; accepted: {', '.join(VIEWS)}")
    return [v for v in VIEWS if v in wanted]


def report_filename(day: datetime | None = None) -> str:
    """``pruning-lab-report-2026-11-30.html`` (UTC day of ``day``, default now)."""
    day = day or datetime.now(timezone.utc)
    return f"pruning-lab-report-{day.strftime('%Y-%m-%d')}.html"


def _store_text(root: Path | str | None) -> str:
    from pruning.store.catalog import snapshot

    snap = snapshot(root)
    key = hashlib.sha256(repr(snap.key).encode()).hexdigest()[:10]
    return (f"{snap.root} · catalog generation {snap.manifest.generation} · "
            f"{len(snap.manifest.bundles) + len(snap.loose) - len(snap.superseded)} bundles · version {key}")


def _code_text(revision: Mapping[str, Any]) -> str:
    commit = revision.get("commit")
    text = f"commit {str(commit)[:10]}" + (" (uncommitted changes)" if revision.get("dirty") else "") if commit \
        else "no git commit"
    return text + f" · source sha256 {revision.get('source_sha256') or '?'}"


def _main_dataset(datasets: Sequence[str]) -> str | None:
    """The grid page's first dataset: the notes' WikiText-2 or its offline stand-in, then the others."""
    ordered = sorted(datasets, key=lambda d: (d not in ("wikitext2", "wiki"), d))
    return ordered[0] if ordered else None


def stored_eigenvalues(root: Path | str | None = None, load_models: bool = False) -> EigenvalueLoader:
    """Eigenvalues as the spectra page gets them: from the store's spectra sets only
    (``spectra.run_eigenvalues``); ``load_models`` is ignored (no model is loaded any more)."""
    del load_models

    def load(run_id: str, name: str, source: str) -> np.ndarray | None:
        return run_eigenvalues(run_id, name, source, root=root)

    return load


def build_report(run_ids: Sequence[str], views: Sequence[str] = VIEWS, *, title: str = DEFAULT_TITLE,
                 model: str | None = None, protocol: str | None = None, dataset: str | None = None,
                 metric: str = "alpha_peak", esd_matrix: str | None = None,
                 eigenvalues: EigenvalueLoader | None = None, root: Path | str | None = None,
                 generated_at: datetime | None = None, code_revision: Mapping[str, Any] | None = None) -> str:
    """The meeting report of ``run_ids`` (runs or reference sets) with ``views`` (of :data:`VIEWS`) as
    one self-contained HTML document.

    grid: one perplexity grid per (model, sparsity, protocol) holding a chosen run's value on
    ``dataset`` (default: WikiText-2 / wiki first, as the grid page), all values of that grid shown, the
    chosen runs' cells outlined; ``model`` / ``protocol`` (a ``pruning.protocol`` key) restrict it.
    spectra: ``metric`` per block and the ESD of ``esd_matrix`` (default: the spectra page's first matrix
    whose fit weightwatcher would not flag) of the first run with spectra, eigenvalues from
    ``eigenvalues`` (default: :func:`stored_eigenvalues`).
    Raises RunNotFoundError naming unknown run ids and ConfigError naming unknown views.
    """
    from plotly.offline import get_plotlyjs

    from pruning.store import queries
    from pruning.store.publish import git_revision

    chosen_views = check_views(views)
    chosen = list(dict.fromkeys(str(r) for r in run_ids))
    if not chosen:
        raise ConfigError("runs: none chosen; pass one or more run ids (see `python -m pruning runs`)")
    listing = queries.list_runs(root)
    unknown = [r for r in chosen if r not in set(listing["run_id"])]
    if unknown:
        raise RunNotFoundError(f"runs: {', '.join(map(repr, unknown))} not in the store; see `python -m pruning runs`")
    rows = listing.set_index("run_id").loc[chosen].reset_index().to_dict("records")
    labels = unique_run_labels(rows)
    colors = run_colors([labels[r] for r in chosen])
    details = {r: queries.run_detail(r, root) for r in chosen}
    generated_at = generated_at or datetime.now(timezone.utc)
    figures = iter(f"fig-{i}" for i in range(1000))

    sections = []
    for view in chosen_views:
        if view == "grid":
            body = _grid_view(queries, root, chosen, labels, model, protocol, dataset, figures)
        elif view == "spectra":
            loader = eigenvalues or stored_eigenvalues(root)
            body = _spectra_view(queries, root, chosen, labels, colors, metric, esd_matrix, loader,
                                 (next(figures), next(figures)))
        elif view == "compare":
            body = _compare_view(queries, root, chosen, labels, colors, details, listing, next(figures))
        else:
            body = zeroshot_section(queries.zeroshot_scores(run_ids=chosen, root=root), labels)
        sections.append((VIEW_TITLES[view], body))
    configs = {r: details[r].get("config") or {} for r in chosen}
    document = render_report(title, generated_at, _store_text(root), _code_text(code_revision or git_revision()),
                             runs_section(rows, configs), sections, get_plotlyjs())
    log.info("report of %d run(s), views %s: %.1f MB", len(chosen), ",".join(chosen_views), len(document) / 1e6)
    return document


def _grid_view(queries, root, chosen, labels, model, protocol, dataset, figures) -> str:
    cells = queries.perplexity_cells(root=root)
    mine = cells[cells["run_id"].isin(chosen)]
    if model is not None:
        mine = mine[mine["model"] == model]
    parts = []
    for model_name, of_model in mine.groupby("model", sort=True):
        ds = dataset or _main_dataset(list(cells.loc[cells["model"] == model_name, "dataset"].dropna().unique()))
        of_model = of_model[of_model["dataset"] == ds]
        dense_cells = queries.perplexity_cells(model=model_name, stage="dense", root=root)
        for sparsity, of_sparsity in of_model.groupby("sparsity", sort=True):
            keys = [protocol] if protocol else sorted(of_sparsity["protocol"].dropna().unique(),
                                                      key=protocol_options(cells, model_name, sparsity, ds).index)
            for key in keys:
                dense = dense_perplexity(dense_cells, model_name, ds, key)
                grid = build_grid(cells, model=model_name, sparsity=sparsity, dataset=ds, protocol=key, dense=dense)
                if grid.empty:
                    parts.append(_note(f"No perplexities of {model_name} at {format_sparsity(sparsity)} with protocol {key}."))
                    continue
                label = grid.detail["protocol_label"].iloc[0] if "protocol_label" in grid.detail else key
                parts.append(grid_section(grid, model=model_name, sparsity=float(sparsity), dataset=ds,
                                          protocol_label=str(label), chosen=chosen, labels=labels,
                                          fig_id=next(figures)))
    return "".join(parts) or _note("The chosen runs have no pruned perplexity" + (f" for {model}." if model else "."))


def shared_series(spectra: pd.DataFrame, labels: Mapping[str, str], metric: str) -> tuple[pd.Series, dict[str, list[str]]]:
    """One series per distinct weight spectrum: runs whose (matrix, ``metric``) values are identical (the
    same dense model) share ``"<model> · N runs"``; a run with its own spectrum keeps its label.
    Returns the series of each row and {series: labels of its runs}."""
    signature = {run_id: tuple(sorted(zip(rows["name"], rows[metric].round(9).fillna(-1.0))))
                 for run_id, rows in spectra.groupby("run_id", sort=False)}
    by_signature: dict[tuple, list[str]] = {}
    for run_id, sig in signature.items():
        by_signature.setdefault(sig, []).append(run_id)
    name_of, sharing = {}, {}
    for members in by_signature.values():
        model = str(spectra.loc[spectra["run_id"] == members[0], "model"].iloc[0]) if "model" in spectra else "?"
        series = labels[members[0]] if len(members) == 1 else f"{model} · {len(members)} runs (one weight spectrum)"
        sharing[series] = [labels[r] for r in members]
        name_of.update({r: series for r in members})
    return spectra["run_id"].map(name_of), sharing


def _spectra_view(queries, root, chosen, labels, colors, metric, esd_matrix, loader, fig_ids) -> str:
    frames = [queries.run_table(r, "spectra", root) for r in chosen]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return spectra_section(pd.DataFrame(), metric, {}, colors, None, fig_ids)
    spectra = pd.concat(frames, ignore_index=True)
    weight = spectra[spectra["source"] == "weight"] if "source" in spectra else spectra
    series, sharing = shared_series(weight, labels, metric if metric in weight else "alpha")
    weight = weight.assign(series=series)
    colors = {**colors, **{s: SHARED_COLOR for s, members in sharing.items() if len(members) > 1}}
    run_id = str(spectra["run_id"].iloc[0])
    first = spectra[spectra["run_id"] == run_id]
    names = sorted(first["name"].dropna().unique(), key=lambda n: (len(n), n))
    esd = None
    if esd_matrix is None and names:  # the spectra page's order, skipping fits weightwatcher would flag
        sound = first[[not fit_warning(a, n) for a, n in zip(first.get("alpha", []), first.get("n_tail", []))]]
        esd_matrix = next((n for n in names if n in set(sound["name"])), names[0])
    if esd_matrix is not None:
        rows = first[first["name"] == esd_matrix]
        if rows.empty:
            raise ConfigError(f"esd_matrix: {esd_matrix!r} is not a matrix of run {run_id}; e.g. {names[0]!r}")
        panels, missing = [], []
        for _, row in rows.sort_values("source", ascending=False).iterrows():  # weight first, then hessian
            source = str(row.get("source", "weight"))
            eig = loader(run_id, esd_matrix, source)
            if eig is None:
                missing.append(source)
                continue
            warning = fit_warning(row.get("alpha"), row.get("n_tail"))
            panels.append((f"{source} · {esd_matrix}" + (f" · ⚠ {warning}" if warning else ""), eig,
                           row.get("alpha"), row.get("xmin")))
        esd = (labels[run_id], esd_matrix, panels, missing)
    return spectra_section(weight, metric, sharing, colors, esd, fig_ids)


def _compare_view(queries, root, chosen, labels, colors, details, listing, fig_id) -> str:
    table = listing.set_index("run_id").loc[chosen]
    results = pd.DataFrame({
        "run": [labels[r] for r in chosen],
        "ppl": [format_ppl(v) if v == v and v is not None else "" for v in table["ppl"]],
        "ppl protocol": table["ppl_protocol"].tolist(),
        "zero-shot mean": [f"{v:.4f}" if isinstance(v, float) and v == v else "" for v in table["zeroshot_mean"]],
        "status": table["status"].tolist(),
    }, index=pd.Index(chosen, name="run id"))
    identity = ("kind", "model", "method", "strategy", "preset", "metric", "epsilon", "sparsity", "nm", "status")
    configs = {labels[r]: details[r].get("config") or {"reference": {k: details[r].get(k) for k in identity}}
               for r in chosen}
    allocations = {labels[r]: queries.run_table(r, "allocation", root) for r in chosen}
    return compare_section(results, config_diff(configs), allocations, colors, fig_id)
