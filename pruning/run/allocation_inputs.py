"""The run hooks of the allocation strategies that read the model (the ``prepare`` entry of
:mod:`pruning.allocation.registry`): each measures what its strategy's rule reads in ``ctx.inputs``.

``owl_inputs``: OWL's per-block outlier ratios D_l (Yin et al. 2023); ``dlp_inputs``: DLP's per-block
unimportance U_l (Chen et al., ICML 2025), both from the dense model's activation norms on the run's
calibration sample, measured once per calibration and reused (:func:`pruning.run.stages.dense_statistics`);
``evopress_inputs``: EvoPress's searched levels (Sieberling et al., ICML 2025; :mod:`pruning.run.evopress`)
and its search trace. A new strategy that needs the model adds its own hook beside its rule.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pruning.calibration.layer_stats import dlp_unimportance
from pruning.config.run_config import RunConfig
from pruning.errors import ConfigError
from pruning.model.load import LoadedModel
from pruning.atomic import exclusive_lock, write_atomic
from pruning.model.placement import Compute
from pruning.paths import cache_dir
from pruning.run.prune import owl_outlier_ratios
from pruning.run.stages import Reporter, Stopwatch, dense_statistics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AllocationStep:
    """What a hook may read: the loaded model, the run's config, its calibration ids ``(nsamples,
    seqlen)`` (None when the run reads none), the matrix table (``block, matrix_type, name, numel``),
    where to compute, the progress reporter and the stage clock."""

    loaded: LoadedModel
    config: RunConfig
    calib_ids: torch.Tensor | None
    matrices: pd.DataFrame
    compute: Compute
    report: Reporter
    clock: Stopwatch


def _from_dense_norms(step: AllocationStep, stage: str, measure: Callable[..., Any], knob: Any) -> Any:
    """``measure(loaded, calib_ids, knob, compute=..., norms=...)`` on the dense activation norms of the run's
    calibration (measured once, reused: :func:`pruning.run.stages.dense_statistics`), timed as ``stage``."""
    norms = dense_statistics(step.loaded, step.calib_ids, step.compute, step.report, step.clock)
    with step.clock(stage):
        return measure(step.loaded, step.calib_ids, knob, compute=step.compute, norms=norms)


def owl_inputs(step: AllocationStep) -> dict[str, Any]:
    """``{"owl_outlier_ratio": {block: D_l}}`` at the config's ``owl_threshold_m``."""
    return {"owl_outlier_ratio": _from_dense_norms(step, "owl", owl_outlier_ratios,
                                                   step.config.allocation.owl_threshold_m)}


def dlp_inputs(step: AllocationStep) -> dict[str, Any]:
    """``{"dlp_unimportance": {block: U_l}}`` with the config's ``dlp_statistic``."""
    return {"dlp_unimportance": _from_dense_norms(step, "dlp", dlp_unimportance, step.config.allocation.dlp_statistic)}


def _refuse_offload(step: AllocationStep, strategy: str, verb: str) -> None:
    """The KL-reading strategies run the whole model on the device: ConfigError under ``model.offload: true``."""
    if step.compute.offload:
        raise ConfigError(f"allocation.strategy {strategy!r} {verb} with the whole model on the device; model.offload "
                          "true is not accepted with it (use a device that holds the model)")


def evopress_inputs(step: AllocationStep) -> dict[str, Any]:
    """``{"searched": levels, "search_trace": trace}``: the evolution on the whole model (on the device)."""
    from pruning.run.evopress import evopress_allocation  # torch-heavy; only EvoPress runs need it

    _refuse_offload(step, "evopress", "searches")
    with step.clock("evopress"):
        searched, trace = evopress_allocation(step.loaded, step.config, step.calib_ids, step.matrices,
                                              compute=step.compute, progress=step.report)
    return {"searched": searched, "search_trace": trace}


def kl_slope_inputs(step: AllocationStep) -> dict[str, Any]:
    """``{"kl_slope": {block: g_b}}``: each block's marginal KL per pruned weight at the target, measured on
    the model — every block at S, then block b alone one ladder step up and one down (the others at S),
    ``g_b = (KL(+1 e_b) - KL(-1 e_b)) / (2 delta)`` with KL(dense || candidate) on the first
    ``evopress_windows`` calibration windows (:class:`pruning.run.evopress.KLFitness`, EvoPress's fitness on
    a database of three levels per block: 2 B + 1 evaluations, B blocks). Measured once per
    :func:`kl_slope_key` and kept in ``cache_dir()/kl_slope/`` (every ``kl_spread`` of a sweep reads the same
    slopes; the timings say ``kl_slope`` when measured, ``kl_slope_reused`` when read)."""
    from pruning.allocation.evopress import make_ladder
    from pruning.run.evopress import check_windows, search_units

    config, a = step.config, step.config.allocation
    _refuse_offload(step, "kl_slope", "measures")
    check_windows(step.calib_ids, a.evopress_windows, "KL")
    names, numel, unit_of = search_units(step.matrices, "block")
    ladder = make_ladder(names, numel, float(config.pruning.sparsity), 1, a.min_sparsity, a.max_sparsity)
    device = torch.device(step.compute.device)
    key = kl_slope_key(step, ladder.delta)
    _slopes_path(key).parent.mkdir(parents=True, exist_ok=True)
    # one measurement per key across workers: the spreads of a sweep start together and wait for the first
    with exclusive_lock(_slopes_path(key).with_suffix(".lock")):
        return _measured_slopes(step, key, names, unit_of, ladder, device, a)


