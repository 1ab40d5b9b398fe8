"""The notes' perplexity tables "as they should have looked": a method x layer-group-preset
grid for one model and sparsity, the GT/baseline column pinned first and every cell's delta to
the baseline of its row (DESIGN.md "Reading the notes").

Input is the long table of ``pruning.store.queries.perplexity_cells`` (one row per value:
kind, run_id, model, method, preset, epsilon, sparsity, dataset, ppl, is_baseline, raw_text,
source_line, seed, setting, ...). A cell can hold several values (several ε, a rerun, reference
and own run, the calibration seeds of one setting). What it shows is its *cell statistic*
(:data:`CELL_STATS`):

- ``"mean"`` (default): the values are grouped by ``setting`` (runs whose configs differ only by
  the calibration seed; a value without a setting, e.g. a reference, is a group of its own); each
  group gives the mean of its finite perplexities, their sample std (ddof 1, NaN for one value) and
  n; the cell shows the group of lowest mean as "mean ± std" (std where n >= 2). This is what the
  allocation study reports (mean ± std over 3 seeds, scripts/allocation_study.py): the best seed of
  a setting alone would flatter every allocation that has seeds.
- ``"lowest"``: the lowest single value (the best seed).

Where every group holds one value the two agree exactly. Every cell shows a count of its values;
the delta to the row's baseline is taken from the baseline cell's shown value; and
:attr:`PerplexityGrid.detail` keeps every value (with its seed and setting, and whether it is
part of the shown value) for the table below the heatmap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pruning.app_support.formatting import format_delta_pct, format_ppl
from pruning.app_support.grid_labels import (
    BASELINE_COLUMN, DENSE_COLUMN, METHOD_LABELS, METHOD_ORDER, NO_PRESET, OWN_RUN_MARK, STRATEGY_COLUMN_ORDER,
    UNIFORM_COLUMN, UNLABELED_METHOD, column_label, method_label, ordered,
)
from pruning.app_support.grid_filters import (
    SOURCES, default_protocol, dense_perplexity, epsilon_options, filter_cells, grid_cells, protocol_options,
)
from pruning.config.presets import preset_names

__all__ = ["CELL_STATS", "CELL_STAT_LABELS", "CELL_STAT_LEGEND", "PerplexityGrid", "SOURCES", "build_grid",
           "cell_legend", "cell_options", "default_protocol", "dense_perplexity", "epsilon_options", "filter_cells",
           "grid_cells", "log_color_values", "multi_value_cells", "protocol_options", "shown_values",
           "BASELINE_COLUMN", "DENSE_COLUMN", "OWN_RUN_MARK", "UNLABELED_METHOD"]

#: what a cell shows: the lowest mean over the seeds of one setting, or the lowest single value
CELL_STATS: tuple[str, ...] = ("mean", "lowest")
#: the cell statistics in the words of the grid page's "Cell" control
CELL_STAT_LABELS: dict[str, str] = {"mean": "mean ± std over seeds", "lowest": "lowest value"}
#: what a cell shows, in the words of the grid's caption (page and report)
CELL_STAT_LEGEND: dict[str, str] = {
    "mean": "mean ± std over the calibration seeds of one setting (ddof 1), the lowest such mean",
    "lowest": "best value",
}


@dataclass
class PerplexityGrid:
    """A method x preset grid. All frames share ``index=rows`` and ``columns=columns``.

    ``baseline`` is the column every delta is taken against: the notes' "GT" where the table has
    one, else "uniform" (the same method at the same mean sparsity without a layer-wise
    allocation), else None (no deltas). ``dense`` is the unpruned model's perplexity, shown as
    the first column ("dense") of a table without GT. ``cell_stat`` (one of :data:`CELL_STATS`)
    says what ``best`` holds."""

    rows: list[str]
    columns: list[str]
    # float: the cell's shown perplexity, the lowest group mean ("mean") or the lowest value ("lowest");
    # NaN if only NaN values / empty
    best: pd.DataFrame
    count: pd.DataFrame  # int: how many values the cell holds (the dense column: 1)
    delta: pd.DataFrame  # float: best - best baseline of the same row (NaN if either missing)
    text: pd.DataFrame  # str: cell text (value [± std], delta in %, count, own-run mark)
    source: pd.DataFrame  # str: "reference" | "run" | "dense" | "" — where the shown value comes from
    detail: pd.DataFrame  # every contributing value, with row/column labels, seed, setting, shown
    baseline: str | None = None
    dense: float | None = None
    spread: pd.DataFrame | None = None  # float: sample std (ddof 1) of the shown values; NaN for fewer than 2
    seeds: pd.DataFrame | None = None  # int: how many finite values make the shown value (0 where none)
    cell_stat: str = "mean"

    @property
    def delta_pct(self) -> pd.DataFrame:
        """Relative delta to the row's baseline in % (NaN where either side is missing or the
        baseline is not positive)."""
        if self.baseline is None or self.best.empty:
            return pd.DataFrame(np.nan, index=self.rows, columns=self.columns)
        base = self.best[self.baseline].where(self.best[self.baseline] > 0)
        return (self.best.div(base, axis=0) - 1.0) * 100.0

    def is_nan_result(self, row: str, column: str) -> bool:
        """True when the cell holds values but none is a number (a diverged run: "nan" in the
        notes), as opposed to a cell with no result at all."""
        return int(self.count.loc[row, column]) > 0 and math.isnan(float(self.best.loc[row, column]))

    @property
    def empty(self) -> bool:
        """True when no value matched the filters."""
        return self.detail.empty

    def cell(self, row: str, column: str) -> pd.DataFrame:
        """All values of one cell, the shown ones first, then by perplexity (lowest first)."""
        d = self.detail
        d = d[(d["row"] == row) & (d["column"] == column)]
        if "shown" in d.columns:
            return d.sort_values(["shown", "ppl"], ascending=[False, True], na_position="last", kind="stable")
        return d.sort_values("ppl", na_position="last")

    def value(self, row: str, column: str) -> float:
        """Shown perplexity of a cell (group mean or lowest value, :attr:`cell_stat`; NaN when empty)."""
        return float(self.best.loc[row, column])

    def std(self, row: str, column: str) -> float:
        """Sample std (ddof 1) of the values behind :meth:`value` (NaN for fewer than two)."""
        return float(self.spread.loc[row, column]) if self.spread is not None else math.nan


def shown_values(values: pd.DataFrame, cell_stat: str = "mean") -> tuple[list, float, float, int]:
    """The values one cell shows under ``cell_stat`` (one of :data:`CELL_STATS`).

    ``values``: the cell's rows (``ppl``; ``setting`` where known, rows without one are groups of
    their own), in the order ties are broken by. Returns (index labels of the shown finite values,
    their mean, sample std with ddof 1 — NaN for one value —, their count); ([], NaN, NaN, 0) when no
    value is finite. "lowest": the single lowest value (the first of equal ones). "mean": per setting
    the mean of its finite values, the group of lowest mean (the first of equal means)."""
    if cell_stat not in CELL_STATS:
        raise ValueError(f"cell must be one of {CELL_STATS}, got {cell_stat!r}")
    ppl = pd.to_numeric(values["ppl"], errors="coerce")
    finite = ppl.dropna()
    if finite.empty:
        return [], math.nan, math.nan, 0
    if cell_stat == "lowest":
        winner = finite.idxmin()
        return [winner], float(finite.loc[winner]), math.nan, 1
    setting = values["setting"] if "setting" in values.columns else pd.Series(None, index=values.index)
    groups: dict[object, list] = {}
    for label, key in zip(values.index, setting):
        groups.setdefault(("setting", key) if isinstance(key, str) and key else ("value", label), []).append(label)
    shown: tuple[list, float, float, int] | None = None
    for labels in groups.values():  # in order of each group's first value
        group = finite.loc[[label for label in labels if label in finite.index]]
        if group.empty:
            continue
        mean = float(group.iloc[0]) if len(group) == 1 else float(group.mean())
        std = float(group.std(ddof=1)) if len(group) > 1 else math.nan
        if shown is None or mean < shown[1]:
            shown = (list(group.index), mean, std, len(group))
    assert shown is not None  # some value is finite, so some group has one
    return shown


def build_grid(cells: pd.DataFrame, model: str | None = None, sparsity: float | None = None,
               dataset: str | None = None, source: str = "all", epsilon: float | None = None,
               protocol: str | None = None, dense: float | None = None, cell: str = "mean") -> PerplexityGrid:
    """Pivot perplexity values into the method x preset grid.

    Rows: magnitude, Wanda, SparseGPT (then other methods, then unlabeled values); columns:
    "GT" first, then the strategies' own columns (uniform, OWL, DLP, ATP), then presets in the notes'
    order, then unknown presets. ``cell`` (:data:`CELL_STATS`, :func:`shown_values`): "mean" shows the
    lowest mean over the calibration seeds of one setting, as "mean ± std" (ddof 1) where it averages
    two or more; "lowest" the lowest single value. NaN values only count when nothing else is
    there; delta = cell - the row's baseline cell (its shown value: a mean under "mean"): the GT column
    where the table has one, else the uniform column. ``dense``: the unpruned model's perplexity (same
    protocol), pinned first as a "dense" column when the table has no GT. ``epsilon``: only that ε
    (and values without one); None: all. ``protocol``: the evaluation protocol whose values are shown
    (None: :func:`default_protocol`); values of other protocols never enter a cell, its count or its ε curve.
    """
    if cell not in CELL_STATS:
        raise ValueError(f"cell must be one of {CELL_STATS}, got {cell!r}")
    if dense is not None and not (isinstance(dense, (int, float)) and math.isfinite(dense) and dense > 0):
        raise ValueError(f"dense must be a positive finite perplexity or None, got {dense!r}")
    if protocol is None:
        protocol = default_protocol(cells, model, sparsity, dataset, source)
    # a fresh index: the shown values are marked by label, and a concatenated input may repeat labels
    sub = filter_cells(cells, model, sparsity, dataset, source, epsilon, protocol).reset_index(drop=True)
    if sub.empty:
        empty = pd.DataFrame()
        return PerplexityGrid(
            [], [], empty, empty, empty, empty, empty, pd.DataFrame(columns=["row", "column", "ppl", "kind"]),
            spread=empty, seeds=empty, cell_stat=cell,
        )
    sub["row"] = [method_label(m) for m in sub["method"]]
    base = sub["is_baseline"].fillna(False).astype(bool) if "is_baseline" in sub else pd.Series(False, index=sub.index)
    raw = sub["preset_raw"] if "preset_raw" in sub else pd.Series(None, index=sub.index)
    strategy = sub["strategy"] if "strategy" in sub else pd.Series(None, index=sub.index)
    metric = sub["metric"] if "metric" in sub else pd.Series(None, index=sub.index)
    kind = sub["kind"] if "kind" in sub else pd.Series(None, index=sub.index)
    sub["column"] = [column_label(p, b, r, st, me, k)
                     for p, b, r, st, me, k in zip(sub["preset"], base, raw, strategy, metric, kind)]
    sub["ppl"] = pd.to_numeric(sub["ppl"], errors="coerce")
    rows = ordered(set(sub["row"]), [METHOD_LABELS[m] for m in METHOD_ORDER], last=[UNLABELED_METHOD])
    columns = ordered(set(sub["column"]), preset_names(), first=[BASELINE_COLUMN, *STRATEGY_COLUMN_ORDER],
                      last=[NO_PRESET])
    baseline = next((c for c in (BASELINE_COLUMN, UNIFORM_COLUMN) if c in columns), None)
    if dense is not None and BASELINE_COLUMN not in columns:
        columns = [DENSE_COLUMN, *columns]
    else:
        dense = None

    best = pd.DataFrame(np.nan, index=rows, columns=columns)
    spread = pd.DataFrame(np.nan, index=rows, columns=columns)
    count = pd.DataFrame(0, index=rows, columns=columns)
    seeds = pd.DataFrame(0, index=rows, columns=columns)
    source_of = pd.DataFrame("", index=rows, columns=columns)
    sub["shown"] = False
    for (row, col), grp in sub.groupby(["row", "column"], sort=False):
        count.loc[row, col] = len(grp)
        labels, mean, std, n = shown_values(grp, cell)
        if n:
            best.loc[row, col], spread.loc[row, col], seeds.loc[row, col] = mean, std, n
            sub.loc[labels, "shown"] = True
            source_of.loc[row, col] = str(grp.loc[labels[0], "kind"])
        else:
            source_of.loc[row, col] = str(grp["kind"].iloc[0])
    if dense is not None:
        best[DENSE_COLUMN] = float(dense)
        count[DENSE_COLUMN] = 1
        seeds[DENSE_COLUMN] = 1
        source_of[DENSE_COLUMN] = "dense"
    if baseline is not None:
        delta = best.sub(best[baseline], axis=0)
    else:
        delta = pd.DataFrame(np.nan, index=rows, columns=columns)

    text = pd.DataFrame("", index=rows, columns=columns)
    for row in rows:
        for col in columns:
            n = int(count.loc[row, col])
            if n == 0:
                continue
            val = best.loc[row, col]
            shown = format_ppl(val)
            if int(seeds.loc[row, col]) >= 2:
                shown += " ± " + format_ppl(spread.loc[row, col])
            parts = [(OWN_RUN_MARK + " " if source_of.loc[row, col] == "run" else "") + shown]
            if baseline is not None and col not in (baseline, DENSE_COLUMN):
                d = format_delta_pct(val, best.loc[row, baseline])
                if d:
                    parts.append(f"({d.replace(' %', '%')})")
            if n > 1:
                parts.append(f"×{n}")
            text.loc[row, col] = "<br>".join(parts)
    detail_cols = [
        c
        for c in (
            "row",
            "column",
            "ppl",
            "shown",
            "seed",
            "epsilon",
            "kind",
            "run_id",
            "setting",
            "preset_raw",
            "raw_text",
            "source_file",
            "source_line",
            "sparsity_assumed",
            "limit_windows",
            "dataset",
            "protocol_label",
            "protocol",
        )
        if c in sub.columns
    ]
    detail = sub[detail_cols].sort_values(["row", "column", "ppl"], na_position="last").reset_index(drop=True)
    detail["delta_to_baseline"] = [
        (p - best.loc[r, baseline]) if baseline is not None else np.nan for r, p in zip(detail["row"], detail["ppl"])
    ]
    detail["delta_pct"] = [
        (p / best.loc[r, baseline] - 1.0) * 100.0 if baseline is not None and best.loc[r, baseline] > 0 else np.nan
        for r, p in zip(detail["row"], detail["ppl"])
    ]
    return PerplexityGrid(rows, columns, best, count, delta, text, source_of, detail, baseline, dense,
                          spread=spread, seeds=seeds, cell_stat=cell)


def cell_legend(cell_stat: str, baseline: str | None) -> str:
    """The caption's words for a cell (page and report say the same): "cell = best value, (Δ % to
    uniform), ×count", or the mean's wording under "mean". ``baseline``: the grid's baseline column
    as the caller displays it (escaped for its medium), None when the grid has none."""
    if cell_stat not in CELL_STATS:
        raise ValueError(f"cell must be one of {CELL_STATS}, got {cell_stat!r}")
    return f"cell = {CELL_STAT_LEGEND[cell_stat]}" + (f", (Δ % to {baseline}), ×count" if baseline else ", ×count")


def multi_value_cells(grid: PerplexityGrid) -> pd.DataFrame:
    """Detail rows of the cells that hold more than one value (several ε, reruns)."""
    if grid.empty:
        return grid.detail
    many = {(r, c) for r in grid.rows for c in grid.columns if grid.count.loc[r, c] > 1 and c != DENSE_COLUMN}
    mask = [(r, c) in many for r, c in zip(grid.detail["row"], grid.detail["column"])]
    return grid.detail[mask]


def cell_options(grid: PerplexityGrid) -> list[tuple[str, str]]:
    """(row, column) of every cell that holds values, in display order (for the selectbox
    fallback); the dense column is no cell of its own."""
    return [(r, c) for r in grid.rows for c in grid.columns if grid.count.loc[r, c] > 0 and c != DENSE_COLUMN]


def log_color_values(best: pd.DataFrame) -> pd.DataFrame:
    """log10 of perplexities for the colour scale (non-positive and NaN -> NaN)."""
    arr = best.to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(arr > 0, np.log10(arr), np.nan)
    return pd.DataFrame(z, index=best.index, columns=best.columns)
