"""Sharded safetensors checkpoints, read and written block by block (:mod:`pruning.run.streaming` prunes
through them): the shard index (:class:`ShardIndex`: which tensor lives in which file, and where), the
byte ranges of a file's tensors, and the background writer (:class:`ShardWriter`) that takes a block's
pruned tensors as pinned host copies (a CUDA event per copy) and writes whole shards atomically on its own
thread, at most ``max_pending_shards`` behind, so a block's time is its load and compute (issue 32)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from pruning.atomic import write_atomic, write_text_atomic

log = logging.getLogger(__name__)

INDEX = "model.safetensors.index.json"


class ShardIndex:
    """A Hugging Face sharded checkpoint: ``model.safetensors.index.json`` (``weight_map``: tensor
    name -> shard file) or one ``model.safetensors``."""

    def __init__(self, directory: str | Path) -> None:
        from safetensors import safe_open

        self.dir = Path(directory)
        index = self.dir / INDEX
        if index.is_file():
            self.weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        elif (self.dir / "model.safetensors").is_file():
            with safe_open(self.dir / "model.safetensors", framework="pt") as fh:
                self.weight_map = {name: "model.safetensors" for name in fh.keys()}
        else:
            raise FileNotFoundError(f"{self.dir}: neither {INDEX} nor model.safetensors; accepted: a safetensors checkpoint")

    def read_ahead(self, names: list[str]) -> None:
        """Ask the kernel to start reading the bytes of tensors ``names`` into the page cache
        (``posix_fadvise(POSIX_FADV_WILLNEED)`` from a short-lived daemon thread, so the call returns at
        once), for the next :meth:`load` to find them there: the next block's shards are read from disk
        while this block computes. Holds no memory of ours; advisory, so failures are only logged; a
        no-op where the OS has no ``posix_fadvise``."""
        if not hasattr(os, "posix_fadvise"):
            return
        by_file: dict[str, list[str]] = {}
        for name in names:
            by_file.setdefault(self.weight_map[name], []).append(name)
        threading.Thread(target=self._advise, args=(by_file,), name="shard-read-ahead", daemon=True).start()

    def _advise(self, by_file: dict[str, list[str]]) -> None:
        for file, file_names in by_file.items():
            try:
                ranges = tensor_byte_ranges(self.dir / file)
                fd = os.open(self.dir / file, os.O_RDONLY)
                try:
                    for name in file_names:
                        start, stop = ranges[name]
                        os.posix_fadvise(fd, start, stop - start, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)
            except (OSError, KeyError, ValueError) as exc:
                log.warning("streaming: read-ahead of %s failed (harmless, it is advice): %r", self.dir / file, exc)

    def load(self, names: list[str], device: torch.device) -> dict[str, Tensor]:
        """The named tensors, read from their shards directly onto ``device``."""
        from safetensors import safe_open

        by_file: dict[str, list[str]] = {}
        for name in names:
            if name not in self.weight_map:
                raise KeyError(f"{self.dir}: tensor {name!r} is not in the checkpoint")
            by_file.setdefault(self.weight_map[name], []).append(name)
        out: dict[str, Tensor] = {}
        for file, file_names in by_file.items():
            with safe_open(self.dir / file, framework="pt", device=str(device)) as fh:
                for name in file_names:
                    out[name] = fh.get_tensor(name)
        return out


def tensor_byte_ranges(path: str | Path) -> dict[str, tuple[int, int]]:
    """Where each tensor's bytes lie in a safetensors file: name -> (start, stop) offsets from the
    file's start. The format: an 8-byte little-endian header length N, N bytes of JSON header
    (``data_offsets`` relative to the end of the header), then the data."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    return {name: (8 + n + info["data_offsets"][0], 8 + n + info["data_offsets"][1])
            for name, info in header.items() if name != "__metadata__"}


