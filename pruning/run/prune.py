"""Prune a loaded model block-sequentially with per-matrix sparsities (any allocation drives it).

``prune_model`` validates everything up front, then runs any registered method
(:mod:`pruning.methods.registry`): one that needs no statistics (magnitude) matrix by matrix with no
forward pass, one that needs activations (Wanda) or a Hessian (SparseGPT) through
:func:`pruning.calibration.sequential.calibrate_blocks` (statistics of each block's inputs come from the
already pruned previous blocks, as in Sun et al. 2023 and Frantar & Alistarh 2023).
``owl_outlier_ratios`` measures the OWL outlier ratio of every block of the dense model (Yin et al. 2023).
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Callable, Mapping

import pandas as pd
import torch

from pruning.calibration.sequential import BlockContext, calibrate_blocks
from pruning.errors import ConfigError
from pruning.model.families import MatrixRef, prunable_matrices
from pruning.calibration.dense_stats import DenseNorms
from pruning.calibration.layer_stats import dense_block_statistic
from pruning.methods.apply import prune_linear, prune_linear_group
from pruning.methods.nm_pattern import parse_nm
from pruning.methods.owl import block_outlier_ratio
from pruning.methods.registry import KernelOptions, get_method, method_names
from pruning.model.load import LoadedModel
from pruning.model.placement import CPU_COMPUTE, Compute

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["block", "matrix_type", "name", "numel", "sparsity_target", "sparsity_achieved"]


def validate_request(
    refs: list[MatrixRef],
    method: str,
    sparsity_by_name: Mapping[str, float],
    nm: tuple[int, int] | str | None,
    blocksize: int,
    percdamp: float,
) -> tuple[int, int] | None:
    """Check a pruning request before any work; raises ConfigError naming the value and what is
    accepted. Returns the parsed ``(N, M)`` or None."""
    accepted_methods = method_names(pruning_only=True)
    if method not in accepted_methods:
        raise ConfigError(f"pruning.method: {method!r} is invalid; accepted: {', '.join(accepted_methods)}")
    try:
        nm_pair = parse_nm(nm)
    except ValueError as exc:
        raise ConfigError(f"pruning.nm: {nm!r} is invalid: {exc}") from exc
    if not isinstance(blocksize, int) or blocksize < 1:
        raise ConfigError(f"pruning.blocksize: {blocksize!r} is invalid; accepted: a positive integer (128 in the paper)")
    if not 0.0 < percdamp < 1.0:
        raise ConfigError(f"pruning.percdamp: {percdamp!r} is invalid; accepted: 0 < percdamp < 1 (0.01 in the paper)")
    known = {ref.name: ref for ref in refs}
    unknown = [name for name in sparsity_by_name if name not in known]
    if unknown:
        example = ", ".join(list(known)[:2])
        raise ConfigError(
            f"sparsity_by_name: module {unknown[0]!r} is not a prunable matrix of this model"
            f"{f' ({len(unknown)} unknown names)' if len(unknown) > 1 else ''}; accepted: the {len(known)} "
            f"names of prunable_matrices(), e.g. {example}"
        )
    for name, value in sparsity_by_name.items():
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not (0.0 <= float(value) < 1.0):
            raise ConfigError(f"sparsity_by_name[{name!r}]: {value!r} is invalid; accepted: a number in [0, 1)")
    if nm_pair is not None:
        n, m = nm_pair
        implied = n / m
        for name, value in sparsity_by_name.items():
            in_features = known[name].shape[1]
            if in_features % m:
                raise ConfigError(
                    f"pruning.nm: {n}:{m} needs the input width of {name!r} ({in_features}) to be divisible by M={m}; "
                    f"accepted: an M that divides every input width"
                )
            if value != 0 and not math.isclose(value, implied, abs_tol=1e-9):
                raise ConfigError(
                    f"sparsity_by_name[{name!r}]: {value!r} conflicts with N:M {n}:{m}, which prunes {n} of every {m} "
                    f"weights; accepted: {implied} (or 0 to leave the matrix dense)"
                )
    try:
        get_method(method).check_options(nm_pair, KernelOptions(blocksize, percdamp))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return nm_pair


def _row(ref: MatrixRef, target: float) -> dict:
    zeros = int((ref.module.weight.data == 0).sum())
    return {
        "block": ref.block,
        "matrix_type": ref.matrix_type,
        "name": ref.name,
        "numel": ref.numel,
        "sparsity_target": float(target),
        "sparsity_achieved": zeros / ref.numel,
    }


def prune_model(
    loaded: LoadedModel,
    method: str,
    sparsity_by_name: Mapping[str, float],
    calib_ids: torch.Tensor | None,
    *,
    nm: tuple[int, int] | str | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    compute: Compute = CPU_COMPUTE,
    prefetch: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Prune ``loaded.model`` in place; returns the tidy per-matrix table (one row per prunable
    matrix, blocks in order): ``block, matrix_type, name, numel, sparsity_target, sparsity_achieved``.

    method: a registered method that prunes (:func:`pruning.methods.registry.method_names`), e.g.
    ``magnitude`` (Sun et al. 2023 baseline; whole-matrix group; no calibration), ``wanda`` (Sun et
    al. 2023; per output row) or ``sparsegpt`` (Frantar & Alistarh 2023; ``blocksize`` columns per
    mask block, ``percdamp`` damping of mean diag H).
    sparsity_by_name: full module name -> sparsity in [0, 1); matrices not listed stay dense
    (target 0). nm: ``(N, M)`` or ``"N:M"`` — prune N of every M consecutive inputs per row; every
    listed sparsity must then be N/M (or 0). calib_ids: LongTensor ``(nsamples, seqlen)``
    (ignored by methods that need no statistics). compute: where the blocks run, whether offloaded, samples
    per block call; with ``prefetch`` see :func:`pruning.calibration.sequential.calibrate_blocks`
    (``compute.offload=None``: decided by measuring free memory, :mod:`pruning.model.placement`; a method
    that needs no statistics prunes on ``compute.device``); the placement used is in
    ``table.attrs["placement"]``. A method with a group kernel (SparseGPT) prunes the matrices that share
    an input (q/k/v, gate/up) in one pass with one inverse Hessian.
    ``progress(done, total)`` is called per block.
    """
    refs = prunable_matrices(loaded.model, loaded.family)
    nm_pair = validate_request(refs, method, sparsity_by_name, nm, blocksize, percdamp)
    statistics = get_method(method).statistics
    if statistics != "none" and (calib_ids is None or calib_ids.ndim != 2 or calib_ids.numel() == 0):
        shape = None if calib_ids is None else tuple(calib_ids.shape)
        raise ConfigError(f"calib_ids: {shape} is invalid for {method}; accepted: a LongTensor (nsamples, seqlen)")
    targets = {ref.name: float(sparsity_by_name.get(ref.name, 0.0)) for ref in refs}
    left_dense = sum(1 for ref in refs if ref.name not in sparsity_by_name)
    if left_dense:
        log.info("%d of %d matrices are not in sparsity_by_name and stay dense", left_dense, len(refs))
    dev = torch.device(compute.device)
    t0 = time.perf_counter()
    rows: list[dict] = []

    if statistics == "none":
        n_blocks = max(ref.block for ref in refs) + 1
        for k, ref in enumerate(refs):
            if targets[ref.name] > 0:
                prune_linear(ref.module, method, targets[ref.name], nm=nm_pair, compute_device=dev)
            rows.append(_row(ref, targets[ref.name]))
            last_of_block = k + 1 == len(refs) or refs[k + 1].block != ref.block
            if progress is not None and last_of_block:
                progress(ref.block + 1, n_blocks)
    else:

        on_block = block_pruner(method, targets, nm_pair, blocksize, percdamp, rows)
        # only the blocks with something to prune need statistics, and nothing after the last of them runs
        # (a probe of block b runs blocks 0..b); a block left out keeps its weights and gets its table row here
        active = sorted({ref.block for ref in refs if targets[ref.name] > 0})
        placement = calibrate_blocks(
            loaded, calib_ids, on_block, compute=compute, prefetch=prefetch,
            collect_hessian=statistics == "hessian", progress=progress,
            statistics_for=set(active), stop_after=active[-1] if active else -1,
        )
        done = {row["name"]: row for row in rows}
        rows = [done.get(ref.name) or _row(ref, targets[ref.name]) for ref in refs]
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    if statistics != "none":
        table.attrs["placement"] = placement.kind
        table.attrs["placement_reason"] = placement.reason
    overall = float((table.sparsity_achieved * table.numel).sum() / table.numel.sum())
    log.info("pruned %s with %s%s in %.1f s: overall sparsity %.4f",
             loaded.name, method, f" {nm_pair[0]}:{nm_pair[1]}" if nm_pair else "", time.perf_counter() - t0, overall)
    return table


