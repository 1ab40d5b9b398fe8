"""The runs table's filters, grouping and knob view (pure; ``pages/runs.py`` draws them).

Input is ``pruning.store.queries.list_runs()``: one row per run or reference result set with
model, method, strategy, preset, metric, epsilon, sparsity, ppl, ppl_protocol, ..., joined by
:func:`with_allocation_knobs` with the knobs of the strategies that no spectral metric scores (OWL's
λ, DLP's α and statistic, ATP's β), which ``list_runs`` does not carry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from pruning.allocation.registry import STRATEGY_SPECS
from pruning.calibration.protocol import CALIBRATION_SQL
from pruning.config.run_config import AllocationConfig

#: the columns a run can be grouped by, with their labels
GROUP_BY: dict[str, str] = {
    "model": "model", "method": "method", "strategy": "allocation", "preset": "preset", "metric": "metric",
    "sparsity": "sparsity", "epsilon": "ε", "owl_lambda": "OWL λ", "dlp_alpha": "DLP α", "depth_beta": "ATP β",
    "ppl_protocol": "protocol", "status": "status",
}
#: knobs of the parallel-coordinates view, in axis order (perplexity is the last axis)
KNOBS: tuple[str, ...] = ("method", "strategy", "metric", "preset", "sparsity", "epsilon", "dlp_alpha", "depth_beta")
#: knobs that are numbers (grouped and drawn as numbers, filtered within 1e-9)
NUMERIC_KNOBS: tuple[str, ...] = ("sparsity", "epsilon", "owl_lambda", "dlp_alpha", "depth_beta")
#: the knobs of one strategy (``allocation.<knob>`` of the run's config), blank on other strategies' runs
STRATEGY_KNOBS: dict[str, tuple[str, ...]] = {s.name: s.runs_columns for s in STRATEGY_SPECS if s.runs_columns}
#: read-only SQL over the store's ``runs`` view (``pruning.store.queries.run_sql``): each run's
#: strategy knobs from its stored config
ALLOCATION_KNOBS_SQL = "SELECT DISTINCT r.run_id, r.strategy, " + ", ".join(
    f"json_extract_string(r.config_json, '$.allocation.{knob}') AS {knob}"
    for knobs in STRATEGY_KNOBS.values() for knob in knobs
) + f", {CALIBRATION_SQL} AS calibration, CASE WHEN coalesce(r.method, '') <> 'dense' THEN " \
    "json_extract_string(r.config_json, '$.calibration.seed') END AS seed FROM runs r WHERE r.kind = 'run'"


@dataclass(frozen=True)
class RunFilters:
    """What the runs table keeps; an empty tuple keeps every value. Numbers match within 1e-9."""

    kinds: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    sparsities: tuple[float, ...] = ()
    presets: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    epsilons: tuple[float, ...] = ()
    protocols: tuple[str, ...] = ()
    strategies: tuple[str, ...] = ()
    dlp_alphas: tuple[float, ...] = ()
    depth_betas: tuple[float, ...] = ()
    text: str = ""


def with_allocation_knobs(table: pd.DataFrame, knobs: pd.DataFrame) -> pd.DataFrame:
    """``table`` (``list_runs``) with one column per strategy knob (:data:`STRATEGY_KNOBS`: owl_lambda,
    dlp_alpha, dlp_statistic, depth_beta) from ``knobs`` (the rows of :data:`ALLOCATION_KNOBS_SQL`):
    set on the runs of that strategy only (a config that does not write a knob gets its default), NaN
    / None elsewhere (references, other strategies); and every pruned run's ``calibration``
    ("wiki:train · 128 × 2048", :mod:`pruning.calibration.protocol`) and calibration ``seed``."""
    out = table.copy()
    rows = knobs.drop_duplicates("run_id").set_index("run_id") if "run_id" in knobs else pd.DataFrame()
    strategy = out["strategy"] if "strategy" in out else pd.Series(None, index=out.index, dtype=object)
    for name, names in STRATEGY_KNOBS.items():
        mine = (strategy == name).to_numpy()
        for knob in names:
            default = AllocationConfig.model_fields[knob].default
            stored = out["run_id"].map(rows[knob]) if knob in rows else pd.Series(None, index=out.index)
            value = stored.where(stored.notna(), default)
            if knob in NUMERIC_KNOBS:
                out[knob] = np.where(mine, pd.to_numeric(value, errors="coerce"), np.nan)
            else:
                out[knob] = pd.Series(np.where(mine, value.astype(object), None), index=out.index, dtype=object)
    # the calibration a pruned run read and its seed (None for dense runs and references, which read none)
    for column in ("calibration", "seed"):
        stored = out["run_id"].map(rows[column]) if column in rows else pd.Series(None, index=out.index)
        out[column] = pd.to_numeric(stored, errors="coerce").astype("Int64") if column == "seed" else stored
    return out


def _numbers_in(series: pd.Series, wanted: Sequence[float]) -> pd.Series:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    hit = np.zeros(len(values), dtype=bool)
    for w in wanted:
        hit |= np.isclose(values, float(w), rtol=0.0, atol=1e-9)
    return pd.Series(hit, index=series.index)


def filter_runs(table: pd.DataFrame, filters: RunFilters) -> pd.DataFrame:
    """Rows of ``table`` that pass every filter; ``text`` searches run id, label, tags, preset
    (full text, e.g. "QKVout + split") and notes, case-insensitively."""
    view = table
    for column, wanted in (("kind", filters.kinds), ("model", filters.models), ("method", filters.methods),
                           ("status", filters.statuses), ("metric", filters.metrics),
                           ("ppl_protocol", filters.protocols), ("strategy", filters.strategies)):
        if wanted and column in view:
            view = view[view[column].isin(list(wanted))]
    if filters.presets and "preset" in view:
        view = view[preset_text(view).isin(list(filters.presets))]
    if filters.sparsities and "sparsity" in view:
        view = view[_numbers_in(view["sparsity"], filters.sparsities)]
    for column, numbers in (("epsilon", filters.epsilons), ("dlp_alpha", filters.dlp_alphas),
                            ("depth_beta", filters.depth_betas)):
        if numbers and column in view:
            view = view[_numbers_in(view[column], numbers)]
    if filters.text.strip():
        needle = filters.text.strip().lower()
        hay = view["run_id"].astype(str)
        for column in ("label", "notes"):
            if column in view:
                hay = hay + " " + view[column].fillna("").astype(str)
        hay = hay + " " + preset_text(view)
        if "tags" in view:
            hay = hay + " " + view["tags"].map(lambda t: " ".join(t) if isinstance(t, (list, tuple, np.ndarray)) else "")
        view = view[hay.str.lower().str.contains(needle, regex=False)]
    return view


def preset_text(table: pd.DataFrame) -> pd.Series:
    """The preset as the notes wrote it where they did ("QKVout + split", "Q out gate"), else the
    preset's name; "" when the run has none (uniform, OWL)."""
    preset = table["preset"] if "preset" in table else pd.Series("", index=table.index)
    raw = table["preset_raw"] if "preset_raw" in table else pd.Series(None, index=table.index)
    return raw.where(raw.notna() & (raw.astype(str).str.strip() != "") & (raw.astype(str) != "GT"), preset).fillna("").astype(str)


