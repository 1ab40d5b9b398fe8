"""Where the model lives during block-sequential calibration: decided by measurement.

Two placements (the protocol of Frantar & Alistarh 2023 and Sun et al. 2023 runs either way):

* ``gpu`` — the whole model moves to the compute device once; fastest when it fits;
* ``offload`` — the model stays on the CPU and one block at a time moves to the device (the
  reference codes' way for models larger than the GPU), with block i+1 prefetched on a side
  stream while block i computes (:mod:`pruning.model.prefetch`).

:func:`choose_placement` is a pure function of byte counts: the model's parameters, the calibration
activations (inputs + outputs, ``2 * nsamples * seqlen * hidden * itemsize``), one block and its
working set (statistics, SparseGPT's inverse-Hessian temporaries), and the free device memory
(``torch.cuda.mem_get_info``, injectable for tests). An explicit user choice (``offload=True`` /
``False``) always wins; ``offload=None`` means "decide".

A shared GPU: when the work would fit the device's *total* memory (with the same margin) but not
what is free now, other processes hold the difference; offloading would run the whole job block by
block at a crawl (seen: 0.04 GiB free at a job's start on an H100 shared by 8 warm runners, then
evaluation at ~10 s a window with the GPU idle for 15+ minutes). The decision then raises
:class:`pruning.errors.DeviceMemoryBusyError`; :func:`placement_for_model` and
:func:`place_for_inference` measure again every :data:`MEMORY_POLL_S` for up to
:data:`MEMORY_WAIT_S` seconds, logging who holds the memory, and let the error through when it stays
short (the job fails fast and can be retried). Work that never fits the device is offloaded as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from pruning.errors import DeviceMemoryBusyError
from pruning.model.device_memory import FreeMemoryFn, cuda_free_memory, wait_for_memory
from pruning.model.load import resolve_device

if TYPE_CHECKING:
    from pruning.config.run_config import RunConfig

log = logging.getLogger(__name__)

GiB = 2**30
#: Keep this share of the free memory unused (allocator fragmentation, cuBLAS workspaces, other
#: processes that start later), plus a fixed reserve for the CUDA context and kernels' scratch.
SAFETY_FRACTION = 0.10
SAFETY_BYTES = 1 * GiB


@dataclass(frozen=True)
class Placement:
    """The decision: ``offload`` (one block at a time) or not, ``prefetch`` of the next block while
    one computes (offload on CUDA only), and the reason in words (logged and recorded)."""

    device: torch.device
    offload: bool
    prefetch: bool
    reason: str

    @property
    def kind(self) -> str:
        """``"gpu"`` (whole model on the device) or ``"offload"``."""
        return "offload" if self.offload else "gpu"


def activation_bytes(nsamples: int, seqlen: int, hidden: int, dtype: torch.dtype) -> int:
    """Bytes of the two calibration buffers ``(nsamples, seqlen, hidden)`` (inputs and outputs of
    the current block) in the model dtype."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * nsamples * seqlen * hidden * itemsize


