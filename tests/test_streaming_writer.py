"""The background shard writer of pruning.run.streaming (issue 32): the same bytes as writing each shard
synchronously, failures that surface in the caller with the shard's name and leave no partial file,
and a bound on the shards waiting in host memory. CPU only, apart from the last two tests (CUDA)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import safetensors.torch
import torch

from pruning.run.streaming import INDEX, ShardIndex, ShardWriter, stream_prune, write_random_checkpoint

BLOCK1_SHARD = "model-00003-of-00004.safetensors"  # block 1 of the 2-block checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 blocks, hidden 64, MLP 128, GQA 4 heads / 2 KV heads, vocab 256, float32, one shard per block."""
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt"), hidden=64, intermediate=128, heads=4, kv_heads=2,
                                   blocks=2, vocab=256, dtype=torch.float32, seed=5)


def files(directory: Path) -> dict[str, bytes]:
    """Every file of ``directory`` (hidden temporary files included): name -> bytes."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def by_shard(index: ShardIndex) -> dict[str, list[str]]:
    shards: dict[str, list[str]] = {}
    for name, file in index.weight_map.items():
        shards.setdefault(file, []).append(name)
    return shards


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("shard-writer")]


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_overlapped_output_is_byte_identical_to_synchronous(checkpoint: Path, tmp_path: Path, method: str) -> None:
    ids = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(1))
    sync = stream_prune(checkpoint, tmp_path / "sync", method, 0.6, ids, blocksize=32, max_pending_shards=0)
    overlapped = stream_prune(checkpoint, tmp_path / "overlapped", method, 0.6, ids, blocksize=32)
    written, expected = files(tmp_path / "overlapped"), files(tmp_path / "sync")
    assert sorted(written) == sorted(expected) == sorted(files(checkpoint))  # no temporary file left over
    for name in expected:
        assert written[name] == expected[name], name
    assert written[BLOCK1_SHARD] != files(checkpoint)[BLOCK1_SHARD]  # pruned: not a copy of the source
    # untouched shards (embeddings; norm + LM head) are the source's bytes: exactly what save_file writes
    for name in ("model-00001-of-00004.safetensors", "model-00004-of-00004.safetensors"):
        assert written[name] == files(checkpoint)[name], name
    for report in (sync, overlapped):
        assert len(report.compute_seconds) == len(report.write_wait_seconds) == len(report.seconds_per_block) == 2
        assert sorted(report.shard_write_seconds) == sorted(set(ShardIndex(checkpoint).weight_map.values()))
    assert sync.table.equals(overlapped.table)


def test_writer_copies_a_checkpoint_byte_for_byte(checkpoint: Path, tmp_path: Path) -> None:
    """Tensors arriving in pieces and out of order: every shard is written once complete, with the
    source's bytes; the index is the one the synchronous writer writes."""
    index = ShardIndex(checkpoint)
    shards = by_shard(index)
    names = list(index.weight_map)
    order = names[1::2][::-1] + names[0::2]  # every shard completes only in the second half
    outputs = {}
    for max_pending in (0, 1, 2):
        out = tmp_path / f"pending{max_pending}"
        with ShardWriter(index, out, max_pending=max_pending) as writer:
            for start in range(0, len(order), 3):
                writer.add(index.load(order[start:start + 3], torch.device("cpu")))
            writer.close()
        assert sorted(writer.written) == sorted(shards)
        outputs[max_pending] = files(out)
        for shard in shards:
            assert outputs[max_pending][shard] == files(checkpoint)[shard], shard
    assert outputs[0] == outputs[1] == outputs[2]
    assert set(outputs[0]) == set(shards) | {INDEX}
    assert not writer_threads()


def failing_save(shard: str, started: threading.Event | None = None):
    """A ``save_file`` that writes half a file for ``shard`` and then fails; other shards are written."""
    real = safetensors.torch.save_file

    def save(tensors, filename, metadata=None):
        name = Path(filename).name
        if name == shard or name.startswith(f".{shard}."):  # the shard or its temporary sibling
            if started is not None:
                started.set()
            Path(filename).write_bytes(b"\0" * 100)
            raise OSError(28, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    return save


def test_write_error_in_stream_prune_names_the_shard_and_leaves_no_partial_file(
        checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safetensors.torch, "save_file", failing_save(BLOCK1_SHARD))
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=BLOCK1_SHARD) as info:
        stream_prune(checkpoint, out, "wanda", 0.5, ids)
    assert "No space left on device" in str(info.value)
    assert not (out / BLOCK1_SHARD).exists()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # the temporary file is removed
    assert not (out / INDEX).exists()
    assert not writer_threads()


