"""Placement by measurement (simulated free memory) and the prefetching block mover (on the CPU)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import pruning.calibration.sequential as calibration_mod
from pruning.calibration.sequential import calibrate_blocks
from pruning.model.families import family_for
from pruning.model.load import LoadedModel, ModelSource
from pruning.errors import DeviceMemoryBusyError
from pruning.model.families import decoder_layers
from pruning.calibration.linear_stats import input_group_widths
from pruning.model.device_memory import MEMORY_POLL_S, MEMORY_WAIT_S
from pruning.model.placement import (
    SAFETY_BYTES,
    SAFETY_FRACTION,
    Compute,
    GiB,
    activation_bytes,
    block_work_bytes,
    choose_placement,
    inference_device,
    placement_for_model,
)
from pruning.model.prefetch import BlockMover, SyncCopier
from pruning.run.prune import prune_model, uniform_sparsity
from pruning.model.synthetic import random_llama

CUDA = torch.device("cuda")


def as_loaded(model: nn.Module) -> LoadedModel:
    return LoadedModel(model, None, family_for(model), ModelSource("local", "memory", "tiny"), "test", 0.0)


def calib(nsamples: int = 2, seqlen: int = 16, vocab: int = 256) -> torch.Tensor:
    return torch.randint(0, vocab, (nsamples, seqlen), generator=torch.Generator().manual_seed(0))


def usable(free: int) -> int:
    return int(free * (1.0 - SAFETY_FRACTION)) - SAFETY_BYTES


def decide(free: int, **kw) -> str:
    # LLaMA-7B in fp16 with SparseGPT statistics: 12.6 GiB of parameters, 128 x 2048 activations
    args = dict(device=CUDA, param_bytes=int(12.6 * GiB), activation_bytes=activation_bytes(128, 2048, 4096, torch.float16),
                block_bytes=int(0.38 * GiB), work_bytes=block_work_bytes([4096, 4096, 4096, 11008], True), free_bytes=free)
    args.update(kw)
    return choose_placement(**args).kind


def test_activation_and_work_bytes() -> None:
    assert activation_bytes(128, 2048, 8192, torch.float16) == 8 * GiB  # inputs + outputs, 4 GiB each
    assert block_work_bytes([28672], True) == 3 * 4 * 28672**2  # H, plus two for the inverse
    assert block_work_bytes([4096, 11008], False) == 4 * (4096 + 11008)


def test_offload_when_memory_is_short_gpu_when_it_fits() -> None:
    assert decide(free=16 * GiB) == "offload"  # a 24 GB card: 7B fp16 does not fit beside the activations
    assert decide(free=140 * GiB) == "gpu"  # an H200


def test_boundary_is_exact() -> None:
    need = int(12.6 * GiB) + activation_bytes(128, 2048, 4096, torch.float16) + block_work_bytes([4096, 4096, 4096, 11008], True)
    lo, hi = need, 4 * need  # smallest free memory that fits, by bisection (usable() is monotone)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if usable(mid) >= need else (mid + 1, hi)
    free_at = lo
    assert decide(free=free_at) == "gpu"
    assert decide(free=free_at - 1) == "offload"
    # the margin matters: free memory exactly equal to the need is not enough
    assert decide(free=need) == "offload"


def test_explicit_choice_wins() -> None:
    assert decide(free=1 * GiB, offload=False) == "gpu"
    assert decide(free=1000 * GiB, offload=True) == "offload"
    p = choose_placement(device=CUDA, param_bytes=1, activation_bytes=1, block_bytes=1, work_bytes=1, free_bytes=None,
                         offload=True, prefetch=False)
    assert p.offload and not p.prefetch and "explicit" in p.reason


def test_cpu_without_memory_query_keeps_the_model_whole() -> None:
    p = choose_placement(device=torch.device("cpu"), param_bytes=10**12, activation_bytes=0, block_bytes=0,
                         work_bytes=0, free_bytes=None)
    assert p.kind == "gpu" and not p.prefetch


def test_a_busy_shared_gpu_fails_instead_of_offloading() -> None:
    """The whole model would fit the device's total memory but other processes hold it: no silent
    whole-run offload (seen on an H100 shared by 8 Gemma workers: 0.04 GiB free at a job's start, then
    block-by-block offload and a CPU evaluation at ~10 s a window). A model that never fits the device
    is offloaded as before, and an explicit offload is honoured."""
    with pytest.raises(DeviceMemoryBusyError, match=r"the whole model needs .* 80\.00 GiB .* only 0\.04 GiB are free"):
        decide(free=int(0.04 * GiB), total_bytes=80 * GiB)
    assert decide(free=int(0.04 * GiB), total_bytes=80 * GiB, offload=True) == "offload"
    assert decide(free=140 * GiB, total_bytes=141 * GiB) == "gpu"
    # a 20 GiB card: 7B fp16 (18.1 GiB with its activations) never fits it whole; one block at a time does, as before
    assert decide(free=16 * GiB, total_bytes=16 * GiB) == "offload"
    assert decide(free=16 * GiB, total_bytes=20 * GiB) == "offload"
    # the card is shared and even one block does not fit what is free, but would fit the card: busy
    with pytest.raises(DeviceMemoryBusyError, match="block-by-block offload"):
        decide(free=2 * GiB, total_bytes=20 * GiB)
    # neither fits the card at all: the old warning and offload (true offload of huge models keeps working)
    assert decide(free=2 * GiB, total_bytes=2 * GiB) == "offload"
    # the total's margin is the free memory's: just over it, the model is too big for the device
    need = int(12.6 * GiB) + activation_bytes(128, 2048, 4096, torch.float16) + block_work_bytes([4096, 4096, 4096, 11008], True)
    total_at = int((need + SAFETY_BYTES) / (1.0 - SAFETY_FRACTION)) + 16
    assert usable(total_at) >= need > usable(total_at - 64)
    with pytest.raises(DeviceMemoryBusyError):
        decide(free=16 * GiB, total_bytes=total_at)
    assert decide(free=16 * GiB, total_bytes=total_at - 64) == "offload"


def test_inference_device_from_byte_counts() -> None:
    assert inference_device(CUDA, 10 * GiB, free_bytes=40 * GiB, total_bytes=80 * GiB) == "cuda"
    assert inference_device(CUDA, 100 * GiB, free_bytes=40 * GiB, total_bytes=80 * GiB) == "cpu"
    with pytest.raises(DeviceMemoryBusyError, match="evaluation"):
        inference_device(CUDA, 10 * GiB, free_bytes=1 * GiB, total_bytes=80 * GiB)


def _measure(tiny_llama: nn.Module, free_memory, slept: list[float]):
    family = family_for(tiny_llama)
    layers = decoder_layers(tiny_llama, family)
    return placement_for_model(tiny_llama, layers, input_group_widths(layers[0], family), 2, 16, device=CUDA,
                               collect_hessian=True, free_memory=free_memory, sleep=slept.append)


def test_placement_waits_for_a_busy_gpu_then_fails(tiny_llama: nn.Module, caplog: pytest.LogCaptureFixture) -> None:
    """Memory that other processes free within the wait gives the whole-model placement; memory that
    stays held fails the job after MEMORY_WAIT_S (measured every MEMORY_POLL_S), naming the numbers."""
    readings = iter([(0, 80 * GiB), (0, 80 * GiB), (40 * GiB, 80 * GiB)])
    slept: list[float] = []
    with caplog.at_level("WARNING", logger="pruning.model.placement"):
        placement = _measure(tiny_llama, lambda dev: next(readings), slept)
    assert placement.kind == "gpu" and slept == [MEMORY_POLL_S, MEMORY_POLL_S]
    waits = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert len(waits) == 2 and all("busy" in w and "held by:" in w for w in waits)
    slept.clear()
    with pytest.raises(DeviceMemoryBusyError, match=f"after waiting {MEMORY_WAIT_S:.0f} s"):
        _measure(tiny_llama, lambda dev: (0, 80 * GiB), slept)
    assert sum(slept) == MEMORY_WAIT_S and all(s == MEMORY_POLL_S for s in slept)
    # never waits when the device is simply too small: offload at once
    slept.clear()
    assert _measure(tiny_llama, lambda dev: (0, 0), slept).kind == "offload" and slept == []


def test_calibrate_blocks_measures_the_model(tiny_llama: nn.Module) -> None:
    """offload=None: the decision uses the model's own bytes against the simulated free memory."""
    model_bytes = sum(p.numel() * p.element_size() for p in tiny_llama.parameters())
    kinds = {}
    for label, free in (("short", model_bytes // 2), ("roomy", 64 * GiB)):
        kinds[label] = calibrate_blocks(as_loaded(tiny_llama), calib(), lambda ctx: None,
                                        compute=Compute("cpu", offload=None),
                                        free_memory=lambda dev, f=free: (f, f)).kind
    assert kinds == {"short": "offload", "roomy": "gpu"}


class LazyCopier(SyncCopier):
    """A fake asynchronous device: fetched tensors are distinct copies that hold NaN until the fetch
    is finished, and write-backs land only at drain(). Records the order of events."""

    def __init__(self) -> None:
        super().__init__(torch.device("cpu"))
        self.events: list[str] = []
        self.deferred: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.fetches = 0

    def start_fetch(self, host):
        self.fetches += 1
        self.events.append(f"start{self.fetches}")
        return host, [torch.full_like(t, float("nan")) for t in host]

    def finish_fetch(self, handle):
        host, dev = handle
        for d, h in zip(dev, host):
            d.copy_(h)
        self.events.append("finish")
        return dev, list(host)

    def write_back(self, device, homes):
        self.events.append("write_back")
        self.deferred += list(zip(device, homes))

    def drain(self) -> None:
        for d, h in self.deferred:
            h.copy_(d)
        self.deferred.clear()
        self.events.append("drain")


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_prefetch_gives_identical_tensors(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    base = random_llama(hidden=64, layers=3, intermediate=128, heads=4, kv_heads=2, vocab=256, seed=0)
    results = {}
    copiers: list[LazyCopier] = []

    def lazy(_device: torch.device) -> LazyCopier:
        copiers.append(LazyCopier())
        return copiers[-1]

    for label in ("plain", "prefetch-sync", "prefetch-lazy"):
        model = copy.deepcopy(base)
        loaded = as_loaded(model)
        if label == "prefetch-lazy":
            monkeypatch.setattr(calibration_mod, "make_copier", lazy)
        table = prune_model(loaded, method, uniform_sparsity(loaded, 0.6), calib(),
                            compute=Compute("cpu", offload=True), prefetch=label != "plain", blocksize=32)
        monkeypatch.undo()
        results[label] = (model.state_dict(), table)
    plain_state, plain_table = results["plain"]
    for label in ("prefetch-sync", "prefetch-lazy"):
        state, table = results[label]
        for name, value in plain_state.items():
            assert torch.equal(state[name], value), (label, name)
        assert table.equals(plain_table)
    # the lazy device saw the schedule: block i+1's copy starts before block i is written back,
    # and every write-back has landed (drain) before prune_model returns
    events = copiers[0].events
    assert events.index("start2") < events.index("write_back")
    assert events[-1] == "drain" and events.count("write_back") == 3
    assert not any(torch.isnan(v).any() for v in results["prefetch-lazy"][0].values())


def test_mover_without_prefetch_copies_on_demand() -> None:
    layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
    copier = LazyCopier()
    mover = BlockMover(layers, copier, prefetch=False)
    for i in range(3):
        block = mover.acquire(i)
        assert not torch.isnan(block.weight).any()
        with torch.no_grad():
            block.weight.zero_()
        mover.release(i)
    assert copier.events[:3] == ["start1", "finish", "write_back"]
    assert all(float(layer.weight.detach().abs().sum()) != 0 for layer in layers)  # write-backs not landed yet
    mover.close()
    assert all(float(layer.weight.detach().abs().sum()) == 0 for layer in layers)


def test_evaluation_moves_the_model_only_when_it_fits(tiny_llama: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """place_for_inference (issue 20, offload: auto): the whole model moves to the GPU for evaluation
    when its parameters plus one forward's working memory fit the usable free memory; it stays on
    the CPU when they do not, or when offload was asked for explicitly."""
    from pruning.model.placement import inference_bytes, module_bytes, place_for_inference

    moved: list[object] = []
    monkeypatch.setattr(tiny_llama, "to", lambda device: moved.append(device))  # no GPU here
    need = module_bytes(tiny_llama) + inference_bytes(tiny_llama, batch_size=2, seqlen=64)
    # usable = free * (1 - SAFETY_FRACTION) - SAFETY_BYTES: the exact free memory at which it fits
    enough = int((need + SAFETY_BYTES) / (1.0 - SAFETY_FRACTION)) + 16
    auto = Compute("cuda", offload=None)
    assert place_for_inference(tiny_llama, auto, 2, 64, free_memory=lambda d: (enough, 80 * GiB)) == "cuda"
    assert moved == [CUDA]
    moved.clear()
    # short of memory on a device whose whole memory is just as short: the model is too big for it
    assert place_for_inference(tiny_llama, auto, 2, 64, free_memory=lambda d: (enough - 64, enough - 64)) == "cpu"
    assert place_for_inference(tiny_llama, Compute("cuda", offload=True), 2, 64,
                               free_memory=lambda d: (80 * GiB, 80 * GiB)) == "cpu"
    assert place_for_inference(tiny_llama, Compute("cpu", offload=None), 2, 64) == "cpu"
    assert moved == []
    # a longer window needs more working memory: 4x the window no longer fits the same device
    assert place_for_inference(tiny_llama, auto, 2, 256, free_memory=lambda d: (enough, enough)) == "cpu"
    # short of free memory on a device that could hold it (a shared GPU): it waits, then fails
    slept: list[float] = []
    with pytest.raises(DeviceMemoryBusyError, match="evaluation.*busy|busy.*evaluation"):
        place_for_inference(tiny_llama, auto, 2, 64, free_memory=lambda d: (enough - 64, 80 * GiB), sleep=slept.append)
    assert sum(slept) == MEMORY_WAIT_S and moved == []


def test_compute_from_config_loads_on_the_cpu_only_when_blocks_may_be_offloaded() -> None:
    from pruning.config.run_config import RunConfig

    cfg = RunConfig.from_dict({"model": {"device": "cpu"}, "calibration": {"batch_size": 4}})
    assert Compute.from_config(cfg) == Compute("cpu", None, 4) and Compute.from_config(cfg).load_device == "cpu"
    assert Compute("cuda", None).load_device == "cpu" and Compute("cuda", True).load_device == "cpu"
    assert Compute("cuda:1", False).load_device == "cuda:1"
    assert Compute.from_config(cfg.with_overrides({"model.offload": False})).offload is False
    # "auto" and false name the same results: the same run id
    assert cfg.run_id == cfg.with_overrides({"model.offload": False}).run_id
    assert cfg.run_id != cfg.with_overrides({"model.offload": True}).run_id
