"""Attention statistics from activations: the Shannon entropy of each query's attention
distribution on evaluation text, measured with eager attention (the only implementation that
returns probabilities; the model is switched for the measurement and restored afterwards)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from pruning.attention.weights import attention_geometry
from pruning.errors import ConfigError
from pruning.model.families import FamilySpec, decoder_layers, family_for, get_attr_path

log = logging.getLogger(__name__)

EAGER = "eager"


def attention_entropy_from_probs(probs: Tensor) -> Tensor:
    """Shannon entropy (nats) of attention rows. probs: ``(..., T_q, T_k)`` with masked keys
    exactly 0 (``0 ln 0 = 0``); returns ``(..., T_q)``. Computed in float32."""
    p = probs.float()
    return -torch.special.xlogy(p, p).sum(dim=-1)


def attn_implementation(model: nn.Module) -> str:
    """The attention implementation the model currently runs ('eager', 'sdpa', ...)."""
    return str(getattr(model.config, "_attn_implementation", None) or EAGER)


def _set_attn_implementation(model: nn.Module, name: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:  # older transformers: the config field is read at each forward
        model.config._attn_implementation = name


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[str]:
    """Run the block with eager attention (the only implementation that returns probabilities),
    restoring the original afterwards. Yields the original implementation's name."""
    original = attn_implementation(model)
    if original != EAGER:
        log.warning("attention implementation %r cannot return attention probabilities; "
                    "switching to 'eager' for the measurement (restored afterwards)", original)
        _set_attn_implementation(model, EAGER)
    try:
        yield original
    finally:
        if original != EAGER:
            _set_attn_implementation(model, original)


@torch.no_grad()
def attention_entropy(model: nn.Module, windows: Tensor, family: FamilySpec | None = None,
                      progress: Callable[[int, int], None] | None = None) -> tuple[Tensor, Tensor]:
    """Mean attention entropy per block and head over all query positions of ``windows``.

    windows: LongTensor ``(n_windows, T)``, run one window at a time. Returns
    ``(attn_entropy, attn_entropy_norm)``, each float64 ``(n_blocks, n_heads)``, nats /
    fraction of ln(t + 1). Raises RuntimeError if a block returns no probabilities even
    under eager attention (never reports zeros)."""
    family = family or family_for(model)
    layers = decoder_layers(model, family)
    n_heads, _, _ = attention_geometry(model)
    n_blocks, seqlen = len(layers), windows.shape[1]
    ent_sum = torch.zeros(n_blocks, n_heads, dtype=torch.float64)
    norm_sum = torch.zeros(n_blocks, n_heads, dtype=torch.float64)
    missing: list[int] = []
    log_visible = torch.log(torch.arange(1, seqlen + 1, dtype=torch.float64))  # ln(t + 1), (T,)

    def hook_for(index: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if probs is None:
                missing.append(index)
                return
            ent = attention_entropy_from_probs(probs).double()  # (B, n_heads, T)
            ent_sum[index] += ent.sum(dim=(0, 2)).cpu()
            norm_sum[index] += (ent[..., 1:] / log_visible[1:].to(ent.device)).sum(dim=(0, 2)).cpu()
        return hook

    device = next(model.parameters()).device
    with eager_attention(model):
        handles = [get_attr_path(b, family.attention_path).register_forward_hook(hook_for(i)) for i, b in enumerate(layers)]
        try:
            for w in range(windows.shape[0]):
                model(input_ids=windows[w : w + 1].to(device), use_cache=False)
                if missing:
                    raise RuntimeError(
                        f"blocks {sorted(set(missing))} returned no attention probabilities even with "
                        f"attn_implementation={attn_implementation(model)!r}; cannot measure attention entropy"
                    )
                if progress is not None:
                    progress(w + 1, windows.shape[0])
        finally:
            for handle in handles:
                handle.remove()
    n_queries = windows.shape[0] * seqlen
    n_norm = windows.shape[0] * max(seqlen - 1, 1)
    return ent_sum / n_queries, norm_sum / n_norm


@torch.no_grad()
def attention_probabilities(model: nn.Module, window: Tensor, block: int, family: FamilySpec | None = None) -> Tensor:
    """The attention probabilities of one block on one batch of windows ``(B, T)``, measured
    exactly as :func:`attention_entropy` measures them (eager attention, forward hook).
    Returns float32 ``(B, n_heads, T, T)``; masked (future) keys are exactly 0."""
    family = family or family_for(model)
    layers = decoder_layers(model, family)
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if probs is None:
            raise RuntimeError(f"block {block} returned no attention probabilities "
                               f"(attn_implementation={attn_implementation(model)!r})")
        captured.append(probs.detach().float().cpu())

    with eager_attention(model):
        handle = get_attr_path(layers[block], family.attention_path).register_forward_hook(hook)
        try:
            model(input_ids=window.to(next(model.parameters()).device), use_cache=False)
        finally:
            handle.remove()
    return captured[0]


def evaluation_windows(token_ids: Tensor, tokens: int, seqlen: int | None = None,
                       bos_token_id: int | None = None) -> Tensor:
    """The first ``tokens`` tokens of 1-D ``token_ids`` as windows ``(tokens // seqlen, seqlen)``
    (``seqlen`` defaults to ``tokens``: one window); with ``bos_token_id`` each window starts
    with BOS followed by ``seqlen - 1`` text tokens."""
    seqlen = seqlen or tokens
    if tokens < 2 or seqlen < 2 or seqlen > tokens:
        raise ConfigError(f"evaluation.attention_tokens: {tokens} (seqlen {seqlen}) is invalid; accepted: 2 <= seqlen <= tokens")
    n = tokens // seqlen
    body = seqlen - (1 if bos_token_id is not None else 0)
    if token_ids.numel() < n * body:
        raise ConfigError(f"evaluation.attention_tokens: {tokens} exceeds the text length ({token_ids.numel()} tokens)")
    windows = token_ids[: n * body].view(n, body)
    if bos_token_id is not None:
        windows = torch.cat([torch.full((n, 1), bos_token_id, dtype=windows.dtype), windows], dim=1)
    return windows
