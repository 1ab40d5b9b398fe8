"""Eigenvalues for the app's ESD plots (DESIGN.md "ESD": lambda = sigma^2 of W^T W)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def weight_eigenvalues(weight: Any) -> np.ndarray:
    """Ascending eigenvalues of W^T W in float64, via the smaller Gram matrix. W: (out, in)."""
    import torch

    w = torch.as_tensor(weight).detach().to("cpu", torch.float64)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # (min, min)
    return torch.linalg.eigvalsh(gram).clamp_min(0).numpy()


def eigenvalues_of(load: Callable[[], Any], name: str, source: str) -> np.ndarray | None:
    """Eigenvalues of matrix ``name`` (a module name such as ``model.layers.0.self_attn.q_proj``)
    of the model ``load()`` returns (a LoadedModel or nn.Module). Only weight spectra can be
    recomputed from the model alone; Hessian spectra need calibration data, so None."""
    if source != "weight":
        return None
    loaded = load()
    model = getattr(loaded, "model", loaded)
    module = dict(model.named_modules()).get(name)
    if module is None or not hasattr(module, "weight"):
        log.info("model has no matrix %r", name)
        return None
    return weight_eigenvalues(module.weight)
