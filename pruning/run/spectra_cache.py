"""Spectra are computed once per (model fingerprint, source, eigen-solver dtype, metric-code version
[, calibration batch]) — a :class:`pruning.store.spectra_sets.SpectraSetKey` — and reused.

:func:`cached_weight_spectra` / :func:`cached_hessian_spectra` look for the set, in order, in the
results store (``pruning.store.queries.spectra_set``: published by any run, on any machine that
shares the data directory), in the local cache ``pruning.paths.cache_dir()/spectra/`` (parquet
files ``<key>.parquet``, the table, and ``<key>.eigs.parquet``, the long eigenvalue table, written
atomically) and only then compute it. The result says where it came from (``origin``, ``reused``)
and names its set (``key``, and a ``spectra_key`` column in the table); :func:`publish_spectra`
stores a computed set so that later runs and every dashboard find it.
Bump :data:`SPECTRA_VERSION` whenever a metric's definition or computation changes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from pruning.atomic import exclusive_lock, write_parquet_atomic
from pruning.model.placement import CPU_COMPUTE, Compute
from pruning.paths import cache_dir
from pruning.spectral.esd import default_eig_dtype
from pruning.spectral.hessian import hessian_spectra
from pruning.spectral.summary import COLUMNS, SpectraResult
from pruning.spectral.weights import compute_weight_spectra
from pruning.store.errors import StoreError
from pruning.store.publish import PublishResult
from pruning.store.queries import spectra_set
from pruning.store.spectra_sets import SpectraSetKey, publish_spectra_set

log = logging.getLogger(__name__)

SPECTRA_VERSION = "1"


def spectra_cache_dir() -> Path:
    """``cache_dir()/spectra`` (created on demand)."""
    path = cache_dir() / "spectra"
    path.mkdir(parents=True, exist_ok=True)
    return path


def spectra_key(fingerprint: str, source: str, dtype: torch.dtype, extra: str = "") -> SpectraSetKey:
    """The set of ``source`` spectra of a model in ``dtype`` by this code; ``extra`` (Hessians: the
    calibration batch) enters as the first 12 hex digits of its SHA-256."""
    calibration = hashlib.sha256(extra.encode()).hexdigest()[:12] if extra else ""
    return SpectraSetKey(fingerprint, source, str(dtype).removeprefix("torch."), SPECTRA_VERSION, calibration)


def cache_key(fingerprint: str, source: str, dtype: torch.dtype, extra: str = "") -> str:
    """File stem naming one cached result (:attr:`SpectraSetKey.name`)."""
    return spectra_key(fingerprint, source, dtype, extra).name


@contextmanager
def computing(key: str) -> Iterator[None]:
    """Hold the cache's lock of ``key`` while one process computes it: workers that start a sweep together
    wait for the first and read its result (8 workers on one H200 computed the same weight spectra twice,
    47 s each, before this lock)."""
    with exclusive_lock(spectra_cache_dir() / f"{key}.lock"):
        yield


def load_cached(key: str) -> SpectraResult | None:
    """The locally cached result of ``key``, or None."""
    table_path = spectra_cache_dir() / f"{key}.parquet"
    eig_path = spectra_cache_dir() / f"{key}.eigs.parquet"
    if not (table_path.is_file() and eig_path.is_file()):
        return None
    try:
        return SpectraResult(pd.read_parquet(table_path), pd.read_parquet(eig_path), origin="cache", key=key)
    except (OSError, ValueError) as exc:  # a corrupt file is recomputed, never fatal
        log.warning("ignoring unreadable spectra cache %s: %s", table_path, exc)
        return None


def save_cached(key: str, result: SpectraResult) -> Path:
    """Store ``result`` under ``key`` (eigenvalues first, so a readable table implies both)."""
    root = spectra_cache_dir()
    write_parquet_atomic(result.eigenvalues, root / f"{key}.eigs.parquet")
    write_parquet_atomic(result.table, root / f"{key}.parquet")
    return root / f"{key}.parquet"


def load_stored(key: SpectraSetKey, store: Path | str | None = None) -> SpectraResult | None:
    """The set ``key`` from the results store (``store``: its directory, default the data
    directory's), or None when it is not there or not wholly readable (never fatal)."""
    try:
        found = spectra_set(key.name, root=store)
    except StoreError as exc:
        log.warning("spectra set %s not read from the store: %s", key.name, exc)
        return None
    if found is None:
        return None
    rows, eigs = found
    table = rows.reindex(columns=[*COLUMNS, "spectra_key"])
    model = rows["model"].iloc[0] if "model" in rows and len(rows) else ""
    eigenvalues = eigs.assign(model=model)[["model", "name", "source", "eigenvalue"]]
    return SpectraResult(table, eigenvalues, origin="store", key=key.name)


def _reuse(key: SpectraSetKey, refresh: bool, store: Path | str | None) -> SpectraResult | None:
    if refresh:
        return None
    hit = load_stored(key, store) or load_cached(key.name)
    if hit is not None:
        log.info("%s spectra %s reused from the %s", key.source, key.name, hit.origin)
    return hit


def _keyed(result: SpectraResult, key: SpectraSetKey) -> SpectraResult:
    """``result`` naming its set (``key`` and the table's ``spectra_key`` column)."""
    return SpectraResult(result.table.assign(spectra_key=key.name), result.eigenvalues, result.origin, key.name)


def _fingerprint(model_or_loaded: object) -> str:
    from pruning.model.load import model_fingerprint

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
    store: Path | str | None = None,
) -> SpectraResult:
    """:func:`pruning.spectral.weights.compute_weight_spectra` of all blocks, reused from the store
    (``store``: its directory) or the local cache when they hold this set; computed results are
    written to the local cache (publish them with :func:`publish_spectra`). ``refresh`` recomputes."""
    dtype = dtype or default_eig_dtype()
    key = spectra_key(_fingerprint(model_or_loaded), "weight", dtype)
    result = _reuse(key, refresh, store)
    if result is None:
        with computing(key.name):
            result = None if refresh else load_cached(key.name)  # another process may have made it meanwhile
            if result is None:
                result = compute_weight_spectra(model_or_loaded, device=device, dtype=dtype, progress=progress)
                save_cached(key.name, result)
    return _keyed(result, key)


