"""Hessian spectra from calibration: the ESD of the layer-wise OBS Hessian H = 2 X^T X / N.

X ``(N tokens, in)`` are the inputs of a linear layer on calibration data (Frantar & Alistarh
2023, SparseGPT, accumulate the same H). Its eigenvalues get the fits of weight spectra
(Martin & Mahoney 2021; Clauset et al. 2009; Lu et al. 2024), stored with ``source = "hessian"``
and exposed for allocation as ``hessian_alpha`` etc. (:func:`pruning.spectral.pivot_for_allocation`).
Matrices that read the same input (q/k/v, gate/up: ``FamilySpec.input_groups``) share one Hessian
and one eigen-decomposition. Nothing is pruned here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from pruning.models import LoadedModel
from pruning.spectral.table import SpectraResult, compute_hessian_spectra

log = logging.getLogger(__name__)


def hessian_spectra(
    loaded: LoadedModel,
    calib_ids: Tensor,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
    *,
    dtype: torch.dtype | None = None,
    offload: bool = False,
    keep_eigenvalues: bool = True,
    batch_size: int = 1,
) -> SpectraResult:
    """Hessian spectra of every prunable matrix, block by block (``pruning.calibration``).

    calib_ids: LongTensor ``(nsamples, seqlen)``. device: where blocks run and eigenvalues are
    computed (dtype default: float64 on every device; H itself is accumulated in float32). ``progress(done, total)`` counts blocks.
    """
    from pruning.calibration import BlockContext, calibrate_blocks

    parts: list[SpectraResult] = []
    family = loaded.family

    def on_block(ctx: BlockContext) -> None:
        by_type = {ref.matrix_type: ref.name for ref in ctx.matrices}
        hessians = {}
        for name, stats in ctx.stats.items():
            if stats.hessian is None:
                raise RuntimeError(f"hessian_spectra: calibration returned no Hessian for {name}")
            hessians[name] = stats.hessian
        shared = [[by_type[t] for t in group if t in by_type] for group in family.input_groups]
        shared = [g for g in shared if g and all(n in hessians for n in g)]
        info = {name: (st.block, st.matrix_type) for name, st in ctx.stats.items()}
        parts.append(
            compute_hessian_spectra(
                hessians, model=loaded.name, matrix_info=info, shared=shared, device=ctx.device,
                dtype=dtype, keep_eigenvalues=keep_eigenvalues,
            )
        )
        log.debug("Hessian spectra of block %d/%d", ctx.index + 1, ctx.n_blocks)

    # the blocks stay dense: feed the statistics pass's outputs forward (same values, half the work)
    calibrate_blocks(loaded, calib_ids, on_block, device=device, offload=offload, collect_hessian=True,
                     modifies_blocks=False, batch_size=batch_size, progress=progress)
    return SpectraResult.concat(parts)
