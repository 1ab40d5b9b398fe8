"""Issue 5's measurements on the offline SmolLM2-135M at a 70 % target:

1. the allocation tables of `QKVout` (block) and `QKVout + split` (linear on alpha_peak, eps 0.2),
   as `python -m pruning allocate` prints them (per-unit sparsity);
2. Wanda at 70 % with uniform, OWL (M=5, lambda=0.08) and linear eps=0.2 on alpha_peak
   (all seven types, block-wise), through the same `execute_run` that `python -m pruning run` uses.

CPU protocol (small, so it fits here): 32 x 512 calibration tokens from the wiki calibration split,
perplexity on the first 16 windows of 512 tokens of the wiki test split. No claim of a winner
beyond these numbers.

    .venv/bin/python -m bench.allocation_quality [--nsamples 32 --seqlen 512 --limit-windows 16]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from bench._results import markdown_table, write_section  # noqa: E402
from pruning.allocation import allocate, summarize  # noqa: E402
from pruning.config.run_config import AllocationConfig, RunConfig  # noqa: E402
from pruning.model.families import prunable_matrices  # noqa: E402
from pruning.model.load import load_model  # noqa: E402
from pruning.run.pipeline import execute_run  # noqa: E402
from pruning.run.spectra_cache import cached_weight_spectra  # noqa: E402
from pruning.spectral import pivot_for_allocation  # noqa: E402

log = logging.getLogger("bench.allocation_quality")


def allocation_tables(target: float = 0.7) -> str:
    """Per-unit sparsity of QKVout (block) and QKVout + split on the offline model."""
    loaded = load_model("smollm2-135m")
    refs = prunable_matrices(loaded.model, loaded.family)
    matrices = pd.DataFrame({"block": [r.block for r in refs], "matrix_type": [r.matrix_type for r in refs],
                             "name": [r.name for r in refs], "numel": [r.numel for r in refs]})
    pivot = pivot_for_allocation(cached_weight_spectra(loaded).table)
    matrices = matrices.merge(pivot[["name", "alpha_peak"]], on="name")
    out = []
    for preset in ("QKVout", "QKVout + split"):
        cfg = AllocationConfig(strategy="linear", preset=preset, metric="alpha_peak", epsilon=0.2)
        result = allocate(matrices, cfg, target)
        unit = summarize(result, by="unit")
        cols = [c for c in ("unit", "score", "ratio", "sparsity", "numel") if c in unit.columns]
        mean = float((result["sparsity"] * result["numel"]).sum() / result["numel"].sum())
        out.append(f"**{preset}** (linear, alpha_peak, eps 0.2, target {target}; weighted mean {mean:.12f})\n\n"
                   + markdown_table(unit[cols].round(4).to_dict("records")))
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--limit-windows", type=int, default=16)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tables = allocation_tables()
    print(tables)
    base = RunConfig.from_dict({
        "model": {"name": "smollm2-135m"},
        "calibration": {"dataset": "wiki", "nsamples": args.nsamples, "seqlen": args.seqlen, "seed": 0},
        "pruning": {"method": "wanda", "sparsity": 0.7},
        "evaluation": {"perplexity": ["wiki"], "seqlen": args.seqlen, "limit_windows": args.limit_windows},
    })
    variants = {
        "uniform": {"allocation.strategy": "uniform"},
        "OWL (M=5, lambda=0.08)": {"allocation.strategy": "owl"},
        "linear alpha_peak eps 0.2 (all types, block)": {"allocation.strategy": "linear", "allocation.preset": "all"},
    }
    rows = []
    for label, overrides in variants.items():
        config = base.with_overrides(overrides)
        t0 = time.perf_counter()
        outcome = execute_run(config, publish=False)
        rows.append({"allocation": label, "run_id": config.run_id, "wiki ppl": round(outcome.perplexity_of("wiki"), 3),
                     "wall s": round(time.perf_counter() - t0, 1)})
        log.info("%s", rows[-1])
    result = markdown_table(rows)
    print(result)
    if not args.no_write:
        write_section(
            "allocation_quality",
            f"Wanda at 70 % on SmolLM2-135M (CPU protocol: {args.nsamples} x {args.seqlen} calibration tokens, "
            f"wiki test ppl over the first {args.limit_windows} windows of {args.seqlen}).\n\n{result}\n\n"
            f"Allocation tables at 70 % (per unit):\n\n{tables}",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
