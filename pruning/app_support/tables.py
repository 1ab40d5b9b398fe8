"""Small table shapers for the pages (pure pandas)."""

from __future__ import annotations

import math

import pandas as pd

from pruning.evaluation.protocol import add_zeroshot_protocol

MEAN_ROW = "MEAN"
#: task names of lm-eval's own aggregates: never a task of their own (they would count twice in MEAN)
AGGREGATE_TASKS = frozenset({"mean", "average", "MEAN"})


def zeroshot_protocol_options(scores: pd.DataFrame) -> list[str]:
    """Zero-shot protocols (few-shot, limit, harness version; ``pruning.evaluation.protocol``) among ``scores``,
    the default first: unbudgeted (every example) before limited, then the most runs."""
    if scores.empty:
        return []
    labelled = add_zeroshot_protocol(scores)
    limited = labelled["limit"].notna() if "limit" in labelled else pd.Series(False, index=labelled.index)
    stats = labelled.assign(limited=limited).groupby("protocol_label").agg(
        limited=("limited", "max"), runs=("run_id", "nunique"))
    stats = stats.reset_index().sort_values(["limited", "runs", "protocol_label"], ascending=[True, False, True])
    return stats["protocol_label"].tolist()


def _pm(value: float, stderr: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if stderr is None or (isinstance(stderr, float) and math.isnan(stderr)):
        return f"{value:.4f}"
    return f"{value:.4f} ± {stderr:.4f}"


def zeroshot_table(
    scores: pd.DataFrame, metric: str = "acc", stage: str | None = None, protocol: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Task x run text table ("0.4844 ± 0.0103") with a MEAN row (unweighted mean of ``metric``
    over the run's tasks, as lm-eval's 'MEAN' in the notes), and a provenance table per run
    (model, method, preset, protocol, harness version, few-shot, limit, task versions).

    ``scores``: rows of ``queries.zeroshot_scores`` (run_id, task, metric, value, stderr, ...).
    ``protocol``: a label of :func:`zeroshot_protocol_options` (None: the default one); scores of
    another protocol (other few-shot count, example limit or harness version) never share the table.
    lm-eval's own aggregate rows (task ``mean``) are not tasks and are left out of MEAN.
    """
    sub = add_zeroshot_protocol(scores[scores["metric"] == metric])
    sub = sub[~sub["task"].isin(AGGREGATE_TASKS)]
    if protocol is None:
        options = zeroshot_protocol_options(sub)
        protocol = options[0] if options else None
    if protocol is not None:
        sub = sub[sub["protocol_label"] == protocol]
    if stage is not None and "stage" in sub:
        sub = sub[sub["stage"] == stage]
    if "filter" in sub:
        sub = sub[sub["filter"].isna() | sub["filter"].isin(["none", ""])]
    sub = sub.drop_duplicates(["run_id", "task"], keep="first")
    runs = list(dict.fromkeys(sub["run_id"]))
    tasks = sorted(sub["task"].unique())
    text = pd.DataFrame("", index=[*tasks, MEAN_ROW], columns=runs)
    for row in sub.itertuples(index=False):
        text.loc[row.task, row.run_id] = _pm(row.value, getattr(row, "stderr", None))
    for run_id, grp in sub.groupby("run_id", sort=False):
        text.loc[MEAN_ROW, run_id] = f"{grp['value'].mean():.4f} (n={len(grp)})"
    text.index.name = "task"
    meta_cols = [
        c
        for c in ("run_id", "kind", "model", "method", "preset", "label", "protocol_label", "harness_version",
                  "num_fewshot", "limit")
        if c in sub.columns
    ]
    meta = sub[meta_cols].drop_duplicates("run_id").reset_index(drop=True)
    if "task_version" in sub:
        versions = sub.groupby("run_id")[["task", "task_version"]].apply(
            lambda g: ", ".join(f"{t}={v}" for t, v in zip(g["task"], g["task_version"]) if v is not None and v == v)
        )
        meta["task_versions"] = meta["run_id"].map(versions)
    return text, meta


def collapse_dense(per_layer: pd.DataFrame, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Per-layer attention rows of several runs with a ``series`` column, where the dense model's
    statistics appear once per distinct dense measurement instead of once per run.

    Every run stores the statistics of its dense model beside its pruned ones; runs of one model
    (same fingerprint, tokens and text) store identical dense rows, which drew one identical line
    per run. Dense rows are grouped by their exact values: each distinct set becomes one series,
    ``"<model> · dense"`` (numbered when a model has several). Pruned rows get
    ``"<label of the run> · pruned"`` (``labels``: run_id -> label; the run id when missing).

    ``per_layer``: rows of ``queries.attention_stats`` (run_id, model, stage, block, head,
    statistic, value)."""
    labels = labels or {}
    pruned = per_layer[per_layer["stage"] != "dense"]
    pruned = pruned.assign(series=[f"{labels.get(r, r)} · {s if isinstance(s, str) else '?'}"
                                   for r, s in zip(pruned["run_id"], pruned["stage"])])
    dense = per_layer[per_layer["stage"] == "dense"]
    keep, names = [], {}
    for model, of_model in dense.groupby("model", sort=True, dropna=False):
        seen: dict[tuple, str] = {}
        for run_id, rows in of_model.groupby("run_id", sort=False):
            signature = tuple(rows.sort_values(["statistic", "block", "head"], na_position="first")
                              [["statistic", "block", "head", "value"]].itertuples(index=False, name=None))
            if signature not in seen:
                seen[signature] = f"{model} · dense" + (f" ({len(seen) + 1})" if seen else "")
                keep.append(run_id)
            names[run_id] = seen[signature]
    dense = dense[dense["run_id"].isin(keep)]
    dense = dense.assign(series=dense["run_id"].map(names))
    return pd.concat([dense, pruned], ignore_index=True)