def module_bytes(module: nn.Module, off: torch.device | None = None) -> int:
    """Bytes of the parameters and buffers of ``module``; with ``off``, only those not on that device."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors if off is None or t.device != off)


def usable_bytes(free_bytes: int) -> int:
    """Free device memory less the safety margin (:data:`SAFETY_FRACTION` and :data:`SAFETY_BYTES`)."""
    return int(free_bytes * (1.0 - SAFETY_FRACTION)) - SAFETY_BYTES


def block_work_bytes(in_widths: list[int], collect_hessian: bool) -> int:
    """Working set of one block's statistics and pruning kernel on the device.

    in_widths: input width of each input group (LLaMA: hidden for q/k/v, o, gate/up; the MLP width
    for down). Wanda: one float32 ``(in,)`` per group. SparseGPT: one float32 Hessian ``(in, in)``
    per group, plus two more of the largest while its damped inverse is factored
    (:func:`pruning.methods.sparsegpt.inverse_hessian_cholesky`)."""
    if not collect_hessian:
        return sum(4 * w for w in in_widths)
    return sum(4 * w * w for w in in_widths) + 2 * 4 * max(in_widths) ** 2


def choose_placement(
    *,
    device: torch.device,
    param_bytes: int,
    activation_bytes: int,
    block_bytes: int,
    work_bytes: int,
    free_bytes: int | None,
    offload: bool | None = None,
    prefetch: bool = True,
    total_bytes: int | None = None,
) -> Placement:
    """Decide between the whole model on ``device`` and block-by-block offload.

    needed(gpu)     = param_bytes + activation_bytes + work_bytes
    needed(offload) = 2 * block_bytes (prefetch holds the next block) + activation_bytes + work_bytes
    usable          = free_bytes * (1 - SAFETY_FRACTION) - SAFETY_BYTES

    ``gpu`` when needed(gpu) <= usable, else ``offload`` (a warning when even that exceeds usable).
    With ``total_bytes`` (the device's memory), a need that exceeds usable but not the same margin of
    the total raises :class:`pruning.errors.DeviceMemoryBusyError` instead (:func:`check_not_busy`):
    needed(gpu) for the whole model, else needed(offload) for a model that never fits whole.
    ``offload`` given as True/False wins over the measurement (``prefetch`` then as asked, on any
    device; decided here, prefetch only on CUDA). A non-CUDA device (``free_bytes``
    None) computes where the model is: ``gpu`` (no copies), unless offload is asked for.
    """
    use_prefetch = prefetch and device.type == "cuda"
    if offload is not None:  # explicit: prefetch as asked (on the CPU it runs the same schedule with plain copies)
        why = f"offload={offload} requested explicitly"
        return Placement(device, offload, prefetch and offload, why)
    if free_bytes is None:
        return Placement(device, False, False, f"device {device} has no free-memory query: the model moves there whole")
    usable = usable_bytes(free_bytes)
    need_gpu = param_bytes + activation_bytes + work_bytes
    need_offload = (2 if use_prefetch else 1) * block_bytes + activation_bytes + work_bytes
    figures = (
        f"model {param_bytes / GiB:.2f} GiB + activations {activation_bytes / GiB:.2f} GiB + block work "
        f"{work_bytes / GiB:.2f} GiB = {need_gpu / GiB:.2f} GiB; usable {usable / GiB:.2f} GiB of "
        f"{free_bytes / GiB:.2f} GiB free (margin {SAFETY_FRACTION:.0%} + {SAFETY_BYTES / GiB:.0f} GiB)"
    )
    if need_gpu <= usable:
        return Placement(device, False, False, f"gpu: the whole model fits: {figures}")
    check_not_busy(device, "the whole model", need_gpu, free_bytes, total_bytes)
    reason = f"offload: the whole model does not fit: {figures}; block by block needs {need_offload / GiB:.2f} GiB"
    if need_offload <= usable:
        return Placement(device, True, use_prefetch, reason)
    check_not_busy(device, "block-by-block offload", need_offload, free_bytes, total_bytes)
    log.warning("placement: even block-by-block offload needs %.2f GiB > usable %.2f GiB; expect an out-of-memory error",
                need_offload / GiB, usable / GiB)
    return Placement(device, True, use_prefetch, reason)


def check_not_busy(device: torch.device, what: str, need_bytes: int, free_bytes: int, total_bytes: int | None) -> None:
    """Raise :class:`pruning.errors.DeviceMemoryBusyError` when ``need_bytes`` exceeds the usable free
    memory but fits the usable ``total_bytes`` of the device: other processes hold what is missing.
    Returns quietly when it fits the free memory, when the total is unknown (None) or too small."""
    if need_bytes <= usable_bytes(free_bytes) or total_bytes is None or need_bytes > usable_bytes(total_bytes):
        return
    raise DeviceMemoryBusyError(
        f"{device} is busy: {what} needs {need_bytes / GiB:.2f} GiB and would fit the device's "
        f"{total_bytes / GiB:.2f} GiB (usable {usable_bytes(total_bytes) / GiB:.2f} GiB), but only "
        f"{free_bytes / GiB:.2f} GiB are free (usable {usable_bytes(free_bytes) / GiB:.2f} GiB): other processes "
        f"hold {(total_bytes - free_bytes) / GiB:.2f} GiB; retry the job when they are done, run fewer workers "
        f"per GPU, or set model.offload: true to accept block-by-block offload"
    )


def placement_for_model(
    model: nn.Module,
    layers: nn.ModuleList,
    in_widths: list[int],
    nsamples: int,
    seqlen: int,
    *,
    device: torch.device,
    collect_hessian: bool,
    offload: bool | None = None,
    prefetch: bool = True,
    free_memory: FreeMemoryFn | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Placement:
    """:func:`choose_placement` with the byte counts measured on ``model`` (parameters not yet on
    ``device`` count fully; those already there are in use and not in the free memory, and are taken
    off the device's total). On a busy shared GPU it measures again (:func:`wait_for_memory`) and
    raises :class:`pruning.errors.DeviceMemoryBusyError` when the memory stays short. Logs why."""
    if offload is None and device.type == "cuda":
        free_memory = free_memory or cuda_free_memory
    elif offload is not None:
        free_memory = None
    dtype = model.get_input_embeddings().weight.dtype
    hidden = int(model.get_input_embeddings().weight.shape[1])
    param_bytes = module_bytes(model, off=device)
    resident = module_bytes(model) - param_bytes

    def decide(free: int | None, total: int | None) -> Placement:
        return choose_placement(
            device=device,
            param_bytes=param_bytes,
            activation_bytes=activation_bytes(nsamples, seqlen, hidden, dtype),
            block_bytes=max((module_bytes(b) for b in layers), default=0),
            work_bytes=block_work_bytes(in_widths, collect_hessian),
            free_bytes=free,
            offload=offload,
            prefetch=prefetch,
            total_bytes=None if total is None else total - resident,
        )

    if free_memory is None:
        placement = decide(None, None)
    else:
        placement = wait_for_memory(device, free_memory, decide, sleep=sleep)
    log.info("placement on %s: %s (prefetch %s): %s", device, placement.kind, placement.prefetch, placement.reason)
    return placement


@dataclass(frozen=True)
class Compute:
    """Where a run computes, in one object: the device, ``offload`` (True: one block at a time with
    the model on the CPU; False: the whole model on the device; None: measured, ``offload: auto``)
    and the samples per block call of the block-sequential passes (``calibration.batch_size``).
    It travels whole from the run down to :func:`pruning.calibration.sequential.calibrate_blocks`."""

    device: str
    offload: bool | None = None
    batch_size: int = 1

    @classmethod
    def from_config(cls, config: "RunConfig") -> "Compute":
        """From ``model.device`` (``auto`` resolved), ``model.offload`` and ``calibration.batch_size``."""
        offload = config.model.offload
        return cls(str(resolve_device(config.model.device)), None if offload == "auto" else bool(offload),
                   config.calibration.batch_size)

    @property
    def load_device(self) -> str:
        """The model loads on the CPU when its blocks may be offloaded to a GPU, else on the device."""
        return "cpu" if self.offload is not False and torch.device(self.device).type == "cuda" else self.device


#: the library's default where a caller names no placement: the CPU, the whole model there, one sample
#: per block call (the protocol of the SparseGPT and Wanda reference code)
CPU_COMPUTE = Compute("cpu", offload=False, batch_size=1)


def inference_bytes(model: nn.Module, batch_size: int, seqlen: int) -> int:
    """Working memory of one evaluation forward: hidden states (a few copies) and float32 logits
    ``(batch, seqlen, vocab)``, twice (log-softmax)."""
    emb = model.get_input_embeddings().weight
    hidden, vocab = int(emb.shape[1]), int(model.get_output_embeddings().weight.shape[0])
    itemsize = emb.element_size()
    return batch_size * seqlen * (8 * hidden * itemsize + 2 * vocab * 4)


def inference_device(device: torch.device, need_bytes: int, free_bytes: int, total_bytes: int | None) -> str:
    """Where evaluation runs, from byte counts: ``"cuda"`` when ``need_bytes`` fits the usable free
    memory, ``"cpu"`` when it does not fit even the usable total (the model is too big for the device),
    and :class:`pruning.errors.DeviceMemoryBusyError` in between (other processes hold the memory)."""
    if need_bytes <= usable_bytes(free_bytes):
        return "cuda"
    check_not_busy(device, "evaluation (the whole model and one forward's working memory)", need_bytes,
                   free_bytes, total_bytes)
    return "cpu"


def place_for_inference(model: nn.Module, compute: Compute, batch_size: int, seqlen: int,
                        free_memory: FreeMemoryFn | None = None, sleep: Callable[[float], None] = time.sleep) -> str:
    """Where evaluation runs: the model moves onto a CUDA device when its parameters still off the
    device plus one forward's working memory fit the free memory (less the safety margin), unless
    ``offload`` was asked for explicitly; it stays where it is when they exceed even the device's
    total memory (logged); on a busy shared GPU it waits and then fails (:func:`inference_device`,
    :func:`wait_for_memory`). Returns the device type the model is on afterwards (``"cuda"`` or ``"cpu"``)."""
    device = torch.device(compute.device)
    where = next(model.parameters()).device
    if device.type != "cuda" or compute.offload is True or where.type == "cuda":
        return where.type
    need = module_bytes(model, off=device) + inference_bytes(model, batch_size, seqlen)
    measured: dict[str, int] = {}

    def decide(free: int, total: int) -> str:
        measured["free"] = free
        return inference_device(device, need, free, total)

    choice = wait_for_memory(device, free_memory or cuda_free_memory, decide, sleep=sleep)
    usable = usable_bytes(measured["free"])
    if choice == "cpu":
        log.warning("evaluation stays on the CPU: the model needs %.2f GiB on %s, more than the device holds "
                    "(usable %.2f GiB free)", need / GiB, device, usable / GiB)
        return "cpu"
    model.to(device)
    log.info("evaluation on %s: %.2f GiB needed, %.2f GiB usable", device, need / GiB, usable / GiB)
    return "cuda"
