"""The family registry resolves the decoder layout of every registered family on tiny random
models of that family (no downloads), by config.model_type."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from pruning.model.families import FAMILIES, decoder_layers, family_for, prunable_matrices

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=128, head_dim=8)


def _build(config_cls: str, model_cls: str, **extra):
    config = getattr(transformers, config_cls)(**TINY, **extra)
    torch.manual_seed(0)
    return getattr(transformers, model_cls)(config).eval()


@pytest.mark.parametrize(
    ("config_cls", "model_cls", "family", "bos"),
    [
        ("LlamaConfig", "LlamaForCausalLM", "llama", False),
        ("MistralConfig", "MistralForCausalLM", "mistral", False),
        ("Qwen2Config", "Qwen2ForCausalLM", "qwen2", False),
        ("Gemma3TextConfig", "Gemma3ForCausalLM", "gemma3", True),
    ],
)
def test_layout_resolves_seven_linear_matrices_per_block(config_cls, model_cls, family, bos):
    model = _build(config_cls, model_cls)
    spec = family_for(model)
    assert spec.name == family and spec.bos_each_window is bos
    assert len(decoder_layers(model, spec)) == 2
    refs = prunable_matrices(model, spec)
    assert len(refs) == 14
    by_type = {r.matrix_type: r for r in refs if r.block == 1}
    assert by_type["q"].shape == (32, 32) and by_type["k"].shape == (16, 32)  # 4 heads x 8; 2 kv heads x 8
    assert by_type["gate"].shape == (64, 32) and by_type["down"].shape == (32, 64)
    assert all(isinstance(r.module, torch.nn.Linear) for r in refs)
    names = dict(model.named_modules())
    assert all(names[r.name] is r.module for r in refs)


def test_every_registered_family_has_all_seven_types():
    for spec in FAMILIES.values():
        assert set(spec.matrices) == {"q", "k", "v", "o", "gate", "up", "down"}


# every registered family as a tiny random model of its transformers class (issue 18)
FAMILY_CLASSES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
}


def test_the_tiny_family_table_covers_the_registry():
    assert set(FAMILY_CLASSES) == set(FAMILIES)  # a new family needs a tiny model here


@pytest.mark.parametrize("family", sorted(FAMILY_CLASSES))
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_every_family_is_pruned_and_evaluated(family, method):
    from pruning.evaluation.perplexity import perplexity
    from pruning.model.load import LoadedModel, ModelSource
    from pruning.run.prune import prune_model, uniform_sparsity

    model = _build(*FAMILY_CLASSES[family])
    spec = family_for(model)
    assert spec.name == family
    loaded = LoadedModel(model, None, spec, ModelSource("local", "memory", family), family, 0.0)
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(0))
    dense = perplexity(model, ids.flatten(), seqlen=32)
    table = prune_model(loaded, method, uniform_sparsity(loaded, 0.5), ids, blocksize=16)
    assert len(table) == 14
    for ref in prunable_matrices(model, spec):  # every matrix of every block pruned to 50 %
        zeros = float((ref.module.weight == 0).float().mean())
        assert abs(zeros - 0.5) < 0.02, (ref.name, zeros)
    pruned = perplexity(model, ids.flatten(), seqlen=32)
    assert np.isfinite(pruned.ppl) and pruned.n_windows == dense.n_windows == 4
    assert pruned.ppl != dense.ppl
