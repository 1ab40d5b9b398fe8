"""Random-weight LLaMA models: tiny ones for tests, LLaMA-7B shape for GPU timing.

Random weights are fair subjects for speed and memory, never for quality.
"""

from __future__ import annotations

import torch
from torch import nn


def random_llama(
    hidden: int = 64,
    layers: int = 2,
    intermediate: int = 128,
    heads: int = 4,
    kv_heads: int | None = None,
    vocab: int = 256,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    max_positions: int = 4096,
) -> nn.Module:
    """A ``LlamaForCausalLM`` with random weights (seeded). LLaMA-7B shape:
    hidden=4096, layers=32, intermediate=11008, heads=32, vocab=32000."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        vocab_size=vocab,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        attn_implementation="eager" if hidden <= 256 else "sdpa",
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.eval()
    return model


def llama7b_shape(layers: int = 32, **kwargs) -> nn.Module:
    """Random model of LLaMA-7B shape (32 x (hidden 4096, MLP 11008), vocab 32000)."""
    return random_llama(hidden=4096, layers=layers, intermediate=11008, heads=32, vocab=32000, **kwargs)
