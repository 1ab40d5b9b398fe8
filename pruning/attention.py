"""Attention statistics per block and head, for the dense and the pruned model of a run.

Two kinds of numbers (DESIGN.md 'Evaluation'; exact definitions and how they relate to the
notes' LLaMA averages are in docs/attention.md):

* **From activations** — ``attn_entropy``: Shannon entropy (nats) of each query's attention
  distribution ``p_t = softmax(q_t K^T / sqrt(d) + causal mask)``, averaged over every query
  position of the evaluation windows (position 0 sees one key and contributes 0). ``attn_entropy_norm``
  averages ``H_t / ln(t + 1)`` over positions ``t >= 1`` (1 = uniform over the visible keys).
  Measured with eager attention: sdpa/flash kernels never materialise the probabilities, so the
  model is switched to eager for the measurement (logged, restored afterwards) — never zeros.
* **From weights** — with ``lambda = sigma^2`` and ``p = lambda / sum(lambda)`` (the ESD
  convention of DESIGN.md), spectral entropy ``H = -sum p ln p`` (nats):
  ``qk_entropy`` per query head h of ``W_QK^h = W_Q^h^T W_K^{g(h)}`` (the bilinear form of the
  attention logits, hidden x hidden, rank <= head_dim, so ``H <= ln(head_dim)``), where
  ``g(h) = h // (n_heads / n_kv_heads)`` is the key/value head that query head h reads under
  grouped-query attention (Ainslie et al. 2023; ``repeat_kv`` in transformers);
  ``v_entropy`` and ``v_rank``/``v_rank_ratio`` of the full ``W_V`` of the block (``head = -1``),
  the definition that reproduces the notes' "V Entropy 7.65 / V Rank 1.0000";
  ``qk_entropy_layer`` (``head = -1``) the notes' "QK Entropy" definition: ``W_q W_k^T`` in
  PyTorch ``(out, in)`` layout, all heads together.

Output: a tidy DataFrame ``(stage, block, head, statistic, value)`` (docs/CONTRACTS.md);
``head = -1`` marks a statistic of the whole block.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from pruning.errors import ConfigError
from pruning.families import FamilySpec, decoder_layers, family_for, get_attr_path

log = logging.getLogger(__name__)

COLUMNS = ["stage", "block", "head", "statistic", "value"]
LAYER_HEAD = -1  # value of `head` for statistics of a whole block
EAGER = "eager"


# ---------------------------------------------------------------------------------------------
# Pure kernels
# ---------------------------------------------------------------------------------------------
def attention_entropy_from_probs(probs: Tensor) -> Tensor:
    """Shannon entropy (nats) of attention rows. probs: ``(..., T_q, T_k)`` with masked keys
    exactly 0 (``0 ln 0 = 0``); returns ``(..., T_q)``. Computed in float32."""
    p = probs.float()
    return -torch.special.xlogy(p, p).sum(dim=-1)


def spectral_entropy(singular_values: Tensor) -> float:
    """Entropy (nats) of ``p = sigma^2 / sum(sigma^2)``, the normalised ESD (lambda = sigma^2).

    Roy & Vetterli (2007) define effective rank as exp of this entropy over sigma; the ESD
    (sigma^2) convention follows DESIGN.md's spectral table and the notes' script. Between 0
    (rank one) and ln(n) (flat spectrum). singular_values: ``(n,)``."""
    lam = singular_values.double().pow(2)
    total = lam.sum()
    if total <= 0:
        return 0.0
    p = lam / total
    return float(-torch.special.xlogy(p, p).sum())


def numerical_rank(singular_values: Tensor, shape: tuple[int, int], rtol: float | None = None) -> int:
    """Number of singular values above ``sigma_max * rtol``; default ``rtol = max(m, n) * eps``
    with eps of float32 (the NumPy ``matrix_rank`` convention at float32 storage precision).
    singular_values: ``(n,)``; shape: the matrix's ``(m, n)``."""
    if singular_values.numel() == 0:
        return 0
    rtol = max(shape) * torch.finfo(torch.float32).eps if rtol is None else rtol
    smax = float(singular_values.max())
    if smax == 0.0:
        return 0
    return int((singular_values > smax * rtol).sum())


def kv_head_of(head: int, n_heads: int, n_kv_heads: int) -> int:
    """The key/value head read by query head ``head`` under grouped-query attention:
    transformers' ``repeat_kv`` repeats each KV head ``n_heads // n_kv_heads`` times
    consecutively, so query head h uses KV head ``h // (n_heads // n_kv_heads)``."""
    if n_heads % n_kv_heads:
        raise ConfigError(f"num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv_heads}")
    if not 0 <= head < n_heads:
        raise ConfigError(f"head {head} is out of range for {n_heads} heads")
    return head // (n_heads // n_kv_heads)


def low_rank_product_singular_values(a: Tensor, b: Tensor) -> Tensor:
    """Singular values of ``a^T b`` for ``a, b: (d, n)`` with d << n, without forming the
    (n, n) product: ``a^T = Q_a R_a``, ``b^T = Q_b R_b`` (QR), so ``a^T b = Q_a (R_a R_b^T) Q_b^T``
    and the nonzero singular values are those of the (d, d) core. Float64; returns ``(d,)``."""
    _, ra = torch.linalg.qr(a.double().T)  # (d, d)
    _, rb = torch.linalg.qr(b.double().T)
    return torch.linalg.svdvals(ra @ rb.T)


