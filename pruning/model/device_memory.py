"""The memory of a shared device, measured and waited for (:mod:`pruning.model.placement` decides with it):
free and total bytes of a CUDA device, who holds them (``nvidia-smi``, for logs), and a bounded wait for a
decision that found the device busy (:class:`pruning.errors.DeviceMemoryBusyError`): several warm runners on
one GPU hold memory between jobs, so a job re-measures a few times before it fails fast (issue 26)."""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import torch

from pruning.errors import DeviceMemoryBusyError

log = logging.getLogger("pruning.model.placement")  # the placement's log lines, as before the split

#: a shared GPU short of free memory that its total could give: measure again every MEMORY_POLL_S
#: seconds for up to MEMORY_WAIT_S, then fail the job
MEMORY_WAIT_S = 60.0
MEMORY_POLL_S = 5.0

FreeMemoryFn = Callable[[torch.device], tuple[int, int]]
T = TypeVar("T")


def cuda_free_memory(device: torch.device) -> tuple[int, int]:
    """``(free, total)`` bytes of a CUDA device (``torch.cuda.mem_get_info``), measured after this
    process's unused cached blocks went back to the driver (they would count as used)."""
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    return torch.cuda.mem_get_info(device)


def gpu_holders(device: torch.device) -> str:
    """The processes that hold memory on ``device``, in one line (``nvidia-smi``; under MPS the
    server may stand for its clients), or why they are unknown. For logs only."""
    if device.type != "cuda":
        return f"no process list for {device}"
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return "unknown (no nvidia-smi)"
    index = device.index or 0
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    physical = visible[index] if index < len(visible) else str(index)
    try:
        out = subprocess.run([nvidia_smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader",
                              "-i", physical], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown (nvidia-smi failed: {exc})"
    rows = [line.strip() for line in out.splitlines() if line.strip()]
    return "; ".join(f"pid {row}" for row in rows) if rows else "no compute process listed"


def wait_for_memory(
    device: torch.device,
    free_memory: FreeMemoryFn,
    decide: Callable[[int, int], T],
    *,
    wait_s: float | None = None,
    poll_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``decide(free, total)`` on a fresh measurement; while it raises
    :class:`pruning.errors.DeviceMemoryBusyError`, log who holds the memory, sleep ``poll_s`` and
    measure again, at most ``wait_s`` seconds in all (defaults :data:`MEMORY_POLL_S`,
    :data:`MEMORY_WAIT_S`); then the last error goes through, naming the time waited."""
    wait_s = MEMORY_WAIT_S if wait_s is None else wait_s
    poll_s = MEMORY_POLL_S if poll_s is None else poll_s
    retries = math.ceil(wait_s / poll_s) if wait_s > 0 and poll_s > 0 else 0
    for attempt in range(retries + 1):
        free, total = free_memory(device)
        try:
            return decide(free, total)
        except DeviceMemoryBusyError as exc:
            if attempt == retries:
                raise DeviceMemoryBusyError(f"{exc} (still short after waiting {attempt * poll_s:.0f} s)") from None
            log.warning("placement: waiting %.0f s for memory on %s (%d of %d): %s; held by: %s",
                        poll_s, device, attempt + 1, retries, exc, gpu_holders(device))
            sleep(poll_s)
    raise AssertionError("unreachable: the last attempt returns or raises")
