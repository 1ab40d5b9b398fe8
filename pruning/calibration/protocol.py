"""The calibration a pruned number was made with, as a protocol of its own.

Two runs that differ only in their calibration text or budget (the notes' grid calibrated on the
wiki ``calib`` split; the allocation study on ``wiki:train``, and on ``lee`` for its domain direction)
are different experiments: a grid or a zero-shot table that put them side by side would compare
allocations under different data. Every result row therefore carries ``calibration`` =
``"<dataset> · <nsamples> × <seqlen>"`` read from its run's config, and `` · <dtype>`` for a run not in
float32 (its statistics and its pruning are of other numbers); the calibration seed is not part of it
(seeds are replicates of one protocol). Dense runs and imported references read no
calibration of theirs (``None``) and belong to every calibration's view.
"""

from __future__ import annotations

import pandas as pd

from pruning.config.sections import CalibrationConfig

#: SQL (runs alias ``r``) of a result row's calibration protocol; NULL for dense runs and references
CALIBRATION_SQL = """CASE WHEN r.kind = 'run' AND coalesce(r.method, '') <> 'dense' THEN
    json_extract_string(r.config_json, '$.calibration.dataset') || ' · '
    || json_extract_string(r.config_json, '$.calibration.nsamples') || ' × '
    || json_extract_string(r.config_json, '$.calibration.seqlen')
    || CASE WHEN coalesce(json_extract_string(r.config_json, '$.model.dtype'), 'float32') <> 'float32'
            THEN ' · ' || json_extract_string(r.config_json, '$.model.dtype') ELSE '' END END"""


def calibration_label(dataset: str, nsamples: int, seqlen: int, dtype: str = "float32") -> str:
    """``"wiki · 128 × 2048"``: the calibration protocol's text (the same as :data:`CALIBRATION_SQL`); a run
    in another dtype than float32 adds it (``"wiki:train · 128 × 2048 · bfloat16"``): its pruning reads
    other statistics, so its cells never share a grid with float32 runs (the precision check's twins)."""
    return f"{dataset} · {int(nsamples)} × {int(seqlen)}" + ("" if dtype == "float32" else f" · {dtype}")


_default = CalibrationConfig()
#: the product's default calibration (pruning.config.sections.CalibrationConfig): views start from it
DEFAULT_CALIBRATION = calibration_label(_default.dataset, _default.nsamples, _default.seqlen)


def calibration_options(frame: pd.DataFrame) -> list[str]:
    """The calibration protocols among ``frame``'s rows (column ``calibration``), the default first
    where present, then the others by number of rows (most first) and name; [] when no row names one."""
    if "calibration" not in frame.columns:
        return []
    counts = frame["calibration"].dropna().value_counts()
    return sorted(counts.index, key=lambda c: (c != DEFAULT_CALIBRATION, -int(counts[c]), c))


def by_calibration(frame: pd.DataFrame, calibration: str | None) -> pd.DataFrame:
    """The rows made with ``calibration`` plus those that read none of theirs (dense runs, references);
    ``None`` keeps every row."""
    if calibration is None or "calibration" not in frame.columns:
        return frame
    return frame[frame["calibration"].isna() | (frame["calibration"] == calibration)]
