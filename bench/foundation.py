"""Issue 2's figures on the offline SmolLM2-135M: cached-model load time, and perplexity on the
offline Wikipedia test split at seqlen 512 (8 windows) and 2048 (16 windows), with wall time.

    .venv/bin/python -m bench.foundation
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._results import markdown_table, write_section  # noqa: E402
from pruning.text.data import load_text, tokenize_text  # noqa: E402
from pruning.evaluation.perplexity import perplexity  # noqa: E402
from pruning.model.load import load_model  # noqa: E402


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    loads = []
    for _ in range(3):
        t0 = time.perf_counter()
        loaded = load_model("smollm2-135m")
        loads.append(time.perf_counter() - t0)
    ids = tokenize_text(loaded.tokenizer, load_text("wiki", "test"))
    rows = []
    for seqlen, windows in ((512, 8), (2048, 16)):
        t0 = time.perf_counter()
        res = perplexity(loaded.model, ids, seqlen=seqlen, limit_windows=windows, dataset="wiki")
        rows.append({"seqlen": seqlen, "windows": f"{res.n_windows}/{res.total_windows}", "scored tokens": res.n_tokens,
                     "ppl": round(res.ppl, 3), "wall s": round(time.perf_counter() - t0, 1)})
    body = (f"Cached safetensors load (3 loads): {', '.join(f'{t:.2f}' for t in loads)} s; "
            f"wiki test split: {ids.numel()} tokens.\n\n" + markdown_table(rows))
    print(body)
    write_section("foundation", body, command="python -m bench.foundation "
                  "(= python -m pruning ppl --model smollm2-135m --dataset wiki --seqlen N --limit-windows K)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
