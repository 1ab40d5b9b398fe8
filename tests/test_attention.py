"""Attention statistics: entropy kernels, GQA head mapping, weight spectra, eager fallback."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from pruning.attention import (
    COLUMNS,
    attention_entropy,
    attention_entropy_from_probs,
    attention_probabilities,
    attention_statistics,
    evaluation_windows,
    kv_head_of,
    low_rank_product_singular_values,
    numerical_rank,
    spectral_entropy,
    summary,
    weight_attention_statistics,
)
from pruning.errors import ConfigError
from pruning.model.synthetic import random_llama

T = 12


def _window(vocab: int = 256, length: int = T, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(seed))


def _stat(frame, block: int, head: int, statistic: str) -> float:
    rows = frame[(frame.block == block) & (frame["head"] == head) & (frame.statistic == statistic)]
    assert len(rows) == 1, (block, head, statistic)
    return float(rows.value.iloc[0])


# ---- pure kernels ---------------------------------------------------------------------------
def test_uniform_causal_pattern_entropy_is_log_visible_keys() -> None:
    visible = torch.tril(torch.ones(T, T))
    probs = visible / visible.sum(-1, keepdim=True)  # row t uniform over keys 0..t
    per_query = attention_entropy_from_probs(probs)
    expected = torch.log(torch.arange(1, T + 1, dtype=torch.float32))
    torch.testing.assert_close(per_query, expected)
    assert per_query.mean().item() == pytest.approx(sum(math.log(t + 1) for t in range(T)) / T, rel=1e-6)
    # not ln(T) for every row (the causal mask matters)
    assert per_query.mean().item() < math.log(T) - 0.5


def test_one_hot_pattern_has_zero_entropy() -> None:
    probs = torch.zeros(2, 3, T, T)
    probs[..., 0] = 1.0  # every query attends only to the first key
    assert attention_entropy_from_probs(probs).abs().max().item() == 0.0


def test_spectral_entropy_bounds() -> None:
    assert spectral_entropy(torch.ones(16)) == pytest.approx(math.log(16))
    assert spectral_entropy(torch.tensor([3.0, 0.0, 0.0])) == 0.0
    # sigma^2 normalisation, not sigma: sigma = (2, 1) -> p = (0.8, 0.2)
    assert spectral_entropy(torch.tensor([2.0, 1.0])) == pytest.approx(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)))


def test_low_rank_product_singular_values_match_dense_svd() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 40, generator=gen), torch.randn(8, 40, generator=gen)
    dense = torch.linalg.svdvals(a.double().T @ b.double())[:8]
    torch.testing.assert_close(low_rank_product_singular_values(a, b), dense, rtol=1e-8, atol=1e-8)


def test_gqa_head_mapping() -> None:
    assert [kv_head_of(h, 4, 2) for h in range(4)] == [0, 0, 1, 1]
    assert [kv_head_of(h, 9, 3) for h in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ConfigError):
        kv_head_of(0, 9, 2)


# ---- weight statistics on the tiny GQA model ------------------------------------------------
@torch.no_grad()
def test_v_rank_of_rank_deficient_wv(tiny_llama) -> None:
    v_proj = tiny_llama.model.layers[0].self_attn.v_proj  # (2 kv heads * 16, 64)
    gen = torch.Generator().manual_seed(3)
    v_proj.weight.copy_(torch.randn(32, 5, generator=gen) @ torch.randn(5, 64, generator=gen))
    frame = weight_attention_statistics(tiny_llama, "dense")
    assert _stat(frame, 0, -1, "v_rank") == 5
    assert _stat(frame, 0, -1, "v_rank_ratio") == pytest.approx(5 / 32)  # rank / min(out, in)
    assert _stat(frame, 1, -1, "v_rank") == 32  # untouched block: full rank
    assert numerical_rank(torch.tensor([1.0, 1e-3, 1e-9]), (3, 3)) == 2


@torch.no_grad()
def test_qk_and_v_heads_follow_gqa_groups(tiny_llama) -> None:
    attn = tiny_llama.model.layers[0].self_attn
    d = attn.head_dim  # 16
    gen = torch.Generator().manual_seed(4)
    # KV head 0: rank-one keys and values; KV head 1 stays random (full rank)
    attn.k_proj.weight[:d].copy_(torch.randn(d, 1, generator=gen) @ torch.randn(1, 64, generator=gen))
    attn.v_proj.weight[:d].copy_(torch.randn(d, 1, generator=gen) @ torch.randn(1, 64, generator=gen))
    frame = weight_attention_statistics(tiny_llama, "dense")
    for head, kv in [(0, 0), (1, 0), (2, 1), (3, 1)]:
        assert _stat(frame, 0, head, "kv_head") == kv
    # query heads 0, 1 read KV head 0 (rank one -> entropy 0); heads 2, 3 read KV head 1
    assert _stat(frame, 0, 0, "qk_entropy") == pytest.approx(0.0, abs=1e-6)
    assert _stat(frame, 0, 1, "qk_entropy") == pytest.approx(0.0, abs=1e-6)
    assert _stat(frame, 0, 2, "qk_entropy") > 1.0
    assert _stat(frame, 0, 3, "qk_entropy") > 1.0
    assert _stat(frame, 0, 1, "v_entropy_head") == pytest.approx(0.0, abs=1e-6)
    assert _stat(frame, 0, 2, "v_entropy_head") > 1.0
    assert _stat(frame, 0, 3, "qk_entropy") <= math.log(d) + 1e-9
    # brute force for head 3: W_Q^3^T W_K^1 (64 x 64)
    wq = attn.q_proj.weight.double().view(4, d, 64)[3]
    wk = attn.k_proj.weight.double().view(2, d, 64)[1]
    assert _stat(frame, 0, 3, "qk_entropy") == pytest.approx(spectral_entropy(torch.linalg.svdvals(wq.T @ wk)), rel=1e-9)


# ---- attention probabilities on text --------------------------------------------------------
@torch.no_grad()
def test_measured_probabilities_match_hand_softmax(tiny_llama) -> None:
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    block, head = 1, 3  # head 3 reads KV head 1 under GQA (4 heads / 2 KV heads)
    window = _window()
    attn = tiny_llama.model.layers[block].self_attn
    seen: dict = {}

    def grab(_module, args, kwargs):
        seen["x"] = kwargs.get("hidden_states", args[0] if args else None)
        seen["pos"] = kwargs["position_embeddings"]

    handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        measured = attention_probabilities(tiny_llama, window, block)  # (1, 4, T, T)
    finally:
        handle.remove()
    x = seen["x"]  # (1, T, 64): input of the attention (after the block's RMSNorm)
    d = attn.head_dim
    q = (x @ attn.q_proj.weight.T).view(1, T, 4, d).transpose(1, 2)
    k = (x @ attn.k_proj.weight.T).view(1, T, 2, d).transpose(1, 2)
    cos, sin = seen["pos"]
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    logits = q[0, head] @ k[0, head // 2].T / math.sqrt(d)  # (T, T)
    logits = logits.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    expected = torch.softmax(logits, dim=-1)
    torch.testing.assert_close(measured[0, head], expected, rtol=1e-5, atol=1e-6)
    assert measured[0, head].triu(1).abs().max().item() == 0.0
    # the wrong KV head (head % n_kv = 1 happens to coincide; use head 2 -> kv 1 vs 2 % 2 = 0)
    wrong = torch.softmax((q[0, 2] @ k[0, 0].T / math.sqrt(d)).masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")), -1)
    assert not torch.allclose(measured[0, 2], wrong, atol=1e-4)
    # and the pipeline's entropy is the mean over query positions of these rows
    ent, _ = attention_entropy(tiny_llama, window)
    assert ent[block, head].item() == pytest.approx(attention_entropy_from_probs(expected).mean().item(), rel=1e-5)


def test_sdpa_model_falls_back_to_eager_and_says_so(tiny_llama, caplog) -> None:
    window = _window()
    eager_frame = attention_statistics(tiny_llama, window, "dense")
    tiny_llama.set_attn_implementation("sdpa")
    with caplog.at_level(logging.WARNING, logger="pruning.attention"):
        frame = attention_statistics(tiny_llama, window, "pruned")
    assert "switching to 'eager'" in caplog.text
    assert tiny_llama.config._attn_implementation == "sdpa"  # restored
    assert frame.attrs["attn_implementation"] == "sdpa" and frame.attrs["measured_with"] == "eager"
    a = eager_frame[eager_frame.statistic == "attn_entropy"].value.to_numpy()
    b = frame[frame.statistic == "attn_entropy"].value.to_numpy()
    assert (b > 0).all()
    assert a == pytest.approx(b, rel=1e-5)


def test_missing_probabilities_raise_instead_of_zeros(tiny_llama) -> None:
    attn = tiny_llama.model.layers[1].self_attn
    handle = attn.register_forward_hook(lambda _m, _i, out: (out[0], None))  # a kernel hiding them
    try:
        with pytest.raises(RuntimeError, match="no attention probabilities"):
            attention_entropy(tiny_llama, _window())
    finally:
        handle.remove()


def test_tidy_frame_shape(tiny_llama) -> None:
    ids = torch.arange(40) % 256
    windows = evaluation_windows(ids, tokens=32, seqlen=16, bos_token_id=1)
    assert windows.shape == (2, 16) and (windows[:, 0] == 1).all()
    frame = attention_statistics(tiny_llama, windows, "dense")
    assert list(frame.columns) == COLUMNS
    per_head = {"attn_entropy", "attn_entropy_norm", "qk_entropy", "qk_entropy_norm", "kv_head", "v_entropy_head", "v_rank_ratio_head"}
    layer = {"v_entropy", "v_rank", "v_rank_ratio", "qk_entropy_layer"}
    assert set(frame[frame["head"] >= 0].statistic) == per_head
    assert set(frame[frame["head"] == -1].statistic) == layer
    assert len(frame) == 2 * (4 * len(per_head) + len(layer))
    ent = frame[frame.statistic == "attn_entropy"].value
    assert ((ent > 0) & (ent <= math.log(16))).all()
    assert set(summary(frame).statistic) == (per_head | layer) - {"kv_head"}
    with pytest.raises(ConfigError):
        evaluation_windows(ids, tokens=64)


def test_random_model_attention_is_nearly_uniform() -> None:
    """Tiny random weights give logits near 0: entropy close to the uniform causal value."""
    model = random_llama(hidden=64, layers=1, intermediate=64, heads=4, kv_heads=4, vocab=256, seed=2)
    ent, norm = attention_entropy(model, _window(length=32))
    uniform = sum(math.log(t + 1) for t in range(32)) / 32
    assert ent.max().item() <= uniform + 1e-6
    assert ent.min().item() > 0.9 * uniform
    assert norm.max().item() <= 1.0 + 1e-9