def group_runs(view: pd.DataFrame, by: str) -> pd.DataFrame:
    """One row per value of ``by`` (a key of :data:`GROUP_BY`): runs, runs with a perplexity,
    best / median perplexity and the best run's id. Perplexities of different protocols are not
    comparable, so grouping by anything but the protocol refuses a view that mixes them."""
    if by not in GROUP_BY:
        raise ValueError(f"group by must be one of {sorted(GROUP_BY)}, got {by!r}")
    if by != "ppl_protocol" and "ppl_protocol" in view:
        protocols = view["ppl_protocol"].dropna().unique()
        if len(protocols) > 1:
            raise ValueError(f"these runs were measured with {len(protocols)} protocols "
                             f"({', '.join(sorted(map(str, protocols)))}): filter one protocol first")
    key = preset_text(view) if by == "preset" else view[by]
    if by not in NUMERIC_KNOBS:  # numbers sort as numbers; text with a visible "none"
        key = key.fillna("—").astype(str).replace("", "—")
    frame = view.assign(_group=key, _ppl=pd.to_numeric(view["ppl"], errors="coerce"))
    rows = []
    for value, grp in frame.groupby("_group", dropna=False, sort=True):
        finite = grp.dropna(subset=["_ppl"])
        best = finite.loc[finite["_ppl"].idxmin()] if not finite.empty else None
        rows.append({
            GROUP_BY[by]: value,
            "runs": len(grp),
            "with ppl": len(finite),
            "best ppl": float(best["_ppl"]) if best is not None else math.nan,
            "median ppl": float(finite["_ppl"].median()) if not finite.empty else math.nan,
            "best run": str(best["run_id"]) if best is not None else "",
        })
    return pd.DataFrame(rows)


def knobs_figure(view: pd.DataFrame) -> go.Figure | None:
    """Parallel coordinates of the config knobs (:data:`KNOBS`) against log10 perplexity, one
    line per run with a finite perplexity, coloured by perplexity; categorical knobs get one
    tick per value. None when fewer than two runs have a perplexity or the view mixes protocols."""
    runs = view[view["kind"] == "run"] if "kind" in view else view
    ppl = pd.to_numeric(runs.get("ppl"), errors="coerce")
    runs = runs[np.isfinite(ppl) & (ppl > 0)]
    if len(runs) < 2 or ("ppl_protocol" in runs and runs["ppl_protocol"].nunique() > 1):
        return None
    log_ppl = np.log10(pd.to_numeric(runs["ppl"]).to_numpy(dtype=float))
    dims = []
    for knob in KNOBS:
        if knob not in runs:
            continue
        values = preset_text(runs) if knob == "preset" else runs[knob]
        if knob in NUMERIC_KNOBS:
            numbers = pd.to_numeric(values, errors="coerce")
            if numbers.notna().sum() == 0:
                continue
            filled = numbers.fillna(0.0 if knob == "sparsity" else -0.05)  # no ε / α / β: below the axis' values
            dims.append(dict(label=GROUP_BY.get(knob, knob), values=filled.to_numpy(dtype=float)))
            continue
        labels = values.fillna("—").astype(str).replace("", "—")
        categories = sorted(labels.unique())
        if len(categories) < 2:
            continue  # one value: an axis that tells nothing
        codes = labels.map({c: i for i, c in enumerate(categories)}).to_numpy(dtype=float)
        dims.append(dict(label=GROUP_BY.get(knob, knob), values=codes, tickvals=list(range(len(categories))),
                         ticktext=categories))
    ticks = [t for t in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 100_000)
             if log_ppl.min() - 1e-9 <= math.log10(t) <= log_ppl.max() + 1e-9]
    dims.append(dict(label="perplexity (log)", values=log_ppl, tickvals=[math.log10(t) for t in ticks],
                     ticktext=[f"{t:g}" for t in ticks]))
    fig = go.Figure(go.Parcoords(
        line=dict(color=log_ppl, colorscale="RdYlGn_r", showscale=False), dimensions=dims,
        labelfont=dict(size=13), tickfont=dict(size=11)))
    fig.update_layout(height=420, margin=dict(l=70, r=70, t=50, b=20))
    return fig
