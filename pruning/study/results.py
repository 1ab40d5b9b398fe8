"""The study's numbers from the store: one row per study run (:func:`study_runs`), mean ± std
over the calibration seeds per (model, method, sparsity, family) (:func:`summarize`), and the
verdict (:func:`verdicts`): ours wins a cell only where its mean beats every other family's by more
than the seed spread (:func:`beats_by_spread`). Also the CPU proxy runs (:func:`proxy_runs`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from pruning.config.run_config import RunConfig
from pruning.study.protocol import (
    DOMAIN_TAG, FAMILIES, FAMILY_BY_NAME, OURS, PROXY_TAGS, STUDY_TAG, UNCHOSEN, VALIDATION_DATASET,
    VALIDATION_TAG, ZEROSHOT_TASK, depth_fraction, family_of, knob_text,
)
from pruning.study.sweeps import chosen_final_ids

def _store_root(store: str | Path | None) -> Path | None:
    return None if store is None else Path(store)


def _tagged_runs(root: Path | None, tag: str) -> pd.DataFrame:
    """The store's runs (kind ``run``, latest attempt, any status) carrying ``tag`` in their config or
    annotations; an empty frame with the columns for an empty store."""
    from pruning.store.queries import LIST_COLUMNS, list_runs

    runs = list_runs(root)
    if runs.empty:
        return pd.DataFrame(columns=LIST_COLUMNS)
    return runs[(runs["kind"] == "run") & runs["tags"].map(lambda tags: tag in tags)].reset_index(drop=True)



def study_runs(store: str | Path | None = None, choices_dir: Path | None = None) -> pd.DataFrame:
    """One row per run tagged ``allocation-study``: run_id, status, phase (validation | final |
    domain), model, method, sparsity, family, seed, seconds (the run's ``timings.total``), and for
    final runs wiki, lee (pruned perplexity, whole text, seqlen 2048) and wiki_cloze (acc, 0-shot,
    every example), chosen (False for a final run outside its model's chosen final sweep,
    :func:`chosen_final_ids`) and knobs (:func:`knob_text`). The dense run's values are its dense stage."""
    from pruning.store.queries import run_sql

    root = _store_root(store)
    runs = _tagged_runs(root, STUDY_TAG)
    columns = ["run_id", "status", "phase", "model", "method", "sparsity", "family", "seed", "seconds",
               "chosen", "knobs", "wiki", "lee", ZEROSHOT_TASK]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    ids = set(runs["run_id"])
    raw = run_sql("SELECT run_id, config_json, timings_json FROM runs WHERE kind = 'run'", root)
    raw = raw[raw["run_id"].isin(ids)].set_index("run_id")
    rows = []
    chosen_ids: dict[str, set[str] | None] = {}
    for r in runs.itertuples():
        config = RunConfig.from_dict(json.loads(raw.at[r.run_id, "config_json"]))
        model = config.model.name
        if model not in chosen_ids:
            chosen_ids[model] = chosen_final_ids(model, choices_dir)
        timings = json.loads(raw.at[r.run_id, "timings_json"] or "{}")
        tags = set(r.tags)
        phase = "validation" if VALIDATION_TAG in tags else "domain" if DOMAIN_TAG in tags else "final"
        chosen_here = chosen_ids[model]
        chosen = phase == "validation" or chosen_here is None or r.run_id in chosen_here
        rows.append({"run_id": r.run_id, "status": r.status, "phase": phase, "model": model,
                     "method": config.pruning.method, "sparsity": config.pruning.sparsity, "family": family_of(config),
                     "seed": config.calibration.seed, "seconds": timings.get("total", float("nan")),
                     "chosen": chosen, "knobs": knob_text(config)})
    df = pd.DataFrame(rows)
    values = run_values(sorted(ids), root, "the study runs")
    for col in ("wiki", "lee", ZEROSHOT_TASK):
        df[col] = df["run_id"].map(values[col])
    return df[columns]


def run_values(run_ids: list[str], root: Path | None, what: str) -> pd.DataFrame:
    """The study's numbers of ``run_ids``, indexed by run_id: wiki and lee (pruned perplexity, whole text,
    seqlen 2048; a dense run's dense stage) and wiki_cloze (acc, 0-shot, every example); NaN where a run
    has none. RuntimeError when one (model, text) mixes evaluation protocols (``what`` names the runs)."""
    from pruning.store.queries import perplexity_cells, zeroshot_scores

    ids = set(run_ids)
    cells = perplexity_cells(stage=None, root=root)
    cells = cells[cells["run_id"].isin(ids) & cells["dataset"].isin(["wiki", "lee"]) & (cells["seqlen"] == 2048)
                  & ~cells["budgeted"].astype(bool)]
    cells = cells[(cells["stage"] == "pruned") | (cells["method"] == "dense")]
    _refuse_mixed_protocols(cells, ["model", "dataset"], what)  # token counts differ per tokenizer
    ppl = cells.pivot_table(index="run_id", columns="dataset", values="ppl", aggfunc="first")
    zs = zeroshot_scores(sorted(ids), root)
    if not zs.empty:  # columns that are null in every row are left out of the query's frame
        limit = zs["limit"] if "limit" in zs.columns else pd.Series(float("nan"), index=zs.index)
        fewshot = zs["num_fewshot"] if "num_fewshot" in zs.columns else pd.Series(0, index=zs.index)
        zs = zs[(zs["task"] == ZEROSHOT_TASK) & (zs["metric"] == "acc") & limit.isna() & (fewshot.fillna(0) == 0)
                & ((zs["stage"] == "pruned") | (zs["method"] == "dense"))]
    acc = zs.groupby("run_id")["value"].first() if not zs.empty else pd.Series(dtype=float)
    out = pd.DataFrame(index=pd.Index(sorted(ids), name="run_id"))
    for col in ("wiki", "lee"):
        out[col] = ppl[col].reindex(out.index) if col in ppl.columns else float("nan")
    out[ZEROSHOT_TASK] = acc.reindex(out.index) if len(acc) else float("nan")
    return out


def _refuse_mixed_protocols(cells: pd.DataFrame, by: list[str], what: str) -> None:
    """RuntimeError naming the group when one group of ``cells`` (perplexity_cells rows) holds more
    than one evaluation protocol: a table of it would mix them."""
    for key, grp in cells.groupby(by):
        protocols = sorted(set(grp["protocol"]))
        if len(protocols) > 1:
            name = " ".join(map(str, key if isinstance(key, tuple) else (key,)))
            raise RuntimeError(f"{name}: {what} hold {len(protocols)} protocols {protocols}; the table would mix them")


def _stats(values: pd.Series) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof 1; NaN for one value) and count of the finite values."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return (float(v.mean()) if len(v) else float("nan"), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v))


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (model, method, sparsity, family) of the succeeded final runs: mean, std (ddof 1) and n over
    the calibration seeds of wiki, lee and wiki_cloze, and the wiki perplexity of the lee-calibrated run."""
    ok = runs[(runs["status"] == "succeeded") & runs["phase"].isin(["final", "domain"]) & runs["family"].notna()].copy()
    if "chosen" not in ok.columns:
        ok["chosen"], ok["knobs"] = True, ""
    # runs of knobs that validation did not choose: rows of their own, "family~knobs" (never compared)
    ok["family"] = ok["family"].where(ok["chosen"].astype(bool), ok["family"] + UNCHOSEN)
    keys = ["model", "method", "sparsity", "family"]
    rows = []
    for key, grp in ok.groupby(keys, sort=False):
        final, domain = grp[grp["phase"] == "final"], grp[grp["phase"] == "domain"]
        row = dict(zip(keys, key))
        row["knobs"] = "; ".join(sorted(set(grp["knobs"].dropna()))) if "knobs" in grp.columns else ""
        for col in ("wiki", "lee", ZEROSHOT_TASK):
            row[f"{col}_mean"], row[f"{col}_std"], row[f"{col}_n"] = _stats(final[col])
        row["lee_calibrated_wiki"] = float(domain["wiki"].iloc[0]) if len(domain) else float("nan")
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    order = {f.name: i for i, f in enumerate(FAMILIES)} | {"dense": -1}
    out["_o"] = out["family"].map(lambda f: order[f.split(UNCHOSEN)[0]] + (len(FAMILIES) if UNCHOSEN in f else 0))
    return out.sort_values(["model", "method", "sparsity", "_o"]).drop(columns="_o").reset_index(drop=True)


def _spread(std_a: float, std_b: float) -> float:
    """max of two seed stds; NaN when either is unknown (one seed)."""
    return float("nan") if math.isnan(std_a) or math.isnan(std_b) else max(std_a, std_b)


def beats_by_spread(ours: tuple[float, float], other: tuple[float, float]) -> bool:
    """Whether a lower-is-better ``ours`` (mean, std) beats ``other`` by more than the seed spread:
    mean_other - mean_ours > max(std_ours, std_other)."""
    return other[0] - ours[0] > max(ours[1], other[1])


def verdicts(summary: pd.DataFrame, metric: str = "wiki") -> pd.DataFrame:
    """Per (model, method, sparsity): does ``ours`` beat every other family on ``metric`` (a perplexity)
    by more than the seed spread? Columns: model, method, sparsity, metric, ours, rival (the family
    with the smallest margin over the spread), rival_value, margin (rival mean - ours mean), spread
    (max of the two stds), verdict (``yes``, ``no``, or ``undecided: 1 seed`` where a std is missing,
    ``no data`` without ours; `` (k of 6 rivals)`` appended where families are missing, so such a cell
    never counts as a win), ahead_on_means."""
    rows = []
    if summary.empty:
        return pd.DataFrame(rows)
    pruned = summary[(summary["family"] != "dense") & ~summary["family"].str.contains(UNCHOSEN, regex=False)]
    for (model, method, sparsity), grp in pruned.groupby(["model", "method", "sparsity"], sort=False):
        stats = {f: (r[f"{metric}_mean"], r[f"{metric}_std"], r[f"{metric}_n"]) for f, r in grp.set_index("family").iterrows()}
        row: dict[str, Any] = {"model": model, "method": method, "sparsity": sparsity, "metric": metric}
        ours = stats.get(OURS)
        others = {f: s for f, s in stats.items() if f != OURS and not math.isnan(s[0])}
        if ours is None or math.isnan(ours[0]) or not others:
            rows.append({**row, "verdict": "no data"})
            continue
        spread = {f: _spread(ours[1], s[1]) for f, s in others.items()}
        margin = {f: s[0] - ours[0] for f, s in others.items()}
        # the rival closest to winning: smallest margin beyond the spread (the spread taken as 0 where unknown)
        rival = min(others, key=lambda f: margin[f] - (0.0 if math.isnan(spread[f]) else spread[f]))
        ahead = all(m > 0 for m in margin.values())
        if any(math.isnan(sp) for sp in spread.values()):
            verdict = "undecided: 1 seed"
        else:
            verdict = "yes" if all(beats_by_spread(ours[:2], others[f][:2]) for f in others) else "no"
        n_rivals = len(FAMILIES) - 1
        if len(others) < n_rivals:  # a win is claimed only against every anchor
            verdict += f" ({len(others)} of {n_rivals} rivals)"
        rows.append({**row, "ours": format_mean_std(ours), "rival": rival, "rival_value": format_mean_std(others[rival]),
                     "margin": margin[rival], "spread": spread[rival],
                     "verdict": verdict, "ahead_on_means": ahead})
    return pd.DataFrame(rows)


def format_value(value: float, key: str) -> str:
    """A study number as the tables print it: accuracy to 3 decimals, perplexity to 2 (whole from 1000); "" for NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if key == ZEROSHOT_TASK:
        return f"{value:.3f}"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.2f}"


