"""Eigenvalues for the app's ESD plots (DESIGN.md "ESD": lambda = sigma^2 of W^T W; Hessian
H = 2 X^T X / N). Read from the spectra cache of ``pruning.spectral.cache`` when the run's model
fingerprint has cached eigenvalues there, else (weights only) recomputed from the model."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pruning.paths import cache_dir
from pruning.roots import local_path

log = logging.getLogger(__name__)


def spectra_cache_root() -> Path:
    """``cache_dir()/spectra`` — the directory of ``pruning.spectral.cache.spectra_cache_dir()``
    (not imported here: that module imports torch, too slow for a page render)."""
    return cache_dir() / "spectra"


def cached_eigenvalues(fingerprint: str, name: str, source: str, root: Path | None = None,
                       eig_dtype: str = "float64") -> np.ndarray | None:
    """Ascending eigenvalues of matrix ``name`` from the newest cached ``<fingerprint>-<source>-<eig_dtype>-*``
    eigenvalue file (long table model, name, source, eigenvalue), or None when none holds it. Only
    files of the asked precision are read: a float32 spectrum never stands in for a float64 one."""
    if eig_dtype not in ("float64", "float32"):
        raise ValueError(f"eig_dtype: {eig_dtype!r} is invalid; accepted: float64, float32")
    root = root or spectra_cache_root()
    files = sorted(root.glob(f"{fingerprint}-{source}-{eig_dtype}-*.eigs.parquet"),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for path in files:
        try:
            frame = pd.read_parquet(path, columns=["name", "eigenvalue"], filters=[("name", "==", name)])
        except (OSError, ValueError) as exc:
            log.warning("unreadable eigenvalue cache %s: %s", path, exc)
            continue
        if len(frame):
            return np.sort(frame["eigenvalue"].to_numpy(dtype=float))
    return None


def eigenvalues_of(load: Callable[[], Any], name: str, source: str) -> np.ndarray | None:
    """Weight eigenvalues of matrix ``name`` (e.g. ``model.layers.0.self_attn.q_proj``) of the model
    ``load()`` returns (a LoadedModel or nn.Module), via ``pruning.spectral.esd.weight_eigenvalues``.
    Hessian spectra need calibration data, so they come only from the cache: None here."""
    if source != "weight":
        return None
    from pruning.spectral.esd import weight_eigenvalues

    loaded = load()
    model = getattr(loaded, "model", loaded)
    module = dict(model.named_modules()).get(name)
    if module is None or not hasattr(module, "weight"):
        log.info("model has no matrix %r", name)
        return None
    return weight_eigenvalues(module.weight.detach()).cpu().numpy()


WW_OVER_TRAINED_ALPHA = 2.0  # weightwatcher.constants.OVER_TRAINED_THRESH: alpha below -> "over-trained"
WW_UNDER_TRAINED_ALPHA = 6.0  # weightwatcher.constants.UNDER_TRAINED_THRESH: alpha above -> "under-trained"
WW_SMALL_N_EIGENVALUES = 20  # weightwatcher WW_powerlaw.SMALL_N_CUTOFF (pruning.spectral.powerlaw.WW_SMALL_N)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def fit_warning(alpha: Any, n_tail: Any) -> str:
    """Why a power-law fit should not be read at face value, or "" when nothing is wrong (shown
    in the ESD plot's title and the spectra table).

    weightwatcher 0.7.7 flags alpha < 2 as "over-trained" and alpha > 6 as "under-trained" (outside
    the range where heavy-tailed self-regularization reads the fit; Martin & Mahoney 2021); a tail
    of fewer than 20 eigenvalues (the size below which weightwatcher already treats a whole spectrum
    as a small sample) gives an uncertain alpha. NaN alpha: no fit."""
    alpha, n_tail = _float(alpha), _float(n_tail)
    if not math.isfinite(alpha):
        return "no fit"
    notes = []
    if alpha < WW_OVER_TRAINED_ALPHA:
        notes.append(f"α {alpha:.2f} < {WW_OVER_TRAINED_ALPHA:g} (weightwatcher: over-trained)")
    elif alpha > WW_UNDER_TRAINED_ALPHA:
        notes.append(f"α {alpha:.2f} > {WW_UNDER_TRAINED_ALPHA:g} (weightwatcher: under-trained, fit unreliable)")
    if math.isfinite(n_tail) and n_tail < WW_SMALL_N_EIGENVALUES:
        notes.append(f"only {int(n_tail)} tail eigenvalues (< {WW_SMALL_N_EIGENVALUES})")
    return "; ".join(notes)


def model_available_locally(reference: str) -> bool:
    """True when ``reference`` is a prepared offline alias (``cache_dir()/models/<alias>``, as
    ``pruning.models.alias_dir``) or an existing local directory / file — loading it then needs
    no network. Hub ids are not loaded by the app."""
    ref = reference.strip()
    if (cache_dir() / "models" / ref / "config.json").is_file():
        return True
    path = local_path(ref)  # a relative path from the repository root, as the worker reads it
    return path.is_file() or (path / "config.json").is_file()