# ---------------------------------------------------------------------------------------------
# Model geometry
# ---------------------------------------------------------------------------------------------
def attention_geometry(model: nn.Module) -> tuple[int, int, int]:
    """(n_heads, n_kv_heads, head_dim) from the model's config."""
    cfg = model.config
    if not hasattr(cfg, "num_attention_heads") and hasattr(cfg, "text_config"):
        cfg = cfg.text_config
    n_heads = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads)
    return n_heads, n_kv, head_dim


def _rows(stage: str, block: int, head: int, values: dict[str, float]) -> list[dict[str, Any]]:
    return [{"stage": stage, "block": block, "head": head, "statistic": k, "value": float(v)} for k, v in values.items()]


@torch.no_grad()
def weight_attention_statistics(model: nn.Module, stage: str = "dense", family: FamilySpec | None = None,
                                device: str | torch.device = "cpu", layer_level: bool = True) -> pd.DataFrame:
    """Weight-only attention statistics of every block (float64 on ``device``).

    Per query head h (rows ``head = h``): ``qk_entropy`` (nats, of W_Q^h^T W_K^{g(h)}),
    ``qk_entropy_norm`` (/ ln(head_dim)), ``kv_head`` (g(h)), ``v_entropy_head`` and
    ``v_rank_ratio_head`` of W_V^{g(h)} ``(head_dim, hidden)``. Per block (``head = -1``):
    ``v_entropy``, ``v_rank``, ``v_rank_ratio`` (rank / min dimension) of the full W_V
    ``(n_kv * head_dim, hidden)``, and with ``layer_level`` ``qk_entropy_layer`` of
    ``W_q W_k^T`` ``(n_heads * head_dim, n_kv * head_dim)`` (the notes' definition)."""
    family = family or family_for(model)
    n_heads, n_kv, d = attention_geometry(model)
    rows: list[dict[str, Any]] = []
    for i, block in enumerate(decoder_layers(model, family)):
        wq = get_attr_path(block, family.matrices["q"]).weight.detach().to(device, torch.float64)  # (n_heads*d, hidden)
        wk = get_attr_path(block, family.matrices["k"]).weight.detach().to(device, torch.float64)  # (n_kv*d, hidden)
        wv = get_attr_path(block, family.matrices["v"]).weight.detach().to(device, torch.float64)  # (n_kv*d, hidden)
        hidden = wq.shape[1]
        q_heads = wq.view(n_heads, d, hidden)
        k_heads = wk.view(n_kv, d, hidden)
        v_heads = wv.view(n_kv, d, hidden)
        v_head_stats = []
        for g in range(n_kv):
            sv = torch.linalg.svdvals(v_heads[g])
            v_head_stats.append((spectral_entropy(sv), numerical_rank(sv, (d, hidden)) / min(d, hidden)))
        for h in range(n_heads):
            g = kv_head_of(h, n_heads, n_kv)
            sv_qk = low_rank_product_singular_values(q_heads[h], k_heads[g])
            h_qk = spectral_entropy(sv_qk)
            rows += _rows(stage, i, h, {
                "kv_head": g,
                "qk_entropy": h_qk,
                "qk_entropy_norm": h_qk / math.log(d) if d > 1 else 0.0,
                "v_entropy_head": v_head_stats[g][0],
                "v_rank_ratio_head": v_head_stats[g][1],
            })
        sv_v = torch.linalg.svdvals(wv)
        rank = numerical_rank(sv_v, tuple(wv.shape))
        layer = {"v_entropy": spectral_entropy(sv_v), "v_rank": rank, "v_rank_ratio": rank / min(wv.shape)}
        if layer_level:
            layer["qk_entropy_layer"] = spectral_entropy(torch.linalg.svdvals(wq @ wk.T))
        rows += _rows(stage, i, LAYER_HEAD, layer)
    return pd.DataFrame(rows, columns=COLUMNS)


# ---------------------------------------------------------------------------------------------
# Attention probabilities on text
# ---------------------------------------------------------------------------------------------
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
                rows += _rows(stage, b, h, {"attn_entropy": ent[b, h], "attn_entropy_norm": ent_norm[b, h]})
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
    """Attention statistics of a :class:`pruning.models.LoadedModel` on the first ``tokens``
    tokens of ``dataset``'s test split (BOS per window for families that need it)."""
    from pruning.data import load_text, tokenize_text

    ids = tokenize_text(loaded.tokenizer, load_text(dataset, "test"))
    bos = loaded.tokenizer.bos_token_id if loaded.family.bos_each_window else None
    windows = evaluation_windows(ids, tokens, seqlen, bos)
    return attention_statistics(loaded.model, windows, stage, loaded.family, device=device, progress=progress)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean of every statistic over blocks and heads, per stage: ``(stage, statistic, value)``.
    For ``v_entropy``, ``v_rank_ratio`` and ``qk_entropy_layer`` this is the notes' '(Avg)'."""
    frame = frame[frame.statistic != "kv_head"]
    return frame.groupby(["stage", "statistic"], as_index=False, sort=True)["value"].mean()
