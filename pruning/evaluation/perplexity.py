"""Perplexity with the protocol of the SparseGPT/Wanda papers (DESIGN.md 'Evaluation').

The test text (documents joined with "\\n\\n") is tokenized once and cut into non-overlapping
windows of ``seqlen`` tokens; ``ppl = exp(mean NLL)`` over every next-token prediction in the
evaluated windows. ``limit_windows`` evaluates only the first K windows (a budget that is
stored with every result). Families that need BOS (``bos_each_window``) get BOS + ``seqlen-1``
text tokens per window.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pruning.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PerplexityResult:
    """ppl = exp(nll); ``n_tokens`` predictions scored over ``n_windows`` of ``total_windows``."""

    dataset: str
    ppl: float
    nll: float
    n_tokens: int
    n_windows: int
    total_windows: int
    seqlen: int
    limit_windows: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_windows(ids: torch.Tensor, seqlen: int, bos_token_id: int | None = None) -> torch.Tensor:
    """Non-overlapping windows ``(n_windows, seqlen)`` of a 1-D token tensor (remainder dropped)."""
    body = seqlen - (1 if bos_token_id is not None else 0)
    n = ids.numel() // body
    if n == 0:
        raise ConfigError(f"evaluation.seqlen: {seqlen} exceeds the text length ({ids.numel()} tokens)")
    windows = ids[: n * body].view(n, body)
    if bos_token_id is not None:
        windows = torch.cat([torch.full((n, 1), bos_token_id, dtype=windows.dtype), windows], dim=1)
    return windows


@torch.no_grad()
def window_nll(model: nn.Module, windows: torch.Tensor, device: torch.device) -> tuple[float, int]:
    """Summed next-token NLL (nats, float64) and prediction count for a batch ``(B, T)``."""
    input_ids = windows.to(device)
    logits = model(input_ids=input_ids, use_cache=False).logits  # (B, T, vocab)
    shift_logits = logits[:, :-1, :].float()
    shift_labels = input_ids[:, 1:]
    nll = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), reduction="sum")
    return float(nll.double()), shift_labels.numel()


def perplexity(
    model: nn.Module,
    token_ids: torch.Tensor,
    seqlen: int = 2048,
    limit_windows: int | None = None,
    batch_size: int = 1,
    bos_token_id: int | None = None,
    dataset: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> PerplexityResult:
    """Perplexity of ``model`` on 1-D ``token_ids`` (see module docstring for the protocol).

    ``progress(done, total)`` is called after each batch of windows.
    """
    if limit_windows is not None and limit_windows < 1:
        raise ConfigError(f"evaluation.limit_windows: {limit_windows} is invalid; accepted: a positive integer or None")
    windows = make_windows(token_ids, seqlen, bos_token_id)
    total = windows.size(0)
    use = windows[:limit_windows] if limit_windows else windows
    device = next(model.parameters()).device
    nll_sum, count = 0.0, 0
    for start in range(0, use.size(0), batch_size):
        s, c = window_nll(model, use[start : start + batch_size], device)
        nll_sum += s
        count += c
        if progress is not None:
            progress(min(start + batch_size, use.size(0)), use.size(0))
    mean_nll = nll_sum / count
    result = PerplexityResult(dataset, math.exp(mean_nll), mean_nll, count, use.size(0), total, seqlen, limit_windows)
    log.info("perplexity %s: %.4f over %d tokens (%d/%d windows of %d)", dataset, result.ppl, count, use.size(0), total, seqlen)
    return result
