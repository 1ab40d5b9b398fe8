"""Block-sequential calibration for every family of the registry (one mechanism, no per-family code).

Protocol of Frantar & Alistarh 2023 (SparseGPT) and Sun et al. 2023 (Wanda):

1. **Capture** the inputs of every decoder block once: each block of ``family.layers_path`` is
   temporarily replaced by a pass-through catcher and the model runs on each calibration sample,
   so the model's own code builds what its blocks need (attention masks — per block for families
   that mix sliding and full attention, like Gemma3 —, ``position_ids``, rotary
   ``position_embeddings``). The hidden states entering block 0 are kept (``(nsamples, seqlen,
   hidden)`` in the model dtype, on the compute device); the keyword arguments of every block are
   kept once (they depend only on the sequence length, which is the same for all samples). The
   last catcher stops the forward, so the final norm and LM head never run.
2. For each block in order: move it to the compute device (``offload``), run all samples through it
   with forward hooks on its linear layers that accumulate statistics, call ``on_block`` (which may
   prune the block in place), free the statistics, run the samples through the (pruned) block
   again and feed its outputs to the next block; move the block back.

Placement (:mod:`pruning.model.placement`): one :class:`pruning.model.placement.Compute` says where the
blocks run, whether offloaded and how many samples go through a block per call; ``offload=None``
measures whether the whole model fits on the device next to the activations; with offload on CUDA,
block i+1 is copied on a side stream while block i computes (:mod:`pruning.model.prefetch`).

Statistics per linear layer (:class:`pruning.calibration.linear_stats.LinearStats`; layers that read the same
input tensor — the family's ``input_groups`` such as q/k/v and gate/up — share one set of tensors):

* ``act_sq_sum`` ``(in,)`` float32: sum over tokens of x_j^2; Wanda's ||X_j||_2 = sqrt(act_sq_sum);
* ``hessian`` ``(in, in)`` float32: H = 2/N X^T X with N the number of tokens (SparseGPT's
  layer-wise Hessian, also the input of the Hessian spectra);
* OWL outlier statistics are derived from ``act_sq_sum`` and the weights (see ``pruning.methods.owl``).

Peak memory on the compute device: one block, two activation buffers ``(nsamples, seqlen,
hidden)`` and the block's statistics.

Step 1 lives in :mod:`pruning.calibration.block_capture`, the hooks of step 2 in
:mod:`pruning.calibration.linear_stats`; this module runs the protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pruning.calibration.block_capture import capture_block_inputs
from pruning.model.families import FamilySpec, MatrixRef, block_matrices, decoder_layers
from pruning.calibration.linear_stats import LinearStats, StatsCollector, StopBlockForward, input_group_widths
from pruning.model.load import LoadedModel
from pruning.model.placement import CPU_COMPUTE, Compute, FreeMemoryFn, Placement, placement_for_model
from pruning.model.prefetch import BlockMover, make_copier

log = logging.getLogger(__name__)


@dataclass
class BlockContext:
    """What ``on_block`` sees: the block (on the compute device), its matrices and statistics."""

    index: int
    n_blocks: int
    block: nn.Module
    matrices: list[MatrixRef]
    stats: dict[str, LinearStats] = field(default_factory=dict)  # keyed by full module name
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def _block_output(out: Any) -> Tensor:
    """A block's hidden states, whether it returns a tensor or a tuple (older transformers)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _forward_all(block: nn.Module, inps: Tensor, outs: Tensor, kwargs: dict[str, Any], batch_size: int,
                 stops: bool = False) -> None:
    """``outs[s] = block(inps[s])`` for every sample, ``batch_size`` samples per call. The block
    kwargs were captured for one sample (batch dimension 1: masks, rotary tables) and broadcast.
    ``stops``: a statistics hook ends each call early (:class:`StopBlockForward`); ``outs`` is then
    left as it was."""
    for s in range(0, inps.shape[0], batch_size):
        if stops:
            try:
                block(inps[s : s + batch_size], **kwargs)
            except StopBlockForward:
                continue
            raise RuntimeError("calibration: the statistics pass was to stop at the family's stats_exit matrix, "
                               "but the block's forward ran to its end without reaching it")
        outs[s : s + batch_size] = _block_output(block(inps[s : s + batch_size], **kwargs))


