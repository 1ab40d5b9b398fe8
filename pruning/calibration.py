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

Placement (:mod:`pruning.placement`): ``offload=None`` measures whether the whole model fits on the
device next to the activations; with offload on CUDA, block i+1 is copied on a side stream while
block i computes (:mod:`pruning.prefetch`).

Statistics per linear layer (:class:`LinearStats`; layers that read the same input tensor — the
family's ``input_groups`` such as q/k/v and gate/up — share one set of tensors):

* ``act_sq_sum`` ``(in,)`` float32: sum over tokens of x_j^2; Wanda's ||X_j||_2 = sqrt(act_sq_sum);
* ``hessian`` ``(in, in)`` float32: H = 2/N X^T X with N the number of tokens (SparseGPT's
  layer-wise Hessian, also the input of the Hessian spectra);
* OWL outlier statistics are derived from ``act_sq_sum`` and the weights (see ``pruning.methods.owl``).

Peak memory on the compute device: one block, two activation buffers ``(nsamples, seqlen,
hidden)`` and the block's statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pruning.families import FamilySpec, MatrixRef, block_matrices, decoder_layers
from pruning.models import LoadedModel
from pruning.placement import FreeMemoryFn, Placement, placement_for_model
from pruning.prefetch import BlockMover, make_copier

log = logging.getLogger(__name__)


@dataclass
class LinearStats:
    """Calibration statistics of one ``nn.Linear`` of the current block (inputs X: ``(N, in)``)."""

    name: str
    block: int
    matrix_type: str
    act_sq_sum: Tensor  # (in,) float32, sum_t x_tj^2; Wanda norm = sqrt(act_sq_sum)
    hessian: Tensor | None  # (in, in) float32, H = 2/N X^T X (SparseGPT scaling), N = n_tokens
    n_tokens: int

    @property
    def act_norm(self) -> Tensor:
        """||X_j||_2 ``(in,)`` (Wanda)."""
        return torch.sqrt(self.act_sq_sum)


@dataclass
class BlockContext:
    """What ``on_block`` sees: the block (on the compute device), its matrices and statistics."""

    index: int
    n_blocks: int
    block: nn.Module
    matrices: list[MatrixRef]
    stats: dict[str, LinearStats] = field(default_factory=dict)  # keyed by full module name
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


class _StopForward(Exception):
    """Raised by the last catcher: the capture pass needs nothing after the decoder blocks."""


class _Catcher(nn.Module):
    """Stands in for one decoder block during capture: records its inputs and passes them through."""

    def __init__(self, block: nn.Module, index: int, record: dict[int, Any], last: bool) -> None:
        super().__init__()
        self.block = block
        self.index = index
        self.record = record
        self.last = last

    def __getattr__(self, name: str) -> Any:  # attributes a model may read from its blocks
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("block"), name)

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if args:
            raise RuntimeError(
                f"calibration capture: block {self.index} received {len(args)} positional arguments besides "
                "hidden_states; only keyword arguments are supported (extend pruning/calibration.py)"
            )
        self.record[self.index] = (hidden_states, kwargs)
        if self.last:
            raise _StopForward
        return hidden_states


def _to_device(obj: Any, device: torch.device, memo: dict[int, Any]) -> Any:
    """Move tensors (also inside tuples/lists/dicts) to ``device``, keeping shared objects shared."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, Tensor):
        out: Any = obj.to(device)
    elif isinstance(obj, tuple):
        out = tuple(_to_device(o, device, memo) for o in obj)
    elif isinstance(obj, list):
        out = [_to_device(o, device, memo) for o in obj]
    elif isinstance(obj, dict):
        out = {k: _to_device(v, device, memo) for k, v in obj.items()}
    else:
        out = obj
    memo[key] = out
    return out


def _model_device(model: nn.Module) -> torch.device:
    """Device of the input embedding (where the capture pass runs)."""
    return model.get_input_embeddings().weight.device


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, layers: nn.ModuleList, calib_ids: Tensor, device: torch.device
) -> tuple[Tensor, list[dict[str, Any]]]:
    """Hidden states entering block 0 ``(nsamples, seqlen, hidden)`` on ``device`` (model dtype)
    and the keyword arguments of every block (tensors moved to ``device``)."""
    nsamples = calib_ids.shape[0]
    n_blocks = len(layers)
    record: dict[int, Any] = {}
    originals = list(layers)
    run_device = _model_device(model)
    inps: Tensor | None = None
    block_kwargs: list[dict[str, Any]] = []
    try:
        for i in range(n_blocks):
            layers[i] = _Catcher(originals[i], i, record, last=i == n_blocks - 1)
        for s in range(nsamples):
            if s == 1:  # kwargs are known; stop at block 0 from now on
                layers[0].last = True
            record.clear()
            try:
                model(input_ids=calib_ids[s : s + 1].to(run_device), use_cache=False)
            except _StopForward:
                pass
            if 0 not in record:
                raise RuntimeError("calibration capture: block 0 was never called; is family.layers_path right?")
            hidden0 = record[0][0]  # (1, seqlen, hidden)
            if inps is None:
                inps = torch.empty((nsamples, *hidden0.shape[1:]), dtype=hidden0.dtype, device=device)
                missing = [i for i in range(n_blocks) if i not in record]
                if missing:
                    raise RuntimeError(f"calibration capture: blocks {missing} were never called by the model's forward")
                memo: dict[int, Any] = {}
                block_kwargs = [_to_device(record[i][1], device, memo) for i in range(n_blocks)]
            inps[s] = hidden0[0].to(device)
    finally:
        for i in range(n_blocks):
            layers[i] = originals[i]
        record.clear()
    assert inps is not None
    return inps, block_kwargs


def _block_output(out: Any) -> Tensor:
    """A block's hidden states, whether it returns a tensor or a tuple (older transformers)."""
    return out[0] if isinstance(out, (tuple, list)) else out


