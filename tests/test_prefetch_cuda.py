"""The CUDA copiers of pruning.model.prefetch on a real GPU: offloading with prefetch gives exactly the
tensors of the model-on-GPU run (skipped where there is no CUDA device; run on the H200 by
``scripts/gpu.sh start speed-7b``)."""

from __future__ import annotations

import copy

import pytest
import torch

from pruning.model.families import family_for
from pruning.model.load import LoadedModel, ModelSource
from pruning.model.placement import Compute
from pruning.run.prune import prune_model, uniform_sparsity
from pruning.model.synthetic import random_llama

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def as_loaded(model: torch.nn.Module) -> LoadedModel:
    return LoadedModel(model, None, family_for(model), ModelSource("local", "memory", "tiny"), "test", 0.0)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_offload_prefetch_equals_model_on_gpu(method: str) -> None:
    base = random_llama(hidden=256, layers=4, intermediate=512, heads=4, kv_heads=2, vocab=512, seed=0,
                        dtype=torch.float16)
    ids = torch.randint(0, 512, (8, 64), generator=torch.Generator().manual_seed(0))
    on_gpu = copy.deepcopy(base)
    prune_model(as_loaded(on_gpu), method, uniform_sparsity(as_loaded(on_gpu), 0.6), ids,
                compute=Compute("cuda", offload=False), blocksize=32)
    offloaded = copy.deepcopy(base)
    table = prune_model(as_loaded(offloaded), method, uniform_sparsity(as_loaded(offloaded), 0.6), ids,
                        compute=Compute("cuda", offload=True), prefetch=True, blocksize=32)
    assert table.attrs["placement"] == "offload"
    gpu_state = on_gpu.state_dict()
    for name, value in offloaded.state_dict().items():
        assert value.device.type == "cpu", name  # every block is home again
        assert torch.equal(value, gpu_state[name].cpu()), name
    layer0 = offloaded.model.layers[0].mlp.up_proj.weight
    assert 0.55 < float((layer0 == 0).float().mean()) < 0.65  # pruned, not the dense weights brought back
