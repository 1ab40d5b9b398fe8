"""Importer for lm-evaluation-harness result files (JSON), layouts of 0.3 and 0.4.

Both are normalized to the store's ``zeroshot`` rows: (task, metric, filter, value, stderr,
task_version, num_fewshot, limit, harness_version).

- 0.3: ``results[task] = {"acc": x, "acc_stderr": e, "acc_norm": ...}``, ``versions[task]``,
  ``config.num_fewshot``/``config.limit``. Filter is recorded as ``none``.
- 0.4: ``results[task] = {"alias": ..., "acc,none": x, "acc_stderr,none": e}``, ``versions``,
  ``n-shot``, ``config.limit``, ``lm_eval_version``. ``"N/A"`` stderr becomes NaN.

The results attach either to an existing run (``run_id``: rows added to it in a new bundle, the
run's own artifacts stay untouched) or become a new reference result set (``model`` + ``label``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from pruning.importers.notes import source_name
from pruning.store.errors import ImportFormatError
from pruning.store.publish import PublishResult, publish_bundle
from pruning.store.queries import run_exists

log = logging.getLogger(__name__)

_SKIP_KEYS = {"alias", "name", "sample_len", "samples"}


def _float(value: Any, where: str) -> float:
    """A finite number, or NaN for a missing/"N/A" value; anything else is an ImportFormatError."""
    if value is None or (isinstance(value, str) and value.strip().upper() in ("N/A", "NAN", "")):
        return float("nan")
    if isinstance(value, bool):
        raise ImportFormatError(f"{where}: value {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ImportFormatError(f"{where}: value {str(value)[:80]!r} is not a number") from None
    if math.isinf(number):
        raise ImportFormatError(f"{where}: value {value!r} is not a finite number")
    return number


def _mapping(data: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    """``data[key]`` when it is a mapping, {} when absent; an ImportFormatError otherwise."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImportFormatError(f"{source}: {key!r} is {type(value).__name__}, expected a mapping")
    return value


def _optional_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ImportFormatError(f"{where}: value {str(value)[:80]!r} is not an integer")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ImportFormatError(f"{where}: value {str(value)[:80]!r} is not an integer") from None


