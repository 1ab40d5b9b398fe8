"""What a warm runner keeps between the jobs it serves: the loaded model with an exact copy of its
dense weights, the calibration token ids and the tokenized evaluation texts.

A run of a 135M model spent most of its time on work that depends only on the model and the
calibration (issue 26: load 10 s, dense statistics 40 s, tokenizing, ...). A runner process
(:mod:`pruning.jobs.runner`) enables a :class:`WarmState`; the run stages
(:mod:`pruning.run.stages`) then ask it before they load or tokenize. Without one (``python -m
pruning run``, the cold path) nothing here is used. The dense OWL/DLP statistics and the spectra
have their own caches (:mod:`pruning.calibration.dense_stats`, :mod:`pruning.run.spectra_cache`), shared by both paths.

Exactness: after a job the model goes back to its load device and every tensor of its
``state_dict`` is copied back from the dense copy taken at load; the model's fingerprint is then
computed again and must equal the load-time one, else the model is dropped and loaded afresh. A
job of another model (name, dtype, revision or load device) drops the held model first: one model
per runner, its memory released (``gc`` + ``torch.cuda.empty_cache``) before the next loads.

GPU memory between jobs: after every job, success or failure, :func:`release_job_memory` collects
what the job left unreachable and hands the CUDA caching allocator's unused blocks back to the driver
(``torch.cuda.empty_cache``). Without it an idle runner kept what its last job had reserved: on one
H100 shared by 8 Gemma3-270m runners under MPS, four idle runners held 14-16 GiB each and 20 of 37
jobs ran out of memory allocating a 4 GiB logits chunk.

Memory: the dense copy lives in host memory, one more copy of the weights (0.5 GB for SmolLM2-135M
in float32). It is only kept when the weights take at most :data:`MAX_SHARE_OF_FREE_RAM` of the
available host memory; a larger model is loaded per job, as on the cold path (logged).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from pruning.model.load import LoadedModel, load_model, model_fingerprint

log = logging.getLogger(__name__)

GiB = 2**30

#: keep the dense copy only when the weights take at most this share of the available host memory
MAX_SHARE_OF_FREE_RAM = 0.4

ModelKey = tuple[str, str, str | None, str]  # (reference, dtype, revision, load device)


@dataclass
class _Held:
    key: ModelKey
    loaded: LoadedModel
    dense: dict[str, torch.Tensor]  # name -> CPU copy of each state_dict tensor at load
    home: torch.device  # where the weights were after load
    dirty: bool = False
    calibration: dict[tuple[Any, ...], torch.Tensor] = field(default_factory=dict)
    texts: dict[str, tuple[torch.Tensor, str]] = field(default_factory=dict)


@dataclass
class WarmCounters:
    """What the runner did: models loaded, jobs that reused the held model, restores, texts and
    calibration batches served from memory."""

    loads: int = 0
    reuses: int = 0
    restores: int = 0
    text_hits: int = 0
    calibration_hits: int = 0


class WarmState:
    """The state one runner process keeps between jobs (module docstring)."""

    def __init__(self, max_share_of_free_ram: float = MAX_SHARE_OF_FREE_RAM) -> None:
        self.max_share = max_share_of_free_ram
        self.held: _Held | None = None
        self.counters = WarmCounters()

    # ---- the model -----------------------------------------------------------------------
    def load(self, reference: str, dtype: str, device: str, revision: str | None) -> LoadedModel:
        """The model ready for a job: the held one with its dense weights, or a fresh load (which
        replaces the held model of another key)."""
        key: ModelKey = (reference, dtype, revision, str(torch.device(device)))
        if self.held is not None and self.held.key == key:
            if self.held.dirty:
                self.restore()
            if self.held is not None:
                self.counters.reuses += 1
                self.held.dirty = True
                log.info("warm runner: %s reused (dense weights restored)", reference)
                return self.held.loaded
        self.release()
        loaded = load_model(reference, dtype, device, revision)
        self.counters.loads += 1
        if self._fits(loaded.model):
            dense = {name: t.detach().to("cpu", copy=True) for name, t in loaded.model.state_dict().items()}
            home = next(loaded.model.parameters()).device
            self.held = _Held(key, loaded, dense, home, dirty=True)
        else:
            log.info("warm runner: %s is not kept between jobs (its weights exceed %.0f %% of the free host memory)",
                     reference, 100 * self.max_share)
        return loaded

    def restore(self) -> None:
        """Put the held model back exactly as it was loaded (weights and device); checks the
        fingerprint and drops the model when it differs (the next job then loads it again)."""
        held = self.held
        if held is None or not held.dirty:
            return
        model = held.loaded.model
        with torch.no_grad():
            model.to(held.home)
            state = model.state_dict()
            if set(state) != set(held.dense):
                log.warning("warm runner: the model's tensors changed names during a job; dropping it")
                self.release()
                return
            for name, tensor in state.items():
                tensor.copy_(held.dense[name])
        if model_fingerprint(model) != held.loaded.fingerprint:
            log.warning("warm runner: restored weights do not match the load-time fingerprint; dropping the model")
            self.release()
            return
        held.dirty = False
        self.counters.restores += 1

    def release(self) -> None:
        """Drop the held model and everything derived from it, and free its memory."""
        if self.held is None:
            return
        name = self.held.key[0]
        log.info("warm runner: releasing %s", name)
        self.held = None
        release_job_memory(f"model {name} released")

    def _fits(self, model: torch.nn.Module) -> bool:
        size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        try:
            import psutil

            available = psutil.virtual_memory().available
        except ImportError:  # psutil missing: keep the model (it is a dependency of the app's stack)
            return True
        return size <= self.max_share * available

    # ---- derived inputs ------------------------------------------------------------------
    def calibration_ids(self, key: tuple[Any, ...], make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The calibration batch for ``key`` (dataset, nsamples, seqlen, seed, BOS) of the held model's
        tokenizer, made once. A copy is returned: nothing a job does to it reaches the next job."""
        if self.held is None:
            return make()
        if key not in self.held.calibration:
            self.held.calibration[key] = make()
        else:
            self.counters.calibration_hits += 1
        return self.held.calibration[key].clone()

    def tokenized(self, dataset: str, make: Callable[[], tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, str]:
        """``(token ids (n,), text digest)`` of an evaluation text with the held model's tokenizer, made once."""
        if self.held is None:
            return make()
        if dataset not in self.held.texts:
            self.held.texts[dataset] = make()
        else:
            self.counters.text_hits += 1
        ids, digest = self.held.texts[dataset]
        return ids.clone(), digest


def cuda_in_use() -> bool:
    """Whether this process has started CUDA (only then does its caching allocator hold memory)."""
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _cuda_reserved() -> int:
    """Bytes the CUDA caching allocator of this process holds (``torch.cuda.memory_reserved``)."""
    return int(torch.cuda.memory_reserved())


def _empty_cuda_cache() -> None:
    """Hand the caching allocator's unused blocks back to the driver (``torch.cuda.empty_cache``)."""
    torch.cuda.empty_cache()


def release_job_memory(why: str = "job ended") -> int:
    """Free what a finished job left behind: collect unreachable objects (the job's tensors caught in
    reference cycles or tracebacks), then, when this process uses CUDA, give the caching allocator's
    unused blocks back so the other processes on the GPU can allocate them. Logs the reserved memory
    before and after; returns the bytes released (0 on the CPU). ``why`` names the occasion in the log."""
    gc.collect()
    if not cuda_in_use():
        return 0
    before = _cuda_reserved()
    _empty_cuda_cache()
    after = _cuda_reserved()
    released = max(0, before - after)
    log.info("warm runner (%s): released %.2f GiB of cached GPU memory (reserved %.2f -> %.2f GiB)",
             why, released / GiB, before / GiB, after / GiB)
    return released


_state: WarmState | None = None


def enable(state: WarmState | None = None) -> WarmState:
    """Make this process warm (a runner calls it once); returns the state the stages will use."""
    global _state
    _state = state or WarmState()
    return _state


def disable() -> None:
    """Back to the cold path; the held model is released."""
    global _state
    if _state is not None:
        _state.release()
    _state = None


def current() -> WarmState | None:
    """The process's warm state, or None on the cold path."""
    return _state

