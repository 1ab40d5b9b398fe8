"""Both kinds of attention statistics of a model as one tidy frame ``(stage, block, head, statistic,
value)`` (docs/CONTRACTS.md; ``head = -1`` marks a statistic of the whole block), and its summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from pruning.attention.entropy import EAGER, attention_entropy, attn_implementation, evaluation_windows
from pruning.attention.weights import COLUMNS, statistic_rows, weight_attention_statistics
from pruning.text.data import load_text, tokenize_text
from pruning.model.families import FamilySpec, family_for


def attention_statistics(model: nn.Module, windows: Tensor | None, stage: str = "dense",
                         family: FamilySpec | None = None, device: str | torch.device = "cpu",
                         layer_level: bool = True,
                         progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """All attention statistics of ``model`` as a tidy frame ``(stage, block, head, statistic, value)``.

    windows: LongTensor ``(n_windows, T)`` of evaluation text (None: weight statistics only).
    ``frame.attrs`` records ``attn_implementation`` (the model's own) and ``measured_with``."""
    family = family or family_for(model)
    frame = weight_attention_statistics(model, stage, family, device=device, layer_level=layer_level)
    original = attn_implementation(model)
    if windows is not None:
        ent, ent_norm = attention_entropy(model, windows, family, progress)
        rows = []
        for b in range(ent.shape[0]):
            for h in range(ent.shape[1]):
                rows += statistic_rows(stage, b, h, {"attn_entropy": ent[b, h], "attn_entropy_norm": ent_norm[b, h]})
        frame = pd.concat([pd.DataFrame(rows, columns=COLUMNS), frame], ignore_index=True)
    frame = frame.sort_values(["block", "head", "statistic"], kind="stable").reset_index(drop=True)
    frame["block"] = frame["block"].astype("int64")
    frame["head"] = frame["head"].astype("int64")
    frame.attrs.update({
        "attn_implementation": original,
        "measured_with": EAGER if windows is not None else None,
        "tokens": int(windows.numel()) if windows is not None else 0,
        "seqlen": int(windows.shape[1]) if windows is not None else 0,
    })
    return frame


def attention_table(loaded: Any, stage: str = "dense", tokens: int = 512, dataset: str = "wiki",
                    seqlen: int | None = None, device: str | torch.device = "cpu",
                    progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Attention statistics of a :class:`pruning.model.load.LoadedModel` on the first ``tokens``
    tokens of ``dataset``'s test split (BOS per window for families that need it)."""
    ids = tokenize_text(loaded.tokenizer, load_text(dataset, "test"))
    bos = loaded.window_bos
    windows = evaluation_windows(ids, tokens, seqlen, bos)
    return attention_statistics(loaded.model, windows, stage, loaded.family, device=device, progress=progress)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean of every statistic over blocks and heads, per stage: ``(stage, statistic, value)``.
    For ``v_entropy``, ``v_rank_ratio`` and ``qk_entropy_layer`` this is the notes' '(Avg)'."""
    frame = frame[frame.statistic != "kv_head"]
    return frame.groupby(["stage", "statistic"], as_index=False, sort=True)["value"].mean()