def detect_layout(data: Any, source: str) -> str:
    """'0.3' or '0.4'; ImportFormatError naming the keys found for anything else."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict) or not data["results"]:
        keys = sorted(data)[:12] if isinstance(data, dict) else type(data).__name__
        raise ImportFormatError(f"{source}: unknown lm-eval layout: no non-empty 'results' mapping (top-level keys: {keys})")
    for task, scores in data["results"].items():
        if not isinstance(scores, dict):
            raise ImportFormatError(f"{source}: unknown lm-eval layout: results[{task!r}] is {type(scores).__name__}, "
                                    "expected a mapping of metric names to numbers")
    metric_keys = {k for scores in data["results"].values() for k in scores} - _SKIP_KEYS
    with_filter = {k for k in metric_keys if "," in k}
    if with_filter and with_filter == metric_keys:
        return "0.4"
    if not with_filter and metric_keys and all(isinstance(v, dict) for v in data["results"].values()):
        return "0.3"
    raise ImportFormatError(f"{source}: unknown lm-eval layout: metric keys {sorted(metric_keys)[:12]} are neither "
                            "0.3 ('acc', 'acc_stderr') nor 0.4 ('acc,none', 'acc_stderr,none')")


def normalize(data: dict[str, Any], source: str) -> pd.DataFrame:
    """zeroshot rows (task, metric, filter, value, stderr, task_version, num_fewshot, limit,
    harness_version) of an lm-eval result dict of either layout."""
    layout = detect_layout(data, source)
    versions = _mapping(data, "versions", source)
    config = _mapping(data, "config", source)
    n_shot = _mapping(data, "n-shot", source)
    configs = data.get("configs") if isinstance(data.get("configs"), dict) else {}
    harness = str(data.get("lm_eval_version") or layout)
    limit = config.get("limit")
    limit = None if limit is None else _float(limit, f"{source}: config['limit']")
    rows, skipped = [], []
    for task, scores in data["results"].items():
        if not isinstance(scores, dict):
            raise ImportFormatError(f"{source}: results[{task!r}] is {type(scores).__name__}, expected a mapping")
        fewshot = n_shot.get(task, config.get("num_fewshot"))
        if fewshot is None and isinstance(configs.get(task), dict):
            fewshot = configs[task].get("num_fewshot")
        fewshot = _optional_int(fewshot, f"{source}: num_fewshot of {task!r}")
        for key, value in scores.items():
            if key in _SKIP_KEYS:
                continue
            if layout == "0.4":
                metric, filt = key.split(",", 1)
            else:
                metric, filt = key, "none"
            if metric.endswith("_stderr"):
                continue
            if isinstance(value, (dict, list, bool)) or (
                    isinstance(value, str) and not re.fullmatch(r"[-+0-9.eE]+|N/A", value)):
                log.debug("%s: skipping non-numeric %s.%s", source, task, key)
                skipped.append(f"results[{task!r}][{key!r}] = {str(value)[:40]!r}")
                continue
            stderr_key = f"{metric}_stderr,{filt}" if layout == "0.4" else f"{metric}_stderr"
            rows.append({
                "stage": "pruned", "task": task, "metric": metric, "filter": filt,
                "value": _float(value, f"{source}: results[{task!r}][{key!r}]"),
                "stderr": _float(scores.get(stderr_key), f"{source}: results[{task!r}][{stderr_key!r}]"),
                "task_version": None if versions.get(task) is None else str(versions.get(task)),
                "num_fewshot": fewshot,
                "limit": limit,
                "harness_version": harness, "raw_text": f"{task}.{key}",
            })
    if not rows:
        example = f" (not a number: {skipped[0]})" if skipped else ""
        raise ImportFormatError(f"{source}: no numeric metrics in 'results'{example}")
    return pd.DataFrame(rows)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:80] or "x"


def import_lm_eval(path: str | Path, *, run_id: str | None = None, model: str | None = None, label: str | None = None,
                   stage: str = "pruned", root: Path | str | None = None) -> PublishResult:
    """Import one lm-eval JSON file, attached to ``run_id`` or as a reference (``model`` + ``label``).

    Published atomically as its own bundle; re-importing the same file is a no-op.
    """
    path = Path(path)
    if (run_id is None) == (model is None):
        raise ImportFormatError("give either --run RUN_ID or --model NAME (with --label)")
    if not path.is_file():
        raise ImportFormatError(f"lm-eval file {str(path)!r} does not exist")
    source = source_name(path)
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImportFormatError(f"{source}: not valid JSON: {exc}") from None
    rows = normalize(data, source).assign(stage=stage, source_file=source)
    config = _mapping(data, "config", source)
    digest = hashlib.sha256(raw).hexdigest()
    if run_id is not None:
        if not run_exists(run_id, root=root):
            raise ImportFormatError(f"run {run_id!r} is not in the store; see `python -m pruning runs`")
        bundle = f"lmeval-{_slug(run_id)}-{digest[:8]}"
        tables = {"zeroshot": rows.assign(run_id=run_id)}
        target = run_id
    else:
        label = label or path.stem
        target = f"ref-lmeval-{_slug(model)}-{_slug(label)}"
        bundle = target
        runs = pd.DataFrame([{"run_id": target, "kind": "reference", "model": model, "label": label, "status": "succeeded",
                              "source_file": source, "is_baseline": False,
                              "note": f"lm-eval {config.get('model_args') or ''}".strip()}])
        tables = {"runs": runs, "zeroshot": rows.assign(run_id=target)}
    mean = rows.loc[rows["metric"] == "acc", "value"].mean()
    info = {"kind": "reference", "importer": "lm-eval", "source_file": source, "run_id": target}
    result = publish_bundle(bundle, tables, info=info, root=root, content_hash=digest, if_exists="skip_same")
    log.info("imported %s -> %s: %d rows, %d tasks, mean acc %s", source, target, len(rows), rows["task"].nunique(),
             "n/a" if math.isnan(mean) else f"{mean:.4f}")
    return result