def block_pruner(
    method: str, targets: Mapping[str, float], nm: tuple[int, int] | None, blocksize: int, percdamp: float,
    rows: list[dict],
) -> Callable[[BlockContext], None]:
    """The ``on_block`` of block-sequential pruning (used by :func:`prune_model` and the streaming
    path :mod:`pruning.run.streaming`): prunes every matrix of the block with a target > 0 from the
    block's statistics — by input group when the method has a group kernel — and appends one table
    row per matrix to ``rows``."""
    grouped = get_method(method).group_kernel is not None

    def on_block(ctx: BlockContext) -> None:
        if grouped:
            _group_block(ctx, method, targets, nm, blocksize, percdamp)
        for ref in ctx.matrices:
            target = targets.get(ref.name, 0.0)
            if target > 0 and not grouped:
                stats = ctx.stats[ref.name]
                prune_linear(ref.module, method, target, act_sq_sum=stats.act_sq_sum, hessian=stats.hessian,
                             nm=nm, blocksize=blocksize, percdamp=percdamp)
            rows.append(_row(ref, target))

    return on_block


def _group_block(
    ctx: BlockContext, method: str, targets: Mapping[str, float], nm: tuple[int, int] | None, blocksize: int,
    percdamp: float,
) -> None:
    """A group kernel (SparseGPT) on every matrix of one block: matrices sharing a Hessian (one
    input group) in one pass; each group's statistics are dropped from ``ctx.stats`` first so that its Hessian's memory
    is reused by the inverse (``overwrite_hessian``) and freed right after."""
    groups: dict[int, list[MatrixRef]] = {}
    for ref in ctx.matrices:
        if targets.get(ref.name, 0.0) > 0:
            groups.setdefault(id(ctx.stats[ref.name].hessian), []).append(ref)
    for refs in groups.values():
        hessian = ctx.stats[refs[0].name].hessian
        for ref in refs:
            ctx.stats.pop(ref.name)
        others = any(st.hessian is hessian for st in ctx.stats.values())  # a dense matrix of the group
        prune_linear_group(
            [ref.module for ref in refs], method, [targets[ref.name] for ref in refs], hessian,
            nm=nm, blocksize=blocksize, percdamp=percdamp, overwrite_hessian=not others,
        )
        del hessian


