"""Attention statistics from the weights alone: spectral entropy of each query head's bilinear form
``W_QK^h = W_Q^h^T W_K^{g(h)}`` and of ``W_V`` (per KV head and per block), numerical rank of ``W_V``.
Definitions and the link to the notes' LLaMA averages: docs/attention.md."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from pruning.errors import ConfigError
from pruning.model.families import FamilySpec, decoder_layers, family_for, get_attr_path

COLUMNS = ["stage", "block", "head", "statistic", "value"]
LAYER_HEAD = -1  # value of `head` for statistics of a whole block


# ---- pure kernels -------------------------------------------------------------------------------
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


# ---- model geometry and the tidy rows ----------------------------------------------------------
def attention_geometry(model: nn.Module) -> tuple[int, int, int]:
    """(n_heads, n_kv_heads, head_dim) from the model's config."""
    cfg = model.config
    if not hasattr(cfg, "num_attention_heads") and hasattr(cfg, "text_config"):
        cfg = cfg.text_config
    n_heads = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads)
    return n_heads, n_kv, head_dim


def statistic_rows(stage: str, block: int, head: int, values: dict[str, float]) -> list[dict[str, Any]]:
    """Tidy rows ``(stage, block, head, statistic, value)``, one per entry of ``values``."""
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
            rows += statistic_rows(stage, i, h, {
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
        rows += statistic_rows(stage, i, LAYER_HEAD, layer)
    return pd.DataFrame(rows, columns=COLUMNS)