class ShardWriter:
    """Writes tensors into shards of the same names and index as a source checkpoint. A shard is
    written as soon as all of its tensors have arrived, by one background thread, while the caller
    (the block loop of :func:`stream_prune`) computes the next block.

    :meth:`add` stages the tensors on the host (:func:`stage_on_host`: CUDA tensors are copied
    ``non_blocking`` into pinned memory, and the writer thread waits on a CUDA event recorded after
    the copies before it reads them; CPU tensors are handed over as they are and must not be modified
    afterwards). The writer writes a shard to a temporary sibling and renames it
    (:func:`pruning.atomic.write_atomic`), so a failed write leaves no file under the shard's name.
    Shard files and index are byte for byte those of one ``save_file(..., metadata={"format": "pt"})``
    per shard (safetensors orders the tensors itself).

    Bound: at most ``max_pending`` complete shards are in flight (one being written, the rest queued);
    :meth:`add` blocks until the writer has room. Host memory held for the output is thus at most
    ``max_pending`` shards plus the incomplete shards being filled. For ``bench/llama70b_shape.py``
    (one shard per LLaMA-70B block, 1.6 GiB in bf16) and the default 2: 3.2 GiB of pinned memory
    between blocks, 4.8 GiB while a block is staged (the pinned allocator rounds each tensor up to a
    power of two: 3.6 and 5.3 GiB). With shards of several blocks (Hugging Face's 5 GB shards), multiply by the
    blocks per shard. Device memory is not held: the block's device tensors may be freed as soon as
    :meth:`add` returns (the copies come first in the stream's order). ``max_pending=0`` writes each
    shard synchronously inside :meth:`add` (no thread; the behaviour before the writer thread).

    A failed write surfaces in the caller's thread, at the next :meth:`add` or at :meth:`close`, as a
    ``RuntimeError`` naming the shard; the shards queued behind it are dropped.
    """

    def __init__(self, source: ShardIndex, out_dir: str | Path, max_pending: int = 2) -> None:
        if max_pending < 0:
            raise ValueError(f"streaming: max_pending={max_pending} is invalid; accepted: an integer >= 0")
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.weight_map = dict(source.weight_map)
        self.expected: dict[str, set[str]] = {}
        for name, file in self.weight_map.items():
            self.expected.setdefault(file, set()).add(name)
        self.max_pending = max_pending
        self.pending: dict[str, dict[str, Tensor]] = {}  # incomplete shards: name -> host tensor
        self.copies: dict[str, list[torch.cuda.Event]] = {}  # incomplete shards: events after their copies
        self.in_flight: list[tuple[str, Future]] = []  # complete shards handed to the writer, oldest first
        self.written: list[str] = []
        self.write_seconds: dict[str, float] = {}  # shard -> seconds its write took (in the writer)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") if max_pending else None
        self.failure: RuntimeError | None = None
        self.closed = False

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """On an error (or without :meth:`close`): :meth:`abort`."""
        if not self.closed:
            self.abort()

    def add(self, tensors: dict[str, Tensor]) -> float:
        """Stage ``tensors`` (name in the source checkpoint -> tensor, any device) and hand each shard
        they complete to the writer. Returns the seconds spent waiting for the writer (for room, or
        for the write itself with ``max_pending=0``). Raises the failure of an earlier write."""
        self._check_open()
        host, events = stage_on_host(tensors)
        touched: dict[str, None] = {}  # shards these tensors go to, in order
        for name, t in host.items():
            file = self.weight_map[name]
            self.pending.setdefault(file, {})[name] = t
            touched[file] = None
        waited = 0.0
        for file in touched:
            self.copies.setdefault(file, []).extend(events)
            if set(self.pending[file]) == self.expected[file]:
                waited += self._hand_over(file, self.pending.pop(file), self.copies.pop(file))
        return waited

    def close(self) -> float:
        """Wait for every write, then write the index (sharded sources only). Returns the seconds
        spent waiting; raises if a write failed or a shard is incomplete."""
        self._check_open()
        if self.pending:
            self.abort()
            missing = {f: sorted(self.expected[f] - set(t)) for f, t in self.pending.items()}
            raise RuntimeError(f"streaming: shards left incomplete: {missing}")
        t0 = time.perf_counter()
        while self.in_flight:
            self._collect_oldest()
        waited = time.perf_counter() - t0
        self.abort()  # nothing left: stops the thread
        if set(self.expected) != {"model.safetensors"}:
            total = sum((self.out / file).stat().st_size for file in self.expected)
            write_text_atomic(self.out / INDEX, json.dumps({"metadata": {"total_size": total},
                                                            "weight_map": self.weight_map}, indent=2))
        return waited

    def abort(self) -> None:
        """Stop the writer: drop queued shards, wait for the one being written (a failure there leaves
        no file under its name). Idempotent; the writer takes no tensors afterwards."""
        self.closed = True
        for _, future in self.in_flight:
            future.cancel()
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
        self.in_flight.clear()
        self.pending.clear()
        self.copies.clear()
        if torch.cuda.is_available() and hasattr(getattr(torch, "accelerator", None), "empty_host_cache"):
            torch.accelerator.empty_host_cache()  # the pinned staging memory back to the system (torch >= 2.9)

    def _check_open(self) -> None:
        if self.failure is not None:
            raise self.failure
        if self.closed:
            raise RuntimeError(f"streaming: the shard writer for {self.out} is closed")

    def _hand_over(self, file: str, tensors: dict[str, Tensor], copies: list[torch.cuda.Event]) -> float:
        t0 = time.perf_counter()
        if self.executor is None:
            self._finish(file, lambda: write_shard(self.out / file, tensors, copies))
            return time.perf_counter() - t0
        while self.in_flight and self.in_flight[0][1].done():  # surface a failure as early as possible
            self._collect_oldest()
        while len(self.in_flight) >= self.max_pending:
            self._collect_oldest()
        self.in_flight.append((file, self.executor.submit(write_shard, self.out / file, tensors, copies)))
        return time.perf_counter() - t0

    def _collect_oldest(self) -> None:
        file, future = self.in_flight[0]
        self._finish(file, future.result)  # waits for it; a failure aborts (in_flight cleared) and raises
        self.in_flight.pop(0)

    def _finish(self, file: str, result: Callable[[], float]) -> None:
        try:
            self.write_seconds[file] = result()
        except Exception as exc:
            self.failure = RuntimeError(f"streaming: writing shard {file!r} to {self.out} failed: {exc!r}")
            self.abort()
            raise self.failure from exc
        self.written.append(file)


