"""Where block-sequential pruning spends its device time, operator by operator (issue 32).

Runs ``prune_model`` (Wanda or SparseGPT, uniform sparsity, whole model on ``--device``) on a random
LLaMA-7B-shape model of ``--layers`` blocks under ``torch.profiler`` and lists the operators by their
total device time (CUDA) or CPU time, with their share of the profiled run: which GEMMs, attention
kernels, norms, dtype copies, statistics reductions and mask selections the seconds go to — the
figures the next optimisation is chosen from (a profile, not a timing: the profiler adds overhead).

    python3 bench/block_profile.py --device cuda --method wanda --layers 3
    .venv/bin/python bench/block_profile.py --device cpu --layers 2 --hidden 128 --intermediate 344 \\
        --heads 4 --vocab 512 --nsamples 4 --seqlen 64 --dtype float32 --no-write
Writes section ``block_profile_<method>`` of bench/RESULTS.md and JSON to ``--json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from bench._results import emit, markdown_table  # noqa: E402
from bench._shapes import add_shape_args, bench_device, random_model  # noqa: E402
from pruning.model.families import family_for  # noqa: E402
from pruning.model.load import LoadedModel, ModelSource  # noqa: E402
from pruning.model.placement import Compute  # noqa: E402
from pruning.run.prune import prune_model, uniform_sparsity  # noqa: E402

log = logging.getLogger("bench.block_profile")


def operator_rows(prof: profile, cuda: bool, top: int) -> list[dict]:
    """The ``top`` operators by self device time (CUDA) or self CPU time, with calls and share."""
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    total = sum(getattr(e, key) for e in events) or 1.0
    rows = []
    for e in sorted(events, key=lambda e: getattr(e, key), reverse=True)[:top]:
        rows.append({"operator": e.key[:60], "calls": e.count, "self_s": getattr(e, key) / 1e6,
                     "share": getattr(e, key) / total})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--method", default="wanda", choices=["wanda", "sparsegpt"])
    p.add_argument("--sparsity", type=float, default=0.7)
    add_shape_args(p)
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--calib-batch", type=int, default=1)
    p.add_argument("--top", type=int, default=20, help="operators listed")
    p.add_argument("--section", default=None, help="RESULTS.md section (default block_profile_<method>)")
    p.add_argument("--json", default=None)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = bench_device(args.device)
    cuda = device.type == "cuda"
    model = random_model(args, device, args.seqlen)
    loaded = LoadedModel(model, None, family_for(model), ModelSource("local", "random", "random-llama"), "random", 0.0)
    calib_ids = torch.randint(0, args.vocab, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    compute = Compute(str(device), offload=False, batch_size=args.calib_batch)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        prune_model(loaded, args.method, uniform_sparsity(loaded, args.sparsity), calib_ids, compute=compute)
        if cuda:
            torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    rows = operator_rows(prof, cuda, args.top)
    shape = (f"{args.layers} blocks x (hidden {args.hidden}, MLP {args.intermediate}, {args.heads} heads), "
             f"{args.dtype}")
    body = (f"{args.method} {args.sparsity:.0%}, random LLaMA ({shape}), {args.nsamples} x {args.seqlen} tokens, "
            f"calibration batch {args.calib_batch}, whole model on {args.device}; profiled wall {wall:.2f} s (with "
            f"the profiler's overhead). Operators by self {'device' if cuda else 'CPU'} time:\n\n" + markdown_table(rows))
    emit(body, {"rows": rows, "wall_s": wall, "args": vars(args)}, args.section or f"block_profile_{args.method}",
         args.json, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
