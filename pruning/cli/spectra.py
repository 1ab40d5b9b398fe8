"""`python -m pruning spectra --model M [--device cuda] [--hessian --calib wiki --nsamples N --seqlen L] --out FILE`.

Writes the spectra table (docs/spectra.md): one row per (block, matrix type, module, source).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pruning.cli._args import DTYPE_CHOICES, SEED, dataset_name, device_name, int_in
from pruning.config.run_config import MAX_SEQLEN
from pruning.errors import ConfigError
from pruning.config.precision import DEFAULT_EIG_DTYPE, EIG_DTYPE_NAMES

ENGINES = ("pruning-lab", "weightwatcher")
OUT_SUFFIXES = (".parquet", ".csv")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spectra", help="spectral metrics (alpha, alpha_peak, norms, entropy) of weights and Hessians")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", type=device_name, default="cpu",
                   help="where eigenvalues (and calibration) are computed: cpu | cuda[:i]")
    p.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES, help="dtype the model is loaded in")
    p.add_argument("--eig-dtype", default=DEFAULT_EIG_DTYPE, choices=("auto", *EIG_DTYPE_NAMES),
                   help="eigen-solver dtype (default float64 on every device; float32 loses the small "
                        "eigenvalues that decide alpha_peak and is recorded in every row; auto = float64)")
    p.add_argument("--engine", default="pruning-lab", choices=ENGINES)
    p.add_argument("--blocks", default=None, help="comma-separated block indices (default: all; disables the cache)")
    p.add_argument("--hessian", action="store_true", help="also the spectra of the layer-wise Hessians (calibration)")
    p.add_argument("--calib", type=dataset_name, default="wiki", help="calibration dataset for --hessian")
    p.add_argument("--nsamples", type=int_in(1, 100_000), default=128)
    p.add_argument("--seqlen", type=int_in(8, MAX_SEQLEN), default=2048)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--offload", action="store_true", help="keep the model on cpu, move one block at a time to --device")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the spectra cache")
    p.add_argument("--out", required=True, help="output table: FILE.parquet or FILE.csv")
    p.add_argument("--eigenvalues", default=None, help="also write the long eigenvalue table (parquet|csv)")
    p.set_defaults(handler=run)


def _check_out(path: str | None, field: str) -> Path | None:
    if path is None:
        return None
    out = Path(path)
    if out.suffix not in OUT_SUFFIXES:
        raise ConfigError(f"{field}: {path!r} has an unsupported suffix; accepted: {', '.join(OUT_SUFFIXES)}")
    return out


def _write(frame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pruning.model.families import decoder_layers
    from pruning.model.load import load_model, resolve_device
    from pruning.model.placement import Compute
    from pruning.run.spectra_cache import cached_hessian_spectra, cached_weight_spectra
    from pruning.spectral import SpectraResult, compute_weight_spectra
    from pruning.spectral.esd import eig_dtype_from_name
    from pruning.spectral.hessian import hessian_spectra

    out = _check_out(args.out, "--out")
    eig_out = _check_out(args.eigenvalues, "--eigenvalues")
    if args.engine == "weightwatcher" and args.hessian:
        raise ConfigError("--engine: 'weightwatcher' analyses weights only; drop --hessian or use --engine pruning-lab")
    try:
        blocks = [int(b) for b in args.blocks.split(",")] if args.blocks else None
    except ValueError as exc:
        raise ConfigError(f"--blocks: {args.blocks!r} is invalid; accepted: comma-separated integers like 0,10,29") from exc
    device = resolve_device(args.device)
    compute = Compute(str(device), offload=args.offload)  # the Hessian pass
    eig_dtype = eig_dtype_from_name(args.eig_dtype)
    t0 = time.perf_counter()
    loaded = load_model(args.model, dtype=args.dtype, device="cpu" if args.offload else str(device))
    if blocks is not None:
        n_blocks = len(decoder_layers(loaded.model, loaded.family))
        bad = [b for b in blocks if not 0 <= b < n_blocks]
        if bad:
            raise ConfigError(f"--blocks: {bad} out of range; accepted: 0..{n_blocks - 1}")
    use_cache = not args.no_cache and blocks is None

    bar = tqdm(desc="weight spectra", unit="matrix")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    parts = []
    if args.engine == "weightwatcher":
        from pruning.spectral.ww_engine import weightwatcher_spectra

        bar.set_description("weightwatcher analyze")
        parts.append(SpectraResult(weightwatcher_spectra(loaded, blocks=blocks)))
    elif use_cache:
        parts.append(cached_weight_spectra(loaded, device=device, dtype=eig_dtype, progress=progress))
    else:
        parts.append(compute_weight_spectra(loaded, device=device, dtype=eig_dtype, blocks=blocks, progress=progress))
    bar.close()

    if args.hessian:
        from pruning.text.data import calibration_batch

        bos = loaded.window_bos
        calib = calibration_batch(loaded.tokenizer, args.calib, args.nsamples, args.seqlen, args.seed, bos)
        hbar = tqdm(desc="Hessian spectra", unit="block")

        def hprogress(done: int, total: int) -> None:
            hbar.total = total
            hbar.update(done - hbar.n)

        if args.no_cache:
            hres = hessian_spectra(loaded, calib, compute, hprogress, dtype=eig_dtype)
        else:
            hres = cached_hessian_spectra(loaded, calib, compute=compute, dtype=eig_dtype, progress=hprogress)
        hbar.close()
        if blocks is not None:
            hres = SpectraResult(hres.table[hres.table["block"].isin(blocks)], hres.eigenvalues)
        parts.append(hres)

    result = SpectraResult.concat(parts)
    _write(result.table, out)
    if eig_out is not None:
        _write(result.eigenvalues, eig_out)
    table = result.table
    counts = ", ".join(f"{k} {v}" for k, v in table["status"].value_counts().items())
    print(f"{args.model}: {len(table)} rows ({counts}) in {time.perf_counter() - t0:.1f} s -> {out}")
    for source, group in table.groupby("source"):
        print(
            f"  {source}: median alpha {group['alpha'].median():.3f}, alpha_peak {group['alpha_peak'].median():.3f}, "
            f"stable_rank {group['stable_rank'].median():.2f}"
        )
    return 0
