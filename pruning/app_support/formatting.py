"""Text for perplexities and their deltas, legible at any magnitude (DESIGN.md: notes hold
values from 17.76 to 219402, plus ``nan`` for diverged runs)."""

from __future__ import annotations

import math
from typing import Any

from pruning.allocation.registry import BLOCK_STRATEGIES
from pruning.config.presets import STRATEGY_COLUMNS

#: strategies whose units are always transformer blocks (pruning.allocation.registry)
PER_BLOCK_STRATEGIES: tuple[str, ...] = BLOCK_STRATEGIES


def _as_float(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing / not a number."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


#: (magnitude below, unit, decimals, suffix) of :func:`format_ppl`; each bound is where the
#: rounded text would reach the next scale ("999.995" would print as "1000.00")
_PPL_SCALES: tuple[tuple[float, float, int, str], ...] = (
    (999.995, 1.0, 2, ""), (9_999.5, 1.0, 0, ""), (99_950, 1e3, 1, "k"), (999_500, 1e3, 0, "k"),
    (9.95e6, 1e6, 1, "M"), (1e9, 1e6, 0, "M"),
)


def format_ppl(value: Any) -> str:
    """A perplexity as short text.

    ``nan``/``None`` -> "nan"; inf -> "inf"; below 1000 two decimals ("22.01", "192.69");
    1000-9999 whole numbers ("2845"); 10k-99.9k one decimal in thousands ("54.9k");
    from 100k whole thousands ("219k"); from 1M millions ("1.2M", "35M").
    """
    x = _as_float(value)
    if x is None or math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    for below, unit, digits, suffix in _PPL_SCALES:
        if abs(x) < below:
            return f"{x / unit:.{digits}f}{suffix}"
    return f"{x:.2e}"


def format_delta_pct(value: Any, baseline: Any) -> str:
    """Relative change ``value / baseline - 1`` as text: "-6.4 %", "+27.8 %", "+123 %"; from ten
    times the baseline on, the ratio ("×9.3k"), which stays legible where a percentage would
    read "+932,700 %". "" when either side is missing, infinite or the baseline is not positive."""
    x, b = _as_float(value), _as_float(baseline)
    if x is None or b is None or not (math.isfinite(x) and math.isfinite(b)) or b <= 0:
        return ""
    ratio = x / b
    if ratio >= 10:
        return "×" + format_ppl(ratio).removesuffix(".00")
    pct = (ratio - 1.0) * 100.0
    if abs(pct) < 0.05:
        return "±0 %"
    body = f"{abs(pct):.1f}" if abs(pct) < 99.95 else f"{abs(pct):.0f}"
    return ("+" if pct > 0 else "-") + body + " %"


def format_delta(value: Any, baseline: Any) -> str:
    """Signed difference ``value - baseline`` in perplexity units ("-1.51", "+84.6"); "" when
    either side is missing; the magnitude is formatted like :func:`format_ppl`."""
    x, b = _as_float(value), _as_float(baseline)
    if x is None or b is None or math.isnan(x) or math.isnan(b) or math.isinf(x) or math.isinf(b):
        return ""
    d = x - b
    if d == 0:
        return "±0"
    sign = "+" if d > 0 else "-"
    body = format_ppl(abs(d))
    if abs(d) < 100:
        body = f"{abs(d):.2f}"
    return sign + body


def format_epsilon(value: Any) -> str:
    """ε as the notes write it ("0.2", "0.162"); "default" when missing."""
    x = _as_float(value)
    if x is None or math.isnan(x):
        return "default"
    return f"{x:g}"


def format_sparsity(value: Any) -> str:
    """Sparsity as a percentage ("70%"); "?" when missing."""
    x = _as_float(value)
    if x is None or math.isnan(x):
        return "?"
    return f"{100 * x:g}%"


def short_run_id(run_id: str, width: int = 18) -> str:
    """A run id shortened for plot legends (keeps the method prefix)."""
    return run_id if len(run_id) <= width else run_id[: width - 1] + "…"


def _present(value: Any) -> bool:
    if value is None:
        return False
    try:
        return not (isinstance(value, float) and math.isnan(value)) and str(value).strip() not in ("", "nan", "<NA>")
    except (TypeError, ValueError):
        return False


def run_label(row: Any, with_ppl: bool = True) -> str:
    """One readable label of a run or reference row, the same on every page:
    ``[run] smollm2-135m · wanda · all · alpha_peak · 70% · ε 0.2 · ppl 452.23`` (metric only for
    linear allocations, a budgeted perplexity marked "(budgeted)"). ``row``: a mapping with the
    columns of ``queries.list_runs``."""
    get = row.get
    parts = [str(get("model")) if _present(get("model")) else "?", str(get("method")) if _present(get("method")) else "?"]
    strategy = get("strategy")
    if _present(strategy) and str(strategy) in PER_BLOCK_STRATEGIES:
        # OWL, DLP and ATP allocate per block whatever the preset field says (runs.preset reads "all" for
        # them): the grid's column name, so a label and its grid column agree
        parts.append(STRATEGY_COLUMNS[str(strategy)])
    elif _present(get("preset")):
        parts.append(str(get("preset")))
    elif _present(strategy) and str(strategy) != "linear":
        parts.append(str(strategy))
    if _present(get("metric")) and (not _present(strategy) or str(strategy) == "linear"):
        parts.append(str(get("metric")))
    if _present(get("sparsity")) and get("method") != "dense":
        parts.append(format_sparsity(get("sparsity")))
    if _present(get("epsilon")):
        parts.append(f"ε {float(get('epsilon')):g}")
    if with_ppl and _present(get("ppl")):
        parts.append(f"ppl {format_ppl(get('ppl'))}" + (" (budgeted)" if get("ppl_budgeted") is True else ""))
    prefix = "ref" if get("kind") == "reference" else "run"
    return f"[{prefix}] " + " · ".join(parts)


def short_run_label(row: Any) -> str:
    """:func:`run_label` with what tells runs apart first, for places that cut text (the sidebar's
    chips read "[run] smollm2-135…" for every run): no ``[run]`` prefix, the model last, no
    perplexity: ``wanda · all · alpha_peak · 70% · ε 0.2 · smollm2-135m``; references start ``ref ·``."""
    label = run_label(row, with_ppl=False)
    prefix, _, rest = label.partition("] ")
    parts = rest.split(" · ")
    short = " · ".join(parts[1:] + parts[:1])
    return f"ref · {short}" if prefix == "[ref" else short


def unique_run_labels(rows: list[dict], with_ppl: bool = False, short: bool = False) -> dict[str, str]:
    """{run_id: label} where labels that would repeat (same config, other seed or calibration)
    get the run id's hash appended, so no two columns or legend entries read the same.
    ``short``: :func:`short_run_label` (``with_ppl`` ignored)."""
    labels = {r["run_id"]: short_run_label(r) if short else run_label(r, with_ppl=with_ppl) for r in rows}
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {run_id: (f"{label} · {str(run_id).rsplit('-', 1)[-1][:6]}" if counts[label] > 1 else label)
            for run_id, label in labels.items()}
