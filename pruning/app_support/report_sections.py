"""The report's sections, pure (frames in, HTML out): each reuses the app's own builders
(``grid_plots.grid_heatmap``, ``plots.metric_by_block``, ``plots.esd_figure``, ``plots.sparsity_overlay``,
``tables.zeroshot_table``), so a report shows what the pages show."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pruning.app_support.colors import recolor
from pruning.app_support.formatting import format_ppl, format_sparsity, run_label
from pruning.app_support.grid import OWN_RUN_MARK, PerplexityGrid, cell_legend
from pruning.app_support.grid_plots import grid_heatmap
from pruning.app_support.plots import esd_figure, metric_by_block, sparsity_overlay
from pruning.app_support.report_html import escape, figure_html, html_table, note, protocol_line
from pruning.app_support.spectra import fit_warning
from pruning.app_support.tables import zeroshot_protocol_options, zeroshot_table
from pruning.calibration.protocol import by_calibration, calibration_options
from pruning.evaluation.protocol import add_zeroshot_protocol


def _grid_cell(text: Any) -> str:
    """A grid cell's text (value ± spread, Δ %, count: ``grid.text``, parts split by ``<br>``) as escaped
    parts that each stay on one line (the spread a part of its own), so a wide grid wraps between them
    instead of running off the page (at 1400 px the study's nine columns were cut on the right)."""
    parts = [p for p in str(text or "").replace(" ± ", "<br>± ").split("<br>") if p]
    return " ".join(f'<span class="nw">{escape(p)}</span>' for p in parts)


def grid_section(grid: PerplexityGrid, *, model: str, sparsity: float, dataset: str | None, protocol_label: str,
                 chosen: Sequence[str], labels: Mapping[str, str], fig_id: str) -> str:
    """One grid: its heading and protocol, the heatmap (``grid_plots.grid_heatmap``, coloured by Δ % to the
    baseline as the grid page does by default) and the same cells as an HTML table (``grid.text``), the
    chosen runs' cells outlined and listed with their run labels."""
    detail = grid.detail
    mine = detail[detail["run_id"].isin(list(chosen))] if "run_id" in detail else detail.iloc[0:0]
    text = grid.text.copy()
    text.index.name = "method"
    # headers may break after "+" and "_" ("all · hessian_alpha+alpha_peak" has no space to wrap at)
    breakable = {c: str(c).replace("+", "+\u200b").replace("_", "_\u200b") for c in text.columns}
    text.columns = [breakable[c] for c in text.columns]
    marked = {(str(r), breakable.get(c, str(c))) for r, c in zip(mine["row"], mine["column"])}
    where = [f"{escape(labels.get(r, r))} → {escape(row)} / {escape(col)} ({escape(format_ppl(p))})"
             for r, row, col, p in zip(mine["run_id"], mine["row"], mine["column"], mine["ppl"])]
    assumed = "sparsity_assumed" in detail and bool(detail["sparsity_assumed"].fillna(False).astype(bool).any())
    caption = (f"{dataset or ''} perplexity at {format_sparsity(sparsity)} sparsity"
               + (" (assumed: the notes do not state it)" if assumed else "")
               + (f" · dense model {format_ppl(grid.dense)}" if grid.dense is not None else "")
               + " · " + cell_legend(grid.cell_stat, grid.baseline)
               + f" · {OWN_RUN_MARK} = the team's own run · outlined = a chosen run's cell")
    return (f"<h3>{escape(model)} · {escape(format_sparsity(sparsity))} · {escape(dataset or '')}</h3>"
            + protocol_line(f"perplexity, {protocol_label}") + note(caption, "caption")
            + figure_html(grid_heatmap(grid, color_by="delta" if grid.baseline else "ppl"), fig_id)
            + html_table(text, css_class="grid", marked=marked, render=_grid_cell)
            + ("<p>Chosen runs in this grid (outlined): " + "; ".join(where) + "</p>" if where else
               note("None of the chosen runs has a value in this grid.")))


def spectra_section(spectra: pd.DataFrame, metric: str, sharing: Mapping[str, Sequence[str]],
                    colors: Mapping[str, str],
                    esd: tuple[str, str, list[tuple[str, np.ndarray, float | None, float | None]], list[str],
                               list[str]] | None,
                    fig_ids: tuple[str, str]) -> str:
    """``metric`` per block and matrix type (``plots.metric_by_block`` on the weight spectra), a table of
    fits flagged as weightwatcher does (``spectra.fit_warning``), and the ESD of one matrix
    (``plots.esd_figure``) when its eigenvalues are at hand.

    ``spectra``: weight-spectra rows with a ``series`` column; ``sharing``: series -> labels of the runs
    it stands for (runs of one dense model share its weight spectra: one line, not one per run);
    ``colors``: series -> colour; ``esd``: (run label, matrix name, panels, sources without eigenvalues,
    warnings of flagged fits)."""
    if spectra.empty:
        return note("The chosen runs have no spectra (uniform or OWL allocation does not compute them).")
    dtypes = ", ".join(sorted(spectra["eig_dtype"].dropna().astype(str).unique())) if "eig_dtype" in spectra else ""
    parts = [protocol_line("spectra of the dense model's weights (eigenvalues of WᵀW"
                            + (f", {dtypes}" if dtypes else "") + "); no evaluation text is involved")]
    if metric not in spectra or spectra[metric].isna().all():
        parts.append(note(f"No {metric} in the chosen runs' weight spectra."))
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
                 + note("flagged: α < 2 (over-trained) or α > 6 (under-trained, fit unreliable), or fewer than "
                         "20 tail eigenvalues · runs of one model share its weight spectra", "caption"))
    if esd is not None:
        label, name, panels, missing, warnings = esd
        parts.append(f"<h3>ESD of {escape(name)} · {escape(label)}</h3>")
        if panels:
            parts.append(figure_html(esd_figure(panels), fig_ids[1]))
        if warnings:
            parts.append(note("⚠ " + "; ".join(warnings), "warning"))
        if missing:
            parts.append(note(f"No eigenvalues of the {' and '.join(missing)} spectrum in the results store: "
                               "the run published no spectra set of that source (Hessian spectra exist only "
                               "for runs that computed them on calibration data)."))
    return "".join(parts)


