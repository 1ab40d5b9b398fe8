"""`python -m pruning prune --model M --method wanda --sparsity 0.5 [--nm 2:4] ...`: uniform pruning,
per-matrix sparsity report, perplexity of the pruned model, optional safetensors copy."""

from __future__ import annotations

import argparse
import time

import pandas as pd

from pruning.cli._args import (
    COUNT, DTYPE_CHOICES, SEED, SEQLEN, SPARSITY, dataset_name, dataset_or_none, device_name, float_in, int_in,
    pruning_method_name,
)
from pruning.errors import ConfigError
from pruning.methods.nm_pattern import parse_nm
from pruning.methods.registry import method_names, needs_calibration


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a model with uniform sparsity and evaluate its perplexity")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES)
    p.add_argument("--method", default="wanda", type=pruning_method_name, metavar="METHOD",
                   help=f"a registered pruning method: {', '.join(method_names(pruning_only=True))}")
    p.add_argument("--sparsity", type=SPARSITY, default=0.5, help="fraction of weights removed per matrix, in [0, 1)")
    p.add_argument("--nm", default=None, help="semi-structured N:M, e.g. 2:4 (prune N of every M inputs)")
    p.add_argument("--blocksize", type=int_in(1, 65_536), default=128, help="SparseGPT column block")
    p.add_argument("--percdamp", type=float_in(0.0, 1.0, low_open=True, high_open=True), default=0.01,
                   help="SparseGPT damping, fraction of mean diag(H)")
    p.add_argument("--calib", type=dataset_name, default="wiki",
                   help="calibration corpus: wiki | lee | wikitext2 | c4 | text:PATH")
    p.add_argument("--nsamples", type=int_in(1, 100_000), default=128)
    p.add_argument("--seqlen", type=SEQLEN, default=2048, help="calibration window length (tokens)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--eval", type=dataset_or_none, default="wiki", help="evaluation corpus, or 'none'")
    p.add_argument("--eval-seqlen", type=SEQLEN, default=2048)
    p.add_argument("--limit-windows", type=COUNT, default=None, help="evaluate only the first K windows")
    p.add_argument("--eval-dense", action="store_true", help="also evaluate the dense model first")
    p.add_argument("--device", type=device_name, default="cpu", help="compute device: cpu | cuda | cuda:N")
    p.add_argument("--offload", action="store_true", help="keep the model on the CPU, one block at a time on --device")
    p.add_argument("--save", default=None, metavar="DIR", help="save the pruned model (safetensors) to DIR")
    p.set_defaults(handler=run)


def sparsity_grid(table: pd.DataFrame) -> str:
    """Achieved sparsity (%) as one line per block, one column per matrix type."""
    grid = table.pivot(index="block", columns="matrix_type", values="sparsity_achieved")
    grid = grid[[c for c in table.matrix_type.drop_duplicates()]] * 100.0
    header = "block " + " ".join(f"{c:>6}" for c in grid.columns)
    lines = [header] + [f"{int(b):>5} " + " ".join(f"{v:6.2f}" for v in row) for b, row in grid.iterrows()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pruning.text.data import calibration_batch, load_text, tokenize_text
    from pruning.evaluation.perplexity import perplexity
    from pruning.model.load import load_model, resolve_device, save_model
    from pruning.model.placement import Compute
    from pruning.run.prune import prune_model, uniform_sparsity

    for flag, value in (("--nsamples", args.nsamples), ("--seqlen", args.seqlen), ("--eval-seqlen", args.eval_seqlen)):
        if value < 1:
            raise ConfigError(f"{flag}: {value} is invalid; accepted: a positive integer")
    try:
        nm = parse_nm(args.nm)
    except ValueError as exc:
        raise ConfigError(f"--nm: {args.nm!r} is invalid: {exc}") from exc
    device = resolve_device(args.device)
    loaded = load_model(args.model, dtype=args.dtype, device="cpu" if args.offload else str(device))
    sparsity_by_name = uniform_sparsity(loaded, args.sparsity)
    bos = loaded.window_bos

    test_ids = None
    if args.eval != "none":
        test_ids = tokenize_text(loaded.tokenizer, load_text(args.eval, "test"))

    def evaluate(stage: str) -> float:
        bar = tqdm(desc=f"ppl {stage} {args.eval}", unit="win")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        if args.offload:
            loaded.model.to(device)
        result = perplexity(loaded.model, test_ids, args.eval_seqlen, args.limit_windows, 1, bos, args.eval, progress)
        if args.offload:
            loaded.model.to("cpu")
        bar.close()
        return result.ppl

    dense_ppl = evaluate("dense") if args.eval_dense and test_ids is not None else None
    calib_ids = None
    if needs_calibration(args.method):
        calib_ids = calibration_batch(loaded.tokenizer, args.calib, args.nsamples, args.seqlen, args.seed, bos)
    bar = tqdm(desc=f"prune {args.method}", unit="block")

    def block_progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    t0 = time.perf_counter()
    table = prune_model(
        loaded, args.method, sparsity_by_name, calib_ids, nm=nm, blocksize=args.blocksize, percdamp=args.percdamp,
        compute=Compute(str(device), offload=args.offload), progress=block_progress,
    )
    seconds = time.perf_counter() - t0
    bar.close()
    overall = float((table.sparsity_achieved * table.numel).sum() / table.numel.sum())
    pattern = f" {nm[0]}:{nm[1]}" if nm else ""
    print(f"achieved sparsity per matrix (%), {args.method}{pattern}:")
    print(sparsity_grid(table))
    print(f"overall sparsity {overall:.4f} (target {args.sparsity}) over {int(table.numel.sum())} weights; pruning took {seconds:.1f} s")
    if test_ids is not None:
        ppl = evaluate("pruned")
        dense = f" (dense {dense_ppl:.3f})" if dense_ppl is not None else ""
        limit = f", first {args.limit_windows} windows" if args.limit_windows else ""
        print(f"perplexity on {args.eval} (seqlen {args.eval_seqlen}{limit}): {ppl:.3f}{dense}")
    if args.save:
        out = save_model(loaded.model, loaded.tokenizer, args.save)
        print(f"saved pruned model to {out}")
    return 0
