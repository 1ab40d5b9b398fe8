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

The package: :mod:`.weights` (statistics of the weights), :mod:`.entropy` (entropy of the attention
probabilities on text) and :mod:`.table` (both as one tidy frame for a run).
"""

from pruning.attention.entropy import (
    EAGER, attention_entropy, attention_entropy_from_probs, attention_probabilities, attn_implementation,
    eager_attention, evaluation_windows,
)
from pruning.attention.table import attention_statistics, attention_table, summary
from pruning.attention.weights import (
    COLUMNS, LAYER_HEAD, attention_geometry, kv_head_of, low_rank_product_singular_values, numerical_rank,
    spectral_entropy, weight_attention_statistics,
)

__all__ = [
    "COLUMNS", "EAGER", "LAYER_HEAD", "attention_entropy", "attention_entropy_from_probs", "attention_geometry",
    "attention_probabilities", "attention_statistics", "attention_table", "attn_implementation", "eager_attention",
    "evaluation_windows", "kv_head_of", "low_rank_product_singular_values", "numerical_rank", "spectral_entropy",
    "summary", "weight_attention_statistics",
]
