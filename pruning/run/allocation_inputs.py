"""The run hooks of the allocation strategies that read the model (the ``prepare`` entry of
:mod:`pruning.allocation.registry`): each measures what its strategy's rule reads in ``ctx.inputs``.

``owl_inputs``: OWL's per-block outlier ratios D_l (Yin et al. 2023); ``dlp_inputs``: DLP's per-block
unimportance U_l (Chen et al., ICML 2025), both from the dense model's activation norms on the run's
calibration sample, measured once per calibration and reused (:func:`pruning.run.stages.dense_statistics`);
``evopress_inputs``: EvoPress's searched levels (Sieberling et al., ICML 2025; :mod:`pruning.run.evopress`)
and its search trace. A new strategy that needs the model adds its own hook beside its rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from pruning.calibration.layer_stats import dlp_unimportance
from pruning.config.run_config import RunConfig
from pruning.errors import ConfigError
from pruning.model.load import LoadedModel
from pruning.model.placement import Compute
from pruning.run.prune import owl_outlier_ratios
from pruning.run.stages import Reporter, Stopwatch, dense_statistics


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


def owl_inputs(step: AllocationStep) -> dict[str, Any]:
    """``{"owl_outlier_ratio": {block: D_l}}`` at the config's ``owl_threshold_m``."""
    norms = dense_statistics(step.loaded, step.calib_ids, step.compute, step.report, step.clock)
    with step.clock("owl"):
        ratios = owl_outlier_ratios(step.loaded, step.calib_ids, step.config.allocation.owl_threshold_m,
                                    **step.compute.calibration_kwargs(), norms=norms)
    return {"owl_outlier_ratio": ratios}


def dlp_inputs(step: AllocationStep) -> dict[str, Any]:
    """``{"dlp_unimportance": {block: U_l}}`` with the config's ``dlp_statistic``."""
    norms = dense_statistics(step.loaded, step.calib_ids, step.compute, step.report, step.clock)
    with step.clock("dlp"):
        values = dlp_unimportance(step.loaded, step.calib_ids, step.config.allocation.dlp_statistic,
                                  **step.compute.calibration_kwargs(), norms=norms)
    return {"dlp_unimportance": values}


def evopress_inputs(step: AllocationStep) -> dict[str, Any]:
    """``{"searched": levels, "search_trace": trace}``: the evolution on the whole model (on the device)."""
    from pruning.run.evopress import evopress_allocation  # torch-heavy; only EvoPress runs need it

    if step.compute.offload:
        raise ConfigError("allocation.strategy 'evopress' searches with the whole model on the device; "
                          "model.offload true is not accepted with it (use a device that holds the model)")
    with step.clock("evopress"):
        searched, trace = evopress_allocation(step.loaded, step.config, step.calib_ids, step.matrices,
                                              device=torch.device(step.compute.device),
                                              batch_size=step.compute.batch_size, progress=step.report)
    return {"searched": searched, "search_trace": trace}
