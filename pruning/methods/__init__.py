"""Pruning kernels: pure tensor functions, one module per method (no models, configs or files).

* :mod:`pruning.methods.registry` — the method registry: name, statistics needed, kernel.
* :mod:`pruning.methods.magnitude` — |W_ij|, comparison group: the whole matrix.
* :mod:`pruning.methods.wanda` — |W_ij| * ||X_j||_2, comparison group: output row (Sun et al. 2023).
* :mod:`pruning.methods.sparsegpt` — OBS-based mask + weight update (Frantar & Alistarh 2023).
* :mod:`pruning.methods.nm` — N:M semi-structured masks for any score; :mod:`~pruning.methods.nm_pattern`
  the one ``"N:M"`` parser.
* :mod:`pruning.methods.owl` — OWL layer-wise outlier ratio (Yin et al. 2023).

:mod:`pruning.methods.apply` holds the thin wrapper that applies a kernel to an ``nn.Linear``.
Convention for every mask returned here: ``True`` = pruned (set to zero).

The names below are imported on first use (PEP 562): the registry and the N:M parser stay
importable without torch, for the config and the app.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "magnitude_mask": "pruning.methods.magnitude",
    "magnitude_scores": "pruning.methods.magnitude",
    "nm_mask": "pruning.methods.nm",
    "parse_nm": "pruning.methods.nm_pattern",
    "outlier_ratio": "pruning.methods.owl",
    "prune_count": "pruning.methods.select",
    "smallest_mask": "pruning.methods.select",
    "sparsegpt_prune": "pruning.methods.sparsegpt",
    "wanda_mask": "pruning.methods.wanda",
    "wanda_scores": "pruning.methods.wanda",
    "get_method": "pruning.methods.registry",
    "method_names": "pruning.methods.registry",
    "register_method": "pruning.methods.registry",
    "MethodSpec": "pruning.methods.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pruning.methods' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
