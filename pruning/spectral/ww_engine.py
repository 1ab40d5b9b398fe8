"""weightwatcher 0.7.7 as a second engine (and the reference in tests): ``analyze()`` with its
default settings on the prunable matrices, mapped onto the spectra table's columns.

weightwatcher (Martin & Mahoney's reference implementation of heavy-tailed self-regularization)
has ``alpha``, ``alpha_weighted``, ``log_norm``, ``log_spectral_norm``, ``stable_rank``, its
normalized ``entropy`` (with a 1e-10 smoothing of p), ``matrix_rank``, ``D``, ``xmin`` and
``num_pl_spikes`` (-> ``n_tail``); ``alpha_peak``, ``alpha_mid``, raw entropy and effective rank
stay NaN (weightwatcher 0.7.7 returns alpha = -1 for ``fix_fingers="xmin_peak"``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Sequence

import pandas as pd
from torch import nn

from pruning.spectral.summary import COLUMNS
from pruning.spectral.weights import model_and_name, weight_matrices

log = logging.getLogger(__name__)

_MAP = {
    "alpha": "alpha", "alpha_weighted": "alpha_weighted", "log_norm": "log_norm",
    "log_spectral_norm": "log_spectral_norm", "stable_rank": "stable_rank", "entropy_norm": "entropy",
    "num_rank": "matrix_rank", "D": "D", "xmin": "xmin", "n_tail": "num_pl_spikes", "n_eigs": "num_evals",
    "lambda_max": "lambda_max",
}


def _holder(model: nn.Module, layers_path: str, blocks: Sequence[int]) -> nn.Module:
    """A module tree holding only ``blocks`` under the model's own path, so that module names
    (``model.layers.10.self_attn.q_proj``) match the spectra table's ``name`` column."""
    from pruning.model.families import get_attr_path

    layers = get_attr_path(model, layers_path)
    root = nn.Module()
    node = root
    parts = layers_path.split(".")
    for part in parts[:-1]:
        child = nn.Module()
        setattr(node, part, child)
        node = child
    setattr(node, parts[-1], nn.ModuleDict({str(i): layers[i] for i in blocks}))
    return root


def weightwatcher_spectra(
    model_or_loaded: object, *, blocks: Sequence[int] | None = None, model_name: str | None = None, quiet: bool = True
) -> pd.DataFrame:
    """weightwatcher ``analyze()`` (defaults) of the prunable weights of ``blocks`` (default all),
    as a spectra table (``engine = "weightwatcher"``, ``source = "weight"``)."""
    import weightwatcher as ww

    model, family, name = model_and_name(model_or_loaded, model_name)
    refs = weight_matrices(model, family, blocks)
    chosen = sorted({r.block for r in refs})
    holder = _holder(model, family.layers_path, chosen)
    ww_logger = logging.getLogger("weightwatcher")
    old_level = ww_logger.level
    sink = io.StringIO()
    try:
        if quiet:
            ww_logger.setLevel(logging.WARNING)
        with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
            details = ww.WeightWatcher(model=holder).analyze()
    finally:
        ww_logger.setLevel(old_level)
    by_name = {row["longname"]: row for _, row in details.iterrows()}
    rows = []
    for ref in refs:
        row = {c: math.nan for c in COLUMNS}
        row.update(
            model=name, block=ref.block, matrix_type=ref.matrix_type, name=ref.name, source="weight",
            n_rows=ref.shape[0], n_cols=ref.shape[1], numel=ref.numel, engine="weightwatcher", eig_dtype="float64",
        )
        found = by_name.get(ref.name)
        if found is None:
            row.update(status="failed", message="weightwatcher skipped this layer (filtered or unsupported)")
        else:
            row.update({ours: found.get(theirs, math.nan) for ours, theirs in _MAP.items()})
            row["rank_ratio"] = row["num_rank"] / row["n_eigs"]
            ok = str(found.get("status", "")) == "success" and float(found.get("alpha", -1)) > 0
            row.update(status="success" if ok else "failed", message=str(found.get("warning", "") or ""))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))