class _StatsCollector:
    """Forward hooks accumulating act_sq_sum and X^T X for the input groups of one block."""

    def __init__(self, ctx: BlockContext, groups: tuple[tuple[str, ...], ...], collect_hessian: bool) -> None:
        by_type = {ref.matrix_type: ref for ref in ctx.matrices}
        self.handles: list[Any] = []
        self.acc: list[dict[str, Any]] = []
        covered: set[str] = set()
        for group in groups:
            refs = [by_type[t] for t in group if t in by_type]
            covered.update(r.matrix_type for r in refs)
            if refs:
                self._add(refs, collect_hessian)
        for ref in ctx.matrices:  # a type missing from input_groups reads its own input
            if ref.matrix_type not in covered:
                self._add([ref], collect_hessian)

    def _add(self, refs: list[MatrixRef], collect_hessian: bool) -> None:
        cols = refs[0].module.in_features
        dev = refs[0].module.weight.device
        acc = {
            "refs": refs,
            "sq": torch.zeros(cols, dtype=torch.float32, device=dev),
            "xtx": torch.zeros(cols, cols, dtype=torch.float32, device=dev) if collect_hessian else None,
            "n": 0,
        }
        self.acc.append(acc)

        def hook(_module: nn.Module, inputs: tuple[Tensor, ...], _output: Tensor) -> None:
            x_raw = inputs[0].detach().reshape(-1, cols)  # (tokens, in), model dtype
            x = x_raw.float()
            acc["sq"] += (x * x).sum(dim=0)
            if acc["xtx"] is not None:
                accumulate_xtx(acc["xtx"], x_raw, x)  # (in, in) += X^T X
            acc["n"] += x.shape[0]

        self.handles.append(refs[0].module.register_forward_hook(hook))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def stats(self) -> dict[str, LinearStats]:
        out: dict[str, LinearStats] = {}
        for acc in self.acc:
            n = acc["n"]
            if n == 0:
                raise RuntimeError(f"calibration: {acc['refs'][0].name} saw no input tokens during the block's forward")
            hessian = acc["xtx"].mul_(2.0 / n) if acc["xtx"] is not None else None  # H = 2/N X^T X
            for ref in acc["refs"]:
                out[ref.name] = LinearStats(ref.name, ref.block, ref.matrix_type, acc["sq"], hessian, n)
        self.acc.clear()
        return out


_HALF_GEMM_OK: dict[tuple[str, torch.dtype], bool] = {}