def uniform_sparsity(loaded: LoadedModel, sparsity: float) -> dict[str, float]:
    """``{name: sparsity}`` for every prunable matrix (the uniform allocation)."""
    return {ref.name: sparsity for ref in prunable_matrices(loaded.model, loaded.family)}


def owl_outlier_ratios(
    loaded: LoadedModel,
    calib_ids: torch.Tensor,
    M: float = 5.0,
    *,
    compute: Compute = CPU_COMPUTE,
    progress: Callable[[int, int], None] | None = None,
    norms: DenseNorms | None = None,
) -> dict[int, float]:
    """OWL outlier ratio D_l per block of the dense model (Yin et al. 2023, arXiv:2310.05175):
    the share (fraction, not percent) of the Wanda scores |W_ij| * ||X_j||_2 of all matrices of
    block l that exceed ``M`` times their mean. The model is not modified. calib_ids:
    ``(nsamples, seqlen)``. compute: where the blocks run, whether offloaded, samples per block call
    (:func:`pruning.calibration.layer_stats.dense_block_statistic`)."""
    if not M > 0:
        raise ConfigError(f"allocation.owl_threshold_m: {M!r} is invalid; accepted: a positive number (5 in the OWL paper)")
    ratios = dense_block_statistic(
        loaded, calib_ids, lambda weights, norms: block_outlier_ratio(weights, norms, M),
        compute=compute, progress=progress, norms=norms,
    )
    log.info("OWL outlier ratios (M=%g): %s", M, {k: round(v, 5) for k, v in ratios.items()})
    return ratios
