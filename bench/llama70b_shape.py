"""LLaMA-70B shape on one GPU: stream a sharded checkpoint block by block and prune it.

Writes a random-weight LLaMA-70B-shape checkpoint (hidden 8192, MLP 28672, 64 heads, 8 KV heads,
vocab 32000, bf16) with only ``--blocks`` blocks (default 8; the embeddings, final norm and LM head
included) as Hugging Face shards, then prunes it with Wanda and SparseGPT through
:func:`pruning.run.streaming.stream_prune` with 128 x 2048 calibration tokens: peak GPU memory
(target <= 24 GB), seconds per block split into load, compute and write wait (the shards are written
by a background thread: issue 32, target Wanda <= 2.0 s/block, SparseGPT <= 6 s/block) and the
extrapolation to 80 blocks. ``--max-pending-shards 0`` writes synchronously, as before the writer thread.

    python3 bench/llama70b_shape.py --device cuda --dir /tmp/l70                 # H200
    .venv/bin/python bench/llama70b_shape.py --device cpu --tiny --no-write      # CPU smoke
Writes section ``llama70b_shape`` of bench/RESULTS.md and JSON to ``--json``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench._results import emit, markdown_table  # noqa: E402
from bench._shapes import DTYPES  # noqa: E402
from pruning.run.streaming import stream_prune, write_random_checkpoint  # noqa: E402

log = logging.getLogger("bench.llama70b_shape")


def steady_mean(per_block: list[float]) -> float:
    """Mean over blocks 2.. (block 1 pays for warm-up: kernels, pinned allocations); block 1 alone if only one."""
    rest = per_block[1:] or per_block
    return sum(rest) / len(rest)


def scaled(n_bytes: int | None, unit: float) -> float:
    """``n_bytes / unit``; NaN where nothing was measured (CPU runs)."""
    return n_bytes / unit if n_bytes is not None else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dir", default="/tmp/llama70b-shape", help="where the checkpoint and pruned copies go")
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--total-blocks", type=int, default=80, help="extrapolate to this many blocks")
    p.add_argument("--hidden", type=int, default=8192)
    p.add_argument("--intermediate", type=int, default=28672)
    p.add_argument("--heads", type=int, default=64)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    p.add_argument("--methods", default="wanda,sparsegpt")
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--tiny", action="store_true", help="2 blocks of hidden 64, GQA 4/2 heads, 4 x 32 tokens")
    p.add_argument("--keep", action="store_true", help="keep the written checkpoints")
    p.add_argument("--json", default=None)
    p.add_argument("--section", default="llama70b_shape")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--max-pending-shards", type=int, default=2,
                   help="shards waiting for the background writer (0: write synchronously in the block loop)")
    args = p.parse_args(argv)
    if args.tiny:
        args.blocks, args.hidden, args.intermediate, args.heads, args.kv_heads = 2, 64, 128, 4, 2
        args.vocab, args.nsamples, args.seqlen, args.dtype = 256, 4, 32, "float32"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    root = Path(args.dir)
    src = root / "source"
    t0 = time.perf_counter()
    write_random_checkpoint(src, hidden=args.hidden, intermediate=args.intermediate, heads=args.heads,
                            kv_heads=args.kv_heads, blocks=args.blocks, vocab=args.vocab, dtype=DTYPES[args.dtype],
                            init_device=dev if cuda else "cpu",
                            progress=lambda d, n: log.info("wrote block %d/%d", d, n))
    write_s = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in src.glob("*.safetensors"))
    log.info("checkpoint: %.1f GiB in %.1f s", size / 2**30, write_s)
    calib_ids = torch.randint(0, args.vocab, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    rows = []
    for method in args.methods.split(","):
        if cuda:
            torch.cuda.empty_cache()
        t0 = time.perf_counter()
        report = stream_prune(src, root / f"pruned-{method}", method, args.sparsity, calib_ids, device=dev,
                              max_pending_shards=args.max_pending_shards)
        wall = time.perf_counter() - t0
        per_block = report.seconds_per_block
        steady = steady_mean(per_block)
        table = report.table
        shard_writes = list(report.shard_write_seconds.values())
        rows.append({
            "method": method,
            "blocks": args.blocks,
            "pending_shards": args.max_pending_shards,
            "wall_s": wall,
            "capture_s": report.capture_seconds,
            "s_per_block": steady,
            "load_s_per_block": steady_mean(report.load_seconds),
            "compute_s_per_block": steady_mean(report.compute_seconds),
            "write_wait_s_per_block": steady_mean(report.write_wait_seconds),
            "final_write_wait_s": report.final_write_wait_seconds,
            "shard_write_s": sum(shard_writes) / len(shard_writes),
            "sparsity": float((table.sparsity_achieved * table.numel).sum() / table.numel.sum()),
            "peak_gpu_GiB": scaled(report.peak_gpu_bytes, 2**30),
            "peak_gpu_GB": scaled(report.peak_gpu_bytes, 1e9),
            "peak_pinned_GiB": scaled(report.peak_pinned_bytes, 2**30),
            f"est_{args.total_blocks}_blocks_s": (report.capture_seconds + per_block[0]
                                                  + steady * (args.total_blocks - 1) + report.final_write_wait_seconds),
        })
        log.info("%s: %s", method, rows[-1])
        log.info("%s: compute %.2f s/block, write-wait %.2f s/block (%.2f s/block in all)", method,
                 rows[-1]["compute_s_per_block"], rows[-1]["write_wait_s_per_block"], steady)
        if not args.keep:
            shutil.rmtree(root / f"pruned-{method}", ignore_errors=True)
    if not args.keep:
        shutil.rmtree(src, ignore_errors=True)
    body = (
        f"Random-weight LLaMA-70B shape ({args.blocks} of {args.total_blocks} blocks written: hidden {args.hidden}, "
        f"MLP {args.intermediate}, {args.heads} heads / {args.kv_heads} KV heads, vocab {args.vocab}, {args.dtype}; "
        f"{size / 2**30:.1f} GiB of shards written in {write_s:.0f} s), streamed block by block from the shards to "
        f"{dev} and back to new shards; {args.nsamples} x {args.seqlen} random calibration tokens, "
        f"{args.sparsity:.0%} unstructured. Shards written by a background thread (at most "
        f"{args.max_pending_shards} waiting; 0 = synchronous): write_wait is the block loop's time waiting for it, "
        f"shard_write_s the writer's own seconds per shard. Per-block figures: mean over blocks 2.., "
        f"final_write_wait_s: after the last block. Targets: peak GPU memory <= 24 GB, Wanda <= 2.0 s/block, "
        f"SparseGPT <= 6 s/block.\n\n" + markdown_table(rows)
    )
    emit(body, {"rows": rows, "args": vars(args)}, args.section, args.json, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
