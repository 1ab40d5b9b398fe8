"""Where the offline defaults and caches live.

``PRUNING_LAB_CACHE`` overrides the cache directory (default ``~/.cache/pruning-lab``);
``PRUNING_LAB_DATA`` overrides the results store directory (default ``<repo>/data``).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Root of the model/corpus/spectra cache (created on demand)."""
    path = Path(os.environ.get("PRUNING_LAB_CACHE", Path.home() / ".cache" / "pruning-lab")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """Converted offline models (safetensors copies), one directory per alias."""
    path = cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def corpora_dir() -> Path:
    """Prepared offline text corpora (plain UTF-8 files)."""
    path = cache_dir() / "corpora"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Results store root (run artifacts, catalog, imported references)."""
    path = Path(os.environ.get("PRUNING_LAB_DATA", REPO_ROOT / "data")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
