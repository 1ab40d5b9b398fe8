"""Streaming a sharded checkpoint block by block gives the same pruned model as prune_model in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pruning.model.families import family_for, prunable_matrices
from pruning.model.load import LoadedModel, ModelSource
from pruning.run.prune import prune_model, uniform_sparsity
from pruning.run.streaming import INDEX, ShardIndex, stream_prune, tensor_byte_ranges, write_random_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 blocks, hidden 64, MLP 128, GQA 4 heads / 2 KV heads, vocab 256, float32, one shard per block."""
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt"), hidden=64, intermediate=128, heads=4, kv_heads=2,
                                   blocks=2, vocab=256, dtype=torch.float32, seed=3)


def load(path: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def test_checkpoint_layout(checkpoint: Path) -> None:
    index = json.loads((checkpoint / INDEX).read_text())
    files = set(index["weight_map"].values())
    assert len(files) == 4  # embeddings, block 0, block 1, norm + LM head
    assert index["weight_map"]["model.layers.1.mlp.down_proj.weight"] == "model-00003-of-00004.safetensors"
    assert json.loads((checkpoint / "config.json").read_text())["num_hidden_layers"] == 2


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_streamed_equals_in_memory(checkpoint: Path, tmp_path: Path, method: str) -> None:
    ids = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(0))
    report = stream_prune(checkpoint, tmp_path / "out", method, 0.6, ids, blocksize=32)
    streamed = load(tmp_path / "out")  # the written shards load with transformers
    reference = load(checkpoint)
    loaded = LoadedModel(reference, None, family_for(reference), ModelSource("local", str(checkpoint), "ckpt"), "x", 0.0)
    table = prune_model(loaded, method, uniform_sparsity(loaded, 0.6), ids, blocksize=32)
    refs_s = {r.name: r for r in prunable_matrices(streamed)}
    assert len(refs_s) == 14 and len(report.table) == 14
    for ref in prunable_matrices(reference):
        w_s, w_r = refs_s[ref.name].module.weight, ref.module.weight
        assert torch.equal(w_s == 0, w_r == 0), ref.name  # same masks
        torch.testing.assert_close(w_s, w_r, rtol=1e-5, atol=1e-6)
        assert abs(float((w_s == 0).float().mean()) - 0.6) < 0.02, ref.name
    assert report.table.sparsity_achieved.tolist() == pytest.approx(table.sparsity_achieved.tolist())
    # untouched tensors are copied as they were
    dense = load(checkpoint)
    assert torch.equal(streamed.model.embed_tokens.weight, dense.model.embed_tokens.weight)
    assert torch.equal(streamed.lm_head.weight, dense.lm_head.weight)
    assert len(report.seconds_per_block) == 2


def test_tensor_byte_ranges_and_read_ahead(checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The byte ranges read ahead are the tensors' bytes in the shard files (safetensors' layout)."""
    import threading

    index = ShardIndex(checkpoint)
    tensors = index.load(list(index.weight_map), torch.device("cpu"))
    for file in set(index.weight_map.values()):
        data = (checkpoint / file).read_bytes()
        ranges = tensor_byte_ranges(checkpoint / file)
        assert sorted(ranges) == sorted(n for n, f in index.weight_map.items() if f == file)
        for name, (start, stop) in ranges.items():
            assert data[start:stop] == tensors[name].numpy().tobytes(), name
    index.read_ahead(list(index.weight_map))
    for thread in threading.enumerate():
        if thread.name == "shard-read-ahead":
            thread.join()
    assert not [r for r in caplog.records if "read-ahead" in r.getMessage()]