def stage_on_host(tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[torch.cuda.Event]]:
    """Host copies of ``tensors`` for writing, and the CUDA events to wait on before reading them.

    A CUDA tensor gets a pinned host tensor of its shape and dtype, filled by a ``non_blocking`` copy
    on the device's current stream (one event recorded after the copies, per device); the caller may
    drop the device tensor at once. A CPU tensor is returned as it is (contiguous), not copied."""
    host: dict[str, Tensor] = {}
    devices: list[torch.device] = []
    for name, t in tensors.items():
        t = t.detach()
        if t.device.type == "cuda":
            staged = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            staged.copy_(t, non_blocking=True)  # device -> pinned host, ordered after the stream's work
            host[name] = staged
            if t.device not in devices:
                devices.append(t.device)
        else:
            host[name] = t.to("cpu").contiguous()
    events = []
    for device in devices:
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        events.append(event)
    return host, events


def write_shard(path: Path, tensors: dict[str, Tensor], copies: Sequence[torch.cuda.Event] = ()) -> float:
    """Wait for ``copies`` (the staging copies' events), then write ``tensors`` as one safetensors file
    at ``path`` atomically (temporary sibling, then rename). Returns the seconds it took."""
    from safetensors.torch import save_file

    t0 = time.perf_counter()
    for event in copies:
        event.synchronize()
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    return time.perf_counter() - t0


