"""Row and column labels of the perplexity grid: a method's display name, the column of one value
(GT, a strategy's own column — uniform, OWL, DLP, ATP —, a preset, "preset · metric") and the display
order of both."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pruning.config.presets import STRATEGY_COLUMNS, normalize_preset_name, preset_names, strategy_column

BASELINE_COLUMN = "GT"
DENSE_COLUMN = "dense"  # the unpruned model, pinned first in a table without the notes' GT
METHOD_ORDER: tuple[str, ...] = ("magnitude", "wanda", "sparsegpt")
METHOD_LABELS: dict[str, str] = {"magnitude": "magnitude", "wanda": "Wanda", "sparsegpt": "SparseGPT"}
UNLABELED_METHOD = "(method not written)"
NO_PRESET = "(no preset)"
OWN_RUN_MARK = "●"  # prefix of cells whose best value comes from the team's own runs
UNIFORM_COLUMN = STRATEGY_COLUMNS["uniform"]
OWL_COLUMN = STRATEGY_COLUMNS["owl"]
#: the columns of strategies that no spectral metric scores (uniform, OWL, DLP, ATP), in the order the
#: grid shows them right after the baseline
STRATEGY_COLUMN_ORDER: tuple[str, ...] = tuple(STRATEGY_COLUMNS.values())
#: metrics shown under the plain preset column: the notes' "ww" (WeightWatcher-style alpha, fit
#: unspecified; imported as "alpha") and AlphaPruning's `alpha_peak`, which their GT reproduces
DEFAULT_METRICS = ("alpha", "alpha_peak")
#: the team's own runs tell WeightWatcher's KS-chosen `alpha` apart from `alpha_peak`
RUN_DEFAULT_METRICS = ("alpha_peak",)


def _missing(value: object) -> bool:
    """None, NaN or blank text: a label the table does not state."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def method_label(method: object) -> str:
    """Display label of a method ("Wanda"); missing methods get :data:`UNLABELED_METHOD`."""
    if _missing(method):
        return UNLABELED_METHOD
    return METHOD_LABELS.get(str(method).lower(), str(method))


def column_label(preset: object, is_baseline: bool, preset_raw: object = None,
                 strategy: object = None, metric: object = None, kind: object = None) -> str:
    """Grid column of one value: "GT" for baselines; a strategy's own column for the strategies no
    spectral metric scores (:func:`pruning.config.presets.strategy_column`: "uniform", "OWL", "DLP", "ATP"),
    whatever their preset; else (AlphaPruning, ``linear``) the preset's display name (the raw header
    text when it is no known preset, e.g. "split"), suffixed " · metric" when a linear allocation
    used another metric than the notes' alpha / alpha_peak (e.g. "all · hessian_alpha"; a run mixing
    two metrics, ``allocation.metric_mix``, is stored as "metric+metric_mix" and gets its own column,
    e.g. "all · hessian_alpha+alpha_peak", apart from either single metric). For the
    team's own runs (``kind == "run"``) only `alpha_peak` is unsuffixed, so a run allocating by
    WeightWatcher's `alpha` gets its own column ("all · alpha") instead of sharing a cell with the
    `alpha_peak` runs."""
    if is_baseline:
        return BASELINE_COLUMN
    if (own := strategy_column(strategy)) is not None:
        return own
    label = _preset_label(preset, preset_raw)
    plain = RUN_DEFAULT_METRICS if (not _missing(kind) and str(kind) == "run") else DEFAULT_METRICS
    if not _missing(metric) and str(metric) not in plain and label != NO_PRESET:
        return f"{label} · {metric}"
    return label


def _preset_label(preset: object, preset_raw: object) -> str:
    """A preset's display name, or the raw header text when it is no known preset."""
    if _missing(preset):
        return NO_PRESET if _missing(preset_raw) else str(preset_raw).strip()
    canonical = {normalize_preset_name(n): n for n in preset_names()}
    return canonical.get(normalize_preset_name(str(preset)), str(preset))


def ordered(values: set[str], order: list[str], first: Sequence[str] = (), last: Sequence[str] = ()) -> list[str]:
    """``values`` as ``first``, then in ``order``, then the unknown ones sorted, then ``last``."""
    head = [v for v in first if v in values]
    tail = [v for v in last if v in values and v not in head]
    known = [v for v in order if v in values and v not in head and v not in tail]
    rest = sorted(v for v in values if v not in head and v not in tail and v not in known)
    return head + known + rest + tail
