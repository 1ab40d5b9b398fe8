"""Weight spectra: the ESD of W^T W ``(in, in)`` (or W W^T, the smaller Gram matrix) of every
prunable linear weight W ``(out, in)`` of the decoder (Martin & Mahoney 2021, DESIGN.md "ESD"),
eigen-solved in batches of equal size; rows built by :func:`pruning.spectral.summary.summarize_spectra`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from pruning.model.families import FamilySpec, MatrixRef, block_matrices, decoder_layers, family_for
from pruning.spectral.esd import default_eig_dtype, gram, nonfinite_message, symmetric_eigenvalues
from pruning.spectral.summary import Progress, SpectraResult, SpectrumJob, summarize_spectra

log = logging.getLogger(__name__)


def model_and_name(model_or_loaded: object, model_name: str | None) -> tuple[nn.Module, FamilySpec, str]:
    """(module, family, display name) of a ``LoadedModel`` or a bare Hugging Face causal LM."""
    if isinstance(model_or_loaded, nn.Module):
        model, family = model_or_loaded, family_for(model_or_loaded)
        default_name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    else:  # LoadedModel
        model, family = model_or_loaded.model, model_or_loaded.family  # type: ignore[attr-defined]
        default_name = model_or_loaded.name  # type: ignore[attr-defined]
    return model, family, str(model_name if model_name is not None else default_name)


def weight_matrices(model: nn.Module, family: FamilySpec, blocks: Sequence[int] | None = None) -> list[MatrixRef]:
    """The prunable matrices of ``blocks`` (default all), blocks in order, MATRIX_TYPES order within."""
    layers = decoder_layers(model, family)
    chosen = range(len(layers)) if blocks is None else blocks
    refs: list[MatrixRef] = []
    for i in chosen:
        if not 0 <= i < len(layers):
            raise ValueError(f"blocks: {i} is not a block index of this model (0..{len(layers) - 1})")
        refs.extend(block_matrices(layers[i], i, family))
    return refs


@torch.no_grad()
def compute_weight_spectra(
    model_or_loaded: object,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    blocks: Sequence[int] | None = None,
    progress: Progress | None = None,
    keep_eigenvalues: bool = True,
    model_name: str | None = None,
    batch_bytes: int = 256 << 20,
) -> SpectraResult:
    """Spectra of every prunable weight W ``(out, in)`` of the decoder (``blocks``: a subset).

    model_or_loaded: a ``LoadedModel`` or a Hugging Face causal LM. device: where Gram matrices and
    eigenvalues are computed (default: the weights' device); dtype: eigen-solver dtype (default
    float64 on every device, see ``pruning.spectral.esd``). Gram matrices of equal size are batched (at most
    ``batch_bytes`` per ``eigvalsh`` call). ``progress(done, total)`` counts matrices.
    """
    model, family, name = model_and_name(model_or_loaded, model_name)
    refs = weight_matrices(model, family, blocks)
    dev = torch.device(device) if device is not None else (refs[0].module.weight.device if refs else torch.device("cpu"))
    dtype = dtype or default_eig_dtype()
    jobs = [
        SpectrumJob(r.block, r.matrix_type, r.name, "weight", r.shape[0], r.shape[1], numel=r.numel) for r in refs
    ]
    sources = {k: ref.module.weight for k, ref in enumerate(refs)}
    eigen_batches(jobs, sources, "weight", dev, dtype, batch_bytes, progress)
    return summarize_spectra(jobs, name, dtype, keep_eigenvalues)


def weight_spectra(model_or_loaded: object, **kwargs) -> pd.DataFrame:
    """The table of :func:`compute_weight_spectra` (same keyword arguments)."""
    return compute_weight_spectra(model_or_loaded, **kwargs).table


def eigen_batches(
    jobs: list[SpectrumJob], sources: Mapping[int, Tensor], kind: str, device: torch.device, dtype: torch.dtype,
    batch_bytes: int, progress: Progress | None,
) -> None:
    """Fill ``jobs[k].eigenvalues`` for every k in ``sources`` (weights or Hessians), batching
    matrices of equal Gram size into one ``eigvalsh`` call; failures are recorded per job."""
    total = len(jobs)
    done = total - len(sources)
    pending: dict[int, list[tuple[int, Tensor]]] = {}
    itemsize = torch.empty((), dtype=dtype).element_size()

    def flush(m: int) -> None:
        nonlocal done
        group = pending.pop(m, [])
        if not group:
            return
        try:
            eigs = symmetric_eigenvalues(torch.stack([g for _, g in group]))  # (B, m)
            for (k, _), e in zip(group, eigs):
                jobs[k].eigenvalues = e
        except RuntimeError as exc:  # includes torch.linalg.LinAlgError: retry one by one
            log.warning("batched eigvalsh failed (%s); retrying %d matrices one by one", exc, len(group))
            for k, g in group:
                try:
                    jobs[k].eigenvalues = symmetric_eigenvalues(g)
                except RuntimeError as one_exc:
                    jobs[k].failed = f"eigvalsh failed: {one_exc}"
        done += len(group)
        if progress is not None:
            progress(done, total)

    for k, tensor in sources.items():
        bad = nonfinite_message(tensor, kind)
        if bad is not None:
            jobs[k].failed = bad
            done += 1
            continue
        mat = gram(tensor.to(device), dtype) if kind == "weight" else tensor.detach().to(device, dtype)
        m = mat.shape[-1]
        pending.setdefault(m, []).append((k, mat))
        if len(pending[m]) * m * m * itemsize >= batch_bytes:
            flush(m)
    for m in list(pending):
        flush(m)
    if progress is not None:
        progress(total, total)