def calibration_digest_input(calib_ids: Tensor, batch_size: int = 1) -> str:
    """What identifies a calibration batch for the Hessian key: its shape, the SHA-256 of its token
    ids (int64) and, unless 1, the samples per block call (it changes H at rounding level)."""
    ids = calib_ids.detach().to("cpu", torch.int64).contiguous()
    extra = f"{tuple(ids.shape)}:{hashlib.sha256(ids.numpy().tobytes()).hexdigest()}"
    return extra + (f":b{batch_size}" if batch_size != 1 else "")  # batch 1 keeps the keys of older caches


def cached_hessian_spectra(
    loaded: object,
    calib_ids: Tensor,
    *,
    compute: Compute = CPU_COMPUTE,
    dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
    refresh: bool = False,
    store: Path | str | None = None,
) -> SpectraResult:
    """:func:`pruning.spectral.hessian_spectra` of ``calib_ids`` ``(nsamples, seqlen)``, reused per
    model, calibration batch content and samples per block call (``compute.batch_size``) like
    :func:`cached_weight_spectra`. compute: where the blocks run, whether offloaded, samples per block call."""
    dtype = dtype or default_eig_dtype()
    key = spectra_key(_fingerprint(loaded), "hessian", dtype, calibration_digest_input(calib_ids, compute.batch_size))
    result = _reuse(key, refresh, store)
    if result is None:
        with computing(key.name):
            result = None if refresh else load_cached(key.name)
            if result is None:
                result = hessian_spectra(loaded, calib_ids, compute, progress, dtype=dtype)  # type: ignore[arg-type]
                save_cached(key.name, result)
    return _keyed(result, key)


def publish_spectra(result: SpectraResult, root: Path | str | None = None) -> PublishResult | None:
    """Store a result of :func:`cached_weight_spectra` / :func:`cached_hessian_spectra` as its
    spectra set (``pruning.store.spectra_sets``) unless it came from the store; publishing a set
    that is already stored writes nothing. Returns the publish result, or None when nothing was
    to publish. Raises ValueError for a result without a key (not made by those functions)."""
    if result.origin == "store":
        return None
    if result.key is None:
        raise ValueError("result: has no spectra set key; make it with cached_weight_spectra or cached_hessian_spectra")
    return publish_spectra_set(SpectraSetKey.parse(result.key), result.table.drop(columns=["spectra_key"], errors="ignore"),
                               result.eigenvalues, root=root)
