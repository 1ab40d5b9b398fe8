"""Quality check on the offline SmolLM2-135M: 50% uniform sparsity with magnitude, Wanda and
SparseGPT; perplexity on the held-out Wikipedia split. Expected: finite, SparseGPT <= Wanda < magnitude
(the ordering of Sun et al. 2023, Table 3, and Frantar & Alistarh 2023).

    .venv/bin/python bench/prune_quality.py [--nsamples 32 --seqlen 512 --eval-seqlen 512 --limit-windows 16]

Writes section ``prune_quality`` of bench/RESULTS.md; exits 1 when the ordering does not hold.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench._results import markdown_table, write_section  # noqa: E402
from pruning.text.data import calibration_batch, load_text, tokenize_text  # noqa: E402
from pruning.evaluation.perplexity import perplexity  # noqa: E402
from pruning.model.load import load_model  # noqa: E402
from pruning.run.prune import prune_model, uniform_sparsity  # noqa: E402

log = logging.getLogger("bench.prune_quality")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--methods", default="magnitude,wanda,sparsegpt")
    p.add_argument("--calib", default="wiki")
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval", default="wiki")
    p.add_argument("--eval-seqlen", type=int, default=512)
    p.add_argument("--limit-windows", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    dense = load_model(args.model)
    calib_ids = calibration_batch(dense.tokenizer, args.calib, args.nsamples, args.seqlen, args.seed)
    test_ids = tokenize_text(dense.tokenizer, load_text(args.eval, "test"))
    rows: list[dict] = []

    def evaluate(model: torch.nn.Module) -> tuple[float, float]:
        t0 = time.perf_counter()
        ppl = perplexity(model, test_ids, args.eval_seqlen, args.limit_windows, dataset=args.eval).ppl
        return ppl, time.perf_counter() - t0

    ppl, eval_s = evaluate(dense.model)
    rows.append({"method": "dense", "sparsity": 0.0, "ppl": ppl, "prune_s": 0.0, "eval_s": eval_s})
    for method in args.methods.split(","):
        loaded = dataclasses.replace(dense, model=copy.deepcopy(dense.model))
        t0 = time.perf_counter()
        table = prune_model(loaded, method, uniform_sparsity(loaded, args.sparsity), calib_ids)
        prune_s = time.perf_counter() - t0
        overall = float((table.sparsity_achieved * table.numel).sum() / table.numel.sum())
        ppl, eval_s = evaluate(loaded.model)
        rows.append({"method": method, "sparsity": overall, "ppl": ppl, "prune_s": prune_s, "eval_s": eval_s})
        log.info("%s: ppl %.3f (prune %.1f s, eval %.1f s)", method, ppl, prune_s, eval_s)
        del loaded
    total = time.perf_counter() - t_start

    by = {r["method"]: r["ppl"] for r in rows}
    finite = all(math.isfinite(v) for v in by.values())
    ordered = None
    if {"magnitude", "wanda", "sparsegpt"} <= set(by):
        ordered = by["sparsegpt"] <= by["wanda"] < by["magnitude"]
    verdict = (
        f"finite: {'yes' if finite else 'NO'}; SparseGPT <= Wanda < magnitude: "
        f"{'n/a' if ordered is None else ('yes' if ordered else 'NO')}"
    )
    body = (
        f"{args.model}, {args.sparsity:.0%} uniform; calibration {args.nsamples} x {args.seqlen} tokens of "
        f"{args.calib!r} (seed {args.seed}); perplexity on {args.eval!r} test, first {args.limit_windows} windows of "
        f"{args.eval_seqlen} tokens; {torch.get_num_threads()} CPU threads; total {total:.0f} s.\n\n"
        + markdown_table(rows, ["method", "sparsity", "ppl", "prune_s", "eval_s"])
        + f"\n\n{verdict}\n"
    )
    print(body)
    if not args.no_write:
        write_section("prune_quality", body)
    return 0 if finite and ordered is not False else 1


if __name__ == "__main__":
    raise SystemExit(main())
