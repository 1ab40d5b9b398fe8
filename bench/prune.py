"""Speed and memory of block-sequential Wanda and SparseGPT on a random-weight model.

Default: LLaMA-7B shape (32 x hidden 4096, MLP 11008, vocab 32000) in float16, 128 x 2048 random
calibration tokens, ``--device cuda --offload``: the model stays on the CPU and one block at a time
moves to the GPU, so peak GPU memory ~ one block (~0.4 GB) + two activation buffers
(128 x 2048 x 4096 fp16 = 2 x 2.1 GB) + the block's Hessians (~0.7 GB fp32). Random weights are fair
for speed and memory, never for quality.

    .venv/bin/python bench/prune.py --device cuda --offload                   # H200, full 7B shape
    .venv/bin/python bench/prune.py --device cuda --offload --layers 4       # shorter; per-block times extrapolate
    .venv/bin/python bench/prune.py --device cpu --layers 2 --hidden 256 --intermediate 688 --heads 4 \\
        --vocab 1000 --nsamples 4 --seqlen 128 --dtype float32 --no-write     # CPU smoke run

Writes section ``prune_speed`` of bench/RESULTS.md (no duckdb/streamlit dependency).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._results import emit, markdown_table  # noqa: E402
from bench._shapes import DTYPES, add_shape_args, bench_device  # noqa: E402
from pruning.model.families import family_for, prunable_matrices  # noqa: E402
from pruning.model.load import LoadedModel, ModelSource  # noqa: E402
from pruning.model.placement import Compute  # noqa: E402
from pruning.run.prune import prune_model, uniform_sparsity  # noqa: E402
from pruning.model.synthetic import random_llama  # noqa: E402

log = logging.getLogger("bench.prune")


def packed_masks(model: torch.nn.Module) -> list[np.ndarray]:
    """Each prunable matrix's zero pattern, bit-packed on the host (a 7B shape: 0.8 GB)."""
    return [np.packbits((ref.module.weight.detach() == 0).cpu().numpy()) for ref in prunable_matrices(model)]


def mask_digest(masks: list[np.ndarray]) -> str:
    """sha256 (12 hex) of the packed zero patterns (:func:`packed_masks`), in order: equal digests, equal masks."""
    h = hashlib.sha256()
    for packed in masks:
        h.update(packed.tobytes())
    return h.hexdigest()[:12]


