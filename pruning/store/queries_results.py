"""Queries of results across runs: perplexity cells and grids, long-form metric grids, zero-shot
scores, attention statistics and the models in the store (engine: :mod:`pruning.store.sql`)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from pruning.calibration.protocol import CALIBRATION_SQL
from pruning.evaluation.protocol import add_ppl_protocol
from pruning.errors import PruningLabError
from pruning.store.errors import StoreError
from pruning.store.sql import memoized, query_df

MAIN_PPL_DATASETS: tuple[str, ...] = ("wiki", "wikitext2")

PPL_CELL_COLUMNS = [
    "kind", "run_id", "model", "method", "preset", "preset_raw", "epsilon", "sparsity", "sparsity_assumed",
    "dataset", "ppl", "is_baseline", "limit_windows", "raw_text", "source_file", "source_line",
    "stage", "strategy", "metric", "label", "note",
    "text_digest", "seqlen", "n_windows", "total_windows", "n_tokens", "protocol", "protocol_label", "budgeted",
    "calibration", "seed", "setting",
]
#: keys of a stored run config left out of its :func:`config_setting`: replicates of one setting differ only here
SETTING_IGNORED: tuple[str, ...] = ("calibration.seed", "label", "tags")
SETTING_DIGEST_CHARS = 12
#: the digest of the text a perplexity scored: recorded in the row since 2026-11-30, before that
#: the run's environment recorded the digests of the offline corpora it read (``wiki.test``, ``lee``)
TEXT_DIGEST_SQL = """coalesce(p.text_digest,
    json_extract_string(r.env_json, '$.corpora."' || p.dataset || '.test"'),
    json_extract_string(r.env_json, '$.corpora."' || p.dataset || '"'))"""


def _filter_runs(where: list[str], params: list, model: str | None, sparsity: float | None) -> None:
    """Append the model / sparsity conditions on the ``runs`` alias ``r`` (in place)."""
    if model is not None:
        where.append("r.model = ?")
        params.append(model)
    if sparsity is not None:
        where.append("abs(r.sparsity - ?) < 1e-9")
        params.append(float(sparsity))


def config_setting(config: dict[str, Any]) -> str:
    """Short hex digest (sha256, :data:`SETTING_DIGEST_CHARS` characters) of a stored run config
    without the keys of :data:`SETTING_IGNORED` (dotted paths): runs that differ only in their
    calibration seed, label or tags share it, and so are replicates of one setting; any other
    difference (method, allocation knob, calibration text, evaluation) gives another digest.

    A config that :class:`pruning.config.run_config.RunConfig` reads is digested in its canonical form (the one
    its run id hashes), so a seed stored before a field existed and one stored after it, with the
    field at its default, stay one setting; any other dict is digested as it is."""
    try:
        canonical = _canonical_without_seed(config)
    except (PruningLabError, ValueError, TypeError):
        canonical = None
    if canonical is not None:
        return hashlib.sha256(canonical.encode()).hexdigest()[:SETTING_DIGEST_CHARS]
    kept = json.loads(json.dumps(config))  # a deep copy that only holds JSON values
    for dotted in SETTING_IGNORED:
        *parents, leaf = dotted.split(".")
        node: Any = kept
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:SETTING_DIGEST_CHARS]


def _canonical_without_seed(config: dict[str, Any]) -> str:
    """:meth:`RunConfig.canonical_json` (label and tags excluded) of ``config`` with its calibration
    seed set to 0; raises when ``config`` is not a run config."""
    from pruning.config.run_config import RunConfig

    return RunConfig.from_dict(config).with_overrides({"calibration.seed": 0}).canonical_json()


def _seed_and_setting(config_json: Any) -> tuple[float, str | None]:
    """(``calibration.seed`` as a float, NaN when absent; :func:`config_setting`) of a run's stored
    config text; (NaN, None) where the row has no config (the notes' references)."""
    if not isinstance(config_json, str) or not config_json:
        return math.nan, None
    config = json.loads(config_json)
    if not isinstance(config, dict):
        raise StoreError(f"a run's config_json is not a JSON object: {config_json[:80]!r}")
    calibration = config.get("calibration")
    seed = calibration.get("seed") if isinstance(calibration, dict) else None
    return (math.nan if seed is None else float(seed)), config_setting(config)


def _with_seed_and_setting(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``seed`` and ``setting`` derived from its ``config_json`` (then dropped)."""
    parsed = {text: _seed_and_setting(text) for text in frame["config_json"].dropna().unique()}
    pairs = [parsed.get(text, (math.nan, None)) if isinstance(text, str) else (math.nan, None)
             for text in frame["config_json"]]
    out = frame.drop(columns=["config_json"])
    out["seed"] = pd.Series([seed for seed, _ in pairs], index=frame.index, dtype=float)
    out["setting"] = pd.Series([setting for _, setting in pairs], index=frame.index, dtype=object)
    return out


def perplexity_cells(model: str | None = None, sparsity: float | None = None, stage: str | None = "pruned",
                     root: Path | str | None = None) -> pd.DataFrame:
    """Long table of perplexities of succeeded runs and reference cells: kind, run_id, model,
    method, preset (canonical), preset_raw, epsilon, sparsity, sparsity_assumed, dataset, ppl
    (NaN kept), is_baseline, limit_windows, raw_text, source_file, source_line, stage, strategy, metric,
    label, note, the evaluation protocol (pruning.evaluation.protocol), the calibration protocol
    (``calibration``, pruning.calibration.protocol), the run's calibration ``seed`` (float; NaN for
    references and configs without one) and its ``setting`` (:func:`config_setting`: values that
    differ only by the calibration seed share it; None for references). ``stage=None`` returns dense
    and pruned rows."""
    where, params = ["r.status = 'succeeded'"], []
    _filter_runs(where, params, model, sparsity)
    if stage is not None:
        where.append("p.stage = ?")
        params.append(stage)
    sql = f"""
        SELECT r.kind, r.run_id, r.model, r.method, r.preset, r.preset_raw, r.epsilon, r.sparsity,
               coalesce(r.sparsity_assumed, false) AS sparsity_assumed, p.dataset, p.ppl,
               coalesce(r.is_baseline, false) AS is_baseline, p.limit_windows, p.raw_text,
               coalesce(p.source_file, r.source_file) AS source_file, coalesce(p.source_line, r.source_line) AS source_line,
               p.stage, r.strategy, r.metric, r.label, coalesce(p.note, r.note) AS note,
               {TEXT_DIGEST_SQL} AS text_digest, p.seqlen, p.n_windows, p.total_windows, p.n_tokens,
               {CALIBRATION_SQL} AS calibration, CASE WHEN r.kind = 'run' THEN r.config_json END AS config_json
        FROM perplexity p JOIN runs r USING (run_id)
        WHERE {' AND '.join(where)}
        ORDER BY r.model, source_line NULLS LAST, r.run_id, p.dataset"""
    return memoized("perplexity_cells", (model, sparsity, stage), root,
                 lambda: _with_seed_and_setting(add_ppl_protocol(query_df(sql, params, root)))[PPL_CELL_COLUMNS])


def _grid_label(df: pd.DataFrame) -> pd.Series:
    label = df["preset"].fillna(df["preset_raw"]).fillna(df["strategy"]).fillna("?")
    return label.where(~df["is_baseline"].astype(bool), "GT")


def perplexity_grid(model: str, sparsity: float | None = None, dataset: str | None = None, aggregate: str = "min",
                    root: Path | str | None = None) -> pd.DataFrame:
    """Method-by-layer-group grid of one model: index = layer group (preset; baselines as 'GT'),
    columns = method, values = ``aggregate`` (min|mean|median|max|count) of pruned perplexity."""
    if aggregate not in ("min", "mean", "median", "max", "count"):
        raise StoreError(f"unknown aggregate {aggregate!r}; accepted: min, mean, median, max, count")
    cells = perplexity_cells(model=model, sparsity=sparsity, root=root)
    if dataset is not None:
        cells = cells[cells["dataset"] == dataset]
    cells = cells.assign(group=_grid_label(cells), method=cells["method"].fillna("(unlabeled)"))
    return cells.pivot_table(index="group", columns="method", values="ppl", aggfunc=aggregate, dropna=False)


def metric_grid(name: str, model: str | None = None, sparsity: float | None = None, stat: str = "mean",
                root: Path | str | None = None) -> pd.DataFrame:
    """Method-by-layer-group grid of a long-form metric (``metrics`` table, rows named ``name``):
    ``stat`` (avg|min|max|median|count) over all matching rows of succeeded runs."""
    funcs = {"mean": "avg", "min": "min", "max": "max", "median": "median", "count": "count"}
    if stat not in funcs:
        raise StoreError(f"unknown stat {stat!r}; accepted: {', '.join(funcs)}")
    where, params = ["m.name = ?", "r.status = 'succeeded'"], [name]
    _filter_runs(where, params, model, sparsity)
    sql = f"""
        SELECT coalesce(r.preset, r.preset_raw, r.strategy, '?') AS "group", coalesce(r.method, '(unlabeled)') AS method,
               {funcs[stat]}(m.value) AS value
        FROM metrics m JOIN runs r USING (run_id) WHERE {' AND '.join(where)} GROUP BY ALL"""

    def compute() -> pd.DataFrame:
        long = query_df(sql, params, root)
        return long.pivot(index="group", columns="method", values="value").sort_index()

    return memoized("metric_grid", (name, model, sparsity, stat), root, compute)


# ---- zero-shot and attention ------------------------------------------------------------------------
def _with_runs(table: str, run_ids: Iterable[str] | None, root: Path | str | None) -> pd.DataFrame:
    ids = None if run_ids is None else sorted(set(run_ids))
    where, params = "", []
    if ids is not None:
        where = "WHERE t.run_id IN (SELECT unnest(?::VARCHAR[]))"
        params = [ids]
    sql = f"""
        SELECT r.kind, r.model, r.method, r.preset, r.preset_raw, r.sparsity, r.label,
               {CALIBRATION_SQL} AS calibration, t.*
        FROM {table} t JOIN runs r USING (run_id) {where}
        ORDER BY r.kind, r.model, t.run_id"""
    key = None if ids is None else tuple(ids)
    return memoized(table, (key,), root, lambda: query_df(sql, params, root).drop(columns=["bundle"]).dropna(axis=1, how="all"))


def zeroshot_scores(run_ids: Iterable[str] | None = None, root: Path | str | None = None) -> pd.DataFrame:
    """Zero-shot rows (task, metric, filter, value, stderr, task_version, num_fewshot, limit,
    harness_version, stage) with run identity (kind, model, method, preset, label), including the
    reference scores imported from the notes and lm-eval files."""
    return _with_runs("zeroshot", run_ids, root)


def attention_stats(run_ids: Iterable[str] | None = None, root: Path | str | None = None) -> pd.DataFrame:
    """Attention statistics (stage, block, head, statistic, value) with run identity, including the
    notes' per-model averages (block and head null)."""
    return _with_runs("attention", run_ids, root)


def models(root: Path | str | None = None) -> pd.DataFrame:
    """Models in the store: model, n_runs, n_reference (result sets of each kind)."""
    sql = """SELECT model, count(*) FILTER (WHERE kind = 'run') AS n_runs,
                    count(*) FILTER (WHERE kind = 'reference') AS n_reference
             FROM runs WHERE model IS NOT NULL GROUP BY model ORDER BY model"""
    return memoized("models", (), root, lambda: query_df(sql, root=root))
