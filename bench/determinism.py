"""Is pruning on this device bitwise repeatable? Prune the same random-weight model with the same
calibration ids twice (fresh copies of the same weights) and compare every pruned weight.

A SmolLM2-135M-shaped model (30 blocks, hidden 576, MLP 1536, 9/3 heads) at 70 % unstructured, for
Wanda and SparseGPT. Answers whether run-to-run differences between two GPU sessions of the same
config can come from the kernels themselves (docs/FINDINGS.md, "What changed")::

    python bench/determinism.py --device cuda     # on the H200
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench._results import markdown_table, write_section  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from pruning.model.families import family_for, prunable_matrices
    from pruning.model.load import LoadedModel, ModelSource
    from pruning.model.placement import Compute
    from pruning.run.prune import prune_model
    from pruning.model.synthetic import random_llama

    base = random_llama(hidden=576, layers=args.layers, intermediate=1536, heads=9, kv_heads=3, vocab=49152, seed=0)
    calib = torch.randint(0, 49152, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    rows = []
    for method in ("wanda", "sparsegpt"):
        weights = []
        seconds = []
        for _ in range(2):
            model = copy.deepcopy(base).to(args.device)
            loaded = LoadedModel(model, None, family_for(model), ModelSource("local", "random", "random-smollm2-shape"),
                                 "determinism", 0.0)
            sparsity = {r.name: 0.7 for r in prunable_matrices(model, loaded.family)}
            t0 = time.perf_counter()
            prune_model(loaded, method, sparsity, calib, compute=Compute(args.device, offload=False))
            seconds.append(time.perf_counter() - t0)
            weights.append({r.name: r.module.weight.detach().cpu().clone() for r in prunable_matrices(model, loaded.family)})
        a, b = weights
        differ = [n for n in a if not torch.equal(a[n], b[n])]
        masks = sum(int(((a[n] == 0) != (b[n] == 0)).sum()) for n in a)
        max_diff = max(float((a[n] - b[n]).abs().max()) for n in a)
        rows.append({"method": method, "device": args.device, "matrices": len(a), "matrices differing": len(differ),
                     "mask entries differing": masks, "max |Δw|": f"{max_diff:.3g}",
                     "first differing": differ[0] if differ else "", "prune_s": " / ".join(f"{s:.1f}" for s in seconds)})
        print(rows[-1], flush=True)
    body = (f"Two prunings of the same random SmolLM2-shaped model ({args.layers} blocks) with the same "
            f"{args.nsamples} × {args.seqlen} calibration ids, 70 % unstructured, on {args.device}:\n\n"
            f"{markdown_table(rows)}\n")
    print(body)
    if not args.no_write:
        write_section(f"determinism-{torch.device(args.device).type}", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
