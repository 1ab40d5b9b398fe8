"""Side-by-side comparison of runs: flattened config diffs (changed keys only)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd


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


def _same(a: Any, b: Any) -> bool:
    try:
        if pd.isna(a) and pd.isna(b):
            return True
    except (TypeError, ValueError):
        pass
    return a == b


def config_diff(configs: Mapping[str, Mapping[str, Any]], ignore: tuple[str, ...] = ("version",)) -> pd.DataFrame:
    """Keys whose values differ between runs: index = dotted key, one column per run id.

    Keys missing from a run show as "—". Returns an empty frame (with the run columns) when
    every key agrees.
    """
    flat = {run_id: flatten(cfg) for run_id, cfg in configs.items()}
    keys = sorted({k for f in flat.values() for k in f} - set(ignore))
    missing = object()
    rows = {}
    for key in keys:
        values = [f.get(key, missing) for f in flat.values()]
        first = values[0]
        if all(v is not missing and first is not missing and _same(v, first) for v in values):
            continue
        rows[key] = [
            "—" if v is missing else ("" if v is None else str(v) if isinstance(v, tuple) else v) for v in values
        ]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(flat))
    frame.index.name = "key"
    return frame.astype(str) if not frame.empty else frame
