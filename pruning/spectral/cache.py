"""Spectra cache: a model's spectra are computed once per (model fingerprint, metric-code version,
eigen-solver dtype[, calibration batch]) and kept as parquet files under
``pruning.paths.cache_dir()/spectra/``: ``<key>.parquet`` (the table) and ``<key>.eigs.parquet``
(the long eigenvalue table). Files are written to a temporary name and renamed (atomic).
Bump :data:`SPECTRA_VERSION` whenever a metric's definition or computation changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from pruning.paths import cache_dir
from pruning.spectral.esd import default_eig_dtype
from pruning.spectral.table import SpectraResult, compute_weight_spectra

log = logging.getLogger(__name__)

SPECTRA_VERSION = "1"


def spectra_cache_dir() -> Path:
    """``cache_dir()/spectra`` (created on demand)."""
    path = cache_dir() / "spectra"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(fingerprint: str, source: str, dtype: torch.dtype, extra: str = "") -> str:
    """File stem naming one cached result."""
    dtype_name = str(dtype).removeprefix("torch.")
    tail = f"-{hashlib.sha256(extra.encode()).hexdigest()[:12]}" if extra else ""
    return f"{fingerprint}-{source}-{dtype_name}-v{SPECTRA_VERSION}{tail}"


def load_cached(key: str) -> SpectraResult | None:
    """The cached result of ``key``, or None."""
    table_path = spectra_cache_dir() / f"{key}.parquet"
    eig_path = spectra_cache_dir() / f"{key}.eigs.parquet"
    if not (table_path.is_file() and eig_path.is_file()):
        return None
    try:
        return SpectraResult(pd.read_parquet(table_path), pd.read_parquet(eig_path))
    except (OSError, ValueError) as exc:  # a corrupt file is recomputed, never fatal
        log.warning("ignoring unreadable spectra cache %s: %s", table_path, exc)
        return None


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def save_cached(key: str, result: SpectraResult) -> Path:
    """Store ``result`` under ``key`` (eigenvalues first, so a readable table implies both)."""
    root = spectra_cache_dir()
    _write_atomic(result.eigenvalues, root / f"{key}.eigs.parquet")
    _write_atomic(result.table, root / f"{key}.parquet")
    return root / f"{key}.parquet"


def _fingerprint(model_or_loaded: object) -> str:
    from torch import nn

    from pruning.models import model_fingerprint

    if isinstance(model_or_loaded, nn.Module):
        return model_fingerprint(model_or_loaded)
    return str(model_or_loaded.fingerprint)  # type: ignore[attr-defined]


def cached_weight_spectra(
    model_or_loaded: object,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
    refresh: bool = False,
) -> SpectraResult:
    """:func:`compute_weight_spectra` of all blocks, read from / written to the cache."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or default_eig_dtype(dev)
    key = cache_key(_fingerprint(model_or_loaded), "weight", dtype)
    if not refresh and (hit := load_cached(key)) is not None:
        log.info("weight spectra from cache %s", key)
        return hit
    result = compute_weight_spectra(model_or_loaded, device=device, dtype=dtype, progress=progress)
    save_cached(key, result)
    return result


def cached_hessian_spectra(
    loaded: object,
    calib_ids: Tensor,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
    offload: bool = False,
    refresh: bool = False,
    batch_size: int = 1,
) -> SpectraResult:
    """:func:`pruning.spectral.hessian_spectra`, cached per model, calibration batch content and
    samples per block call (``batch_size`` changes the statistics at rounding level)."""
    from pruning.spectral.hessian import hessian_spectra

    dtype = dtype or default_eig_dtype(torch.device(device))
    ids = calib_ids.detach().to("cpu", torch.int64).contiguous()
    extra = f"{tuple(ids.shape)}:{hashlib.sha256(ids.numpy().tobytes()).hexdigest()}"
    if batch_size != 1:  # keys of batch 1 stay those of caches written before the option existed
        extra += f":b{batch_size}"
    key = cache_key(_fingerprint(loaded), "hessian", dtype, extra)
    if not refresh and (hit := load_cached(key)) is not None:
        log.info("Hessian spectra from cache %s", key)
        return hit
    result = hessian_spectra(loaded, calib_ids, device, progress, dtype=dtype, offload=offload,  # type: ignore[arg-type]
                             batch_size=batch_size)
    save_cached(key, result)
    return result