def format_mean_std(stats: tuple[float, ...], key: str = "wiki") -> str:
    """"316.24 ± 6.28" from (mean, std) — "± std" left out for one seed — and " (n=3)" with a third item, n."""
    mean, std, n = stats[0], stats[1], (stats[2] if len(stats) > 2 else None)
    text = format_value(mean, key)
    if not math.isnan(std):
        text += f" ± {format_value(std, key) if key == ZEROSHOT_TASK else f'{std:.2f}'}"
    return text + (f" (n={n})" if n is not None else "")


def proxy_runs(store: str | Path | None = None) -> pd.DataFrame:
    """The succeeded runs tagged with one of :data:`PROXY_TAGS` and their pruned (dense: dense)
    ``wiki:validation`` perplexity: run_id, model, method, sparsity, allocation, knobs, ppl, windows
    ("24/34"), calibration, seconds. One evaluation protocol per model, or RuntimeError."""
    from pruning.store.queries import perplexity_cells, run_sql

    root = _store_root(store)
    runs = pd.concat([_tagged_runs(root, tag) for tag in PROXY_TAGS], ignore_index=True).drop_duplicates("run_id")
    runs = runs[runs["status"] == "succeeded"]
    columns = ["run_id", "model", "method", "sparsity", "allocation", "knobs", "ppl", "windows", "calibration", "seconds"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    raw = run_sql("SELECT run_id, config_json, timings_json FROM runs WHERE kind = 'run'", root).set_index("run_id")
    # the model's depth as the run pruned it (its allocation's blocks), so no model need be prepared here
    blocks = run_sql("SELECT run_id, max(block) + 1 AS layers FROM allocation GROUP BY run_id", root)
    layers_of = dict(zip(blocks["run_id"], blocks["layers"]))
    cells = perplexity_cells(stage=None, root=root)
    cells = cells[cells["run_id"].isin(set(runs["run_id"])) & (cells["dataset"] == VALIDATION_DATASET)]
    cells = cells[(cells["stage"] == "pruned") | (cells["method"] == "dense")]
    _refuse_mixed_protocols(cells, ["model"], "the proxy runs")
    by_run = cells.set_index("run_id")
    rows = []
    for run_id in runs["run_id"]:
        if run_id not in by_run.index:
            continue
        cell = by_run.loc[run_id]
        config = RunConfig.from_dict(json.loads(raw.at[run_id, "config_json"]))
        family = family_of(config)
        if family == "dense":
            allocation = "dense"
        elif family == OURS and config.allocation.metric_mix == "depth":
            allocation = "Hessian α + depth (ours, third variant)"
        elif family is not None:
            allocation = FAMILY_BY_NAME[family].label
        else:
            allocation = config.allocation.strategy
        knobs = "" if family == "dense" else knob_text(config)
        if config.allocation.strategy == "depth":
            fraction = depth_fraction(config.allocation.depth_beta, config.pruning.sparsity, int(layers_of[run_id]))
            knobs += f" (f={fraction:.2f})"
        c = config.calibration
        rows.append({"run_id": run_id, "model": config.model.name, "method": config.pruning.method,
                     "sparsity": config.pruning.sparsity, "allocation": allocation, "knobs": knobs,
                     "ppl": float(cell["ppl"]), "windows": f"{int(cell['n_windows'])}/{int(cell['total_windows'])}",
                     "calibration": f"{c.dataset} {c.nsamples} × {c.seqlen}, seed {c.seed}",
                     "seconds": json.loads(raw.at[run_id, "timings_json"] or "{}").get("total", float("nan"))})
    return pd.DataFrame(rows, columns=columns).sort_values(["model", "method", "sparsity", "ppl"], ignore_index=True)
