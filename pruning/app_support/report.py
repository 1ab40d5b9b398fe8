"""A meeting report: one self-contained HTML file (grid, spectra, compare, zero-shot) for chosen runs.

The sections reuse the app's own builders (``grid.build_grid`` and ``grid_plots.grid_heatmap``,
``plots.metric_by_block`` and ``plots.esd_figure``, ``compare.config_diff`` and
``plots.sparsity_overlay``, ``tables.zeroshot_table``), so a report shows what the pages show.
It works offline: plotly.js is inlined once in ``<head>`` and every figure is a ``<div>`` plus a
``Plotly.newPlot`` call; nothing is fetched (no CDN, fonts or images). Every table is a real HTML
table whose text is escaped (run labels and notes are user text), and the grid's numbers are text
in the page, not only inside the plotly JSON, so a reader can search them.

:func:`build_report` reads the store (``pruning.store.queries``) and picks what each view shows; the
sections (:mod:`.report_sections`) and the document (:mod:`.report_html`) are pure (frames in, HTML out).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from plotly.offline import get_plotlyjs

from pruning.app_support.colors import SHARED_COLOR, run_colors
from pruning.app_support.compare import config_diff
from pruning.app_support.formatting import format_ppl, format_sparsity, unique_run_labels
from pruning.app_support.grid import build_grid, dense_perplexity, grid_cells, protocol_options
from pruning.app_support.report_html import note, render_report
from pruning.app_support.report_sections import (
    compare_section, grid_section, runs_section, spectra_section, zeroshot_section,
)
from pruning.app_support.report_views import DEFAULT_TITLE, VIEW_TITLES, VIEWS
from pruning.app_support.spectra import fit_warning, run_eigenvalues
from pruning.calibration.protocol import by_calibration, calibration_options
from pruning.errors import ConfigError
from pruning.store import queries
from pruning.store.catalog import snapshot
from pruning.store.errors import RunNotFoundError
from pruning.store.publish import git_revision

log = logging.getLogger(__name__)

#: eigenvalues of (run_id, matrix name, source "weight"|"hessian") for the ESD, or None
EigenvalueLoader = Callable[[str, str, str], "np.ndarray | None"]


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
    snap = snapshot(root)
    key = hashlib.sha256(repr(snap.key).encode()).hexdigest()[:10]
    return (f"{snap.root} · catalog generation {snap.manifest.generation} · "
            f"{len(snap.manifest.bundles) + len(snap.loose) - len(snap.superseded)} bundles · version {key}")


def _code_text(revision: Mapping[str, Any]) -> str:
    commit = revision.get("commit")
    text = f"commit {str(commit)[:10]}" + (" (uncommitted changes)" if revision.get("dirty") else "") if commit \
        else "no git commit"
    return text + f" · source sha256 {revision.get('source_sha256') or '?'}"


def _datasets(datasets: Sequence[str]) -> list[str]:
    """Datasets in the grid page's order: the notes' WikiText-2 or its offline stand-in first, then the others."""
    return sorted(datasets, key=lambda d: (d not in ("wikitext2", "wiki"), d))


def stored_eigenvalues(root: Path | str | None = None) -> EigenvalueLoader:
    """Eigenvalues as the spectra page gets them: from the store's spectra sets only
    (``spectra.run_eigenvalues``); no model is ever loaded."""

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

    grid: one perplexity grid per (model, dataset, sparsity, protocol, calibration) holding a chosen run's
    value, for ``dataset`` or (default) every text the chosen runs were read on (WikiText-2 / wiki first, as
    the grid page, then e.g. lee), all values of that grid shown, the chosen runs' cells outlined;
    ``model`` / ``protocol`` (a ``pruning.evaluation.protocol`` key) restrict it.
    spectra: ``metric`` per block and the ESD of ``esd_matrix`` (default: the spectra page's first matrix
    whose fit weightwatcher would not flag) of the first run with spectra, eigenvalues from
    ``eigenvalues`` (default: :func:`stored_eigenvalues`).
    Raises RunNotFoundError naming unknown run ids and ConfigError naming unknown views.
    """
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
        if view == "study":
            body = _study_view(root, chosen, figures)
        elif view == "grid":
            body = _grid_view(root, chosen, labels, model, protocol, dataset, figures)
        elif view == "spectra":
            loader = eigenvalues or stored_eigenvalues(root)
            body = _spectra_view(root, chosen, labels, colors, metric, esd_matrix, loader,
                                 (next(figures), next(figures)))
        elif view == "compare":
            body = _compare_view(root, chosen, labels, colors, details, listing, next(figures))
        else:
            body = zeroshot_section(queries.zeroshot_scores(run_ids=chosen, root=root), labels)
        sections.append((VIEW_TITLES[view], body))
    configs = {r: details[r].get("config") or {} for r in chosen}
    document = render_report(title, generated_at, _store_text(root), _code_text(code_revision or git_revision()),
                             runs_section(rows, configs), sections, get_plotlyjs())
    log.info("report of %d run(s), views %s: %.1f MB", len(chosen), ",".join(chosen_views), len(document) / 1e6)
    return document


