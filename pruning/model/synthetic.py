"""Random-weight LLaMA models: tiny ones for tests, LLaMA-7B shape for GPU timing.

Random weights are fair subjects for speed and memory, never for quality.
"""

from __future__ import annotations

from pathlib import Path

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


def save_tiny_model_dir(
    path: str | Path, tokenizer_from: str = "smollm2-135m", hidden: int = 64, layers: int = 2,
    intermediate: int = 128, heads: int = 4, kv_heads: int = 2, seed: int = 0,
) -> Path:
    """Save a tiny random LLaMA + a real tokenizer as a local model directory that
    ``load_model(str(path))`` accepts (for fast end-to-end tests of runs, jobs and the app).

    The tokenizer is copied from an offline alias (prepared by ``python -m pruning fetch``);
    the vocabulary size follows it.
    """
    from transformers import AutoTokenizer

    from pruning.model.load import resolve_model, save_model

    source = resolve_model(tokenizer_from)
    tokenizer = AutoTokenizer.from_pretrained(source.location)
    model = random_llama(hidden=hidden, layers=layers, intermediate=intermediate, heads=heads,
                         kv_heads=kv_heads, vocab=len(tokenizer), seed=seed)
    return save_model(model, tokenizer, path)