@torch.no_grad()
def calibrate_blocks(
    loaded: LoadedModel,
    calib_ids: Tensor,
    on_block: Callable[[BlockContext], None],
    *,
    compute: Compute = CPU_COMPUTE,
    prefetch: bool = True,
    collect_hessian: bool = True,
    modifies_blocks: bool = True,
    progress: Callable[[int, int], None] | None = None,
    free_memory: FreeMemoryFn | None = None,
    statistics_for: Collection[int] | None = None,
    stop_after: int | None = None,
) -> Placement:
    """Run the block-sequential calibration protocol (module docstring) and call ``on_block`` once
    per block, in order, with the block's statistics; ``on_block`` may prune the block in place.

    calib_ids: LongTensor ``(nsamples, seqlen)``. ``compute``: where the blocks run, whether offloaded, and
    the samples per block call (default :data:`pruning.model.placement.CPU_COMPUTE`: the CPU, the whole model
    there, one sample). ``compute.offload=False`` moves the whole model to ``compute.device`` (and leaves
    it there); ``True`` keeps the model where it is and moves one block at a time to the device and back;
    ``None`` decides by measurement (:func:`pruning.model.placement.choose_placement`; ``free_memory``
    replaces ``torch.cuda.mem_get_info`` in tests). ``prefetch`` (offload on CUDA): copy block i+1 on a side
    stream while block i computes; ``False`` keeps the synchronous copies. ``progress(done, total)``
    is called after each block. ``modifies_blocks=False`` promises that ``on_block`` leaves the
    blocks unchanged (measurements of the dense model): the outputs of the statistics pass are then
    fed forward instead of being recomputed, halving the work. ``compute.batch_size``: samples per block
    call (1, as in the SparseGPT and Wanda reference code; more samples per call mean fewer,
    larger GEMMs, the same statistics up to rounding). ``statistics_for``: the blocks ``on_block`` needs
    (None: every block); any other block is only run forward, once, without hooks (its outputs are
    what the statistics pass would have written: nothing changes it). ``stop_after``: the last block
    to run (None: the last of the model); nothing after it can change the blocks up to it. A run that
    prunes one block (a probe) runs blocks 0..b, with statistics of b only. Returns the placement used.
    """
    batch_size = compute.batch_size
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if calib_ids.ndim != 2 or calib_ids.dtype != torch.long:
        raise ValueError(f"calib_ids must be a LongTensor (nsamples, seqlen), got {calib_ids.dtype} {tuple(calib_ids.shape)}")
    model, family = loaded.model, loaded.family
    dev = torch.device(compute.device)
    layers = decoder_layers(model, family)
    placement = placement_for_model(
        model, layers, input_group_widths(layers[0], family), calib_ids.shape[0], calib_ids.shape[1],
        device=dev, collect_hessian=collect_hessian, offload=compute.offload, prefetch=prefetch,
        free_memory=free_memory,
    )
    if not placement.offload:
        model.to(dev)
    n_blocks = len(layers)
    inps, block_kwargs = capture_block_inputs(model, layers, calib_ids, dev)  # (nsamples, seqlen, hidden)
    outs = torch.empty_like(inps)
    log.info(
        "calibration: %d samples x %d tokens, %d blocks on %s (%s%s), activations %s",
        calib_ids.shape[0], calib_ids.shape[1], n_blocks, dev, placement.kind,
        ", prefetch" if placement.prefetch else "", inps.dtype,
    )
    mover = BlockMover(layers, make_copier(dev)) if placement.offload and placement.prefetch else None
    last = n_blocks - 1 if stop_after is None else max(0, min(int(stop_after), n_blocks - 1))
    try:
        for i in range(last + 1):
            if mover is not None:
                block = mover.acquire(i)  # also starts copying block i+1
            else:
                block = layers[i]
                home = next(block.parameters()).device
                if placement.offload:
                    block.to(dev)
            if statistics_for is None or i in statistics_for:
                run_block(i, n_blocks, block, family, inps, outs, block_kwargs[i], on_block, dev,
                          collect_hessian, modifies_blocks, batch_size)
            else:  # a block left as it is: its outputs only
                _forward_all(block, inps, outs, block_kwargs[i], batch_size)
            if mover is not None:
                mover.release(i)
            elif placement.offload:
                block.to(home)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            inps, outs = outs, inps
            if progress is not None:
                progress(i + 1, last + 1)
    finally:
        if mover is not None:
            mover.close()
    del inps, outs, block_kwargs
    return placement


def run_block(
    index: int,
    n_blocks: int,
    block: nn.Module,
    family: FamilySpec,
    inps: Tensor,
    outs: Tensor,
    kwargs: dict[str, Any],
    on_block: Callable[[BlockContext], None],
    device: torch.device,
    collect_hessian: bool = True,
    modifies_blocks: bool = True,
    batch_size: int = 1,
) -> None:
    """One step of the protocol for a block already on ``device``: statistics pass with hooks,
    ``on_block``, then (``modifies_blocks``) the pass that writes the pruned block's outputs.
    inps/outs: ``(nsamples, seqlen, hidden)``; afterwards ``outs`` holds the block's outputs.

    When the block is pruned afterwards (``modifies_blocks``), the statistics pass stops at the
    family's ``stats_exit`` matrix (LLaMA-like blocks: ``down_proj``) once its input is recorded: that
    GEMM and the residual after it would only have produced outputs the second pass overwrites.
    Statistics, masks and outputs are those of the whole pass, bit for bit (tested); the pass does
    the work of the block less its last matrix (LLaMA-7B: about a fifth of the pass)."""
    ctx = BlockContext(index, n_blocks, block, block_matrices(block, index, family), device=device)
    present = {ref.matrix_type for ref in ctx.matrices}
    stop_at = family.stats_exit if modifies_blocks and family.stats_exit in present else None
    collector = StatsCollector(ctx.matrices, family.input_groups, collect_hessian, stop_at=stop_at)
    try:
        _forward_all(block, inps, outs, kwargs, batch_size, stops=stop_at is not None)
    finally:
        collector.remove()
    ctx.stats = collector.stats()
    on_block(ctx)
    ctx.stats = {}  # free the statistics before the next block
    del collector
    if modifies_blocks:  # feed the outputs of the (pruned) block forward
        _forward_all(block, inps, outs, kwargs, batch_size)