def compare_section(results: pd.DataFrame, diff: pd.DataFrame, allocations: Mapping[str, pd.DataFrame],
                    colors: Mapping[str, str], fig_id: str) -> str:
    """Results of the chosen runs with each perplexity's protocol (a warning when they differ), the
    config keys that differ (``compare.config_diff``), and sparsity per block (``plots.sparsity_overlay``)."""
    protocols = sorted(results["ppl protocol"].dropna().unique()) if "ppl protocol" in results else []
    parts = [protocol_line("perplexity as each row states (" + "; ".join(protocols) + ")" if protocols
                            else "no perplexity recorded")]
    if len(protocols) > 1:
        parts.append(note("These runs' perplexities were measured with different protocols: they are shown "
                           "side by side, not comparable.", "warning"))
    parts.append(html_table(results, css_class="plain"))
    parts.append("<h3>Config differences</h3>")
    parts.append(html_table(diff, css_class="plain") if not diff.empty
                 else note("The configs are identical (apart from label and tags)."))
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
        return note("No zero-shot results for the chosen runs.")
    stages = set(scores["stage"].dropna()) if "stage" in scores else set()
    stage = "pruned" if "pruned" in stages else (sorted(stages)[0] if stages else None)
    parts = []
    labelled = add_zeroshot_protocol(scores[scores["metric"] == metric])
    for protocol, calibration in [(p, c) for p in zeroshot_protocol_options(scores[scores["metric"] == metric])
                                  for c in calibration_options(labelled[labelled["protocol_label"] == p]) or [None]]:
        # one table per protocol and calibration (pruning.calibration.protocol): never mixed
        by_task, meta = zeroshot_table(by_calibration(scores, calibration), metric=metric, stage=stage, protocol=protocol)
        if by_task.empty or by_task.columns.empty:
            continue
        meta = meta.assign(run=meta["run_id"].map(lambda r: labels.get(r, r))).set_index("run")
        parts.append(protocol_line(f"zero-shot {metric}, {protocol}" + (f", calibration {calibration}" if calibration else "")
                                   + (f", stage {stage}" if stage else ""))
                     + ('<p class="warning">Budgeted protocol (an example limit): part of each task only.</p>'
                        if "budgeted" in protocol else "")
                     + html_table(by_task[[r for r in labels if r in by_task.columns]].rename(columns=dict(labels)),
                                  css_class="plain")
                     + "<details><summary>provenance</summary>" + html_table(meta, css_class="plain")
                     + "</details>")
    return "".join(parts) or note(f"No zero-shot {metric} for the chosen runs.")


def runs_section(rows: Sequence[Mapping[str, Any]], configs: Mapping[str, Mapping[str, Any]]) -> str:
    """The chosen runs: id, readable label (``formatting.run_label``), kind, status, perplexity with its
    protocol, the user's label, tags and notes, and the full config (collapsed)."""
    table = pd.DataFrame([{
        "run id": r["run_id"], "run": run_label(r), "kind": r.get("kind"), "status": r.get("status"),
        "created": str(r.get("created_at") or "")[:16].replace("T", " "), "ppl protocol": r.get("ppl_protocol"), "label": r.get("label"),
        "tags": ", ".join(r.get("tags") or []), "notes": r.get("notes") or r.get("note"),
    } for r in rows]).set_index("run id")
    details = "".join(
        f"<details><summary>config of <code>{escape(run_id)}</code></summary><pre>"
        f"{escape(json.dumps(config, indent=2, sort_keys=True, default=str))}</pre></details>"
        for run_id, config in configs.items() if config)
    return html_table(table, css_class="plain runs") + details
