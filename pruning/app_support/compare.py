"""Side-by-side comparison of runs: flattened config diffs (changed keys only)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from pruning.config.allocation import STRATEGY_FIELDS

#: how a setting the run never read shows in the config differences
NOT_USED = "not used"
#: methods that read calibration data themselves (the allocation's statistics may too)
CALIBRATING_METHODS = ("wanda", "sparsegpt")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'pruning': {'sparsity': 0.7}} -> {'pruning.sparsity': 0.7}; lists become tuples."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        elif isinstance(value, list):
            out[dotted] = tuple(value)
        else:
            out[dotted] = value
    return out


def parse_config(config: Any) -> dict[str, Any]:
    """A run's config as a dict, from a dict or its JSON text (None/invalid -> {})."""
    if isinstance(config, Mapping):
        return dict(config)
    if isinstance(config, str) and config.strip():
        try:
            data = json.loads(config)
        except json.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}
    return {}


def unused_settings(config: Mapping[str, Any]) -> set[str]:
    """Dotted keys of ``config`` (a stored run config) that its run never read: allocation fields of
    other strategies (:data:`pruning.config.allocation.STRATEGY_FIELDS`), SparseGPT's knobs in other
    methods, the calibration of a run that reads none, and everything about pruning in a dense run."""
    alloc = config.get("allocation") if isinstance(config.get("allocation"), Mapping) else {}
    pruning = config.get("pruning") if isinstance(config.get("pruning"), Mapping) else {}
    method, strategy = pruning.get("method"), alloc.get("strategy")
    flat = flatten(config)
    out: set[str] = set()
    if strategy in STRATEGY_FIELDS:
        used = set(STRATEGY_FIELDS[strategy]) | {"strategy"}
        out |= {k for k in flat if k.startswith("allocation.") and k.split(".", 1)[1] not in used}
    if method != "sparsegpt":
        out |= {k for k in flat if k in ("pruning.blocksize", "pruning.percdamp")}
    metrics = [alloc.get("metric"), alloc.get("metric_mix")]
    reads_calibration = (method in CALIBRATING_METHODS or strategy in ("owl", "dlp")
                         or (strategy == "linear" and any(str(m or "").startswith("hessian_") for m in metrics)))
    if not reads_calibration or method == "dense":
        out |= {k for k in flat if k.startswith("calibration.")}
    if method == "dense":
        out |= {k for k in flat if k.startswith("allocation.") or k in ("pruning.sparsity", "pruning.nm",
                                                                         "pruning.blocksize", "pruning.percdamp")}
    return out


#: run-table columns that only a spectral (``linear``) allocation reads
LINEAR_COLUMNS: tuple[str, ...] = ("preset", "metric", "epsilon")


def blank_unused_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (rows of the runs table) with the spectral allocation's columns emptied where the run's
    strategy is not ``linear`` (the store fills preset 'all' for OWL, DLP and ATP runs, which read none)."""
    if "strategy" not in runs:
        return runs
    out = runs.copy()
    other = out["strategy"].notna() & (out["strategy"] != "linear")
    for column in (c for c in LINEAR_COLUMNS if c in out):
        out[column] = out[column].astype(object)
        out.loc[other, column] = None
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        if pd.isna(a) and pd.isna(b):
            return True
    except (TypeError, ValueError):
        pass
    return a == b


def config_diff(configs: Mapping[str, Mapping[str, Any]], ignore: tuple[str, ...] = ("version",)) -> pd.DataFrame:
    """Keys whose values differ between runs: index = dotted key, one column per run id.

    Keys missing from a run show as "—", settings a run never read (:func:`unused_settings`) as
    "not used"; a key that no run read, or that every run has alike, is left out. Returns an empty
    frame (with the run columns) when every key agrees.
    """
    flat = {run_id: flatten(cfg) for run_id, cfg in configs.items()}
    unused = {run_id: unused_settings(cfg) for run_id, cfg in configs.items()}
    keys = sorted({k for f in flat.values() for k in f} - set(ignore))
    missing = object()
    rows = {}
    for key in keys:
        values = [NOT_USED if key in unused[r] else f.get(key, missing) for r, f in flat.items()]
        first = values[0]
        if all(v is not missing and first is not missing and _same(v, first) for v in values):
            continue  # equal everywhere, or a setting no run read
        rows[key] = [
            "—" if v is missing else ("" if v is None else str(v) if isinstance(v, tuple) else v) for v in values
        ]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(flat))
    frame.index.name = "key"
    return frame.astype(str) if not frame.empty else frame
