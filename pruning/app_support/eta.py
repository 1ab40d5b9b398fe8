"""How long a job has run and how long it should still take (pure; the Jobs page shows it).

The estimate comes from earlier runs of the same kind (model and method) in the store: their median
total time (``timings_json.total``) minus the time this job has run. With no such history the
progress so far is extrapolated linearly (elapsed / fraction), which is worse because stages are
not equally long (evaluation is a third of a grid run). Never negative; None when neither is known.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from typing import Any


def format_duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``; ``—`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def history_totals(runs: Iterable[dict[str, Any]], model: str | None, method: str | None) -> list[float]:
    """Total seconds of earlier succeeded runs of ``model`` with ``method`` (rows of
    ``queries.list_runs`` joined with their ``timings_json``)."""
    out = []
    for row in runs:
        if row.get("status") != "succeeded" or row.get("model") != model or row.get("method") != method:
            continue
        try:
            total = float(json.loads(row.get("timings_json") or "{}").get("total"))
        except (TypeError, ValueError):
            continue
        if math.isfinite(total) and total > 0:
            out.append(total)
    return out


def eta_seconds(elapsed: float, fraction: float, totals: list[float]) -> tuple[float | None, str]:
    """(seconds still to go, how it was estimated) for a running job."""
    if totals:
        return max(0.0, statistics.median(totals) - elapsed), f"median of {len(totals)} earlier runs"
    if 0.02 <= fraction < 1.0 and elapsed > 0:
        return max(0.0, elapsed / fraction - elapsed), "from progress so far"
    return None, "no estimate yet"