def _measured_slopes(step: AllocationStep, key: str, names: list[str], unit_of: dict[str, int], ladder: Any,
                     device: torch.device, a: Any) -> dict[str, dict[int, float]]:
    """The slopes of ``key`` from the cache, else measured (the body of :func:`kl_slope_inputs`)."""
    import numpy as np

    from pruning.run.evopress import KLFitness, build_database

    config = step.config
    cached = _read_slopes(key)
    if cached is not None:  # every kl_spread of a sweep shares one measurement
        step.clock.seconds["kl_slope_reused"] = 0.0
        log.info("kl_slope: slopes %s reused from %s", key, _slopes_path(key))
        return {"kl_slope": cached}
    step.loaded.model.to(device)
    say = step.report
    with step.clock("kl_slope"):
        db = build_database(step.loaded, step.calib_ids, config.pruning.method, ladder, compute=step.compute,
                            blocksize=config.pruning.blocksize,
                            percdamp=config.pruning.percdamp, unit_of=unit_of,
                            progress=lambda done, total: say("allocation", 0.5 * done / total,
                                                             f"KL slope: pruned levels, block {done}/{total}"))
        fitness = KLFitness(step.loaded, db, ladder, step.calib_ids[: a.evopress_windows], device,
                            step.compute.batch_size, unit_of=unit_of)
        every = np.arange(a.evopress_windows)
        try:
            slopes = {}
            for u, name in enumerate(names):
                up, down = np.zeros(len(names), dtype=np.int64), np.zeros(len(names), dtype=np.int64)
                up[u], down[u] = int(ladder.hi[u]), int(ladder.lo[u])
                moved = (up[u] - down[u]) * ladder.delta
                if moved == 0:
                    raise ConfigError(f"kl_slope: block {name} cannot move from the target within the bounds "
                                      f"[{a.min_sparsity}, {a.max_sparsity}]")
                slopes[int(name.removeprefix("block"))] = (fitness(up, every) - fitness(down, every)) / moved
                say("allocation", 0.5 + 0.5 * (u + 1) / len(names), f"KL slope: block {u + 1}/{len(names)}")
        finally:
            fitness.restore_dense()
            del db
    _write_slopes(key, slopes)
    return {"kl_slope": slopes}


#: bumped when the measurement's definition changes, so older files are never read
KL_SLOPE_FORMAT = 1


def kl_slope_key(step: AllocationStep, delta: int) -> str:
    """The cache key of a run's KL slopes: what the measurement reads and nothing a ``kl_spread`` changes —
    the model fingerprint, the calibration ids (their digest: dataset, seed, count, length, BOS), the method
    and its options, the target and bounds (the ladder's ``delta``), the KL windows, the device type and the
    samples per forward."""
    from pruning.calibration.dense_stats import ids_digest

    c, a = step.config, step.config.allocation
    parts = [KL_SLOPE_FORMAT, step.loaded.fingerprint, ids_digest(step.calib_ids), c.pruning.method,
             c.pruning.blocksize, c.pruning.percdamp, repr(float(c.pruning.sparsity)), a.min_sparsity, a.max_sparsity,
             delta, a.evopress_windows, torch.device(step.compute.device).type, step.compute.batch_size]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


def _slopes_path(key: str) -> Path:
    return cache_dir() / "kl_slope" / f"{key}.json"


def _read_slopes(key: str) -> dict[int, float] | None:
    path = _slopes_path(key)
    try:
        data = json.loads(path.read_text())
        return {int(b): float(v) for b, v in data["slopes"].items()}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # a damaged file: measure again
        log.warning("kl_slope: cache file %s unreadable (%s); measuring again", path, exc)
        return None


def _write_slopes(key: str, slopes: dict[int, float]) -> None:
    path = _slopes_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": KL_SLOPE_FORMAT, "slopes": {str(b): v for b, v in slopes.items()}})
    write_atomic(path, lambda tmp: tmp.write_text(text))
