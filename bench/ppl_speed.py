"""Perplexity throughput: a random-weight model of LLaMA-7B shape on ~340k tokens at seqlen 2048
(the WikiText-2 test size), through pruning.evaluation.perplexity — wall time, tokens/s and peak
GPU memory. Random weights and random tokens: fair for speed, never for quality.

    python -m bench.ppl_speed --device cuda                       # H200, full 7B shape
    python -m bench.ppl_speed --device cpu --layers 2 --hidden 256 --intermediate 688 --heads 4 \\
        --vocab 1000 --tokens 8192 --seqlen 512 --no-write        # CPU smoke run

Writes section ``ppl_speed`` of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench._results import markdown_table, write_section  # noqa: E402
from bench._shapes import DTYPES, add_shape_args  # noqa: E402
from pruning.evaluation.perplexity import perplexity  # noqa: E402
from pruning.model.synthetic import random_llama  # noqa: E402

log = logging.getLogger("bench.ppl_speed")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    add_shape_args(p)
    p.add_argument("--tokens", type=int, default=340_000)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device)
    model = random_llama(hidden=args.hidden, layers=args.layers, intermediate=args.intermediate, heads=args.heads,
                         vocab=args.vocab, seed=0, dtype=DTYPES[args.dtype], device=device,
                         max_positions=max(4096, args.seqlen))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.tokens,), generator=gen)
    rows = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        res = perplexity(model, ids, seqlen=args.seqlen, batch_size=bs, dataset="random")
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        rows.append({"batch size": bs, "windows": res.n_windows, "tokens": res.n_windows * args.seqlen,
                     "wall s": round(wall, 2), "tokens/s": round(res.n_windows * args.seqlen / wall),
                     "peak GPU GiB": round(peak, 2), "ppl (random)": round(res.ppl, 1)})
        log.info("batch %d: %s", bs, rows[-1])
    table = markdown_table(rows)
    print(table)
    if not args.no_write:
        shape = f"{args.layers} blocks, hidden {args.hidden}, MLP {args.intermediate}, vocab {args.vocab}, {args.dtype}"
        write_section("ppl_speed", f"Random-weight model ({shape}), {args.tokens} random tokens, seqlen {args.seqlen}, "
                                   f"model resident on {args.device}.\n\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