def build_model(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    """Random LLaMA of the requested shape on the CPU (initialised on the GPU when there is one: faster)."""
    init_device = device if device.type == "cuda" else torch.device("cpu")
    t0 = time.perf_counter()
    model = random_llama(
        hidden=args.hidden, layers=args.layers, intermediate=args.intermediate, heads=args.heads,
        vocab=args.vocab, seed=0, dtype=DTYPES[args.dtype], device=init_device, max_positions=max(4096, args.seqlen),
    )
    if args.offload or args.placement != "gpu" or device.type != "cuda":
        model.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    log.info("built random model (%.2f B parameters) in %.1f s", sum(p.numel() for p in model.parameters()) / 1e9,
             time.perf_counter() - t0)
    return model


@contextmanager
def sparsegpt_kernel(name: str) -> Iterator[None]:
    """``reference``: prune each matrix with the column-loop kernel (the code before issue 20), by
    swapping the registry's ``sparsegpt`` entry for one without group kernel for the duration."""
    if name == "fast":
        yield
        return
    from dataclasses import replace

    from pruning.methods.registry import get_method, method_registered
    from pruning.methods.sparsegpt import sparsegpt_prune

    def per_matrix(W, stats, sparsity, nm, options):
        return sparsegpt_prune(W, stats.hessian, sparsity, nm=nm, blocksize=options.blocksize,
                               percdamp=options.percdamp, reference=True)[0]

    reference = replace(get_method("sparsegpt"), kernel=per_matrix, group_kernel=None)
    with method_registered(reference, replace=True):
        yield


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--offload", action="store_true", help="model on the CPU, one block at a time on --device")
    p.add_argument("--placement", choices=["gpu", "offload", "auto"], default=None,
                   help="gpu | offload | auto (measured free memory; model starts on the CPU); --offload = offload")
    p.add_argument("--no-prefetch", action="store_true", help="offload with synchronous copies (the old path)")
    p.add_argument("--sparsegpt-kernel", choices=["fast", "reference"], default="fast",
                   help="reference: the per-matrix column loop (the kernel before issue 20)")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument("--methods", default="wanda,sparsegpt")
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--nm", default=None, help="e.g. 2:4")
    add_shape_args(p)
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--calib-batch", default="1",
                   help="comma list of samples per block call (calibration.batch_size), one row each; e.g. 1,8,32")
    p.add_argument("--stats-exit", default="on",
                   help="comma list of on|off: whether the statistics pass stops at the family's stats_exit "
                        "matrix (down_proj; off = the whole block, as before issue 32), one row each")
    p.add_argument("--section", default="prune_speed", help="RESULTS.md section to write")
    p.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = p.parse_args(argv)
    args.placement = args.placement or ("offload" if args.offload else "gpu")
    args.offload = args.placement == "offload"
    offload_arg = None if args.placement == "auto" else args.offload
    try:
        batches = [int(b) for b in args.calib_batch.split(",")]
        if any(b < 1 for b in batches):
            raise ValueError
    except ValueError:
        raise SystemExit(f"--calib-batch {args.calib_batch!r} is invalid; accepted: integers >= 1, comma-separated") from None
    exits = args.stats_exit.split(",")
    if not exits or any(e not in ("on", "off") for e in exits):
        raise SystemExit(f"--stats-exit {args.stats_exit!r} is invalid; accepted: on, off or on,off")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = bench_device(args.device)
    cuda = device.type == "cuda"

    model = build_model(args, device)
    loaded = LoadedModel(model, None, family_for(model), ModelSource("local", "random", "random-llama"), "random", 0.0)
    calib_ids = torch.randint(0, args.vocab, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    rows: list[dict] = []
    runs = [(m, b, e) for m in args.methods.split(",") for b in batches for e in exits]
    # every run starts from the same dense weights (CPU copy), needed only when there are several
    dense_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()} if len(runs) > 1 else None
    for method, batch, stats_exit in runs:
        if dense_state is not None:
            model.load_state_dict(dense_state)
        run_loaded = loaded if stats_exit == "on" else dataclasses.replace(
            loaded, family=dataclasses.replace(loaded.family, stats_exit=None))
        block_times: list[float] = []
        last = [time.perf_counter()]

        def progress(done: int, total: int) -> None:
            if cuda:
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            block_times.append(now - last[0])
            last[0] = now
            log.info("%s block %d/%d: %.2f s", method, done, total, block_times[-1])

        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        t0 = last[0] = time.perf_counter()
        with sparsegpt_kernel(args.sparsegpt_kernel):
            table = prune_model(run_loaded, method, uniform_sparsity(loaded, args.sparsity), calib_ids, nm=args.nm,
                                compute=Compute(str(device), offload=offload_arg, batch_size=batch),
                                prefetch=not args.no_prefetch, progress=progress)
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        overall = float((table.sparsity_achieved * table.numel).sum() / table.numel.sum())
        row = {
            "method": method + (f" {args.nm}" if args.nm else ""),
            "calib_batch": batch,
            "stats_exit": stats_exit,
            "blocks": args.layers,
            "wall_s": seconds,
            "s_per_block": sum(block_times[1:]) / max(1, len(block_times) - 1) if len(block_times) > 1 else seconds,
            "first_block_s": block_times[0] if block_times else float("nan"),
            "sparsity": overall,
            "placement": table.attrs.get("placement", "") + ("" if not args.offload or args.no_prefetch else "+prefetch"),
            "kernel": args.sparsegpt_kernel if method == "sparsegpt" else "",
        }
        if cuda:
            row["peak_gpu_GiB"] = (torch.cuda.max_memory_allocated(device)) / 2**30
            row["resident_before_GiB"] = base / 2**30
        row["est_32_blocks_s"] = row["first_block_s"] + row["s_per_block"] * (32 - 1)
        row["mask_digest"] = mask_digest(packed_masks(model))
        rows.append(row)
        log.info("placement: %s", table.attrs.get("placement_reason", ""))
        if args.offload and args.placement != "gpu":
            model.to("cpu")
        log.info("%s: %.1f s, %s", method, seconds, {k: v for k, v in row.items() if k != "method"})

    shape = (f"{args.layers} blocks x (hidden {args.hidden}, MLP {args.intermediate}, {args.heads} heads), vocab {args.vocab}, "
             f"{args.dtype}")
    body = (
        f"Random-weight LLaMA ({shape}); {args.nsamples} x {args.seqlen} random calibration tokens; "
        f"{args.sparsity:.0%} uniform; device {args.device}, placement {args.placement}"
        f"{'' if args.placement == 'gpu' else (' without prefetch' if args.no_prefetch else ' with prefetch')}. "
        "first_block_s includes capturing the block-0 inputs; est_32_blocks_s extrapolates to 32 blocks; "
        "stats_exit on: the statistics pass stops at down_proj's input (issue 32), off: the whole block; "
        "mask_digest: sha256 of the zero pattern (equal digests, equal masks).\n\n"
        + markdown_table(rows)
    )
    emit(body, {"rows": rows, "args": vars(args)}, args.section, args.json, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
