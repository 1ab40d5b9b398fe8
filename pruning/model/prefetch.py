"""Moving offloaded blocks to the compute device ahead of time (block-sequential calibration).

With ``offload`` the model stays on the CPU and block i runs on the GPU; copying block i+1 while
block i computes hides the host-to-device transfer. :class:`BlockMover` schedules this; the copies
themselves go through a :class:`Copier`:

* :class:`StagedCopier` (the default on CUDA) — the block's tensors keep their pageable home; copies
  go through two reused pinned staging buffers each way (CPU copy + non-blocking transfer on a side
  stream; the write-back lands in the home from a helper thread once its event has fired);
  Until commit 85c59e5 a pinned copy of each block became its home (``pin_memory`` per block):
  1.46x the model-on-GPU time on an H200 against 1.03x for the staged copies (bench/RESULTS.md);
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


def _aligned_bytes(t: Tensor) -> int:
    """Bytes ``t`` takes in a staging buffer: its size rounded up to a 256-byte boundary."""
    return -(-t.numel() * t.element_size() // 256) * 256


def _views(buffer: Tensor, like: list[Tensor]) -> list[Tensor]:
    """Views of the flat pinned byte ``buffer`` shaped like ``like``, each at a 256-byte aligned offset."""
    views, offset = [], 0
    for t in like:
        views.append(buffer[offset:offset + t.numel() * t.element_size()].view(t.dtype).view(t.shape))
        offset += _aligned_bytes(t)
    return views


def _staging_bytes(like: list[Tensor]) -> int:
    return sum(_aligned_bytes(t) for t in like)


class StagedCopier:
    """Pageable homes (the model's own CPU tensors stay where they are), copies through reused
    pinned staging buffers: two for fetches, two for write-backs, each the size of one block.

    The earlier pinned-homes copier page-locked every block anew (``pin_memory``:
    a fresh pinned allocation of the block's size, 0.4 GB per LLaMA-7B block), and pinned
    allocations serialise with the compute stream's work; measured on an H200 it stayed at
    1.26x and 1.46x the model-on-GPU time in two sessions (1.03x here). Here a fetch is a CPU copy into a staging buffer (helper thread)
    plus a non-blocking host-to-device copy on the side stream; a write-back is a non-blocking
    device-to-host copy into a staging buffer on the side stream after the compute stream's work,
    then a CPU copy into the home in a second helper thread once its event has fired.
    """

    def __init__(self, device: torch.device) -> None:
        device = torch.device(device)
        if device.index is None:  # "cuda" means the current device; set_device in the helper thread needs its index
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.stream = torch.cuda.Stream(device=device)
        self.fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self.lander = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writeback")
        self.buffers: dict[str, list[Tensor | None]] = {"fetch": [None, None], "back": [None, None]}
        self.turn = {"fetch": 0, "back": 0}
        self.fetch_done: list[torch.cuda.Event | None] = [None, None]
        self.landings: list[Future | None] = [None, None]

    def _buffer(self, kind: str, nbytes: int) -> tuple[int, Tensor]:
        slot = self.turn[kind]
        self.turn[kind] ^= 1
        buf = self.buffers[kind][slot]
        if buf is None or buf.numel() < nbytes:
            buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)  # once per slot (per larger block)
            self.buffers[kind][slot] = buf
        return slot, buf

    def _fetch(self, host: list[Tensor]) -> tuple[list[Tensor], list[Tensor], torch.cuda.Event]:
        torch.cuda.set_device(self.device)
        slot, buf = self._buffer("fetch", _staging_bytes(host))
        if self.fetch_done[slot] is not None:
            self.fetch_done[slot].synchronize()  # the slot's previous host-to-device copy has been read
        staged = _views(buf, host)
        for s, h in zip(staged, host):
            s.copy_(h)  # pageable -> pinned, on the CPU
        with torch.cuda.stream(self.stream):
            dev = [s.to(self.device, non_blocking=True) for s in staged]
            event = torch.cuda.Event()
            event.record(self.stream)
        self.fetch_done[slot] = event
        return dev, list(host), event

    def start_fetch(self, host: list[Tensor]) -> Future:
        return self.fetcher.submit(self._fetch, host)

    def finish_fetch(self, handle: Future) -> tuple[list[Tensor], list[Tensor]]:
        dev, homes, event = handle.result()
        current = torch.cuda.current_stream(self.device)
        current.wait_event(event)  # compute starts only after the copy has landed
        for t in dev:
            t.record_stream(current)  # allocated on the side stream, used on the compute stream
        return dev, homes

    def write_back(self, device: list[Tensor], homes: list[Tensor]) -> None:
        slot, buf = self._buffer("back", _staging_bytes(homes))
        if self.landings[slot] is not None:
            self.landings[slot].result()  # the slot's previous landing has been copied out
        staged = _views(buf, homes)
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)  # after the block's last kernel (pruning included)
        with torch.cuda.stream(self.stream):
            for s, d in zip(staged, device):
                s.copy_(d, non_blocking=True)
                d.record_stream(self.stream)
            event = torch.cuda.Event()
            event.record(self.stream)
        self.landings[slot] = self.lander.submit(_land, event, staged, homes)

    def drain(self) -> None:
        for landing in self.landings:
            if landing is not None:
                landing.result()
        self.stream.synchronize()

    def close(self) -> None:
        self.fetcher.shutdown(wait=True)
        self.lander.shutdown(wait=True)


def _land(event: torch.cuda.Event, staged: list[Tensor], homes: list[Tensor]) -> None:
    event.synchronize()
    for s, h in zip(staged, homes):
        h.copy_(s)  # pinned -> the pageable home, on the CPU


class BlockMover:
    """Brings block i to the device (:meth:`acquire`), starts block i+1's copy at the same time,
    and sends block i back (:meth:`release`). With ``prefetch=False`` every copy is synchronous and
    happens at :meth:`acquire` (the old offload path).

    After :meth:`close` every block's tensors are on the host again and
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
        close = getattr(self.copier, "close", None)
        if close is not None:
            close()


def make_copier(device: torch.device) -> Copier:
    """StagedCopier on a CUDA device, SyncCopier elsewhere."""
    return StagedCopier(device) if device.type == "cuda" else SyncCopier(device)
