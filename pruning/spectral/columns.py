"""The spectra table's column names (one tidy row per matrix and source; docs/spectra.md "The table").

Plain names, no torch and no pandas: the job submit checks an allocation metric's name against
:data:`METRIC_COLUMNS` (``pruning.run.validation``) without loading the solver; :mod:`pruning.spectral.summary`
builds the rows.
"""

from __future__ import annotations

ID_COLUMNS = ("model", "block", "matrix_type", "name", "source")
#: every per-matrix metric; each is also an allocation metric, and ``hessian_<name>`` for the Hessian's
METRIC_COLUMNS = (
    "alpha", "alpha_peak", "alpha_mid", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank",
    "entropy", "entropy_norm", "num_rank", "rank_ratio", "effective_rank", "D", "xmin", "n_tail",
    "n_eigs", "lambda_max",
)
FIT_DETAIL_COLUMNS = ("xmin_peak", "D_peak", "n_tail_peak", "xmin_mid", "D_mid", "n_tail_mid", "esd_peak")
COLUMNS = (
    ID_COLUMNS + ("n_rows", "n_cols", "numel") + METRIC_COLUMNS + FIT_DETAIL_COLUMNS
    + ("engine", "eig_dtype", "status", "message")
)
EIGENVALUE_COLUMNS = ("model", "name", "source", "eigenvalue")