def _half_gemm_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``addmm(out_dtype=float32)`` on 16-bit inputs runs here and equals the float32 GEMM
    (probed once per device type and dtype on a small exact case)."""
    key = (device.type, dtype)
    if key not in _HALF_GEMM_OK:
        ok = False
        if device.type == "cuda":
            try:
                x = torch.arange(-64, 64, device=device, dtype=torch.float32).reshape(32, 4).to(dtype)
                acc = torch.ones(4, 4, device=device)
                torch.addmm(acc, x.t(), x, out_dtype=torch.float32, out=acc)
                ok = torch.equal(acc, 1.0 + x.float().t() @ x.float())
            except (RuntimeError, TypeError) as exc:
                log.info("float16/bfloat16 GEMM with float32 output unavailable (%s); X^T X in float32", exc)
        _HALF_GEMM_OK[key] = ok
    return _HALF_GEMM_OK[key]


def accumulate_xtx(xtx: Tensor, x_raw: Tensor, x_float: Tensor) -> None:
    """``xtx += X^T X`` in float32 (SparseGPT's Hessian, Frantar & Alistarh 2023). xtx: ``(in, in)``
    float32; X: ``(tokens, in)`` in the model dtype (``x_raw``) and in float32 (``x_float``).

    On CUDA with float16/bfloat16 activations the GEMM reads the 16-bit values directly on the
    tensor cores with float32 accumulation and output: each product of two 16-bit numbers is exact
    in float32, so this equals the float32 GEMM up to the order of the additions, at several times
    the speed. Elsewhere: ``addmm_`` on the float32 copy."""
    if x_raw.dtype in (torch.float16, torch.bfloat16) and _half_gemm_works(x_raw.device, x_raw.dtype):
        torch.addmm(xtx, x_raw.t(), x_raw, out_dtype=torch.float32, out=xtx)
    else:
        xtx.addmm_(x_float.t(), x_float)


def _forward_all(block: nn.Module, inps: Tensor, outs: Tensor, kwargs: dict[str, Any], batch_size: int) -> None:
    """``outs[s] = block(inps[s])`` for every sample, ``batch_size`` samples per call. The block
    kwargs were captured for one sample (batch dimension 1: masks, rotary tables) and broadcast."""
    for s in range(0, inps.shape[0], batch_size):
        outs[s : s + batch_size] = _block_output(block(inps[s : s + batch_size], **kwargs))


def input_group_widths(block: nn.Module, family: FamilySpec) -> list[int]:
    """Input width of each input group of one block (LLaMA: hidden for q/k/v, o and gate/up; the MLP
    width for down) — the sizes of the block's statistics."""
    by_type = {ref.matrix_type: ref for ref in block_matrices(block, 0, family)}
    widths, covered = [], set()
    for group in family.input_groups:
        present = [t for t in group if t in by_type]
        if present:
            widths.append(by_type[present[0]].module.in_features)
            covered.update(present)
    widths += [ref.module.in_features for t, ref in by_type.items() if t not in covered]
    return widths


@torch.no_grad()
def calibrate_blocks(
    loaded: LoadedModel,
    calib_ids: Tensor,
    on_block: Callable[[BlockContext], None],
    *,
    device: str | torch.device = "cpu",
    offload: bool | None = False,
    prefetch: bool = True,
    collect_hessian: bool = True,
    modifies_blocks: bool = True,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
    free_memory: FreeMemoryFn | None = None,
) -> Placement:
    """Run the block-sequential calibration protocol (module docstring) and call ``on_block`` once
    per block, in order, with the block's statistics; ``on_block`` may prune the block in place.

    calib_ids: LongTensor ``(nsamples, seqlen)``. ``device``: where blocks run. ``offload=False``
    moves the whole model to ``device`` (and leaves it there); ``offload=True`` keeps the model
    where it is and moves one block at a time to ``device`` and back; ``offload=None`` decides by
    measurement (:func:`pruning.placement.choose_placement`; ``free_memory`` replaces
    ``torch.cuda.mem_get_info`` in tests). ``prefetch`` (offload on CUDA): copy block i+1 on a side
    stream while block i computes; ``False`` keeps the synchronous copies. ``progress(done, total)``
    is called after each block. ``modifies_blocks=False`` promises that ``on_block`` leaves the
    blocks unchanged (measurements of the dense model): the outputs of the statistics pass are then
    fed forward instead of being recomputed, halving the work. ``batch_size``: samples per block
    call (1, as in the SparseGPT and Wanda reference code; more samples per call mean fewer,
    larger GEMMs, the same statistics up to rounding). Returns the placement used.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if calib_ids.ndim != 2 or calib_ids.dtype != torch.long:
        raise ValueError(f"calib_ids must be a LongTensor (nsamples, seqlen), got {calib_ids.dtype} {tuple(calib_ids.shape)}")
    model, family = loaded.model, loaded.family
    dev = torch.device(device)
    layers = decoder_layers(model, family)
    placement = placement_for_model(
        model, layers, input_group_widths(layers[0], family), calib_ids.shape[0], calib_ids.shape[1],
        device=dev, collect_hessian=collect_hessian, offload=offload, prefetch=prefetch, free_memory=free_memory,
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
    try:
        for i in range(n_blocks):
            if mover is not None:
                block = mover.acquire(i)  # also starts copying block i+1
            else:
                block = layers[i]
                home = next(block.parameters()).device
                if placement.offload:
                    block.to(dev)
            run_block(i, n_blocks, block, family, inps, outs, block_kwargs[i], on_block, dev,
                      collect_hessian, modifies_blocks, batch_size)
            if mover is not None:
                mover.release(i)
            elif placement.offload:
                block.to(home)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            inps, outs = outs, inps
            if progress is not None:
                progress(i + 1, n_blocks)
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
    inps/outs: ``(nsamples, seqlen, hidden)``; afterwards ``outs`` holds the block's outputs."""
    ctx = BlockContext(index, n_blocks, block, block_matrices(block, index, family), device=device)
    collector = _StatsCollector(ctx, family.input_groups, collect_hessian)
    try:
        _forward_all(block, inps, outs, kwargs, batch_size)
    finally:
        collector.remove()
    ctx.stats = collector.stats()
    on_block(ctx)
    ctx.stats = {}  # free the statistics before the next block
    del collector
    if modifies_blocks:  # feed the outputs of the (pruned) block forward
        _forward_all(block, inps, outs, kwargs, batch_size)
