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
import re
from collections.abc import Callable, Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

from pruning.model.families import FAMILIES
from pruning.model.load import LoadedModel
from pruning.model.placement import CPU_COMPUTE, Compute
from pruning.spectral.esd import default_eig_dtype
from pruning.spectral.summary import Progress, SpectraResult, SpectrumJob, summarize_spectra
from pruning.spectral.weights import eigen_batches

log = logging.getLogger(__name__)

_BLOCK_INDEX = re.compile(r"\.(\d+)\.")


def _parse_name(name: str) -> tuple[int, str]:
    """(block, matrix_type) of a module name like ``model.layers.3.self_attn.q_proj``: the block
    index from the name, the matrix type from the family registry (the type whose path inside a
    block ends the name; ``FamilySpec.matrices``), else the name's last part."""
    match = _BLOCK_INDEX.search(name)
    block = int(match.group(1)) if match else -1
    for family in FAMILIES.values():
        for matrix_type, path in family.matrices.items():
            if name.endswith("." + path):
                return block, matrix_type
    return block, name.rsplit(".", 1)[-1]


def _shared_groups(hessians: Mapping[str, Tensor]) -> list[list[str]]:
    """Names grouped by identical Hessian (same tensor object, or equal values and shape)."""
    groups: list[list[str]] = []
    reps: list[Tensor] = []
    for name, H in hessians.items():
        for group, rep in zip(groups, reps):
            if H is rep or (H.shape == rep.shape and H.device == rep.device and torch.equal(H, rep)):
                group.append(name)
                break
        else:
            groups.append([name])
            reps.append(H)
    return groups


@torch.no_grad()
def compute_hessian_spectra(
    hessians: Mapping[str, Tensor],
    *,
    model: str = "",
    matrix_info: Mapping[str, tuple[int, str]] | None = None,
    shared: Sequence[Sequence[str]] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: Progress | None = None,
    keep_eigenvalues: bool = True,
) -> SpectraResult:
    """Spectra of layer-wise Hessians H = 2 X^T X / N ``(in, in)`` given as {module name: H}.

    Matrices that read the same input (q/k/v, gate/up) share one Hessian: its eigenvalues are
    computed once and one row is emitted per matrix. ``shared`` lists such name groups (default:
    detected — same tensor object or equal values). ``matrix_info``: {name: (block, matrix_type)}
    (default: from the name, :func:`_parse_name`). ``progress(done, total)`` counts unique Hessians.
    """
    groups = [list(g) for g in shared] if shared is not None else _shared_groups(hessians)
    covered = {n for g in groups for n in g}
    groups += [[n] for n in hessians if n not in covered]
    first = next(iter(hessians.values()), None)
    dev = torch.device(device) if device is not None else (first.device if first is not None else torch.device("cpu"))
    dtype = dtype or default_eig_dtype()
    input_eps = {
        name: torch.finfo(H.dtype).eps if H.is_floating_point() else 0.0 for name, H in hessians.items()
    }
    rep_jobs: list[SpectrumJob] = []
    sources: dict[int, Tensor] = {}
    for k, group in enumerate(groups):
        H = hessians[group[0]]
        block, mtype = (matrix_info or {}).get(group[0]) or _parse_name(group[0])
        rep_jobs.append(SpectrumJob(block, mtype, group[0], "hessian", H.shape[0], H.shape[-1]))
        if H.ndim != 2 or H.shape[0] != H.shape[1]:
            rep_jobs[-1].failed = f"Hessian of {group[0]} is not square: shape {tuple(H.shape)}"
        else:
            sources[k] = H
    eigen_batches(rep_jobs, sources, "hessian", dev, dtype, 256 << 20, progress)
    jobs: list[SpectrumJob] = []
    for group, rep in zip(groups, rep_jobs):
        for name in group:
            block, mtype = (matrix_info or {}).get(name) or _parse_name(name)
            jobs.append(SpectrumJob(block, mtype, name, "hessian", rep.n_rows, rep.n_cols,
                                    eigenvalues=rep.eigenvalues, failed=rep.failed, input_eps=input_eps[group[0]]))
    return summarize_spectra(jobs, model, dtype, keep_eigenvalues)


def hessian_spectra_from_matrices(hessians: Mapping[str, Tensor], **kwargs) -> pd.DataFrame:
    """The table of :func:`compute_hessian_spectra` (same keyword arguments)."""
    return compute_hessian_spectra(hessians, **kwargs).table


def hessian_spectra(
    loaded: LoadedModel,
    calib_ids: Tensor,
    compute: Compute = CPU_COMPUTE,
    progress: Callable[[int, int], None] | None = None,
    *,
    dtype: torch.dtype | None = None,
    keep_eigenvalues: bool = True,
) -> SpectraResult:
    """Hessian spectra of every prunable matrix, block by block (``pruning.calibration.sequential``).

    calib_ids: LongTensor ``(nsamples, seqlen)``. compute: where the blocks run (and the eigenvalues are
    computed), whether offloaded, samples per block call (:func:`pruning.calibration.sequential.calibrate_blocks`).
    dtype default: float64 on every device; H itself is accumulated in float32. ``progress(done, total)`` counts blocks.
    """
    from pruning.calibration.sequential import BlockContext, calibrate_blocks

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
    calibrate_blocks(loaded, calib_ids, on_block, compute=compute, collect_hessian=True, modifies_blocks=False,
                     progress=progress)
    return SpectraResult.concat(parts)