def test_write_error_surfaces_at_the_next_add(checkpoint: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    index = ShardIndex(checkpoint)
    shards = sorted(by_shard(index).items())
    first, second = shards[0][0], shards[1][0]
    monkeypatch.setattr(safetensors.torch, "save_file", failing_save(first))
    writer = ShardWriter(index, tmp_path, max_pending=1)
    writer.add(index.load(shards[0][1], torch.device("cpu")))  # handed over; its write fails in the thread
    with pytest.raises(RuntimeError, match=first):
        writer.add(index.load(shards[1][1], torch.device("cpu")))  # waits for room: meets the failure
    with pytest.raises(RuntimeError, match=first):  # and keeps saying so
        writer.close()
    assert not (tmp_path / first).exists() and not (tmp_path / second).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert not writer_threads()


def test_write_error_surfaces_at_close(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = ShardIndex(checkpoint)
    shards = by_shard(index)
    last = sorted(shards)[-1]
    started = threading.Event()
    monkeypatch.setattr(safetensors.torch, "save_file", failing_save(last, started))
    writer = ShardWriter(index, tmp_path, max_pending=2)
    for shard in sorted(shards):
        writer.add(index.load(shards[shard], torch.device("cpu")))  # the last add returns before its write
    with pytest.raises(RuntimeError, match=last):
        writer.close()
    assert started.is_set()
    assert not (tmp_path / last).exists() and not (tmp_path / INDEX).exists()
    assert [p.name for p in sorted(tmp_path.iterdir())] == sorted(shards)[:-1]  # the others complete
    assert not writer_threads()


def test_add_blocks_once_max_pending_shards_are_in_flight(checkpoint: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = safetensors.torch.save_file
    release = threading.Event()
    started: list[str] = []

    def held_save(tensors, filename, metadata=None):
        started.append(Path(filename).name)
        if not release.wait(timeout=60):
            raise TimeoutError("test: never released")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", held_save)
    index = ShardIndex(checkpoint)
    shards = sorted(by_shard(index).items())  # 4 shards
    cpu = torch.device("cpu")
    writer = ShardWriter(index, tmp_path, max_pending=2)
    try:
        writer.add(index.load(shards[0][1], cpu))  # being written (held)
        writer.add(index.load(shards[1][1], cpu))  # queued
        third = threading.Thread(target=writer.add, args=(index.load(shards[2][1], cpu),), daemon=True)
        third.start()
        third.join(timeout=0.5)
        assert third.is_alive()  # blocked: two shards already in flight
        assert len(started) == 1 and [f for f, _ in writer.in_flight] == [shards[0][0], shards[1][0]]
    finally:
        release.set()
    third.join(timeout=60)
    assert not third.is_alive()
    writer.add(index.load(shards[3][1], cpu))
    writer.close()
    assert writer.written == [name for name, _ in shards]
    assert all(files(tmp_path)[name] == files(checkpoint)[name] for name, _ in shards)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_staging_waits_for_the_copies(checkpoint: Path, tmp_path: Path) -> None:
    """Device tensors behind a long kernel: the pinned copies land late, and the writer must wait for
    them (reading too early writes uninitialised bytes); the device tensors are dropped at once."""
    index = ShardIndex(checkpoint)
    with ShardWriter(index, tmp_path, max_pending=2) as writer:
        for names in by_shard(index).values():
            on_device = index.load(names, torch.device("cuda"))
            torch.cuda._sleep(2_000_000_000)  # ~1 s of GPU time ahead of the copies
            writer.add(on_device)
            del on_device
        writer.close()
    for name, data in files(checkpoint).items():
        if name != INDEX:
            assert files(tmp_path)[name] == data, name


@cuda
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_cuda_overlapped_output_is_byte_identical_to_synchronous(checkpoint: Path, tmp_path: Path,
                                                                 method: str) -> None:
    ids = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(1))
    stream_prune(checkpoint, tmp_path / "sync", method, 0.6, ids, device="cuda", blocksize=32, max_pending_shards=0)
    report = stream_prune(checkpoint, tmp_path / "overlapped", method, 0.6, ids, device="cuda", blocksize=32)
    assert files(tmp_path / "overlapped") == files(tmp_path / "sync")
    assert report.peak_pinned_bytes is None or report.peak_pinned_bytes > 0
