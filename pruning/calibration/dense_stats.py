"""The dense model's calibration statistics, computed once per (model, calibration) and reused.

OWL's outlier ratios (Yin et al. 2023) and DLP's unimportance (Chen et al. 2025) both reduce the
Wanda scores ``|W_ij| * ||X_j||_2`` of the *dense* model, block-sequentially on the calibration
batch; the only input that costs a pass is ``||X_j||_2`` per prunable matrix. That pass depends on
the model's weights, the calibration token ids and where (device type, samples per block call) it
ran, and on nothing a run's allocation knobs change — so every OWL ``M``/``λ`` and DLP ``α`` of a
sweep shares it. This module keeps it:

* in memory, for the life of the process (a warm runner serves many jobs: ``pruning.jobs.runner``);
* on disk, under ``cache_dir()/dense_stats/<key>.pt`` (written atomically), so cold runs and other
  processes on the machine reuse it too.

The key (:func:`norms_key`) is a hash of the model fingerprint, the SHA-256 of the calibration ids
``(nsamples, seqlen)`` themselves (so the dataset, seed, sample count, length and BOS are all in it
without being listed), the device type and the batch size. Each lookup says whether the norms were
``computed`` or ``reused`` (a run's timings then read ``dense_stats`` or ``dense_stats_reused``).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from pruning.atomic import exclusive_lock, write_atomic
from pruning.calibration.sequential import BlockContext, calibrate_blocks
from pruning.model.load import LoadedModel
from pruning.model.placement import CPU_COMPUTE, Compute
from pruning.paths import cache_dir

log = logging.getLogger(__name__)

#: bumped when the statistic's definition changes, so older files are never read
FORMAT_VERSION = 1
#: in-process entries kept (a runner holds one model; a sweep uses a few calibrations)
MEMORY_ENTRIES = 8

_memory: dict[str, dict[str, Tensor]] = {}


@dataclass(frozen=True)
class DenseNorms:
    """``||X_j||_2`` ``(in,)`` float32 on the CPU for every prunable matrix, keyed by module name,
    measured on the dense model; ``origin`` is ``computed``, ``memory`` or ``disk``."""

    norms: dict[str, Tensor]
    key: str
    origin: str

    @property
    def reused(self) -> bool:
        return self.origin != "computed"


def ids_digest(calib_ids: Tensor) -> str:
    """SHA-256 (16 hex) of the calibration token ids ``(nsamples, seqlen)`` and their shape."""
    ids = calib_ids.detach().to("cpu", torch.long).contiguous()
    h = hashlib.sha256(f"{tuple(ids.shape)}".encode())
    h.update(ids.numpy().tobytes())
    return h.hexdigest()[:16]


def norms_key(fingerprint: str, calib_ids: Tensor, device: str | torch.device, batch_size: int) -> str:
    """The cache key of the dense activation norms: model fingerprint, calibration ids digest,
    device type and samples per block call (the last two change the float rounding)."""
    dev_type = torch.device(device).type
    text = f"v{FORMAT_VERSION}|{fingerprint}|{ids_digest(calib_ids)}|{dev_type}|{batch_size}"
    return f"{fingerprint}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _path(key: str) -> Path:
    return cache_dir() / "dense_stats" / f"{key}.pt"


def measure_dense_norms(loaded: LoadedModel, calib_ids: Tensor, *, compute: Compute = CPU_COMPUTE,
                        progress: Callable[[int, int], None] | None = None) -> dict[str, Tensor]:
    """One block-sequential pass over the dense model (the blocks are not modified, so block l sees
    the dense outputs of block l - 1): ``{matrix name: ||X_j||_2 (in,)}`` float32 on the CPU.
    ``compute``: where the blocks run, whether offloaded, samples per block call
    (:func:`pruning.calibration.sequential.calibrate_blocks`)."""
    norms: dict[str, Tensor] = {}

    def on_block(ctx: BlockContext) -> None:
        for ref in ctx.matrices:
            norms[ref.name] = ctx.stats[ref.name].act_norm.detach().to("cpu", torch.float32).clone()

    calibrate_blocks(loaded, calib_ids, on_block, compute=compute, collect_hessian=False, modifies_blocks=False,
                     progress=progress)
    return norms


def dense_norms(loaded: LoadedModel, calib_ids: Tensor, *, compute: Compute = CPU_COMPUTE,
                progress: Callable[[int, int], None] | None = None) -> DenseNorms:
    """:func:`measure_dense_norms`, reused from memory or disk when the same key was measured before
    (:func:`norms_key` of ``compute.device``'s type and ``compute.batch_size``; ``compute.offload`` only
    moves the same arithmetic).

    ``loaded.fingerprint`` must describe the dense weights (it is computed at load and restored
    with them by a warm runner); a pruned model is never measured here."""
    key = norms_key(loaded.fingerprint, calib_ids, compute.device, compute.batch_size)
    if key in _memory:
        return DenseNorms(_memory[key], key, "memory")
    path = _path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one process measures a key at a time: runners started together (several workers on one GPU) wait for the
    # first instead of repeating its pass (8 workers measured the same norms 3 times before this lock)
    with exclusive_lock(path.with_suffix(".lock")):
        stored = _read(path)
        if stored is not None:
            _remember(key, stored)
            log.info("dense activation norms %s reused from %s", key, path)
            return DenseNorms(stored, key, "disk")
        norms = measure_dense_norms(loaded, calib_ids, compute=compute, progress=progress)
        _write(path, norms)
    _remember(key, norms)
    return DenseNorms(norms, key, "computed")


def _read(path: Path) -> dict[str, Tensor] | None:
    """The stored norms, or None when there are none (a damaged file is logged and measured again)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        log.warning("dense activation norms %s unreadable (%s); measuring again", path, exc)
        return None


def _remember(key: str, norms: dict[str, Tensor]) -> None:
    _memory[key] = norms
    while len(_memory) > MEMORY_ENTRIES:
        _memory.pop(next(iter(_memory)))


def _write(path: Path, norms: dict[str, Tensor]) -> None:
    """Write atomically (``pruning.atomic.write_atomic``), so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: torch.save(norms, tmp))


def forget_memory() -> None:
    """Drop the in-process entries (tests; a runner switching models keeps the disk files)."""
    _memory.clear()
