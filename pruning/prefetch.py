"""Moving offloaded blocks to the compute device ahead of time (block-sequential calibration).

With ``offload`` the model stays on the CPU and block i runs on the GPU; copying block i+1 while
block i computes hides the host-to-device transfer. :class:`BlockMover` schedules this; the copies
themselves go through a :class:`Copier`:

* :class:`CudaCopier` — the block's parameters are copied once into pinned (page-locked) host
  memory, which becomes their home; host-to-device copies run ``non_blocking`` on a side CUDA
  stream from a helper thread; the compute stream waits on the copy's event before the block's
  first kernel, so compute never reads a half-copied block; the pruned block goes back into the
  same pinned buffers on the side stream after the compute stream's work (``wait_stream``), and the
  device tensors are ``record_stream``-ed so the caching allocator never reuses them too early;
* :class:`SyncCopier` — plain synchronous ``.to(device)`` (CPU runs and the non-prefetch path).

The schedule is the same for any copier, so tests drive it on the CPU with a copier whose copies
land only when waited on (a missing wait reads garbage, and the test sees it).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

Slot = tuple[nn.Module, str, bool]  # (module, attribute name, is_parameter)


def tensor_slots(block: nn.Module) -> list[Slot]:
    """Every parameter and buffer of ``block`` as (owning module, name, is_parameter)."""
    slots: list[Slot] = []
    for module in block.modules():
        slots += [(module, name, True) for name, p in module._parameters.items() if p is not None]
        slots += [(module, name, False) for name, b in module._buffers.items() if b is not None]
    return slots


def _get(slot: Slot) -> Tensor:
    module, name, is_param = slot
    return (module._parameters if is_param else module._buffers)[name].data


def _set(slot: Slot, value: Tensor) -> None:
    module, name, is_param = slot
    if is_param:
        module._parameters[name].data = value
    else:
        module._buffers[name] = value


class Copier(Protocol):
    """Copies between the host home of a block's tensors and the compute device."""

    def start_fetch(self, host: list[Tensor]) -> Any:
        """Begin copying ``host`` tensors to the device; returns a handle for :meth:`finish_fetch`.
        May replace the host tensors by new homes (pinned copies): see :meth:`homes`."""

    def finish_fetch(self, handle: Any) -> tuple[list[Tensor], list[Tensor]]:
        """``(device tensors, host homes)``; device tensors are safe to read on the current stream."""

    def write_back(self, device: list[Tensor], homes: list[Tensor]) -> None:
        """Begin copying ``device`` tensors into their ``homes`` after the current stream's work."""

    def drain(self) -> None:
        """Block until every write-back is complete (host homes are then up to date)."""


class SyncCopier:
    """Synchronous copies (``.to``): the CPU path and the old non-prefetch behaviour."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start_fetch(self, host: list[Tensor]) -> Any:
        return host

    def finish_fetch(self, handle: Any) -> tuple[list[Tensor], list[Tensor]]:
        return [t.to(self.device) for t in handle], list(handle)

    def write_back(self, device: list[Tensor], homes: list[Tensor]) -> None:
        for d, h in zip(device, homes):
            if d is not h:
                h.copy_(d)

    def drain(self) -> None:
        return None


class CudaCopier:
    """Pinned host homes, non-blocking copies on a side stream fed by a helper thread."""

    def __init__(self, device: torch.device) -> None:
        device = torch.device(device)
        if device.index is None:  # "cuda" means the current device; set_device in the helper thread needs its index
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.stream = torch.cuda.Stream(device=device)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")

    def _fetch(self, host: list[Tensor]) -> tuple[list[Tensor], list[Tensor], torch.cuda.Event]:
        torch.cuda.set_device(self.device)
        homes = [t if t.is_pinned() else t.pin_memory() for t in host]  # the block's new home
        with torch.cuda.stream(self.stream):
            dev = [h.to(self.device, non_blocking=True) for h in homes]
            event = torch.cuda.Event()
            event.record(self.stream)
        return dev, homes, event

    def start_fetch(self, host: list[Tensor]) -> Future:
        return self.pool.submit(self._fetch, host)

    def finish_fetch(self, handle: Future) -> tuple[list[Tensor], list[Tensor]]:
        dev, homes, event = handle.result()
        current = torch.cuda.current_stream(self.device)
        current.wait_event(event)  # compute starts only after the copy has landed
        for t in dev:
            t.record_stream(current)  # allocated on the side stream, used on the compute stream
        return dev, homes

    def write_back(self, device: list[Tensor], homes: list[Tensor]) -> None:
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)  # after the block's last kernel (pruning included)
        with torch.cuda.stream(self.stream):
            for d, h in zip(device, homes):
                h.copy_(d, non_blocking=True)
                d.record_stream(self.stream)

    def drain(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class BlockMover:
    """Brings block i to the device (:meth:`acquire`), starts block i+1's copy at the same time,
    and sends block i back (:meth:`release`). With ``prefetch=False`` every copy is synchronous and
    happens at :meth:`acquire` (the old offload path).

    After :meth:`close` every block's tensors are on the host again (pinned with CudaCopier) and
    hold the values the device computed.
    """

    def __init__(self, layers: nn.ModuleList, copier: Copier, prefetch: bool = True) -> None:
        self.layers = layers
        self.copier = copier
        self.prefetch = prefetch
        self.pending: dict[int, Any] = {}
        self.homes: dict[int, list[Tensor]] = {}
        self.on_device: dict[int, list[Tensor]] = {}

    def _start(self, i: int) -> None:
        if 0 <= i < len(self.layers) and i not in self.pending:
            self.pending[i] = self.copier.start_fetch([_get(s) for s in tensor_slots(self.layers[i])])

    def acquire(self, i: int) -> nn.Module:
        """Block ``i`` with its tensors on the device, ready for the current stream."""
        self._start(i)
        device_tensors, homes = self.copier.finish_fetch(self.pending.pop(i))
        for slot, t in zip(tensor_slots(self.layers[i]), device_tensors):
            _set(slot, t)
        self.homes[i], self.on_device[i] = homes, device_tensors
        if self.prefetch:
            self._start(i + 1)  # overlaps block i's compute
        return self.layers[i]

    def release(self, i: int) -> None:
        """Send block ``i``'s (possibly pruned) tensors back to their host homes."""
        slots = tensor_slots(self.layers[i])
        device_now = [_get(s) for s in slots]  # pruning may have replaced .data: take what is there
        homes = self.homes.pop(i)
        self.copier.write_back(device_now, homes)
        for slot, home in zip(slots, homes):
            _set(slot, home)
        self.on_device.pop(i, None)

    def close(self) -> None:
        """Wait for all write-backs; drop unused prefetches."""
        for handle in self.pending.values():
            self.copier.finish_fetch(handle)
        self.pending.clear()
        self.copier.drain()
        if isinstance(self.copier, CudaCopier):
            self.copier.close()


def make_copier(device: torch.device) -> Copier:
    """CudaCopier on a CUDA device, SyncCopier elsewhere."""
    return CudaCopier(device) if device.type == "cuda" else SyncCopier(device)