def _study_view(root, chosen, figures) -> str:
    """The Study page's view of every study cell (model, method, sparsity) a chosen run belongs to."""
    from pruning.app_support.report_study import study_section
    from pruning.app_support.study_view import Cell, final_run_ids, per_block
    from pruning.study import study_runs, summarize, verdicts

    runs = study_runs(root)
    mine = runs[runs["run_id"].isin(chosen) & (runs["phase"] == "final") & (runs["method"] != "dense")]
    if mine.empty:
        return note("None of the chosen runs is a final run of the allocation study (tag study-final).")
    summary = summarize(runs)
    verdict = pd.concat([verdicts(summary, "wiki"), verdicts(summary, "lee")], ignore_index=True)
    parts = []
    for (model, method, sparsity), _ in mine.groupby(["model", "method", "sparsity"], sort=True):
        cell = Cell(str(model), str(method), float(sparsity))
        first = {f: ids[0] for f, ids in final_run_ids(runs, cell).items() if f != "dense" and ids}
        blocks = per_block({f: queries.run_table(r, "allocation", root) for f, r in first.items()})
        parts.append(study_section(summary, verdict, cell, blocks, next(figures)))
    return "".join(parts)


def _grid_view(root, chosen, labels, model, protocol, dataset, figures) -> str:
    cells = grid_cells(queries.perplexity_cells(root=root))  # a block probe is never in a grid
    mine = cells[cells["run_id"].isin(chosen)]
    if model is not None:
        mine = mine[mine["model"] == model]
    parts = []
    for model_name, of_all in mine.groupby("model", sort=True):
        # every text the chosen runs were read on (the study's lee beside wiki), the grid page's first first
        datasets = [dataset] if dataset else _datasets(list(of_all["dataset"].dropna().unique()))
        dense_cells = queries.perplexity_cells(model=model_name, stage="dense", root=root)
        for ds, sparsity, of_sparsity in ((d, sp, grp) for d in datasets
                                          for sp, grp in of_all[of_all["dataset"] == d].groupby("sparsity", sort=True)):
            keys = [protocol] if protocol else sorted(of_sparsity["protocol"].dropna().unique(),
                                                      key=protocol_options(cells, model_name, sparsity, ds).index)
            for key in keys:
                dense = dense_perplexity(dense_cells, model_name, ds, key)
                # one grid per calibration of the chosen runs (pruning.calibration.protocol): never mixed
                for calibration in calibration_options(of_sparsity[of_sparsity["protocol"] == key]) or [None]:
                    grid = build_grid(by_calibration(cells, calibration), model=model_name, sparsity=sparsity,
                                      dataset=ds, protocol=key, dense=dense)
                    if grid.empty:
                        parts.append(note(f"No perplexities of {model_name} at {format_sparsity(sparsity)} with "
                                          f"protocol {key}."))
                        continue
                    label = grid.detail["protocol_label"].iloc[0] if "protocol_label" in grid.detail else key
                    label = f"{label} · calibration {calibration}" if calibration else str(label)
                    parts.append(grid_section(grid, model=model_name, sparsity=float(sparsity), dataset=ds,
                                              protocol_label=label, chosen=chosen, labels=labels,
                                              fig_id=next(figures)))
    return "".join(parts) or note("The chosen runs have no pruned perplexity" + (f" for {model}." if model else "."))


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


def _spectra_view(root, chosen, labels, colors, metric, esd_matrix, loader, fig_ids) -> str:
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
    if esd_matrix is None and names:  # the spectra page's order, skipping matrices with a fit weightwatcher flags
        flagged = first[[bool(fit_warning(a, n)) for a, n in zip(first.get("alpha", []), first.get("n_tail", []))]]
        esd_matrix = next((n for n in names if n not in set(flagged["name"])), names[0])
    if esd_matrix is not None:
        rows = first[first["name"] == esd_matrix]
        if rows.empty:
            raise ConfigError(f"esd_matrix: {esd_matrix!r} is not a matrix of run {run_id}; e.g. {names[0]!r}")
        panels, missing, warnings = [], [], []
        for _, row in rows.sort_values("source", ascending=False).iterrows():  # weight first, then hessian
            source = str(row.get("source", "weight"))
            eig = loader(run_id, esd_matrix, source)
            if eig is None:
                missing.append(source)
                continue
            warning = fit_warning(row.get("alpha"), row.get("n_tail"))
            # a short panel title (two long ones printed over each other); the warning goes in a note
            panels.append((f"{source}" + (" · ⚠ fit flagged" if warning else ""), eig, row.get("alpha"), row.get("xmin")))
            if warning:
                warnings.append(f"{source} fit: {warning}")
        esd = (labels[run_id], esd_matrix, panels, missing, warnings)
    return spectra_section(weight, metric, sharing, colors, esd, fig_ids)


def _compare_view(root, chosen, labels, colors, details, listing, fig_id) -> str:
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
