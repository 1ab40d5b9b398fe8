"""How much the count rule matters: this project prunes exactly round(n * s) weights per comparison
group; the reference codes threshold at a sorted value instead.

* Wanda, OWL, AlphaPruning (locuslab/wanda ``prune_wanda``): ``sort(...)[:, :int(n * s)]`` per
  output row -> floor(n * s);
* SparseGPT (IST-DASLab/sparsegpt) and the Wanda repo's magnitude: ``sort(...)[int(n * s)]`` as a
  threshold with ``<=`` -> int(n * s) + 1, plus every tie at the threshold.

Part 1 (no model needed): for the SmolLM2-135M and LLaMA-7B matrix shapes at 50/60/70 %, how many
weights per group each rule prunes and the change in achieved sparsity. Part 2: SmolLM2-135M
Wanda, uniform 60 % (where round and floor differ by one weight per row), pruned with each rule
on the same calibration, wiki perplexity on the first ``--windows`` windows of 2048 tokens::

    python bench/count_rule.py [--nsamples 16] [--windows 16]
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench._results import markdown_table, write_section  # noqa: E402

log = logging.getLogger("bench.count_rule")

# (matrix type, out, in) of one block; Wanda groups are rows of length `in`
SHAPES = {
    "SmolLM2-135M": [("q", 576, 576), ("k", 192, 576), ("v", 192, 576), ("o", 576, 576),
                     ("gate", 1536, 576), ("up", 1536, 576), ("down", 576, 1536)],
    "LLaMA-7B": [("q", 4096, 4096), ("k", 4096, 4096), ("v", 4096, 4096), ("o", 4096, 4096),
                 ("gate", 11008, 4096), ("up", 11008, 4096), ("down", 4096, 11008)],
}


def _blocks(n: int, size: int = 128) -> list[int]:
    """Widths of SparseGPT's column blocks of a row of ``n`` (the last one may be narrower)."""
    return [size] * (n // size) + ([n % size] if n % size else [])


def counts_table() -> list[dict]:
    """Achieved sparsity of one block under each rule (ties ignored: they only add to SparseGPT's)
    and its difference to this project's exact rule, in percentage points."""
    rows = []
    for model, shapes in SHAPES.items():
        total = sum(o * i for _, o, i in shapes)
        for s in (0.5, 0.6, 0.7):
            # Wanda: one group per output row of `in` weights
            exact = sum(o * round(i * s) for _, o, i in shapes) / total
            floor = sum(o * math.floor(i * s) for _, o, i in shapes) / total
            # SparseGPT: one group per column block of all rows
            exact_sgpt = sum(round(o * w * s) for _, o, i in shapes for w in _blocks(i)) / total
            sgpt = sum(int(o * w * s) + 1 for _, o, i in shapes for w in _blocks(i)) / total
            rows.append({
                "shapes": model, "target": f"{s:.0%}",
                "Wanda groups: round(n·s) (here)": f"{exact:.6f}",
                "floor(n·s) (Wanda, OWL, AlphaPruning)": f"{floor:.6f} ({(floor - exact) * 100:+.4f} pt)",
                "SparseGPT groups: round(n·s) (here)": f"{exact_sgpt:.6f}",
                "int(n·s)+1 (SparseGPT)": f"{sgpt:.6f} ({(sgpt - exact_sgpt) * 100:+.5f} pt)",
            })
    return rows


def measured(args: argparse.Namespace) -> list[dict]:
    """Wanda uniform at ``args.sparsity`` on SmolLM2 with the exact and the floor rule."""
    from pruning.text.data import calibration_batch, load_text, tokenize_text
    from pruning.evaluation.perplexity import perplexity
    from pruning.model.families import prunable_matrices
    from pruning.methods import select
    from pruning.model.load import load_model
    from pruning.run.prune import prune_model

    rows = []
    ids = None
    calib = None
    for rule, count in (("exact round(n·s)", select.prune_count),
                        ("floor(n·s) (Wanda reference)", lambda n, s: int(math.floor(s * n)))):
        loaded = load_model(args.model)
        if calib is None:
            calib = calibration_batch(loaded.tokenizer, "wiki", args.nsamples, args.seqlen, 0)
            ids = tokenize_text(loaded.tokenizer, load_text("wiki", "test"))
        sparsity = {r.name: args.sparsity for r in prunable_matrices(loaded.model, loaded.family)}
        t0 = time.perf_counter()
        with mock.patch.object(select, "prune_count", count):
            achieved = prune_model(loaded, "wanda", sparsity, calib)
        prune_s = time.perf_counter() - t0
        weights = achieved["numel"] if "numel" in achieved else None
        mean = float((achieved["sparsity_achieved"] * weights).sum() / weights.sum()) if weights is not None else math.nan
        with torch.no_grad():
            res = perplexity(loaded.model, ids, 2048, args.windows, 1, None, "wiki")
        rows.append({"rule": rule, "achieved sparsity": f"{mean:.6f}", "wiki ppl": f"{res.ppl:.4f}",
                     "windows": f"{res.n_windows} × 2048", "prune_s": f"{prune_s:.1f}"})
        log.info("%s: sparsity %.6f, ppl %.4f", rule, mean, res.ppl)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--sparsity", type=float, default=0.6)
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--skip-measured", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    body = ("Achieved sparsity of one transformer block under each count rule (uniform target; ties, which "
            "only add to the SparseGPT reference's count, ignored), and each reference rule's difference to this "
            "project's exact count in percentage points:\n\n" + markdown_table(counts_table()) + "\n")
    if not args.skip_measured:
        body += (f"\nMeasured: {args.model}, Wanda, uniform {args.sparsity:.0%}, the same {args.nsamples} × "
                 f"{args.seqlen} wiki calibration tokens (seed 0) for both rules, wiki test perplexity on the first "
                 f"{args.windows} windows (a budgeted protocol: compare the two rows with each other only):\n\n"
                 + markdown_table(measured(args)) + "\n")
    print(body)
    if not args.no_write:
        write_section("count-rule", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
