"""The store tables of a parsed notes file: one reference run per perplexity cell (sparsity 0.7
recorded as assumed, GT cells as the baseline), per zero-shot block and per model of attention
averages, with the raw text and source line of every value."""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import pandas as pd

from pruning.config.run_config import ConfigError
from pruning.importers.notes_parser import NotesParser
from pruning.config.presets import get_preset

ASSUMED_SPARSITY = 0.7


def _preset(raw: str | None, notes: list[str]) -> str | None:
    """Canonical preset of a notes header (GT and plain rows: 'all'); None if it is no preset."""
    if raw is None or raw.strip().upper() == "GT":
        return "all"
    try:
        return get_preset(raw).name
    except ConfigError:
        trimmed = re.sub(r"\s+\d+b$", "", raw.strip(), flags=re.I)
        if trimmed != raw.strip():
            try:
                name = get_preset(trimmed).name
                notes.append(f"header {raw!r}: preset {name!r} with settings tuned on another model size")
                return name
            except ConfigError:
                pass
    return None


def build_tables(parser: NotesParser, source_file: str, bundle: str) -> dict[str, pd.DataFrame]:
    """The store tables (runs, perplexity, zeroshot, attention, metrics) of a parsed notes file."""
    runs, ppl, zs, attn, metrics = [], [], [], [], []
    per_line: dict[int, int] = {}
    base = {"kind": "reference", "sparsity": ASSUMED_SPARSITY, "sparsity_assumed": True, "status": "succeeded",
            "source_file": source_file}
    for cell in parser.cells:
        per_line[cell.line] = per_line.get(cell.line, 0) + 1
        run_id = f"{bundle}-L{cell.line}-{per_line[cell.line]}"
        notes = list(cell.notes)
        preset = _preset(cell.preset_raw, notes)
        runs.append({**base, "run_id": run_id, "model": cell.model, "method": cell.method, "strategy": "linear",
                     "metric": "alpha", "preset": preset, "preset_raw": cell.preset_raw, "epsilon": cell.epsilon,
                     "is_baseline": cell.is_baseline, "source_line": cell.line, "note": "; ".join(notes) or None,
                     "label": f"notes L{cell.line}: {cell.raw_text}"})
        ppl.append({"run_id": run_id, "stage": "pruned", "dataset": "wikitext2", "ppl": cell.ppl, "raw_text": cell.raw_text,
                    "source_file": source_file, "source_line": cell.line})
    for block in parser.zeroshot:
        run_id = f"{bundle}-L{block.line}-zeroshot"
        label = block.label or "zero-shot"
        raw_variant = re.sub(r"^(sparse|dense)\s+", "", block.label, flags=re.I) or None
        notes = ["method not written in the notes"]
        preset = _preset(raw_variant, notes) if raw_variant else None
        config = block.results.get("config", {})
        versions = block.results.get("versions", {})
        acc = []
        for task, scores in block.results["results"].items():
            for metric in ("acc", "acc_norm"):
                if metric not in scores:
                    continue
                zs.append({"run_id": run_id, "stage": "pruned", "task": task, "metric": metric, "filter": "none",
                           "value": float(scores[metric]), "stderr": _float_or_nan(scores.get(f"{metric}_stderr")),
                           "task_version": str(versions.get(task)) if task in versions else None,
                           "num_fewshot": config.get("num_fewshot"), "limit": config.get("limit"),
                           "harness_version": "0.3", "raw_text": f"{task}.{metric}", "source_file": source_file,
                           "source_line": block.task_lines[task]})
            if "acc" in scores:
                acc.append(float(scores["acc"]))
        computed = sum(acc) / len(acc) if acc else float("nan")
        if block.mean is not None:
            if not math.isclose(round(computed, 4), block.mean, abs_tol=5e-5):
                raise parser.error(block.mean_line or block.line, f"MEAN {block.mean} differs from the mean of acc "
                                   f"over {len(acc)} tasks, {computed:.6f}")
            metrics.append({"run_id": run_id, "stage": "pruned", "name": "zeroshot_mean_reported", "value": block.mean,
                            "raw_text": f"MEAN: {block.mean}", "source_file": source_file, "source_line": block.mean_line})
        metrics.append({"run_id": run_id, "stage": "pruned", "name": "zeroshot_mean", "value": computed,
                        "raw_text": None, "source_file": source_file, "source_line": block.line})
        runs.append({**base, "run_id": run_id, "model": block.model, "method": None, "strategy": "linear",
                     "metric": "alpha", "preset": preset, "preset_raw": raw_variant, "epsilon": None, "is_baseline": False,
                     "source_line": block.line, "label": label,
                     "note": "; ".join(notes + [f"lm-eval {config.get('model')} {config.get('model_args')}"])})
    for model in dict.fromkeys(a["model"] for a in parser.attention):
        run_id = f"{bundle}-attention-{re.sub(r'[^A-Za-z0-9]+', '-', model).lower()}"
        rows = [a for a in parser.attention if a["model"] == model]
        runs.append({**base, "run_id": run_id, "model": model, "method": None, "strategy": None, "sparsity": None,
                     "sparsity_assumed": False, "preset": None, "is_baseline": False, "source_line": rows[0]["line"],
                     "label": f"attention averages {model}",
                     "note": "stage not written in the notes; recorded as dense (released weights)"})
        for a in rows:
            attn.append({"run_id": run_id, "stage": "dense", "block": None, "head": None, "statistic": a["statistic"],
                         "value": a["value"], "raw_text": a["raw_text"], "source_file": source_file,
                         "source_line": a["line"]})
    tables = {"runs": pd.DataFrame(runs), "perplexity": pd.DataFrame(ppl), "zeroshot": pd.DataFrame(zs),
              "attention": pd.DataFrame(attn), "metrics": pd.DataFrame(metrics)}
    return {k: v for k, v in tables.items() if not v.empty}


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def tables_fingerprint(tables: dict[str, pd.DataFrame]) -> str:
    """SHA-256 of the tables' content (sorted by name; JSON of each frame, column order kept)."""
    h = hashlib.sha256()
    for name in sorted(tables):
        h.update(name.encode())
        h.update(tables[name].to_json(orient="split", index=False, date_format="iso").encode())
    return h.hexdigest()
